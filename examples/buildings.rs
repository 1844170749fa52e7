//! Building segmentation on real aerial imagery (OpenAerialMap tiles with OpenStreetMap
//! labels), evaluated per area with the Inria protocol (building IoU and pixel accuracy).
//!
//! ```sh
//! cargo run --release --example buildings -- [--model unet|fcn|mlpnet] [--epochs 8] \
//!     [--val-area 5] [--width 16] [--patch 128] [--batch 8] [--patches 256] \
//!     [--schedule exp|cyclic] [--lr-decay 0.8] [--eval-batch 8] [--eval-val-only] [--seed 0] [--out buildings-run] \
//!     [--noise-shift 8 --noise-omit 0.2] [--clean-fraction 0.1 | --clean-area 1] [--finetune-epochs 4] \
//!     [--export-tiles tiles.safetensors] [--export-builtin model.safetensors] [--trace-steps 20]
//! ```
//!
//! (`--help` describes every flag; an unknown flag is an error.)
//!
//! Data: `../shared/data/buildings` (or `CANOPY_SHARED_DATA`): RAMP areas 1 (Zanzibar),
//! 2 (Kampala), 3 (Banepa) and 5 (Nairobi) as XYZ PNG tiles with OSM polygons, and the Banepa
//! GeoTIFF tiles, grouped with area 3 (they cover neighbouring ground). Tiles of different zooms
//! cover the same ground, so the split is by area: `--val-area` is held out whole.
//!
//! Recipe: random patches with flips / 90° rotations / brightness-contrast jitter, per-band
//! normalisation from the training tiles (saved with the model), cross-entropy + 0.5 x soft
//! IoU (canopy-train's `ce_soft_iou_loss`: soft IoU averaged over both classes), Adam; learning rate `exp` = 1e-3 x
//! `--lr-decay` (0.8) per epoch, or `cyclic` = Smith's triangular2 cycles between 1e-4 and 2e-3, 2 epochs up and 2
//! down. Evaluation runs every whole tile of every area through the model (in batches) and
//! reports building IoU and pixel accuracy per area (ignored pixels, e.g. blank alpha, left
//! out; `--eval-val-only`: the validation area only). Writes `model.safetensors` + `model.json` (a checkpoint `canopy segment --weights`
//! reads), `metrics.json` and overlay PNGs of validation tiles (prediction in red, OSM outline
//! pixels in green).
//!
//! Two-stage recipe (imperfect labels, then clean ones): `--noise-shift S --noise-omit P`
//! trains the first `--epochs` on labels degraded by [`add_label_noise`] (label layer offset up
//! to S px per tile plus up to 2 px per building, each building omitted with probability P);
//! `--finetune-epochs K` then trains K epochs on the clean labels of a `--clean-fraction` of
//! the training tiles (lr `--finetune-lr`, default 1e-4, x 0.8 per epoch). Without noise, `--clean-fraction` restricts
//! the first stage to that clean subset too (the baseline without pretraining).
//! `--clean-area N` takes the clean labels from training area N only (instead of a random
//! fraction of tiles) and, with noise, gives stage 1 the noisy labels of the *other* training
//! areas only: the imperfect labels cover ground the clean ones do not, the setting of
//! Maggiori et al. (large-scale imperfect maps, a small manually labelled area).
//!
//! `--export-tiles` writes the loaded tiles and masks (u8) with their areas, the data
//! `tools/train_buildings_torch.py` trains the PyTorch reference on. `--export-builtin` rounds
//! the weights to f16 before the evaluation (so the scores are those of the shipped weights)
//! and writes them with a sidecar describing provenance, licences and scores: how
//! `crates/canopy-segment/weights/buildings-unet16.*` were made.
//!
//! `--trace-steps N` stops after N training steps and writes `trace.safetensors` to `--out`:
//! the initial weights (`init.{name}`), the N batches exactly as the model saw them (`x.{s}`
//! normalised f32, `y.{s}` u32 labels), the weights after the N steps (`final.{name}`) and
//! `trace.json` with each step's learning rate and loss. `tools/train_buildings_torch.py
//! --replay DIR` runs the same N steps in PyTorch from the same weights on the same batches,
//! so the two implementations are compared without their random streams.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_segment::data::{
    add_label_noise, collate_patches, split_by_groups, Augment, AugmentConfig, BandStats,
    GeoTiffPolygons, LabelNoiseConfig, LabelledImage, PatchConfig, PatchDataset, SampleSource,
    XyzArea, IGNORE,
};
use canopy_segment::{FcnConfig, MlpNetConfig, ModelConfig, SegmentationModel, UNetConfig};
use canopy_train::atomic;
use canopy_train::batch::Dataset;
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta};
use canopy_train::loss::{ce_soft_iou_loss, CeSoftIouConfig, CrossEntropyConfig};
use canopy_train::optim::{param_groups, Adam, AdamConfig, Optimizer};
use canopy_train::schedule::{CyclicLr, CyclicMode, LrSchedule};
use clap::Parser;
use ndarray::Array3;

