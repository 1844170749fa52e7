//! Do deep models need cloud preprocessing? Raw versus cloud-filtered, interpolated Sentinel-2
//! NDVI series on a real patch, after Rußwurm & Körner (the seeds in ../shared/seeds).
//!
//! ```text
//! cargo run --release --example cloud_robustness -- [--models lstm,transformer,msresnet,tempcnn]
//!     [--epochs 20] [--seeds 0,1,2] [--train-limit 3000] [--ablation tempcnn]
//!     [--coverages 0,0.2,0.4,0.6] [--convlstm] [--convlstm-preset mtlcc|mtlcc-gru|port] [--trace DIR]
//!     [--out cloud-robustness.md] [--json runs.json]
//! ```
//!
//! Data: the eo-learn test patch (`../shared/data/sits/eolearn-testpatch`; Sentinel-2 over
//! Slovenia, 68 dates 2015-2017, 101 x 100 pixels; PROVENANCE.md). One sample per pixel: its
//! NDVI series; label: the land-cover map LULC (class 0, "no data", is dropped; the other
//! classes 1, 2, 3, 4, 8 become 0..4).
//!
//! * **raw**: every date as observed, clouds included; the model is not told which dates are
//!   cloudy.
//! * **preprocessed**: each pixel's cloudy dates (eo-learn's cloud mask CLM) are replaced by
//!   linear interpolation in time between its clear dates (constant before the first and after
//!   the last clear date; a pixel with no clear date stays raw) — the seeds' f_cl + f_int.
//!
//! Split (shared with `tools/sits_reference_train.py`): 20 x 20 pixel blocks; block
//! `(br, bc)` is test when `(5 br + bc) % 4 == 0`. `--train-limit N` thins the training pixels
//! evenly to `N` (the same pixels for every seed). Inputs are z-scored with the training
//! statistics (over all values, clouds included, for raw). Each model trains with its reference
//! recipe for `--epochs` epochs per seed. The table reports test accuracy and kappa as
//! mean ± std over seeds, raw vs preprocessed, and Δ = raw - preprocessed.
//!
//! Ablation (`--ablation MODEL`): starting from the preprocessed (cloud-free) series, synthetic
//! clouds and shadows (`canopy_series::transform::SyntheticClouds`, NDVI model) replace a
//! share of the dates of every training and test series; the model trains on those raw
//! corrupted series; accuracy per coverage.
//!
//! `--convlstm`: the MTLCC ConvLSTM (`canopy_temporal::mtlcc`) on raw 20 x 20 patches (the
//! same blocks: test blocks are test patches), per-pixel loss ignoring class "no data".
//! `--convlstm-preset mtlcc` (default) is the TensorFlow MTLCC structure (bidirectional with
//! shared weights, layer norm in the cell), `port` the PyTorch port's (forward only, no layer
//! norm; `ConvRnnConfig::mtlcc_pytorch`), `mtlcc-gru` the TensorFlow model's layer-normalised
//! ConvGRU in place of the ConvLSTM, all 32 wide; `tools/sits_reference_train.py
//! eopatch --models convlstm` trains the port in PyTorch on the same tiles with the same recipe.
//! `--trace DIR` writes, per ConvLSTM run, the initial and final weights, the normalised
//! training tiles, the batch order ([`canopy_temporal::fit::train_batches`]) and each epoch's
//! losses and test accuracy to `DIR/convlstm-seed{S}.{safetensors,json}`, and the trainer's
//! logs (every step's loss in `steps.jsonl`) to `DIR/convlstm-seed{S}/`;
//! `tools/sits_reference_train.py replay --trace DIR/convlstm-seed{S}` re-runs the same
//! training in PyTorch and prints both side by side (port preset only).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use canopy_nn::SeededVarMap;
use canopy_series::batch::collate;
use canopy_series::load::eopatch::{EoPatch, PatchSpec};
use canopy_series::split::pixel_positions;
use canopy_series::transform::{CloudModel, GapFill, Normalization, Pipeline, SyntheticClouds};
use canopy_series::{PatchSeries, SeriesDataset};
use canopy_temporal::fit::{
    evaluate, evaluate_tiles, fit, fit_tiles, train_batches, FitOptions, LabelledSeries,
    LabelledTiles,
};
use canopy_temporal::mtlcc::{CellKind, ConvRnnClassifier, ConvRnnConfig};
use canopy_temporal::zoo::ModelConfig;
use canopy_temporal::{ModelKind, Recipe};
use canopy_train::atomic;
use canopy_train::metrics::ConfusionMatrix;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Models for the raw vs preprocessed table (comma separated; `--models` alone: no table).
    #[arg(
        long,
        default_value = "lstm,transformer,msresnet,tempcnn",
        value_delimiter = ',',
        num_args = 0..
    )]
    models: Vec<ModelKind>,
    /// Epochs per run.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Seeds (comma separated).
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Thin the training pixels evenly to this many (0: all ~7,000).
    #[arg(long, default_value_t = 3000)]
    train_limit: usize,
    /// Model of the synthetic-cloud ablation (none: skip it).
    #[arg(long)]
    ablation: Option<ModelKind>,
    /// Cloud coverages of the ablation.
    #[arg(long, default_value = "0,0.2,0.4,0.6", value_delimiter = ',')]
    coverages: Vec<f64>,
    /// Also train the MTLCC ConvLSTM on 20 x 20 patches.
    #[arg(long)]
    convlstm: bool,
    /// Structure of that ConvLSTM: `mtlcc` (TensorFlow MTLCC), `mtlcc-gru` (its ConvGRU) or
    /// `port` (the PyTorch port).
    #[arg(long, default_value = "mtlcc")]
    convlstm_preset: String,
    /// Write each ConvLSTM run's initial and final weights, training tiles, batch order and
    /// per-epoch losses into this folder (`convlstm-seed{S}.safetensors` / `.json`), for
    /// `tools/sits_reference_train.py replay`.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The EOPatch folder.
    #[arg(long, default_value = "../shared/data/sits/eolearn-testpatch")]
    data: PathBuf,
    /// Also write every run (model, variant, seed, accuracy, kappa, n) as JSON, in the layout
    /// of tools/sits_reference_train.py's `--json` (for tools/seed_compare.py); rewritten after
    /// every run.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Markdown report to write.
    #[arg(long, default_value = "cloud-robustness.md")]
    out: PathBuf,
}

