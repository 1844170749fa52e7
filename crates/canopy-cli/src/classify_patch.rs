//! `canopy classify ... --model convlstm`: the MTLCC convolutional recurrent encoder
//! ([`canopy_temporal::mtlcc`], Rußwurm & Körner 2018) on image series, for the formats that
//! hold them (`eopatch`, `geotiff-stack`).
//!
//! The patch is cut into square tiles of `--block` pixels. Training and validation take whole
//! tiles of that grid (a seeded share of the tiles is held out, so neighbouring pixels never
//! straddle the split; pixels past the last whole tile are not trained on). Evaluation,
//! prediction and explanation cover every pixel: the last row and column of tiles are shifted
//! inwards so that every tile is full-size. Values are normalised per band with the mean and
//! standard deviation of the training tiles' observed values, clouds included (the raw series,
//! as the seeds train it). Pixels of a `--drop-class` class are ignored by the loss and the
//! metrics but stay in the tiles as context.
//!
//! The model is [`ConvRnnConfig::mtlcc`] (bidirectional ConvLSTM with shared weights and layer
//! normalisation, 64 channels, head on the final cell states) trained with Adam at the
//! recipe's learning rate; the default batch is 16 tiles (256 whole tiles per step, the
//! series recipe's batch, would leave few steps per epoch on one scene).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context};
use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_series::split::spatial_split;
use canopy_series::transform::Normalization;
use canopy_series::PatchSeries;
use canopy_temporal::explain::{plot_state_traces, PlotOptions};
use canopy_temporal::fit::{evaluate_tiles, fit_tiles, predict_tiles, FitOptions, LabelledTiles};
use canopy_temporal::mtlcc::{ConvRnnClassifier, ConvRnnConfig};
use canopy_temporal::{load_state_dict, Recipe};
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta};
use canopy_train::metrics::ConfusionMatrix;
use ndarray::{s, Array2, Array4};
use serde::{Deserialize, Serialize};

use crate::classify::{load_patch, report, write_predictions, DataArgs, Format, TrainArgs};

/// Label of pixels the loss and the metrics skip (dropped classes).
const IGNORE: u32 = u32::MAX;
/// Default tiles per training batch.
pub const DEFAULT_BATCH: usize = 16;
/// Tiles per forward pass when predicting.
const PREDICT_BATCH: usize = 8;

/// What `model.json`'s `config` holds for an image-series model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPatchConfig {
    /// The model.
    pub conv_rnn: ConvRnnConfig,
    /// Tile size in pixels.
    pub tile: usize,
    /// How the data were read.
    pub data: DataArgs,
}

/// A patch with per-pixel labels in a model's class order ([`IGNORE`] for dropped classes).
struct Labelled {
    patch: PatchSeries,
    labels: Array2<u32>,
}

fn check_format(data: &DataArgs) -> anyhow::Result<()> {
    ensure!(
        matches!(data.format, Format::Eopatch | Format::GeotiffStack),
        "--model convlstm classifies image series: use --format eopatch or geotiff-stack \
         (the {:?} format holds single series)",
        data.format
    );
    Ok(())
}

/// Reads the patch and maps its classes onto `classes` (by name; `None`: the patch's own classes
/// minus `--drop-class`). Returns the labelled patch and the class names.
fn labelled(
    data: &DataArgs,
    classes: Option<&[String]>,
) -> anyhow::Result<(Labelled, Vec<String>)> {
    let patch = load_patch(data)?;
    let raw = patch
        .labels
        .clone()
        .with_context(|| format!("{}: the data has no labels", data.data.display()))?;
    for name in &data.drop_class {
        ensure!(
            patch.class_names.contains(name),
            "--drop-class {name}: no such class (classes: {:?})",
            patch.class_names
        );
    }
    let kept: Vec<String> = patch
        .class_names
        .iter()
        .filter(|n| !data.drop_class.contains(n))
        .cloned()
        .collect();
    let target: Vec<String> = classes.map_or(kept, <[String]>::to_vec);
    let index: HashMap<&str, u32> = target
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let mut remap = Vec::with_capacity(patch.class_names.len());
    for name in &patch.class_names {
        if data.drop_class.contains(name) {
            remap.push(IGNORE);
            continue;
        }
        match index.get(name.as_str()) {
            Some(&i) => remap.push(i),
            None => bail!(
                "the data has class {name:?}, which the model does not know (its classes: \
                 {target:?}); drop it with --drop-class"
            ),
        }
    }
    let labels = raw.mapv(|l| remap.get(l as usize).copied().unwrap_or(IGNORE));
    Ok((Labelled { patch, labels }, target))
}

