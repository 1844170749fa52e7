//! Inference and training-step throughput of canopy-temporal's classifiers at the BreizhCrops
//! benchmark settings, next to PyTorch's figures for the reference models.
//!
//! ```text
//! cargo run --release -p canopy-temporal --example throughput -- [--models tempcnn,msresnet,inceptiontime,lstm,transformer] [--quick] [--only inference|training] [--peers-json PATH]
//! ```
//!
//! Settings (those of `../shared/peers/bench_breizhcrops.py`): batch 256, `T = 45`, 13 bands,
//! 9 classes, float32 on the CPU, random normal input. Inference is an eval-mode forward pass;
//! a training step is a train-mode forward pass, cross-entropy, backward and an Adam step
//! (lr 1e-3) over the trainable parameters. Each figure is the median over timed runs after
//! warm-up, in samples per second.
//!
//! PyTorch's figures come from the peers' results JSON (`--peers-json`, default
//! `$PEERS_HOME/results/breizhcrops.json`, `PEERS_HOME` defaulting to
//! `~/.cache/canopy-peers`) when it exists, else from the baseline of 2026-11-23
//! (`../shared/peers/BASELINE-2026-11-23.md`, torch 2.15, 2 threads, same machine type).
//!
//! To add a model, add one line to [`models`].

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use canopy_nn::SeededVarMap;
use canopy_temporal::inceptiontime::{InceptionTime, InceptionTimeConfig};
use canopy_temporal::msresnet::{MsResNet, MsResNetConfig};
use canopy_temporal::tempcnn::{TempCnn, TempCnnConfig};
use canopy_temporal::{
    LstmClassifier, LstmClassifierConfig, SeriesClassifier, TransformerClassifier,
    TransformerClassifierConfig,
};
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use canopy_train::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BATCH: usize = 256;
const T: usize = 45;
const BANDS: usize = 13;
const CLASSES: usize = 9;