const BLOCK: usize = 20;

/// The test-block rule shared with tools/sits_reference_train.py.
fn is_test(row: usize, col: usize) -> bool {
    ((row / BLOCK) * 5 + col / BLOCK) % 4 == 0
}

/// Drops class "0" (no data) and renumbers the others.
fn drop_no_data(mut ds: SeriesDataset) -> anyhow::Result<SeriesDataset> {
    let Some(zero) = ds.class_names.iter().position(|n| n == "0") else {
        return Ok(ds);
    };
    let zero = zero as u32;
    ds.samples.retain(|s| s.label.is_some_and(|l| l != zero));
    for s in &mut ds.samples {
        s.label = s.label.map(|l| if l > zero { l - 1 } else { l });
    }
    ds.class_names.remove(zero as usize);
    Ok(ds)
}

/// Train and test subsets by the block rule, the training set thinned to `limit`.
fn split(ds: &SeriesDataset, limit: usize) -> anyhow::Result<(SeriesDataset, SeriesDataset)> {
    let pos = pixel_positions(ds)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &(r, c)) in pos.iter().enumerate() {
        if is_test(r, c) {
            test.push(i);
        } else {
            train.push(i);
        }
    }
    if limit > 0 && limit < train.len() {
        let n = train.len();
        train = (0..limit)
            .filter_map(|k| train.get(k * n / limit).copied())
            .collect();
    }
    Ok((ds.subset(&train)?, ds.subset(&test)?))
}

/// Every date marked valid: what a model sees when it is told nothing about clouds.
fn forget_masks(mut ds: SeriesDataset) -> SeriesDataset {
    for s in &mut ds.samples {
        s.mask.iter_mut().for_each(|m| *m = true);
    }
    ds
}