/// Top-left corners of the whole `tile x tile` squares of the grid.
fn grid(h: usize, w: usize, tile: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for r in (0..h / tile).map(|i| i * tile) {
        for c in (0..w / tile).map(|j| j * tile) {
            v.push((r, c));
        }
    }
    v
}

/// Top-left corners of tiles covering every pixel (the last row and column shifted inwards).
fn cover(h: usize, w: usize, tile: usize) -> Vec<(usize, usize)> {
    let starts = |len: usize| {
        let mut v: Vec<usize> = (0..len).step_by(tile).map(|r| r.min(len - tile)).collect();
        v.dedup();
        v
    };
    let rows = starts(h);
    let cols = starts(w);
    rows.iter()
        .flat_map(|&r| cols.iter().map(move |&c| (r, c)))
        .collect()
}

/// Per-band mean and standard deviation of the observed, finite values of the tiles.
fn fit_norm(patch: &PatchSeries, tiles: &[(usize, usize)], tile: usize) -> Normalization {
    let (t, c, _, _) = patch.values.dim();
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); c];
    for &(r, col) in tiles {
        for ti in 0..t {
            let m = patch.mask.slice(s![ti, r..r + tile, col..col + tile]);
            for (b, e) in sums.iter_mut().enumerate() {
                let v = patch.values.slice(s![ti, b, r..r + tile, col..col + tile]);
                for (&x, &ok) in v.iter().zip(m.iter()) {
                    if ok && x.is_finite() {
                        e.0 += f64::from(x);
                        e.1 += f64::from(x) * f64::from(x);
                        e.2 += 1;
                    }
                }
            }
        }
    }
    let (mean, std) = sums
        .iter()
        .map(|&(s1, s2, n)| {
            let n = n.max(1) as f64;
            let m = s1 / n;
            (
                m as f32,
                ((s2 / n - m * m).max(0.0).sqrt().max(1e-6)) as f32,
            )
        })
        .unzip();
    Normalization {
        bands: patch.band_names.clone(),
        mean,
        std,
    }
}

/// The normalised values of one tile, `(T, C, tile, tile)` flattened.
fn tile_values(
    values: &Array4<f32>,
    norm: &Normalization,
    (r, c): (usize, usize),
    tile: usize,
) -> Vec<f32> {
    let v = values.slice(s![.., .., r..r + tile, c..c + tile]);
    v.indexed_iter()
        .map(|((_, b, _, _), &x)| {
            let x = if x.is_finite() { x } else { norm.mean[b] };
            (x - norm.mean[b]) / norm.std[b]
        })
        .collect()
}