type Build = fn(VarBuilder<'static>) -> canopy_temporal::Result<Box<dyn SeriesClassifier>>;

/// A model of the benchmark: our name, the row name in the peers' results, PyTorch's
/// (inference, training) samples/s of the baseline, and the constructor.
struct Entry {
    name: &'static str,
    peer: &'static str,
    baseline: (f64, f64),
    build: Build,
}

/// The models, one entry each.
fn models() -> Vec<Entry> {
    vec![
        Entry {
            name: "tempcnn",
            peer: "TempCNN",
            baseline: (5727.0, 1754.0),
            build: |vb| {
                Ok(Box::new(TempCnn::new(
                    &TempCnnConfig::breizhcrops(BANDS, CLASSES, T),
                    vb,
                )?))
            },
        },
        Entry {
            name: "msresnet",
            peer: "MSResNet",
            baseline: (7324.0, 1647.0),
            build: |vb| {
                Ok(Box::new(MsResNet::new(
                    &MsResNetConfig::breizhcrops(BANDS, CLASSES),
                    vb,
                )?))
            },
        },
        Entry {
            name: "inceptiontime",
            peer: "InceptionTime",
            baseline: (2599.0, 542.7),
            build: |vb| {
                Ok(Box::new(InceptionTime::new(
                    &InceptionTimeConfig::breizhcrops(BANDS, CLASSES),
                    vb,
                )?))
            },
        },
        Entry {
            name: "lstm",
            peer: "LSTM",
            baseline: (1744.0, 365.7),
            build: |vb| {
                Ok(Box::new(LstmClassifier::new(
                    &LstmClassifierConfig::breizhcrops(BANDS, CLASSES),
                    vb,
                )?))
            },
        },
        Entry {
            name: "transformer",
            peer: "TransformerModel",
            baseline: (3654.0, 771.3),
            build: |vb| {
                Ok(Box::new(TransformerClassifier::new(
                    &TransformerClassifierConfig::breizhcrops(BANDS, CLASSES),
                    vb,
                )?))
            },
        },
    ]
}

struct Args {
    models: Option<Vec<String>>,
    quick: bool,
    /// `Some("inference")` or `Some("training")`: time only that (for profilers); no table.
    only: Option<String>,
    peers_json: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        models: None,
        quick: false,
        only: None,
        peers_json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--models" => {
                let v = it.next().context("--models needs a comma-separated list")?;
                args.models = Some(v.split(',').map(|s| s.trim().to_lowercase()).collect());
            }
            "--only" => {
                let v = it.next().context("--only needs inference or training")?;
                if v != "inference" && v != "training" {
                    bail!("--only takes inference or training, not {v:?}");
                }
                args.only = Some(v);
            }
            "--peers-json" => {
                args.peers_json = Some(it.next().context("--peers-json needs a path")?.into());
            }
            "-h" | "--help" => {
                println!(
                    "throughput [--models {}] [--quick] [--only inference|training] [--peers-json PATH]",
                    models()
                        .iter()
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// PyTorch's samples/s for `row` ("TempCNN inference", "TempCNN training step") from the
/// peers' results JSON, if present.
fn peer_figure(json: &Option<serde_json::Value>, row: &str) -> Option<f64> {
    json.as_ref()?["rows"]
        .as_array()?
        .iter()
        .find(|r| r["what"] == row)?["figure"]
        .as_f64()
}

/// Median seconds of `f` over timed runs after warm-up.
fn time_it(quick: bool, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let (warmup, min_runs, budget) = if quick { (1, 3, 3.0) } else { (3, 7, 12.0) };
    for _ in 0..warmup {
        f()?;
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_runs || (start.elapsed().as_secs_f64() < budget && times.len() < 50) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // as the training examples and the CLI do: freed tensor buffers stay in the process
    canopy_nn::allocator::keep_freed_memory();
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let dev = Device::Cpu;
    let peers_path = args.peers_json.clone().or_else(|| {
        let home = std::env::var("PEERS_HOME")
            .ok()
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var("HOME")
                    .ok()
                    .map(|h| std::path::Path::new(&h).join(".cache").join("canopy-peers"))
            })?;
        Some(home.join("results").join("breizhcrops.json"))
    });
    let peers: Option<serde_json::Value> = peers_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str(&s).ok());
    match (&peers, &peers_path) {
        (Some(_), Some(p)) => println!("PyTorch figures from {}", p.display()),
        _ => println!(
            "PyTorch figures from the baseline of 2026-11-23 (no peers results JSON found)"
        ),
    }
    let all = models();
    if let Some(sel) = &args.models {
        for s in sel {
            if !all.iter().any(|m| m.name == s) {
                bail!(
                    "unknown model {s:?}; available: {}",
                    all.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(0);
    let xs: Vec<f32> = (0..BATCH * T * BANDS)
        .map(|_| {
            // Box-Muller standard normal
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    let x = Tensor::from_vec(xs, (BATCH, T, BANDS), &dev)?;
    let y = Tensor::from_vec(
        (0..BATCH)
            .map(|_| rng.random_range(0..CLASSES as u32))
            .collect::<Vec<_>>(),
        BATCH,
        &dev,
    )?;
    println!(
        "batch {BATCH}, T = {T}, {BANDS} bands, {CLASSES} classes, f32, CPU; {} runs",
        if args.quick { "quick" } else { "full" }
    );
    let mut table = Vec::new();
    for m in all.iter().filter(|m| {
        args.models
            .as_ref()
            .is_none_or(|sel| sel.iter().any(|s| s == m.name))
    }) {
        let store = SeededVarMap::new(0);
        let model = (m.build)(store.var_builder(DType::F32, &dev))?;
        let named = store.named_vars()?;
        let trainable: Vec<(String, Var)> =
            named.into_iter().filter(|(k, _)| !is_buffer(k)).collect();
        let n_params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
        let mut drop_rng = StdRng::seed_from_u64(1);
        let run_inference = args.only.as_deref() != Some("training");
        let run_training = args.only.as_deref() != Some("inference");
        let mut inf = f64::NAN;
        if run_inference {
            inf = time_it(args.quick, || {
                let out = model.forward_t(&x, false, &mut drop_rng)?;
                out.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
                Ok(())
            })?;
            println!(
                "{}: {n_params} parameters, inference {:.1} ms/batch",
                m.name,
                inf * 1e3
            );
        }
        let mut train = f64::NAN;
        if run_training {
            let mut opt = Adam::new(
                vec![ParamGroup::new("all", trainable)],
                AdamConfig::adam(1e-3),
            )?;
            train = time_it(args.quick, || {
                let logits = model.forward_t(&x, true, &mut drop_rng)?;
                let loss = cross_entropy(&logits, &y, &CrossEntropyConfig::default())?;
                let grads = loss.backward()?;
                opt.step(&grads)?;
                Ok(())
            })?;
            println!("{}: training step {:.1} ms/batch", m.name, train * 1e3);
        }
        let torch_inf =
            peer_figure(&peers, &format!("{} inference", m.peer)).unwrap_or(m.baseline.0);
        let torch_train =
            peer_figure(&peers, &format!("{} training step", m.peer)).unwrap_or(m.baseline.1);
        table.push((
            m.name,
            BATCH as f64 / inf,
            torch_inf,
            BATCH as f64 / train,
            torch_train,
        ));
    }
    if args.only.is_some() {
        return Ok(());
    }
    println!();
    println!("| model | inference ours | PyTorch | ours/PyTorch | training ours | PyTorch | ours/PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, oi, ti, ot, tt) in table {
        println!(
            "| {name} | {oi:.0} | {ti:.0} | {:.2}x | {ot:.0} | {tt:.0} | {:.2}x |",
            oi / ti,
            ot / tt
        );
    }
    println!("(samples/s, median of timed runs; PyTorch: torch.set_num_threads(2))");
    Ok(())
}