/// Normalised tensors of a train/test pair (statistics from the training set).
fn prepare(
    train: SeriesDataset,
    test: SeriesDataset,
) -> anyhow::Result<(LabelledSeries, LabelledSeries)> {
    let norm = Normalization::fit(&train)?;
    let pipe = Pipeline::new().then(norm.to_block());
    let to_t = |ds: SeriesDataset| -> anyhow::Result<LabelledSeries> {
        let b = collate(&pipe.apply_dataset(ds, 0)?.samples, &Device::Cpu)?;
        let y = b.y.context("unlabelled pixels")?.to_vec1::<u32>()?;
        Ok(LabelledSeries::new(b.x, y)?)
    };
    Ok((to_t(train)?, to_t(test)?))
}

/// Trains `kind` once per seed; returns (accuracies, kappas, seconds) and appends each run
/// to `log` (variant `label`).
#[allow(clippy::too_many_arguments)]
fn runs(
    log: &mut RunLog,
    kind: ModelKind,
    train: &LabelledSeries,
    test: &LabelledSeries,
    classes: usize,
    epochs: usize,
    seeds: &[u64],
    label: &str,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, f64)> {
    let (c, t) = (train.x.dims()[2], train.x.dims()[1]);
    let (mut acc, mut kap) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    for &seed in seeds {
        let vars = SeededVarMap::new(seed);
        let model = ModelConfig::reference(kind, c, classes, t)?
            .build(vars.var_builder(DType::F32, &Device::Cpu))?;
        fit(
            model.as_ref(),
            &vars,
            train,
            None,
            &FitOptions::new(kind.recipe(), epochs, seed),
        )?;
        let cm = evaluate(model.as_ref(), test)?;
        println!(
            "  {kind} {label} seed {seed}: accuracy {:.4}, kappa {:.4}",
            cm.accuracy(),
            cm.kappa()
        );
        acc.push(cm.accuracy());
        kap.push(cm.kappa());
        log.push(run_json(kind.name(), label, seed, &cm))?;
    }
    Ok((
        acc,
        kap,
        t0.elapsed().as_secs_f64() / seeds.len().max(1) as f64,
    ))
}

/// The runs so far, rewritten to `--json` (when given) after every run so that a study
/// stopped half-way keeps what it finished.
struct RunLog {
    path: Option<PathBuf>,
    head: serde_json::Value,
    runs: Vec<serde_json::Value>,
}

impl RunLog {
    fn push(&mut self, run: serde_json::Value) -> anyhow::Result<()> {
        self.runs.push(run);
        if let Some(path) = &self.path {
            let mut doc = self.head.clone();
            doc["results"] = serde_json::Value::from(self.runs.clone());
            atomic::write_json(path, &doc)?;
        }
        Ok(())
    }
}

/// One run as tools/sits_reference_train.py prints it.
fn run_json(model: &str, variant: &str, seed: u64, cm: &ConfusionMatrix) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "variant": variant,
        "seed": seed,
        "accuracy": cm.accuracy(),
        "kappa": cm.kappa(),
        "n": cm.total(),
    })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

fn pm(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    format!("{m:.4} ± {s:.4}")
}

