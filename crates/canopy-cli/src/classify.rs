//! `canopy classify`: train, evaluate, apply and explain satellite image time series
//! classifiers (canopy-series loaders + canopy-temporal models).
//!
//! A trained model is a directory: `model.safetensors` (PyTorch key names) with its sidecar
//! `model.json` (the model configuration, class names, band order, normalisation, sequence
//! length and the data options the model was trained with), `normalization.json`, and the
//! trainer's logs, `loss.png` and checkpoints in `train/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context};
use candle_core::{DType, Device};
use canopy_nn::SeededVarMap;
use canopy_raster::GeoTiff;
use canopy_series::batch::collate;
use canopy_series::load::eopatch::{EoPatch, PatchSpec};
use canopy_series::load::stack::read_stack;
use canopy_series::load::{read_breizhcrops_dir, read_ucr};
use canopy_series::split::{pixel_positions, spatial_split, stratified_split};
use canopy_series::transform::{Normalization, PadTruncate, Pipeline};
use canopy_series::Date;
use canopy_series::{PatchSeries, SeriesDataset};
use canopy_temporal::explain::{
    plot_attention, plot_saliency, plot_state_traces, saliency, PlotOptions, SaliencyTarget,
};
use canopy_temporal::fit::{evaluate, fit, predict_logits, FitOptions, LabelledSeries};
use canopy_temporal::zoo::ModelConfig;
use canopy_temporal::{
    load_state_dict, LstmClassifier, ModelKind, SeriesClassifier, TransformerClassifier,
};
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta};

use crate::classify_patch::is_patch_model;
use canopy_train::metrics::ConfusionMatrix;
use canopy_train::progress::ProgressMode;
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// The input formats `--format` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// UCR/UEA `.tsv`: one series per line, label first.
    Ucr,
    /// A folder of BreizhCrops per-parcel CSV files.
    Breizhcrops,
    /// An eo-learn EOPatch folder: one sample per labelled pixel.
    Eopatch,
    /// A folder of GeoTIFFs, one per date (the date in the file name: `YYYY-MM-DD` or
    /// `YYYYMMDD`), all on one grid, with a class raster (`--label-raster`): one sample per
    /// pixel; nodata and NaN samples are missing dates (masked, filled with the band mean).
    GeotiffStack,
}

/// How the data are read and cut; stored with a trained model so `eval`/`predict` read new
/// data the same way.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct DataArgs {
    /// The data: a `.tsv` file (ucr), a folder of CSV files (breizhcrops) or an EOPatch folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Input format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// ucr: the name of the single band.
    #[arg(long, default_value = "NDVI")]
    pub band_name: String,
    /// eopatch: `data/` features to read (comma separated, concatenated as bands).
    #[arg(long, default_value = "NDVI", value_delimiter = ',')]
    pub features: Vec<String>,
    /// eopatch: the `mask_timeless/` feature holding each pixel's class.
    #[arg(long, default_value = "LULC")]
    pub labels: String,
    /// geotiff-stack: the class raster on the stack's grid (band 1; each distinct value is a
    /// class named by the value).
    #[arg(long)]
    #[serde(default)]
    pub label_raster: Option<PathBuf>,
    /// geotiff-stack: band names of every date's file (comma separated; default B1, B2, ...).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub stack_bands: Vec<String>,
    /// Classes (by name) whose samples are dropped, e.g. `0` for eo-learn's "no data" land
    /// cover (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub drop_class: Vec<String>,
}

