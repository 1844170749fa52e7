//! Crop types from NDVI series: the four reference models on the UCR "Crop" archive.
//!
//! ```text
//! cargo run --release --example ucr_crop -- [--models lstm,transformer,tempcnn,msresnet]
//!     [--epochs 30] [--seeds 0,1,2] [--out ucr-crop.md] [--json runs.json] [--trace DIR]
//! ```
//!
//! Data: `../shared/data/sits/ucr-crop/Crop_TRAIN.tsv` (7,200 Formosat-2 NDVI series, 46 dates,
//! 24 classes; PROVENANCE.md). The TRAIN file is split the way `tools/sits_reference_train.py`
//! splits it for PyTorch: within each class, in file order, every 5th series validates
//! (1,440), the others train (5,760). Inputs are z-scored with the training mean and standard
//! deviation. Each model trains with its reference recipe (Adam with coupled L2 decay, the
//! BreizhCrops tuned learning rate and decay, batch 256; see `canopy_temporal::recipe`) for
//! `--epochs` epochs, once per seed; the table gives validation accuracy and Cohen's kappa as
//! mean ± standard deviation over the seeds, written as markdown to `--out`.
//!
//! The PyTorch figures come from
//! `~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py ucr --epochs N --json F`;
//! pass `--reference F` to print them alongside. `--json F` writes canopy's runs in the same
//! layout, so that `tools/seed_compare.py --a canopy.json --b torch.json` can test whether the
//! two differ by more than the seed-to-seed spread.
//!
//! `--trace DIR` records every run for a replay in PyTorch: `DIR/{model}-seed{S}.safetensors`
//! holds the initial and final weights (`init.*`, `final.*`, PyTorch's key names) and the
//! normalised series (`train_x`, `val_x`); `DIR/{model}-seed{S}.json` the labels, the recipe,
//! the batches in the order the optimizer saw them, and per epoch the training loss and the
//! validation loss and accuracy (validation then runs after every epoch, which changes nothing
//! in training); the directory `DIR/{model}-seed{S}/` the trainer's logs, with every step's
//! loss in `steps.jsonl`. `tools/sits_reference_train.py replay --trace DIR/msresnet-seed0` trains the
//! BreizhCrops reference model from the same weights on the same batches; for a model without
//! dropout (MS-ResNet) the only difference left is the implementation.
//!
//! The reference LSTM normalises its input over the band axis, which makes a 1-band series
//! constant; canopy's 1-band LSTM preset has no input norm (and the PyTorch script replaces the
//! reference's with the identity), see `canopy_temporal::lstm`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_series::batch::collate;
use canopy_series::load::read_ucr;
use canopy_series::transform::{Normalization, Pipeline};
use canopy_series::SeriesDataset;
use canopy_temporal::fit::{evaluate, fit, train_batches, FitOptions, LabelledSeries};
use canopy_temporal::zoo::ModelConfig;
use canopy_temporal::ModelKind;
use canopy_train::atomic;
use canopy_train::metrics::ConfusionMatrix;
use canopy_train::trainer::FitReport;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Models to train (comma separated).
    #[arg(
        long,
        default_value = "lstm,transformer,tempcnn,msresnet",
        value_delimiter = ','
    )]
    models: Vec<ModelKind>,
    /// Epochs per run.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Seeds (comma separated): one run per model and seed.
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// The UCR file.
    #[arg(long, default_value = "../shared/data/sits/ucr-crop/Crop_TRAIN.tsv")]
    data: PathBuf,
    /// Markdown table to write.
    #[arg(long, default_value = "ucr-crop.md")]
    out: PathBuf,
    /// Also write every run (model, seed, accuracy, kappa, n, seconds) as JSON, in the
    /// layout of tools/sits_reference_train.py's `--json`; rewritten after every run.
    #[arg(long)]
    json: Option<PathBuf>,
    /// JSON written by tools/sits_reference_train.py, printed alongside.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Directory for per-run traces (weights, batches, losses) that
    /// `tools/sits_reference_train.py replay --trace DIR/{model}-seed{S}` replays in PyTorch.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// The split rule shared with tools/sits_reference_train.py: per class, in file order, every
