//! Building segmentation on real aerial imagery (OpenAerialMap tiles with OpenStreetMap
//! labels), evaluated per area with the Inria protocol (building IoU and pixel accuracy).
//!
//! ```sh
//! cargo run --release --example buildings -- [--model unet|fcn|mlpnet] [--epochs 8] \
//!     [--val-area 5] [--width 16] [--patch 128] [--batch 8] [--patches 256] [--out buildings-run]
//! ```
//!
//! Data: `../shared/data/buildings` (or `CANOPY_SHARED_DATA`): RAMP areas 1 (Zanzibar),
//! 2 (Kampala), 3 (Banepa) and 5 (Nairobi) as XYZ PNG tiles with OSM polygons, and the Banepa
//! GeoTIFF tiles, grouped with area 3 (they cover neighbouring ground). Tiles of different zooms
//! cover the same ground, so the split is by area: `--val-area` is held out whole.
//!
//! Recipe: random patches with flips / 90° rotations / brightness-contrast jitter, per-band
//! normalisation from the training tiles (saved with the model), cross-entropy + 0.5 x soft
//! IoU (Maggiori et al.'s loss for building maps), Adam with an exponentially decaying
//! learning rate (lr 1e-3, x0.8 per epoch). Evaluation runs every whole tile of every area
//! through the model and reports building IoU and pixel accuracy per area (ignored pixels,
//! e.g. blank alpha, left out). Writes `model.safetensors` + `model.json` (a checkpoint
//! `canopy segment --weights` reads), `metrics.json` and overlay PNGs of validation tiles
//! (prediction in red, OSM outline pixels in green).
//!
//! This is the first version of the example: no PyTorch comparison run or shipped weights yet.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_segment::data::{
    collate_patches, split_by_groups, Augment, AugmentConfig, BandStats, GeoTiffPolygons,
    LabelledImage, PatchConfig, PatchDataset, SampleSource, XyzArea, IGNORE,
};
use canopy_segment::{FcnConfig, MlpNetConfig, ModelConfig, SegmentationModel, UNetConfig};
use canopy_train::batch::Dataset;
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta};
use canopy_train::loss::{ce_soft_iou_loss, CeSoftIouConfig, CrossEntropyConfig};
use canopy_train::optim::{param_groups, Adam, AdamConfig, Optimizer};
use ndarray::Array3;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| <[String]>::get(&args, i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
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

/// Building probabilities `(H, W)` of one normalised tile.
fn predict(
    model: &dyn SegmentationModel,
    image: &Array3<f32>,
) -> anyhow::Result<ndarray::Array2<f32>> {
    let (c, h, w) = image.dim();
    let x = Tensor::from_vec(
        image.iter().copied().collect::<Vec<f32>>(),
        (1, c, h, w),
        &Device::Cpu,
    )?;
    let logits = model.forward_t(&x, false)?;
    let p = canopy_nn::ops::softmax(&logits, 1)?
        .narrow(1, 1, 1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(ndarray::Array2::from_shape_vec((h, w), p)?)
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

fn main() -> anyhow::Result<()> {
    let root = data_dir();
    if !root.exists() {
        bail!(
            "{} is missing: this example trains on the shared building tiles (see \
             ../shared/data/PROVENANCE.md); set CANOPY_SHARED_DATA to their folder",
            root.display()
        );
    }
    let epochs: usize = arg("--epochs", "8").parse()?;
    let val_area: usize = arg("--val-area", "5").parse()?;
    let width: usize = arg("--width", "16").parse()?;
    let patch: usize = arg("--patch", "128").parse()?;
    let batch: usize = arg("--batch", "8").parse()?;
    let patches: usize = arg("--patches", "256").parse()?;
    let seed: u64 = arg("--seed", "0").parse()?;
    let out = PathBuf::from(arg("--out", "buildings-run"));
    std::fs::create_dir_all(&out)?;
    let cfg = match arg("--model", "unet").as_str() {
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
    let stats = BandStats::compute(&train)?;
    let data = PatchDataset::new(
        train,
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
    .with_normalisation(stats.clone())?;

    let vm = SeededVarMap::new(seed);
    let model = cfg.build(vm.var_builder(DType::F32, &Device::Cpu))?;
    let params: Vec<_> = vm
        .named_vars()?
        .into_iter()
        .filter(|(n, _)| !n.contains("running_") && !n.ends_with("num_batches_tracked"))
        .collect();
    let mut opt = Adam::new(param_groups(params, &[])?, AdamConfig::default())?;
    let loss_cfg = CeSoftIouConfig {
        ce: CrossEntropyConfig {
            ignore_index: Some(u32::from(IGNORE)),
            ..CrossEntropyConfig::default()
        },
        iou_weight: 0.5,
        ..CeSoftIouConfig::default()
    };
    for epoch in 0..epochs {
        let t = Instant::now();
        opt.set_learning_rate(1e-3 * 0.8f64.powi(epoch as i32));
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
            let logits = model.forward_t(&x, true)?;
            let loss = ce_soft_iou_loss(&logits, &y, &loss_cfg)?;
            opt.step(&loss.backward()?)?;
            total += loss.to_scalar::<f32>()? as f64;
            steps += 1;
            start = end;
        }
        println!(
            "epoch {epoch}: loss {:.4} ({steps} steps, {:.1} s)",
            total / steps.max(1) as f64,
            t.elapsed().as_secs_f64()
        );
    }

    // Inria protocol: IoU and accuracy of the building class per area, whole tiles
    let mut per_area: std::collections::BTreeMap<String, Counts> = Default::default();
    let mut overlays = 0;
    for tile in &all {
        let mut image = tile.image().to_owned();
        stats.apply(image.view_mut())?;
        let prob = predict(model.as_ref(), &image)?;
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
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let meta = CheckpointMeta {
        config: serde_json::to_value(&cfg)?,
        class_names: vec!["background".into(), "building".into()],
        band_order: vec!["red".into(), "green".into(), "blue".into()],
        normalisation: Some(stats.to_normalisation()),
        epoch: epochs,
        ..CheckpointMeta::default()
    };
    save_checkpoint(out.join("model.safetensors"), &vm.named_vars()?, &meta)?;
    println!(
        "wrote {} (checkpoint, metrics.json, overlays) in {:.0} s",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