/// Trains and evaluates a building segmentation network (see the module docs for the recipe).
#[derive(Debug, Parser)]
struct Args {
    /// Network: unet, fcn or mlpnet.
    #[arg(long, default_value = "unet")]
    model: String,
    /// Training epochs (stage 1 of the two-stage recipe).
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// RAMP area held out whole for validation.
    #[arg(long, default_value_t = 5)]
    val_area: usize,
    /// U-Net base width.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Side of the random training patches, pixels.
    #[arg(long, default_value_t = 128)]
    patch: usize,
    /// Patches per training step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Random patches per epoch.
    #[arg(long, default_value_t = 256)]
    patches: usize,
    /// Learning-rate schedule: exp (1e-3 x lr-decay per epoch) or cyclic (triangular2).
    #[arg(long, default_value = "exp")]
    schedule: String,
    /// Factor per epoch of the exp schedule.
    #[arg(long, default_value_t = 0.8)]
    lr_decay: f64,
    /// Tiles per evaluation batch.
    #[arg(long, default_value_t = 8)]
    eval_batch: usize,
    /// Evaluate the validation area only.
    #[arg(long)]
    eval_val_only: bool,
    /// Seed of the initial weights, patches, augmentation and label noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "buildings-run")]
    out: PathBuf,
    /// Label noise of stage 1: largest offset of a tile's label layer, pixels.
    #[arg(long, default_value_t = 0)]
    noise_shift: usize,
    /// Label noise of stage 1: probability that a building is omitted.
    #[arg(long, default_value_t = 0.0)]
    noise_omit: f64,
    /// Share of the training tiles whose clean labels are used (stage 2, or the whole run
    /// without noise).
    #[arg(long, default_value_t = 1.0)]
    clean_fraction: f64,
    /// Take the clean labels from this training area only (instead of `--clean-fraction`);
    /// with noise, stage 1 trains on the noisy labels of the other training areas.
    #[arg(long)]
    clean_area: Option<usize>,
    /// Epochs of stage 2 (fine-tuning on the clean labels, lr `--finetune-lr` x 0.8 per epoch).
    #[arg(long, default_value_t = 0)]
    finetune_epochs: usize,
    /// Initial learning rate of stage 2 (a tenth of stage 1's by default).
    #[arg(long, default_value_t = 1e-4)]
    finetune_lr: f64,
    /// Write the loaded tiles and masks here (for tools/train_buildings_torch.py).
    #[arg(long)]
    export_tiles: Option<PathBuf>,
    /// Round the weights to f16 and write them here with a provenance sidecar.
    #[arg(long)]
    export_builtin: Option<PathBuf>,
    /// Stop after this many steps and write trace.safetensors (0: train normally).
    #[arg(long, default_value_t = 0)]
    trace_steps: usize,
}

fn data_dir() -> PathBuf {
    std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
        .join("buildings")
}