/// 5th series validates.
fn split(ds: &SeriesDataset) -> (Vec<usize>, Vec<usize>) {
    let mut seen: BTreeMap<Option<u32>, usize> = BTreeMap::new();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, s) in ds.samples.iter().enumerate() {
        let k = seen.entry(s.label).or_default();
        if *k % 5 == 4 {
            val.push(i);
        } else {
            train.push(i);
        }
        *k += 1;
    }
    (train, val)
}

fn tensors(ds: &SeriesDataset) -> anyhow::Result<LabelledSeries> {
    let b = collate(&ds.samples, &Device::Cpu)?;
    let y = b.y.context("unlabelled series")?.to_vec1::<u32>()?;
    Ok(LabelledSeries::new(b.x, y)?)
}

/// Mean and (population) standard deviation of a list.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// Per model: the accuracies and kappas of its runs.
type Scores = BTreeMap<String, (Vec<f64>, Vec<f64>)>;

/// The scores in a JSON written by tools/sits_reference_train.py.
fn reference(path: &Path) -> anyhow::Result<Scores> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Scores::new();
    for r in json["results"].as_array().into_iter().flatten() {
        let e = out
            .entry(r["model"].as_str().unwrap_or("?").to_string())
            .or_default();
        e.0.push(r["accuracy"].as_f64().unwrap_or(f64::NAN));
        e.1.push(r["kappa"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(out)
}

/// One finished training run, as a trace records it.
struct Run<'a> {
    kind: ModelKind,
    seed: u64,
    opts: &'a FitOptions,
    report: &'a FitReport,
    cm: &'a ConfusionMatrix,
}

/// Writes `dir/{model}-seed{S}.{safetensors,json}` (see the module docs).
fn write_trace(
    dir: &Path,
    run: &Run,
    init: HashMap<String, Tensor>,
    vars: &SeededVarMap,
    (train, val): (&LabelledSeries, &LabelledSeries),
) -> anyhow::Result<()> {
    let mut tensors = init;
    tensors.extend(vars.snapshot("final")?);
    tensors.insert("train_x".into(), train.x.clone());
    tensors.insert("val_x".into(), val.x.clone());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = dir.join(format!("{}-seed{}", run.kind.name(), run.seed));
    atomic::write_safetensors(&stem.with_extension("safetensors"), &tensors)?;
    let batches = (0..run.opts.epochs)
        .map(|e| train_batches(train.len(), run.opts, e))
        .collect::<Result<Vec<_>, _>>()?;
    let per_epoch =
        |key: &str| -> Vec<f64> { run.report.history.series(key).iter().map(|p| p.1).collect() };
    let recipe = &run.opts.recipe;
    let json = serde_json::json!({
        "dataset": "ucr",
        "model": run.kind.name(),
        "seed": run.seed,
        "epochs": run.opts.epochs,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "batch_size": recipe.batch_size,
        "train_y": train.y,
        "val_y": val.y,
        "batches": batches,
        "train_loss": per_epoch("train_loss"),
        "val_loss": per_epoch("val_loss"),
        "val_accuracy": per_epoch("val_accuracy"),
        "final_accuracy": run.cm.accuracy(),
        "final_kappa": run.cm.kappa(),
    });
    atomic::write_bytes(&stem.with_extension("json"), &serde_json::to_vec(&json)?)?;
    println!("  trace written to {}.{{safetensors,json}}", stem.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    if !args.data.exists() {
        println!(
            "SKIPPED: {} not found (the shared data folder is not next to the repository)",
            args.data.display()
        );
        return Ok(());
    }
    let ds = read_ucr(&args.data, "NDVI")?;
    let (tr, va) = split(&ds);
    let (train_ds, val_ds) = (ds.subset(&tr)?, ds.subset(&va)?);
    let norm = Normalization::fit(&train_ds)?;
    let norm_pipe = Pipeline::new().then(norm.to_block());
    let train = tensors(&norm_pipe.apply_dataset(train_ds, 0)?)?;
    let val = tensors(&norm_pipe.apply_dataset(val_ds, 0)?)?;
    let (t, c, k) = (
        ds.samples.first().map_or(0, |s| s.len()),
        ds.band_names.len(),
        ds.class_names.len(),
    );
    println!(
        "UCR Crop: {} training / {} validation series, {t} dates, {k} classes; {} epochs, seeds {:?}",
        train.len(),
        val.len(),
        args.epochs,
        args.seeds
    );
    let refs = args.reference.as_deref().map(reference).transpose()?;
    let mut runs = Vec::new();
    let mut table = String::from(
        "| model | accuracy (canopy) | kappa (canopy) | accuracy (PyTorch) | kappa (PyTorch) | seconds per run |\n|---|---|---|---|---|---|\n",
    );
    for &kind in &args.models {
        if kind == ModelKind::ConvLstm {
            bail!("convlstm classifies image series; see the cloud_robustness example");
        }
        let (mut accs, mut kappas, mut secs) = (Vec::new(), Vec::new(), Vec::new());
        for &seed in &args.seeds {
            let vars = SeededVarMap::new(seed);
            let model = ModelConfig::reference(kind, c, k, t)?
                .build(vars.var_builder(DType::F32, &Device::Cpu))?;
            // a traced run also logs every step's loss into DIR/{model}-seed{S}/
            let opts = FitOptions {
                out_dir: args
                    .trace
                    .as_ref()
                    .map(|d| d.join(format!("{}-seed{seed}", kind.name()))),
                log_steps: true,
                ..FitOptions::new(kind.recipe(), args.epochs, seed)
            };
            let init = vars.snapshot("init")?;
            let t0 = Instant::now();
            let watched = args.trace.as_ref().map(|_| &val);
            let report = fit(model.as_ref(), &vars, &train, watched, &opts)?;
            let cm = evaluate(model.as_ref(), &val)?;
            secs.push(t0.elapsed().as_secs_f64());
            if let Some(dir) = &args.trace {
                let run = Run {
                    kind,
                    seed,
                    opts: &opts,
                    report: &report,
                    cm: &cm,
                };
                write_trace(dir, &run, init, &vars, (&train, &val))?;
            }
            println!(
                "{kind} seed {seed}: accuracy {:.4}, kappa {:.4} ({:.0} s)",
                cm.accuracy(),
                cm.kappa(),
                secs.last().copied().unwrap_or(0.0)
            );
            accs.push(cm.accuracy());
            kappas.push(cm.kappa());
            runs.push(serde_json::json!({
                "model": kind.name(),
                "seed": seed,
                "accuracy": cm.accuracy(),
                "kappa": cm.kappa(),
                "n": val.len(),
                "train_seconds": secs.last().copied().unwrap_or(0.0),
                "variant": "-",
            }));
            // rewritten after every run, so a study stopped half-way keeps its finished runs
            if let Some(path) = &args.json {
                let doc =
                    serde_json::json!({ "dataset": "ucr", "epochs": args.epochs, "results": runs });
                atomic::write_json(path, &doc)?;
            }
        }
        let (am, asd) = mean_std(&accs);
        let (km, ksd) = mean_std(&kappas);
        let (ra, rk) = match refs.as_ref().and_then(|r| r.get(kind.name())) {
            Some((a, kk)) => {
                let (a, asd) = mean_std(a);
                let (kk, ksd) = mean_std(kk);
                (format!("{a:.4} ± {asd:.4}"), format!("{kk:.4} ± {ksd:.4}"))
            }
            None => ("-".into(), "-".into()),
        };
        table.push_str(&format!(
            "| {kind} | {am:.4} ± {asd:.4} | {km:.4} ± {ksd:.4} | {ra} | {rk} | {:.0} |\n",
            mean_std(&secs).0
        ));
    }
    println!("\n{table}");
    atomic::write_bytes(&args.out, table.as_bytes())?;
    println!("table written to {}", args.out.display());
    if let Some(path) = &args.json {
        println!("runs written to {}", path.display());
    }
    Ok(())
}