/// `canopy classify` subcommands.
#[derive(Debug, Subcommand)]
pub enum Classify {
    /// Train a model with its reference recipe and save it in `--out`.
    Train {
        #[command(flatten)]
        data: DataArgs,
        /// The model.
        #[arg(long)]
        model: ModelKind,
        /// Epochs (the reference scripts' 150 is meant for BreizhCrops' ~600k parcels).
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Override the recipe's learning rate.
        #[arg(long)]
        lr: Option<f64>,
        /// Override the recipe's weight decay.
        #[arg(long)]
        weight_decay: Option<f64>,
        /// Override the recipe's batch size (256).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Share of the samples held out for validation.
        #[arg(long, default_value_t = 0.2)]
        val_fraction: f64,
        /// eopatch, geotiff-stack: split by square blocks of this many pixels (neighbouring pixels never
        /// straddle train and validation); 0 = stratified random split.
        #[arg(long, default_value_t = 20)]
        block: usize,
        /// Seed of the split, the initialisation, batch order and dropout.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory for the model.
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a trained model: overall accuracy, kappa, per-class F1.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// The directory `classify train` wrote.
        #[arg(long)]
        model: PathBuf,
        /// Print `{"accuracy": .., "kappa": .., "n": ..}` only.
        #[arg(long)]
        json: bool,
    },
    /// Explain predictions: saliency plots for some series, attention maps (Transformer) or
    /// hidden/cell state traces (LSTM), as PNGs in `--out`.
    Explain {
        #[command(flatten)]
        data: DataArgs,
        /// The directory `classify train` wrote.
        #[arg(long)]
        model: PathBuf,
        /// Output directory for the PNGs.
        #[arg(long)]
        out: PathBuf,
        /// How many series to explain (the first ones, or those of `--ids`).
        #[arg(long, default_value_t = 4)]
        samples: usize,
        /// Explain these series (by id) instead of the first ones (comma separated).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
    },
    /// Classify series and write `id,class,p_<class>...` rows as CSV.
    Predict {
        #[command(flatten)]
        data: DataArgs,
        /// The directory `classify train` wrote.
        #[arg(long)]
        model: PathBuf,
        /// The CSV file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// What `model.json`'s `config` holds besides the standard checkpoint fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedConfig {
    model: ModelConfig,
    sequence_length: usize,
    data: DataArgs,
}

/// Runs a `classify` subcommand.
pub fn run(cmd: Classify) -> anyhow::Result<()> {
    match cmd {
        Classify::Train {
            data,
            model,
            epochs,
            lr,
            weight_decay,
            batch_size,
            val_fraction,
            block,
            seed,
            out,
            quiet,
        } => {
            let mut recipe = model.recipe();
            recipe.lr = lr.unwrap_or(recipe.lr);
            recipe.weight_decay = weight_decay.unwrap_or(recipe.weight_decay);
            recipe.batch_size = batch_size.unwrap_or(recipe.batch_size);
            let tiles_per_batch = batch_size.unwrap_or(crate::classify_patch::DEFAULT_BATCH);
            let train = TrainArgs {
                kind: model,
                epochs,
                recipe,
                val_fraction,
                block,
                seed,
                progress: if quiet {
                    ProgressMode::Quiet
                } else {
                    ProgressMode::default()
                },
            };
            if model == ModelKind::ConvLstm {
                return crate::classify_patch::train(&data, &train, tiles_per_batch, &out);
            }
            train_cmd(&data, &train, &out)
        }
        Classify::Eval { data, model, json } => eval_cmd(&data, &model, json),
        Classify::Predict { data, model, out } => predict_cmd(&data, &model, &out),
        Classify::Explain {
            data,
            model,
            out,
            samples,
            ids,
        } => explain_cmd(&data, &model, &out, samples, &ids),
    }
}

/// Reads the samples of `args` and drops unlabelled ones and the `--drop-class` classes
/// (class indices are renumbered).
pub fn load_dataset(args: &DataArgs) -> anyhow::Result<SeriesDataset> {
    let ds = match args.format {
        Format::Ucr => read_ucr(&args.data, &args.band_name)?,
        Format::Breizhcrops => read_breizhcrops_dir(&args.data)?,
        Format::Eopatch | Format::GeotiffStack => load_patch(args)?.to_pixel_dataset()?,
    };
    drop_classes(ds, &args.drop_class)
}

/// Reads an image series (`eopatch` or `geotiff-stack`) as one labelled patch.
pub(crate) fn load_patch(args: &DataArgs) -> anyhow::Result<PatchSeries> {
    match args.format {
        Format::Eopatch => {
            let features: Vec<&str> = args.features.iter().map(String::as_str).collect();
            let spec = PatchSpec::new(&features).with_labels(&args.labels);
            Ok(EoPatch::open(&args.data)?.load(&spec)?)
        }
        Format::GeotiffStack => read_geotiff_stack(args),
        Format::Ucr | Format::Breizhcrops => bail!(
            "the {:?} format holds single series, not image series (use eopatch or geotiff-stack)",
            args.format
        ),
    }
}

/// The date in a file name: the first `YYYY-MM-DD` or `YYYYMMDD` in it.
fn date_in_name(name: &str) -> Option<Date> {
    let b = name.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    for i in 0..b.len() {
        if digits(i..i + 4)
            && b.get(i + 4) == Some(&b'-')
            && digits(i + 5..i + 7)
            && b.get(i + 7) == Some(&b'-')
            && digits(i + 8..i + 10)
        {
            if let Ok(d) = Date::parse(&name[i..i + 10]) {
                return Some(d);
            }
        }
        let bounded = i == 0 || !b[i - 1].is_ascii_digit();
        if bounded && digits(i..i + 8) && !b.get(i + 8).is_some_and(u8::is_ascii_digit) {
            let t = &name[i..i + 8];
            if let Ok(d) = Date::parse(&format!("{}-{}-{}", &t[..4], &t[4..6], &t[6..])) {
                return Some(d);
            }
        }
    }
    None
}

/// Nodata / NaN samples carry no observation at all (unlike a cloudy one): each is replaced by
/// its band's mean over the valid samples of the stack (0 after normalisation) and stays
/// flagged in the mask, so no NaN reaches a model.
fn fill_missing(patch: &mut PatchSeries) {
    let (t, c, h, w) = patch.values.dim();
    for b in 0..c {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for ti in 0..t {
            for r in 0..h {
                for col in 0..w {
                    let v = patch.values[(ti, b, r, col)];
                    if patch.mask[(ti, r, col)] && v.is_finite() {
                        sum += f64::from(v);
                        n += 1;
                    }
                }
            }
        }
        let mean = if n > 0 { (sum / n as f64) as f32 } else { 0.0 };
        for ti in 0..t {
            for r in 0..h {
                for col in 0..w {
                    let v = &mut patch.values[(ti, b, r, col)];
                    if !patch.mask[(ti, r, col)] || !v.is_finite() {
                        *v = mean;
                    }
                }
            }
        }
    }
}

/// `--format geotiff-stack`: every dated `.tif` of the folder, labels from `--label-raster`.
fn read_geotiff_stack(args: &DataArgs) -> anyhow::Result<PatchSeries> {
    let label_path = args
        .label_raster
        .as_ref()
        .context("--format geotiff-stack needs --label-raster (the class of every pixel)")?;
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&args.data).with_context(|| format!("listing {}", args.data.display()))?
    {
        let path = entry?.path();
        let is_tif = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
        if !is_tif || path == *label_path {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let date = date_in_name(&name).with_context(|| {
            format!(
                "{}: no date (YYYY-MM-DD or YYYYMMDD) in the file name",
                path.display()
            )
        })?;
        files.push((path, date));
    }
    ensure!(
        !files.is_empty(),
        "{}: no GeoTIFF (.tif) files",
        args.data.display()
    );
    let bands = GeoTiff::open(&files[0].0)?.info().bands;
    let names: Vec<String> = if args.stack_bands.is_empty() {
        (1..=bands).map(|b| format!("B{b}")).collect()
    } else {
        args.stack_bands.clone()
    };
    let mut stack = read_stack(&files, &names)?;
    fill_missing(&mut stack.patch);
    let labels = GeoTiff::open(label_path)?.read_as::<f64>()?;
    let (_, _, h, w) = stack.patch.values.dim();
    ensure!(
        labels.height() == h && labels.width() == w,
        "{}: {} x {} pixels but the stack is {h} x {w}",
        label_path.display(),
        labels.height(),
        labels.width()
    );
    let band = labels.data.index_axis(ndarray::Axis(0), 0);
    let mut values: Vec<f64> = band.iter().copied().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let index = |v: f64| values.binary_search_by(|x| x.total_cmp(&v)).ok();
    let mut classes = ndarray::Array2::<u32>::zeros((h, w));
    for ((r, c), &v) in band.indexed_iter() {
        let k = index(v).with_context(|| {
            format!(
                "{}: pixel ({r}, {c}) has no class ({v}); mask it with a class you drop",
                label_path.display()
            )
        })?;
        classes[(r, c)] = k as u32;
    }
    stack.patch.labels = Some(classes);
    stack.patch.class_names = values.iter().map(|v| format!("{v}")).collect();
    Ok(stack.patch)
}

fn drop_classes(mut ds: SeriesDataset, drop: &[String]) -> anyhow::Result<SeriesDataset> {
    for name in drop {
        ensure!(
            ds.class_names.contains(name),
            "--drop-class {name}: no such class (classes: {:?})",
            ds.class_names
        );
    }
    let keep: Vec<usize> = (0..ds.class_names.len())
        .filter(|&k| ds.class_names.get(k).is_some_and(|n| !drop.contains(n)))
        .collect();
    let new_index: HashMap<u32, u32> = keep
        .iter()
        .enumerate()
        .map(|(new, &old)| (old as u32, new as u32))
        .collect();
    ds.samples
        .retain_mut(|s| match s.label.and_then(|l| new_index.get(&l)) {
            Some(&l) => {
                s.label = Some(l);
                true
            }
            None => false,
        });
    ds.class_names = keep
        .iter()
        .filter_map(|&k| ds.class_names.get(k).cloned())
        .collect();
    ensure!(!ds.samples.is_empty(), "no labelled samples left");
    Ok(ds)
}

/// Every series brought to `length` steps (padding at the end, as BreizhCrops pads).
fn to_length(ds: SeriesDataset, length: usize) -> anyhow::Result<SeriesDataset> {
    Ok(Pipeline::new()
        .then(PadTruncate { length, value: 0.0 })
        .apply_dataset(ds, 0)?)
}

/// The samples of `ds` as a `(N, T, C)` tensor with labels.
fn tensors(ds: &SeriesDataset) -> anyhow::Result<LabelledSeries> {
    let batch = collate(&ds.samples, &Device::Cpu)?;
    let y = batch
        .y
        .ok_or_else(|| anyhow!("the samples have no labels"))?
        .to_vec1::<u32>()?;
    Ok(LabelledSeries::new(batch.x, y)?)
}

/// The training options of `classify train`.
pub(crate) struct TrainArgs {
    pub kind: ModelKind,
    pub epochs: usize,
    pub recipe: canopy_temporal::Recipe,
    pub val_fraction: f64,
    pub block: usize,
    pub seed: u64,
    pub progress: ProgressMode,
}

fn train_cmd(data: &DataArgs, args: &TrainArgs, out: &Path) -> anyhow::Result<()> {
    let ds = load_dataset(data)?;
    let length = ds.samples.iter().map(|s| s.len()).max().unwrap_or(0);
    let ds = to_length(ds, length)?;
    let spatial = matches!(data.format, Format::Eopatch | Format::GeotiffStack);
    let split = if spatial && args.block > 0 {
        spatial_split(
            &pixel_positions(&ds)?,
            args.block,
            0,
            args.val_fraction,
            args.seed,
        )?
    } else {
        stratified_split(&ds, args.val_fraction, args.seed)?
    };
    let train_ds = ds.subset(&split.train)?;
    let val_ds = ds.subset(&split.val)?;
    let norm = Normalization::fit(&train_ds)?;
    let normalise = |d: SeriesDataset| -> anyhow::Result<SeriesDataset> {
        Ok(Pipeline::new().then(norm.to_block()).apply_dataset(d, 0)?)
    };
    let train = tensors(&normalise(train_ds)?)?;
    let val = if split.val.is_empty() {
        None
    } else {
        Some(tensors(&normalise(val_ds)?)?)
    };
    let (c, k) = (ds.band_names.len(), ds.class_names.len());
    let model_cfg = ModelConfig::reference(args.kind, c, k, length)?;
    let vars = SeededVarMap::new(args.seed);
    let model = model_cfg.build(vars.var_builder(DType::F32, &Device::Cpu))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let meta = CheckpointMeta {
        config: serde_json::to_value(SavedConfig {
            model: model_cfg.clone(),
            sequence_length: length,
            data: data.clone(),
        })?,
        class_names: ds.class_names.clone(),
        band_order: ds.band_names.clone(),
        normalisation: Some(canopy_train::checkpoint::Normalisation {
            mean: norm.mean.iter().map(|&v| f64::from(v)).collect(),
            std: norm.std.iter().map(|&v| f64::from(v)).collect(),
        }),
        ..Default::default()
    };
    println!(
        "training {} on {} series ({} validation) of {length} dates x {c} bands, {k} classes; \
         Adam lr {} weight decay {} batch {}, {} epochs",
        args.kind,
        train.len(),
        val.as_ref().map_or(0, LabelledSeries::len),
        args.recipe.lr,
        args.recipe.weight_decay,
        args.recipe.batch_size,
        args.epochs
    );
    let opts = FitOptions {
        out_dir: Some(out.join("train")),
        progress: args.progress,
        meta: meta.clone(),
        ..FitOptions::new(args.recipe, args.epochs, args.seed)
    };
    let report = fit(model.as_ref(), &vars, &train, val.as_ref(), &opts)?;
    save_checkpoint(out.join("model.safetensors"), &vars.named_vars()?, &meta)?;
    norm.save(out.join("normalization.json"))?;
    if let Some(val) = &val {
        let cm = evaluate(model.as_ref(), val)?;
        println!(
            "validation: accuracy {:.4}, kappa {:.4}, macro F1 {:.4} over {} series ({} steps)",
            cm.accuracy(),
            cm.kappa(),
            cm.macro_f1(),
            val.len(),
            report.steps
        );
    }
    println!("model written to {}", out.display());
    Ok(())
}

/// A trained model read back from its directory.
struct Trained {
    model: Box<dyn SeriesClassifier>,
    vars: SeededVarMap,
    saved: SavedConfig,
    class_names: Vec<String>,
    norm: Normalization,
}

/// The `model.json` of a model directory.
fn read_meta(dir: &Path) -> anyhow::Result<CheckpointMeta> {
    let meta_path = dir.join("model.json");
    let text = std::fs::read_to_string(&meta_path).with_context(|| {
        format!(
            "reading {} (is this a `classify train` output?)",
            meta_path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", meta_path.display()))
}

fn load_trained(dir: &Path, meta: CheckpointMeta) -> anyhow::Result<Trained> {
    let meta_path = dir.join("model.json");
    let saved: SavedConfig = serde_json::from_value(meta.config.clone())
        .with_context(|| format!("{}: not a series classifier config", meta_path.display()))?;
    let vars = SeededVarMap::new(0);
    let model = saved
        .model
        .build(vars.var_builder(DType::F32, &Device::Cpu))?;
    load_state_dict(dir.join("model.safetensors"), &vars.named_vars()?)?;
    let norm = Normalization::load(dir.join("normalization.json"))?;
    Ok(Trained {
        model,
        vars,
        saved,
        class_names: meta.class_names,
        norm,
    })
}

/// Reads `data` as the model expects it: same bands, length and normalisation, labels
/// renumbered to the model's class order (by name).
fn prepare(data: &DataArgs, trained: &Trained) -> anyhow::Result<SeriesDataset> {
    let mut ds = load_dataset(data)?;
    trained.norm.check_bands(&ds.band_names)?;
    let index: HashMap<&str, u32> = trained
        .class_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let mut remap = Vec::with_capacity(ds.class_names.len());
    for name in &ds.class_names {
        match index.get(name.as_str()) {
            Some(&i) => remap.push(i),
            None => bail!(
                "the data has class {name:?}, which the model does not know (its classes: {:?})",
                trained.class_names
            ),
        }
    }
    for s in &mut ds.samples {
        s.label = s.label.and_then(|l| remap.get(l as usize).copied());
    }
    ds.class_names = trained.class_names.clone();
    let ds = to_length(ds, trained.saved.sequence_length)?;
    Ok(Pipeline::new()
        .then(trained.norm.to_block())
        .apply_dataset(ds, 0)?)
}

fn eval_cmd(data: &DataArgs, dir: &Path, json: bool) -> anyhow::Result<()> {
    let meta = read_meta(dir)?;
    if is_patch_model(&meta.config) {
        return crate::classify_patch::eval(data, dir, &meta, json);
    }
    let trained = load_trained(dir, meta)?;
    let ds = prepare(data, &trained)?;
    let cm = evaluate(trained.model.as_ref(), &tensors(&ds)?)?;
    let what = format!("{} on {}", trained.saved.model.kind(), data.data.display());
    report(&cm, &what, "series", &trained.class_names, json);
    Ok(())
}

/// Prints an evaluation: `{"accuracy": .., "kappa": .., "n": ..}` with `json`, else a summary
/// line (`what`: model and data; `unit`: what `n` counts) and the per-class table.
pub(crate) fn report(cm: &ConfusionMatrix, what: &str, unit: &str, classes: &[String], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"accuracy": cm.accuracy(), "kappa": cm.kappa(), "n": cm.total()})
        );
        return;
    }
    println!(
        "{what}: {} {unit}, overall accuracy {:.4}, kappa {:.4}, macro F1 {:.4}",
        cm.total(),
        cm.accuracy(),
        cm.kappa(),
        cm.macro_f1()
    );
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    print!("{}", cm.to_table(Some(&names)));
}