/// Every tile of the four RAMP areas and Banepa, grouped by area.
fn load_all(root: &Path) -> anyhow::Result<Vec<LabelledImage>> {
    let mut all = Vec::new();
    for area in [1, 2, 3, 5] {
        let dir = root.join(format!("openaerialmap-ramp/tiles/{area}"));
        let src = XyzArea::open(&dir, format!("area{area}"))
            .with_context(|| format!("opening {}", dir.display()))?;
        let n = src.len();
        for i in 0..n {
            all.push(src.load(i)?);
        }
        println!("area {area}: {n} tiles, {} polygons", src.polygons());
    }
    let banepa = root.join("openaerialmap-banepa/train");
    let labels: Vec<PathBuf> = std::fs::read_dir(banepa.join("osm"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "geojson"))
        .collect();
    let src = GeoTiffPolygons::open(banepa.join("oam"), &labels, "area3")?;
    for i in 0..src.len() {
        all.push(src.load(i)?);
    }
    println!(
        "Banepa (with area 3): {} tiles, {} polygons",
        src.len(),
        src.polygons()
    );
    Ok(all)
}

/// Building IoU and pixel accuracy counts of one area.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
}

impl Counts {
    fn iou(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp + self.fn_).max(1) as f64
    }
    fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / (self.tp + self.fp + self.fn_ + self.tn).max(1) as f64
    }
}

/// Building probabilities `(H, W)` of normalised tiles of one shape, run as one batch.
fn predict_batch(
    model: &dyn SegmentationModel,
    images: &[Array3<f32>],
) -> anyhow::Result<Vec<ndarray::Array2<f32>>> {
    let Some(first) = images.first() else {
        return Ok(Vec::new());
    };
    let (c, h, w) = first.dim();
    let mut flat = Vec::with_capacity(images.len() * c * h * w);
    for image in images {
        flat.extend(image.iter().copied());
    }
    let x = Tensor::from_vec(flat, (images.len(), c, h, w), &Device::Cpu)?;
    let logits = model.forward_t(&x, false)?;
    let p = canopy_nn::ops::softmax(&logits, 1)?
        .narrow(1, 1, 1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(p.chunks(h * w)
        .map(|c| ndarray::Array2::from_shape_vec((h, w), c.to_vec()))
        .collect::<Result<_, _>>()?)
}

/// Writes every tile as `image.{i}` (u8, `(C, H, W)`) and `mask.{i}` (u8, `(H, W)`, 255 =
/// ignore) to `path` (safetensors) and the tile list (group, source, role) to `path` with a
/// `.json` extension: the exact data a reference implementation should train on.
fn export_tiles(path: &Path, all: &[LabelledImage], val_group: &str) -> anyhow::Result<()> {
    let mut tensors = std::collections::HashMap::new();
    let mut list = Vec::new();
    for (i, tile) in all.iter().enumerate() {
        let (c, h, w) = tile.image().dim();
        let mut bytes = Vec::with_capacity(c * h * w);
        for &v in tile.image().iter() {
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                bail!("{}: value {v} is not a u8 sample", tile.source().display());
            }
            bytes.push(v as u8);
        }
        tensors.insert(
            format!("image.{i}"),
            Tensor::from_vec(bytes, (c, h, w), &Device::Cpu)?,
        );
        tensors.insert(
            format!("mask.{i}"),
            Tensor::from_vec(tile.mask().iter().copied().collect(), (h, w), &Device::Cpu)?,
        );
        list.push(serde_json::json!({
            "index": i,
            "group": tile.group(),
            "source": tile.source().display().to_string(),
            "role": if tile.group() == val_group { "val" } else { "train" },
        }));
    }
    atomic::write_safetensors(path, &tensors)?;
    atomic::write_json(&path.with_extension("json"), &list)?;
    println!("exported {} tiles to {}", all.len(), path.display());
    Ok(())
}