/// `classify train --model convlstm`.
pub fn train(
    data: &DataArgs,
    args: &TrainArgs,
    batch_size: usize,
    out: &Path,
) -> anyhow::Result<()> {
    check_format(data)?;
    let (lab, classes) = labelled(data, None)?;
    let (t, c, h, w) = lab.patch.values.dim();
    ensure!(
        args.block > 0,
        "--block must be positive: it is the ConvLSTM's tile size"
    );
    let tile = args.block.min(h).min(w);
    let tiles = grid(h, w, tile);
    let split = spatial_split(&tiles, tile, 0, args.val_fraction, args.seed)?;
    ensure!(
        !split.train.is_empty(),
        "no training tiles: the {h} x {w} patch has {} tiles of {tile} pixels; lower \
         --val-fraction or --block",
        tiles.len()
    );
    let pick = |idx: &[usize]| idx.iter().map(|&i| tiles[i]).collect::<Vec<_>>();
    let (train_tiles, val_tiles) = (pick(&split.train), pick(&split.val));
    let norm = fit_norm(&lab.patch, &train_tiles, tile);
    let item = |&(r, col): &(usize, usize)| {
        let y: Vec<u32> = lab
            .labels
            .slice(s![r..r + tile, col..col + tile])
            .iter()
            .copied()
            .collect();
        (tile_values(&lab.patch.values, &norm, (r, col), tile), y)
    };
    let tiles_of = |origins: &[(usize, usize)]| {
        LabelledTiles::from_items(origins.iter().map(item), (t, c, tile, tile))
    };
    let train_set = tiles_of(&train_tiles)?;
    let val_set = if val_tiles.is_empty() {
        None
    } else {
        Some(tiles_of(&val_tiles)?)
    };
    let k = classes.len();
    let cfg = ConvRnnConfig::mtlcc(c, k);
    let vars = SeededVarMap::new(args.seed);
    let model = ConvRnnClassifier::new(&cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let meta = CheckpointMeta {
        config: serde_json::to_value(SavedPatchConfig {
            conv_rnn: cfg,
            tile,
            data: data.clone(),
        })?,
        class_names: classes.clone(),
        band_order: lab.patch.band_names.clone(),
        normalisation: Some(canopy_train::checkpoint::Normalisation {
            mean: norm.mean.iter().map(|&v| f64::from(v)).collect(),
            std: norm.std.iter().map(|&v| f64::from(v)).collect(),
        }),
        ..Default::default()
    };
    println!(
        "training convlstm on {} tiles ({} validation) of {tile} x {tile} pixels, {t} dates x \
         {c} bands, {k} classes; Adam lr {} weight decay {} batch {batch_size}, {} epochs",
        train_tiles.len(),
        val_tiles.len(),
        args.recipe.lr,
        args.recipe.weight_decay,
        args.epochs
    );
    let opts = FitOptions {
        out_dir: Some(out.join("train")),
        progress: args.progress,
        meta: meta.clone(),
        ..FitOptions::new(
            Recipe {
                batch_size,
                ..args.recipe
            },
            args.epochs,
            args.seed,
        )
    };
    fit_tiles(
        &model,
        &vars,
        &train_set,
        val_set.as_ref(),
        &opts,
        Some(IGNORE),
    )?;
    save_checkpoint(out.join("model.safetensors"), &vars.named_vars()?, &meta)?;
    norm.save(out.join("normalization.json"))?;
    if let Some(val) = &val_set {
        let cm = evaluate_tiles(&model, val, Some(IGNORE), PREDICT_BATCH)?;
        println!(
            "validation: accuracy {:.4}, kappa {:.4}, macro F1 {:.4} over {} pixels",
            cm.accuracy(),
            cm.kappa(),
            cm.macro_f1(),
            cm.total()
        );
    }
    println!("model written to {}", out.display());
    Ok(())
}

/// Logits `(N, K, tile, tile)` of the tiles at `origins`.
fn predict(
    model: &ConvRnnClassifier,
    values: &Array4<f32>,
    norm: &Normalization,
    tile: usize,
    origins: &[(usize, usize)],
) -> anyhow::Result<Tensor> {
    let (t, c, _, _) = values.dim();
    let mut parts = Vec::new();
    // normalised a batch at a time: a whole scene's tiles would double its memory
    for chunk in origins.chunks(PREDICT_BATCH) {
        let x: Vec<f32> = chunk
            .iter()
            .flat_map(|&o| tile_values(values, norm, o, tile))
            .collect();
        let x = Tensor::from_vec(x, (chunk.len(), t, c, tile, tile), &Device::Cpu)?;
        parts.push(predict_tiles(model, &x, PREDICT_BATCH)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// A trained image-series model read back from its directory.
struct Trained {
    model: ConvRnnClassifier,
    saved: SavedPatchConfig,
    class_names: Vec<String>,
    norm: Normalization,
    /// Kept alive: the model's weights live in it.
    _vars: SeededVarMap,
}

/// Whether `config` (from `model.json`) describes an image-series model.
pub fn is_patch_model(config: &serde_json::Value) -> bool {
    config.get("conv_rnn").is_some()
}

fn load(dir: &Path, meta: &CheckpointMeta) -> anyhow::Result<Trained> {
    let saved: SavedPatchConfig = serde_json::from_value(meta.config.clone())
        .with_context(|| format!("{}: not an image-series model config", dir.display()))?;
    let vars = SeededVarMap::new(0);
    let model =
        ConvRnnClassifier::new(&saved.conv_rnn, vars.var_builder(DType::F32, &Device::Cpu))?;
    load_state_dict(dir.join("model.safetensors"), &vars.named_vars()?)?;
    let norm = Normalization::load(dir.join("normalization.json"))?;
    Ok(Trained {
        model,
        saved,
        class_names: meta.class_names.clone(),
        norm,
        _vars: vars,
    })
}

/// Reads `data` as `trained` expects it: the model's classes and bands, at least one tile.
fn read_for(data: &DataArgs, trained: &Trained) -> anyhow::Result<Labelled> {
    check_format(data)?;
    let (lab, _) = labelled(data, Some(&trained.class_names))?;
    trained.norm.check_bands(&lab.patch.band_names)?;
    let (_, _, h, w) = lab.patch.values.dim();
    let tile = trained.saved.tile;
    ensure!(
        h >= tile && w >= tile,
        "{}: the {h} x {w} patch is smaller than the model's {tile} x {tile} tiles",
        data.data.display()
    );
    Ok(lab)
}

/// Reads `data` for `trained` and returns its labelled patch and the per-pixel logits
/// `(1, K, H, W)` (every pixel once).
fn logits_of(data: &DataArgs, trained: &Trained) -> anyhow::Result<(Labelled, Tensor)> {
    let lab = read_for(data, trained)?;
    let (_, _, h, w) = lab.patch.values.dim();
    let tile = trained.saved.tile;
    let origins = cover(h, w, tile);
    let tiles = predict(
        &trained.model,
        &lab.patch.values,
        &trained.norm,
        tile,
        &origins,
    )?;
    let k = trained.class_names.len();
    let mut full = vec![0f32; k * h * w];
    for (i, &(r, c)) in origins.iter().enumerate() {
        let v = tiles.get(i)?.flatten_all()?.to_vec1::<f32>()?; // (K, tile, tile)
        for kk in 0..k {
            for dr in 0..tile {
                let src = &v[(kk * tile + dr) * tile..][..tile];
                full[(kk * h + r + dr) * w + c..][..tile].copy_from_slice(src);
            }
        }
    }
    Ok((lab, Tensor::from_vec(full, (1, k, h, w), &Device::Cpu)?))
}

/// `classify eval` of an image-series model.
pub fn eval(data: &DataArgs, dir: &Path, meta: &CheckpointMeta, json: bool) -> anyhow::Result<()> {
    let trained = load(dir, meta)?;
    let (lab, logits) = logits_of(data, &trained)?;
    let (h, w) = lab.labels.dim();
    let truth = Tensor::from_vec(
        lab.labels.iter().copied().collect::<Vec<u32>>(),
        (1, h, w),
        &Device::Cpu,
    )?;
    let mut cm = ConfusionMatrix::new(trained.class_names.len())?.with_ignore_label(IGNORE);
    cm.update_from_logits(&logits, &truth, None)?;
    let what = format!("convlstm on {}", data.data.display());
    report(&cm, &what, "pixels", &trained.class_names, json);
    Ok(())
}

/// `classify predict` of an image-series model: one CSV row per pixel, id `row_col`.
pub fn predict_csv(
    data: &DataArgs,
    dir: &Path,
    meta: &CheckpointMeta,
    out: &Path,
) -> anyhow::Result<()> {
    let trained = load(dir, meta)?;
    let (lab, logits) = logits_of(data, &trained)?;
    let (h, w) = lab.labels.dim();
    let k = trained.class_names.len();
    let probs = canopy_nn::ops::softmax(&logits, 1)?
        .squeeze(0)?
        .reshape((k, h * w))?
        .t()?
        .to_vec2::<f32>()?;
    let ids = (0..h * w).map(|i| format!("{}_{}", i / w, i % w));
    write_predictions(out, &trained.class_names, ids.zip(&probs))?;
    println!(
        "{} pixel predictions written to {}",
        probs.len(),
        out.display()
    );
    Ok(())
}

/// `classify explain` of an image-series model: the hidden and cell state traces of the
/// forward reading at `samples` pixels (tile centres, or the pixels of `ids`, `row_col`), with
/// the pixel's unobserved (cloudy) dates shaded.
pub fn explain(
    data: &DataArgs,
    dir: &Path,
    meta: &CheckpointMeta,
    out: &Path,
    samples: usize,
    ids: &[String],
) -> anyhow::Result<()> {
    let trained = load(dir, meta)?;
    let lab = read_for(data, &trained)?;
    let (_, _, h, w) = lab.patch.values.dim();
    let tile = trained.saved.tile;
    let pixels: Vec<(usize, usize)> = if ids.is_empty() {
        cover(h, w, tile)
            .into_iter()
            .take(samples)
            .map(|(r, c)| (r + tile / 2, c + tile / 2))
            .collect()
    } else {
        ids.iter()
            .map(|id| {
                let (r, c) = id
                    .split_once('_')
                    .and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
                    .ok_or_else(|| anyhow!("--ids {id}: pixel ids are row_col, e.g. 12_40"))?;
                ensure!(r < h && c < w, "--ids {id}: outside the {h} x {w} patch");
                Ok((r, c))
            })
            .collect::<anyhow::Result<_>>()?
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let times = lab
        .patch
        .dates
        .as_ref()
        .map(|d| d.iter().map(|x| f64::from(x.day_of_year())).collect());
    for &(r, c) in &pixels {
        // the tile holding the pixel, as inside the scene as it goes
        let (r0, c0) = (
            (r / tile * tile).min(h - tile),
            (c / tile * tile).min(w - tile),
        );
        let x = tile_values(&lab.patch.values, &trained.norm, (r0, c0), tile);
        let (t, ch, _, _) = lab.patch.values.dim();
        let x = Tensor::from_vec(x, (1, t, ch, tile, tile), &Device::Cpu)?;
        let run = trained.model.forward_with_states(&x, None)?;
        let at = |s: &Tensor| -> anyhow::Result<Tensor> {
            // (1, T, hidden, tile, tile) -> (1, T, hidden)
            Ok(s.narrow(3, r - r0, 1)?
                .narrow(4, c - c0, 1)?
                .squeeze(4)?
                .squeeze(3)?)
        };
        let valid: Vec<bool> = lab.patch.mask.slice(s![.., r, c]).to_vec();
        let forward = run
            .states
            .first()
            .ok_or_else(|| anyhow!("the model returned no states"))?;
        let mut written = Vec::new();
        for (what, states) in [
            ("hidden", Some(&forward.hidden)),
            ("cell", forward.cell.as_ref()),
        ] {
            let Some(states) = states else { continue };
            let opts = PlotOptions {
                title: format!("pixel {r}_{c}: ConvLSTM {what} state (forward), cloudy dates grey"),
                times: times.clone(),
                names: Vec::new(),
                valid: Some(valid.clone()),
            };
            let path = out.join(format!("states_{what}_{r}_{c}.png"));
            plot_state_traces(&path, &at(states)?, 0, 8, &opts)?;
            written.push(path.display().to_string());
        }
        println!("pixel {r}_{c}: {}", written.join(", "));
    }
    Ok(())
}