/// The ConvLSTM on raw 20 x 20 patches; returns the test confusion matrix.
fn convlstm(
    patch: &PatchSeries,
    classes: &[String],
    preset: &str,
    epochs: usize,
    seed: u64,
    trace: Option<&Path>,
) -> anyhow::Result<ConfusionMatrix> {
    let labels = patch.labels.as_ref().context("the patch has no labels")?;
    let zero = classes.iter().position(|n| n == "0").map(|z| z as u32);
    let ignore = 255u32;
    let (t, c, h, w) = patch.values.dim();
    // z-score over all training values (raw: clouds included)
    let mut tiles = Vec::new();
    for r in (0..h / BLOCK).map(|i| i * BLOCK) {
        for col in (0..w / BLOCK).map(|j| j * BLOCK) {
            tiles.push((r, col, is_test(r, col)));
        }
    }
    let train_vals: Vec<f32> = tiles
        .iter()
        .filter(|t| !t.2)
        .flat_map(|&(r, col, _)| {
            patch
                .values
                .slice(ndarray::s![.., .., r..r + BLOCK, col..col + BLOCK])
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let n = train_vals.len().max(1) as f64;
    let mean = train_vals.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (train_vals
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
        .max(1e-6);
    // class index without "0": labels above it shift down, "0" is ignored
    let remap = |l: u32| match zero {
        Some(z) if l == z => ignore,
        Some(z) if l > z => l - 1,
        _ => l,
    };
    let k = classes.len() - usize::from(zero.is_some());
    let tile = |r: usize, col: usize| -> (Vec<f32>, Vec<u32>) {
        let x = patch
            .values
            .slice(ndarray::s![.., .., r..r + BLOCK, col..col + BLOCK])
            .iter()
            .map(|&v| ((f64::from(v) - mean) / std) as f32)
            .collect();
        let y = labels
            .slice(ndarray::s![r..r + BLOCK, col..col + BLOCK])
            .iter()
            .map(|&l| remap(l))
            .collect();
        (x, y)
    };
    let set = |test: bool| {
        let chosen = tiles.iter().filter(|tl| tl.2 == test);
        LabelledTiles::from_items(
            chosen.map(|&(r, col, _)| tile(r, col)),
            (t, c, BLOCK, BLOCK),
        )
    };
    let (train, test) = (set(false)?, set(true)?);
    let base = match preset {
        "mtlcc" => ConvRnnConfig::mtlcc(c, k),
        "mtlcc-gru" => ConvRnnConfig {
            cell: CellKind::Gru,
            ..ConvRnnConfig::mtlcc(c, k)
        },
        "port" => ConvRnnConfig::mtlcc_pytorch(c, k),
        other => anyhow::bail!("unknown --convlstm-preset {other} (mtlcc, mtlcc-gru, port)"),
    };
    let cfg = ConvRnnConfig { hidden: 32, ..base };
    let vars = SeededVarMap::new(seed);
    let model = ConvRnnClassifier::new(&cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
    let recipe = Recipe {
        batch_size: 4,
        ..ModelKind::ConvLstm.recipe()
    };
    // a traced run also logs every step's loss into DIR/convlstm-seed{S}/
    let opts = FitOptions {
        out_dir: trace.map(|d| d.join(format!("convlstm-seed{seed}"))),
        log_steps: true,
        ..FitOptions::new(recipe, epochs, seed)
    };
    let init = vars.snapshot("init")?;
    let report = fit_tiles(&model, &vars, &train, Some(&test), &opts, Some(ignore))?;
    let cm = evaluate_tiles(&model, &test, Some(ignore), 4)?;
    if let Some(dir) = trace {
        let mut tensors = init;
        tensors.extend(vars.snapshot("final")?);
        tensors.insert("train_x".into(), train.x.clone());
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stem = dir.join(format!("convlstm-seed{seed}"));
        atomic::write_safetensors(&stem.with_extension("safetensors"), &tensors)?;
        let batches = (0..epochs)
            .map(|e| train_batches(train.len(), &opts, e))
            .collect::<Result<Vec<_>, _>>()?;
        let per_epoch =
            |key: &str| -> Vec<f64> { report.history.series(key).iter().map(|p| p.1).collect() };
        let json = serde_json::json!({
            "preset": preset,
            "seed": seed,
            "epochs": epochs,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "ignore": ignore,
            "batches": batches,
            "train_loss": per_epoch("train_loss"),
            "val_loss": per_epoch("val_loss"),
            "val_accuracy": per_epoch("val_accuracy"),
            "test_accuracy": cm.accuracy(),
            "test_kappa": cm.kappa(),
        });
        atomic::write_bytes(&stem.with_extension("json"), &serde_json::to_vec(&json)?)?;
        println!("  trace written to {}.{{safetensors,json}}", stem.display());
    }
    Ok(cm)
}

fn main() -> anyhow::Result<()> {
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    if args.trace.is_some() && !args.convlstm {
        bail!(
            "--trace records ConvLSTM runs: add --convlstm (and --convlstm-preset port to \
             replay it in PyTorch)"
        );
    }
    if !args.data.exists() {
        println!(
            "SKIPPED: {} not found (the shared data folder is not next to the repository)",
            args.data.display()
        );
        return Ok(());
    }
    let spec = PatchSpec::new(&["NDVI"]).with_labels("LULC");
    let patch = EoPatch::open(&args.data)?.load(&spec)?;
    let pixels = drop_no_data(patch.to_pixel_dataset()?)?;
    let k = pixels.class_names.len();
    let raw = forget_masks(pixels.clone());
    let pre = forget_masks(
        Pipeline::new()
            .then(GapFill::keep_if_unobserved())
            .apply_dataset(pixels, 0)?,
    );
    let (raw_train, raw_test) = split(&raw, args.train_limit)?;
    let (pre_train, pre_test) = split(&pre, args.train_limit)?;
    println!(
        "eo-learn patch: {} training / {} test pixels, 68 dates, classes {:?}; {} epochs, seeds {:?}",
        raw_train.len(),
        raw_test.len(),
        raw.class_names,
        args.epochs,
        args.seeds
    );
    let raw_t = prepare(raw_train, raw_test)?;
    let pre_t = prepare(pre_train.clone(), pre_test.clone())?;
    let mut log = RunLog {
        path: args.json.clone(),
        head: serde_json::json!({
            "dataset": "eopatch",
            "epochs": args.epochs,
            "train_limit": args.train_limit,
        }),
        runs: Vec::new(),
    };
    let mut report = String::from(
        "| model | raw accuracy | preprocessed accuracy | Δ accuracy | raw kappa | preprocessed kappa | Δ kappa |\n|---|---|---|---|---|---|---|\n",
    );
    for &kind in &args.models {
        if kind == ModelKind::ConvLstm {
            bail!("use --convlstm for the ConvLSTM");
        }
        let (ra, rk, _) = runs(
            &mut log,
            kind,
            &raw_t.0,
            &raw_t.1,
            k,
            args.epochs,
            &args.seeds,
            "raw",
        )?;
        let (pa, pk, _) = runs(
            &mut log,
            kind,
            &pre_t.0,
            &pre_t.1,
            k,
            args.epochs,
            &args.seeds,
            "preprocessed",
        )?;
        report.push_str(&format!(
            "| {kind} | {} | {} | {:+.4} | {} | {} | {:+.4} |\n",
            pm(&ra),
            pm(&pa),
            mean_std(&ra).0 - mean_std(&pa).0,
            pm(&rk),
            pm(&pk),
            mean_std(&rk).0 - mean_std(&pk).0
        ));
    }
    if args.models.is_empty() {
        report.clear();
    } else {
        println!("\n{report}");
    }
    if let Some(kind) = args.ablation {
        let mut table = format!(
            "\nSynthetic clouds ({kind}, trained and tested on corrupted series):\n\n| coverage | accuracy | kappa |\n|---|---|---|\n"
        );
        for &cov in &args.coverages {
            let clouds = Pipeline::new().then(SyntheticClouds::new(cov, 0.2, CloudModel::ndvi())?);
            let tr = clouds.apply_dataset(pre_train.clone(), 11)?;
            let te = clouds.apply_dataset(pre_test.clone(), 12)?;
            let (tr, te) = prepare(tr, te)?;
            let (a, kk, _) = runs(
                &mut log,
                kind,
                &tr,
                &te,
                k,
                args.epochs,
                &args.seeds,
                &format!("clouds {cov}"),
            )?;
            table.push_str(&format!(
                "| {:.0} % | {} | {} |\n",
                cov * 100.0,
                pm(&a),
                pm(&kk)
            ));
        }
        println!("{table}");
        report.push_str(&table);
    }
    if args.convlstm {
        let mut acc = Vec::new();
        let mut kap = Vec::new();
        for &seed in &args.seeds {
            let cm = convlstm(
                &patch,
                &patch.class_names,
                &args.convlstm_preset,
                args.epochs,
                seed,
                args.trace.as_deref(),
            )?;
            println!(
                "  convlstm raw seed {seed}: accuracy {:.4}, kappa {:.4}",
                cm.accuracy(),
                cm.kappa()
            );
            acc.push(cm.accuracy());
            kap.push(cm.kappa());
            log.push(run_json("convlstm", "raw", seed, &cm))?;
        }
        let line = format!(
            "\nMTLCC ConvLSTM ({} preset) on raw 20 x 20 patches (test blocks as above): accuracy {}, kappa {}\n",
            args.convlstm_preset,
            pm(&acc),
            pm(&kap)
        );
        println!("{line}");
        report.push_str(&line);
    }
    atomic::write_bytes(&args.out, report.as_bytes())?;
    println!("report written to {}", args.out.display());
    if let Some(path) = &args.json {
        println!("runs written to {}", path.display());
    }
    Ok(())
}