fn overlay(path: &Path, tile: &LabelledImage, prob: &ndarray::Array2<f32>) -> anyhow::Result<()> {
    let (h, w) = (tile.height(), tile.width());
    let img = tile.image();
    let mask = tile.mask();
    let mut out = image::RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = |b: usize| img[[b.min(img.dim().0 - 1), y, x]].clamp(0.0, 255.0);
            let (mut r, mut g, mut b) = (px(0), px(1), px(2));
            if prob[[y, x]] > 0.5 {
                r = 0.5 * r + 127.0;
                g *= 0.5;
                b *= 0.5;
            }
            let m = mask[[y, x]];
            let edge = m == 1
                && [(0i64, 1i64), (1, 0), (0, -1), (-1, 0)]
                    .iter()
                    .any(|(dy, dx)| {
                        let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                        yy < 0
                            || xx < 0
                            || yy >= h as i64
                            || xx >= w as i64
                            || mask[[yy as usize, xx as usize]] != 1
                    });
            if edge {
                (r, g, b) = (0.0, 255.0, 0.0);
            }
            out.put_pixel(x as u32, y as u32, image::Rgb([r as u8, g as u8, b as u8]));
        }
    }
    out.save(path)?;
    Ok(())
}

/// Writes the trained model as the built-in weights of canopy-segment: tensors as f16
/// (`num_batches_tracked` stays f32) and the sidecar with the model description under `extra`.
fn write_builtin(path: &Path, vm: &SeededVarMap, meta: &CheckpointMeta) -> anyhow::Result<()> {
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in vm.named_vars()? {
        let t = var.as_tensor();
        let t = if name.ends_with("num_batches_tracked") {
            t.clone()
        } else {
            t.to_dtype(DType::F16)?
        };
        tensors.insert(name, t);
    }
    atomic::write_safetensors(path, &tensors)?;
    atomic::write_bytes(
        &canopy_train::checkpoint::sidecar_path(path),
        (serde_json::to_string_pretty(meta)? + "\n").as_bytes(),
    )?;
    println!("wrote the built-in model to {}", path.display());
    Ok(())
}