fn predict_cmd(data: &DataArgs, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let meta = read_meta(dir)?;
    if is_patch_model(&meta.config) {
        return crate::classify_patch::predict_csv(data, dir, &meta, out);
    }
    let trained = load_trained(dir, meta)?;
    let ds = prepare(data, &trained)?;
    let batch = collate(&ds.samples, &Device::Cpu)?;
    let logits = predict_logits(trained.model.as_ref(), &batch.x, 512)?;
    let probs = canopy_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
    let ids = ds
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| s.id.clone().unwrap_or_else(|| i.to_string()));
    write_predictions(out, &trained.class_names, ids.zip(&probs))?;
    println!("{} predictions written to {}", probs.len(), out.display());
    Ok(())
}

/// Writes `id,class,p_<class>...` rows (the most probable class and every probability) as
/// CSV, atomically.
pub(crate) fn write_predictions<'a>(
    out: &Path,
    classes: &[String],
    rows: impl Iterator<Item = (String, &'a Vec<f32>)>,
) -> anyhow::Result<()> {
    let mut text = String::from("id,class");
    for name in classes {
        text.push_str(&format!(",p_{name}"));
    }
    text.push('\n');
    for (id, p) in rows {
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        let class = classes.get(best).map_or("?", String::as_str);
        text.push_str(&format!("{id},{class}"));
        for v in p {
            text.push_str(&format!(",{v:.6}"));
        }
        text.push('\n');
    }
    write_atomic(out, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed and renamed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(canopy_train::atomic::write_bytes(path, bytes)?)
}

fn explain_cmd(
    data: &DataArgs,
    dir: &Path,
    out: &Path,
    samples: usize,
    ids: &[String],
) -> anyhow::Result<()> {
    let meta = read_meta(dir)?;
    if is_patch_model(&meta.config) {
        return crate::classify_patch::explain(data, dir, &meta, out, samples, ids);
    }
    let trained = load_trained(dir, meta)?;
    let raw = load_dataset(data)?;
    let ds = prepare(data, &trained)?;
    let pick: Vec<usize> = if ids.is_empty() {
        (0..samples.min(ds.len())).collect()
    } else {
        ids.iter()
            .map(|id| {
                ds.samples
                    .iter()
                    .position(|s| s.id.as_deref() == Some(id.as_str()))
                    .ok_or_else(|| anyhow!("no series with id {id:?} in {}", data.data.display()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    ensure!(!pick.is_empty(), "no series to explain");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let chosen = ds.subset(&pick)?;
    let batch = collate(&chosen.samples, &Device::Cpu)?;
    let sal = saliency(
        trained.model.as_ref(),
        &batch.x,
        SaliencyTarget::MaxProbability,
    )?;
    let logits = predict_logits(trained.model.as_ref(), &batch.x, 512)?;
    let pred = logits.argmax(1)?.to_vec1::<u32>()?;
    // the states and attention need the concrete model, sharing the loaded variables
    let vb = trained.vars.var_builder(DType::F32, &Device::Cpu);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let attention = match &trained.saved.model {
        ModelConfig::Transformer(c) => Some(
            TransformerClassifier::new(c, vb.clone())?
                .forward_with_attention(&batch.x, false, &mut rng)?
                .attention,
        ),
        _ => None,
    };
    let states = match &trained.saved.model {
        ModelConfig::Lstm(c) => {
            Some(LstmClassifier::new(c, vb)?.forward_with_states(&batch.x, false, &mut rng)?)
        }
        _ => None,
    };
    let mut written = Vec::new();
    for (row, &i) in pick.iter().enumerate() {
        let s = &ds.samples[i];
        let id = s.id.clone().unwrap_or_else(|| i.to_string());
        let truth = s
            .label
            .and_then(|l| trained.class_names.get(l as usize))
            .map_or("?", String::as_str);
        let predicted = pred
            .get(row)
            .and_then(|&p| trained.class_names.get(p as usize))
            .map_or("?", String::as_str);
        // the cloud mask of the raw data, for shading (the model itself did not see it)
        let valid = raw.samples.iter().find(|r| r.id == s.id).map(|r| {
            let mut m = r.mask.clone();
            m.resize(s.len(), false);
            m
        });
        let times = s
            .days_of_year()
            .map(|d| d.iter().map(|&v| f64::from(v)).collect());
        let opts = PlotOptions {
            title: format!("series {id}: true {truth}, predicted {predicted}"),
            times,
            names: ds.band_names.clone(),
            valid,
        };
        let file = out.join(format!("saliency_{id}.png"));
        plot_saliency(&file, &batch.x, &sal, row, &opts)?;
        written.push(file);
        if let Some(att) = &attention {
            let file = out.join(format!("attention_{id}.png"));
            plot_attention(
                &file,
                att,
                row,
                &PlotOptions {
                    names: Vec::new(),
                    ..opts.clone()
                },
            )?;
            written.push(file);
        }
        if let Some(st) = &states {
            for (name, cell) in st.names.iter().zip(&st.cell).take(2) {
                let file = out.join(format!("cell_states_{name}_{id}.png"));
                let o = PlotOptions {
                    title: format!("{} — cell states {name}", opts.title),
                    names: Vec::new(),
                    ..opts.clone()
                };
                plot_state_traces(&file, cell, row, 8, &o)?;
                written.push(file);
            }
        }
    }
    for f in &written {
        println!("wrote {}", f.display());
    }
    Ok(())
}