/// Whether training tile `i` keeps its clean labels at `fraction` (a seeded hash of the index,
/// so the subset is the same in every run with the same seed).
fn keep_clean(i: usize, fraction: f64, seed: u64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut z = (i as u64 ^ seed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

fn main() -> anyhow::Result<()> {
    canopy_nn::keep_freed_memory();
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let root = data_dir();
    if !root.exists() {
        bail!(
            "{} is missing: this example trains on the shared building tiles (see \
             ../shared/data/PROVENANCE.md); set CANOPY_SHARED_DATA to their folder",
            root.display()
        );
    }
    let args = Args::parse();
    let Args {
        epochs,
        val_area,
        width,
        patch,
        batch,
        eval_val_only: val_only,
        patches,
        seed,
        lr_decay,
        clean_fraction,
        finetune_epochs,
        finetune_lr,
        noise_shift,
        noise_omit,
        trace_steps,
        ..
    } = args;
    let eval_batch = args.eval_batch.max(1);
    let out = args.out.clone();
    let schedule = args.schedule.clone();
    let noise = (noise_shift > 0 || noise_omit > 0.0).then(|| LabelNoiseConfig {
        max_shift: noise_shift,
        object_shift: noise_shift.min(2),
        omission: noise_omit,
        seed,
        ..LabelNoiseConfig::default()
    });
    if !(clean_fraction > 0.0 && clean_fraction <= 1.0) {
        bail!("--clean-fraction {clean_fraction} must be in (0, 1]");
    }
    if !(finetune_lr.is_finite() && finetune_lr > 0.0) {
        bail!("--finetune-lr {finetune_lr} must be a positive number");
    }
    std::fs::create_dir_all(&out)?;
    let cfg = match args.model.as_str() {
        "unet" => ModelConfig::Unet(UNetConfig {
            in_channels: 3,
            classes: 2,
            base_width: width,
            depth: 4,
            batch_norm: true,
        }),
        "fcn" => ModelConfig::Fcn(FcnConfig::maggiori(3, 2)),
        "mlpnet" => ModelConfig::MlpNet(MlpNetConfig::maggiori(3, 2)),
        other => bail!("unknown --model {other} (unet, fcn, mlpnet)"),
    };

    let t0 = Instant::now();
    let all = load_all(&root)?;
    let val_group = format!("area{val_area}");
    let (train, val) = split_by_groups(all.clone(), &[val_group.as_str()])?;
    println!(
        "{} training tiles, {} validation tiles (area {val_area}), loaded in {:.1} s",
        train.len(),
        val.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(export) = &args.export_tiles {
        export_tiles(export, &all, &val_group)?;
    }
    let stats = BandStats::compute(&train)?;
    // the tiles whose clean labels stage 2 (and a run without noise) may use, and those whose
    // noisy labels stage 1 trains on
    let (clean, noisy_ground): (Vec<LabelledImage>, Vec<LabelledImage>) = match args.clean_area {
        Some(a) if a == val_area => bail!("--clean-area {a} is the validation area"),
        Some(a) if clean_fraction < 1.0 => {
            bail!("--clean-area {a} and --clean-fraction {clean_fraction}: give one of them")
        }
        Some(a) => {
            let group = format!("area{a}");
            let (others, area) = split_by_groups(train.clone(), &[group.as_str()])
                .with_context(|| format!("--clean-area {a}"))?;
            (area, others)
        }
        None => (
            train
                .iter()
                .enumerate()
                .filter(|(i, _)| keep_clean(*i, clean_fraction, seed))
                .map(|(_, t)| t.clone())
                .collect(),
            train.clone(),
        ),
    };
    let stage1 = if let Some(noise) = &noise {
        let (mut objects, mut omitted, mut changed, mut class_px) = (0, 0, 0, 0);
        let mut noisy = Vec::with_capacity(noisy_ground.len());
        for (i, tile) in noisy_ground.iter().enumerate() {
            let (t, r) = add_label_noise(tile, i, noise)?;
            objects += r.objects;
            omitted += r.omitted;
            changed += r.changed_pixels;
            class_px += r.class_pixels;
            noisy.push(t);
        }
        println!(
            "stage 1 on noisy labels of {} training tiles: {omitted} of {objects} buildings \
             omitted, labels shifted by up to {} + {} px, {changed} pixels changed ({:.0} % of the \
             {class_px} building pixels)",
            noisy.len(),
            noise.max_shift,
            noise.object_shift,
            100.0 * changed as f64 / class_px.max(1) as f64
        );
        noisy
    } else {
        println!(
            "stage 1 on the clean labels of {} of {} training tiles",
            clean.len(),
            train.len()
        );
        clean.clone()
    };
    let patches_of = |tiles: Vec<LabelledImage>| -> anyhow::Result<PatchDataset> {
        Ok(PatchDataset::new(
            tiles,
            PatchConfig {
                height: patch,
                width: patch,
                patches_per_epoch: patches,
                min_valid_fraction: 0.5,
                seed,
                ..PatchConfig::default()
            },
        )?
        .with_augment(Augment::new(AugmentConfig::default()))
        .with_normalisation(stats.clone())?)
    };
    let data = patches_of(stage1)?;

    let vm = SeededVarMap::new(seed);
    let model = cfg.build(vm.var_builder(DType::F32, &Device::Cpu))?;
    let params: Vec<_> = vm
        .named_vars()?
        .into_iter()
        .filter(|(n, _)| !n.contains("running_") && !n.ends_with("num_batches_tracked"))
        .collect();
    let mut opt = Adam::new(param_groups(params, &[])?, AdamConfig::default())?;
    // --trace-steps: the initial weights, then every step's batch, learning rate and loss
    let mut trace: Vec<(String, Tensor)> = Vec::new();
    let mut trace_rows = Vec::new();
    if trace_steps > 0 {
        for (name, var) in vm.named_vars()? {
            trace.push((format!("init.{name}"), var.as_tensor().copy()?));
        }
    }
    let loss_cfg = CeSoftIouConfig {
        ce: CrossEntropyConfig {
            ignore_index: Some(u32::from(IGNORE)),
            ..CrossEntropyConfig::default()
        },
        iou_weight: 0.5,
        ..CeSoftIouConfig::default()
    };
    let steps_per_epoch = data.len().div_ceil(batch);
    let lr: Box<dyn LrSchedule> = match schedule.as_str() {
        // per epoch: 1e-3 x decay^epoch
        "exp" => Box::new(move |t: usize| 1e-3 * lr_decay.powi((t / steps_per_epoch) as i32)),
        // Smith's triangular2 cycles of 4 epochs between 1e-4 and 2e-3
        "cyclic" => Box::new(CyclicLr {
            mode: CyclicMode::Triangular2,
            ..CyclicLr::triangular(1e-4, 2e-3, 2 * steps_per_epoch)
        }),
        other => bail!("unknown --schedule {other} (exp, cyclic)"),
    };
    let mut step = 0;
    let mut train_epochs = |data: &PatchDataset,
                            epochs: usize,
                            lr: &dyn LrSchedule,
                            label: &str|
     -> anyhow::Result<()> {
        for epoch in 0..epochs {
            let t = Instant::now();
            data.set_epoch(epoch as u64);
            let mut total = 0.0;
            let mut steps = 0;
            let mut start = 0;
            while start < data.len() {
                let end = (start + batch).min(data.len());
                let items = (start..end)
                    .map(|i| data.get(i))
                    .collect::<canopy_train::Result<Vec<_>>>()?;
                let (x, y) = collate_patches(items, &Device::Cpu)?;
                opt.set_learning_rate(lr.lr(step));
                step += 1;
                let logits = model.forward_t(&x, true)?;
                let loss = ce_soft_iou_loss(&logits, &y, &loss_cfg)?;
                opt.step(&loss.backward()?)?;
                let loss = loss.to_scalar::<f32>()?;
                total += loss as f64;
                steps += 1;
                start = end;
                if step <= trace_steps {
                    trace.push((format!("x.{}", step - 1), x));
                    trace.push((format!("y.{}", step - 1), y));
                    trace_rows.push(
                        serde_json::json!({"step": step - 1, "lr": lr.lr(step - 1), "loss": loss}),
                    );
                    if step == trace_steps {
                        return Ok(());
                    }
                }
            }
            println!(
                "{label}epoch {epoch}: loss {:.4} ({steps} steps, {:.1} s)",
                total / steps.max(1) as f64,
                t.elapsed().as_secs_f64()
            );
        }
        Ok(())
    };
    train_epochs(&data, epochs, lr.as_ref(), "")?;
    if finetune_epochs > 0 && trace_steps == 0 {
        // stage 2: the clean labels, from `--finetune-lr` (a tenth of stage 1's initial rate by
        // default), decaying per epoch
        let clean_data = patches_of(clean.clone())?;
        let start_step = epochs * steps_per_epoch;
        let fine = move |t: usize| {
            finetune_lr * 0.8f64.powi((t.saturating_sub(start_step) / steps_per_epoch) as i32)
        };
        println!(
            "stage 2: fine-tuning on the clean labels of {} tiles",
            clean.len()
        );
        train_epochs(&clean_data, finetune_epochs, &fine, "fine-tune ")?;
    }

    if trace_steps > 0 {
        if step < trace_steps {
            bail!("--trace-steps {trace_steps}: the run has only {step} steps");
        }
        for (name, var) in vm.named_vars()? {
            trace.push((format!("final.{name}"), var.as_tensor().copy()?));
        }
        let path = out.join("trace.safetensors");
        atomic::write_safetensors(&path, &trace.into_iter().collect())?;
        atomic::write_json(
            &out.join("trace.json"),
            &serde_json::json!({
                "steps": trace_rows,
                "batch": batch,
                "width": width,
                "model": args.model,
            }),
        )?;
        println!("wrote the first {trace_steps} steps to {}", path.display());
        return Ok(());
    }

    let meta = CheckpointMeta {
        config: serde_json::to_value(&cfg)?,
        class_names: vec!["background".into(), "building".into()],
        band_order: vec!["red".into(), "green".into(), "blue".into()],
        normalisation: Some(stats.to_normalisation()),
        epoch: epochs,
        ..CheckpointMeta::default()
    };
    save_checkpoint(out.join("model.safetensors"), &vm.named_vars()?, &meta)?;
    if args.export_builtin.is_some() {
        // evaluate exactly the weights that will be shipped: rounded to f16
        for (name, var) in vm.named_vars()? {
            if !name.ends_with("num_batches_tracked") {
                var.set(&var.as_tensor().to_dtype(DType::F16)?.to_dtype(DType::F32)?)?;
            }
        }
    }

    // Inria protocol: IoU and accuracy of the building class per area, whole tiles, in
    // batches of tiles of one shape
    let t_eval = Instant::now();
    let mut per_area: std::collections::BTreeMap<String, Counts> = Default::default();
    let mut overlays = 0;
    let mut order: Vec<usize> = (0..all.len())
        .filter(|&i| !val_only || all[i].group() == val_group)
        .collect();
    order.sort_by_key(|&i| all[i].image().dim());
    for chunk in order.chunk_by(|&a, &b| all[a].image().dim() == all[b].image().dim()) {
        for part in chunk.chunks(eval_batch) {
            let images = part
                .iter()
                .map(|&i| {
                    let mut image = all[i].image().to_owned();
                    stats.apply(image.view_mut())?;
                    Ok(image)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (&i, prob) in part.iter().zip(predict_batch(model.as_ref(), &images)?) {
                let tile = &all[i];
                let c = per_area.entry(tile.group().to_string()).or_default();
                for (p, &m) in prob.iter().zip(tile.mask().iter()) {
                    match (m, *p > 0.5) {
                        (IGNORE, _) => {}
                        (1, true) => c.tp += 1,
                        (1, false) => c.fn_ += 1,
                        (_, true) => c.fp += 1,
                        (_, false) => c.tn += 1,
                    }
                }
                if tile.group() == val_group && overlays < 6 && tile.class_fraction(1) > 0.05 {
                    overlay(&out.join(format!("overlay_{overlays}.png")), tile, &prob)?;
                    overlays += 1;
                }
            }
        }
    }
    println!(
        "evaluated {} tiles in {:.0} s",
        order.len(),
        t_eval.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    println!("area      role   building IoU  accuracy");
    for (area, c) in &per_area {
        let role = if *area == val_group { "val" } else { "train" };
        println!(
            "{area:<9} {role:<6} {:>12.4}  {:>8.4}",
            c.iou(),
            c.accuracy()
        );
        rows.push(serde_json::json!({"area": area, "role": role, "iou": c.iou(), "accuracy": c.accuracy()}));
    }
    atomic::write_json(&out.join("metrics.json"), &rows)?;
    if let Some(builtin) = &args.export_builtin {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let info = serde_json::json!({
            "name": "buildings-unet16",
            "task": "building (1) versus background (0) in RGB aerial and drone imagery",
            "input": "3 bands red, green, blue; 8-bit values 0-255",
            "ground_resolution_m": [0.075, 0.3],
            "training_data": format!(
                "HOT RAMP OpenAerialMap tiles with OpenStreetMap building outlines (areas \
                 {}), plus the fAIr Banepa GeoTIFF tiles with area 3; {val_group} held out",
                per_area.keys().filter(|a| **a != val_group).cloned().collect::<Vec<_>>().join(", ")
            ),
            "attribution": [
                "Imagery: OpenAerialMap contributors, CC BY 4.0",
                "Labels: (c) OpenStreetMap contributors, ODbL 1.0"
            ],
            "recipe": format!("cargo run --release --example buildings -- {}", argv.join(" ")),
            "scores": rows,
        });
        write_builtin(
            builtin,
            &vm,
            &CheckpointMeta {
                extra: info,
                ..meta
            },
        )?;
    }
    println!(
        "wrote {} (checkpoint, metrics.json, overlays) in {:.0} s",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
