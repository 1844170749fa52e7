//! The training loop on a tiny MLP classifier: reproducibility, bit-exact resume, logs,
//! checkpoints, early stopping, epoch metrics, frozen groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use canopy_nn::init::SeededVarMap;
use canopy_train::batch::{BatchConfig, Batcher};
use canopy_train::optim::{param_groups, Adam, AdamConfig, Optimizer};
use canopy_train::progress::ProgressMode;
use canopy_train::schedule::{CosineAnnealingLr, StepLr};
use canopy_train::trainer::{
    Clip, EarlyStopping, EpochMetric, FitReport, Goal, LogFormat, Monitor, Phase, ScheduleUnit,
    StepOutput, Trainer, TrainerConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Batch = (Tensor, Tensor);

/// Three Gaussian blobs in 2-D.
fn blobs(n: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres = [(-2.0f32, 0.0f32), (2.0, 0.0), (0.0, 2.5)];
    (0..n)
        .map(|i| {
            let c = (i % 3) as u32;
            let (cx, cy) = centres[c as usize];
            let x = cx + rng.random::<f32>() * 2.0 - 1.0;
            let y = cy + rng.random::<f32>() * 2.0 - 1.0;
            (vec![x, y], c)
        })
        .collect()
}

fn collate(items: Vec<(Vec<f32>, u32)>) -> canopy_train::Result<Batch> {
    let n = items.len();
    let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.clone()).collect();
    let y: Vec<u32> = items.iter().map(|(_, y)| *y).collect();
    Ok((
        Tensor::from_vec(x, (n, 2), &Device::Cpu)?,
        Tensor::from_vec(y, n, &Device::Cpu)?,
    ))
}

fn batcher(n: usize, seed: u64) -> Batcher<Vec<(Vec<f32>, u32)>, Batch> {
    let cfg = BatchConfig {
        batch_size: 16,
        seed,
        ..Default::default()
    };
    Batcher::new(blobs(n, seed), collate, cfg).unwrap()
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> Mlp {
        Mlp {
            fc1: linear(2, 16, vb.pp("backbone.fc1")).unwrap(),
            fc2: linear(16, 3, vb.pp("head.fc2")).unwrap(),
        }
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

fn cross_entropy(logits: &Tensor, y: &Tensor) -> canopy_train::Result<Tensor> {
    let logp = canopy_nn::ops::log_softmax(logits, 1)?;
    Ok(logp.gather(&y.unsqueeze(1)?, 1)?.neg()?.mean_all()?)
}

/// Counts correct predictions over an epoch.
#[derive(Default)]
struct Accuracy {
    correct: u64,
    total: u64,
    resets: usize,
}

impl EpochMetric for Accuracy {
    fn reset(&mut self) {
        self.correct = 0;
        self.total = 0;
        self.resets += 1;
    }
    fn summary(&self) -> Vec<(String, f64)> {
        vec![(
            "accuracy".into(),
            self.correct as f64 / self.total.max(1) as f64,
        )]
    }
}

fn step(
    net: &Mlp,
) -> impl FnMut(&Batch, Phase, &mut Accuracy) -> canopy_train::Result<StepOutput> + '_ {
    move |(x, y), _phase, acc| {
        let logits = net.forward(x)?;
        let pred = logits.argmax(1)?;
        acc.correct += pred
            .eq(y)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as u64;
        acc.total += y.dims()[0] as u64;
        let loss = cross_entropy(&logits, y)?;
        Ok(StepOutput::new(loss, y.dims()[0]))
    }
}

fn weights(vm: &SeededVarMap) -> Vec<Vec<f32>> {
    vm.named_vars()
        .unwrap()
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn quiet(epochs: usize, out: Option<&Path>) -> TrainerConfig {
    TrainerConfig {
        progress: ProgressMode::Quiet,
        ..TrainerConfig::new(epochs, out.map(Path::to_path_buf))
    }
}

fn run(
    seed: u64,
    epochs: usize,
    out: Option<&Path>,
    resume: bool,
) -> (FitReport, Vec<Vec<f32>>, Accuracy) {
    let vm = SeededVarMap::new(seed);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let groups = param_groups(vm.named_vars().unwrap(), &[]).unwrap();
    let opt = Adam::new(groups, AdamConfig::adamw(0.02)).unwrap();
    let mut trainer = Trainer::new(opt, quiet(epochs, out))
        .unwrap()
        .with_schedule(CosineAnnealingLr {
            base: 0.02,
            t_max: 40,
            eta_min: 0.0,
        });
    if resume {
        trainer
            .resume(out.unwrap().join("last.safetensors"))
            .unwrap();
    }
    let (train, val) = (batcher(96, 1), batcher(48, 2));
    let mut acc = Accuracy::default();
    let report = trainer
        .fit(&train, Some(&val), &mut acc, step(&net))
        .unwrap();
    (report, weights(&vm), acc)
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let (a, wa, acc) = run(5, 2, None, false);
    let (b, wb, _) = run(5, 2, None, false);
    let (c, wc, _) = run(6, 2, None, false);
    assert_eq!(a.history.epochs.len(), 2);
    let losses = |r: &FitReport| {
        r.history
            .epochs
            .iter()
            .map(|e| (e.metrics["train_loss"], e.metrics["val_loss"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(wa, wb);
    assert_ne!(wa, wc);
    assert_ne!(losses(&a), losses(&c));
    // The epoch metric was reset for each phase and summarised with its prefix.
    assert_eq!(acc.resets, 4);
    assert!(a.history.epochs[1].metrics.contains_key("val_accuracy"));
    assert_eq!(a.steps, 2 * 6);
}

#[test]
fn training_learns_and_resume_is_bit_exact() {
    let full_dir = tempfile::tempdir().unwrap();
    let (full, w_full, _) = run(3, 4, Some(full_dir.path()), false);
    let first = &full.history.epochs[0].metrics;
    let last = &full.history.epochs[3].metrics;
    assert!(
        last["train_loss"] < first["train_loss"],
        "{first:?} -> {last:?}"
    );
    assert!(last["val_accuracy"] > 0.9, "{last:?}");

    let dir = tempfile::tempdir().unwrap();
    // A stale log from another run is replaced, not appended to.
    std::fs::write(dir.path().join("epochs.csv"), "stale\n").unwrap();
    let (part, w_part, _) = run(3, 2, Some(dir.path()), false);
    assert_eq!(part.history.epochs.len(), 2);
    assert_ne!(w_part, w_full);
    let (resumed, w_resumed, _) = run(3, 4, Some(dir.path()), true);
    assert_eq!(w_resumed, w_full, "resumed weights differ");
    assert_eq!(resumed.history.epochs.len(), 4);
    for (a, b) in resumed.history.epochs.iter().zip(&full.history.epochs) {
        assert_eq!(a.metrics, b.metrics);
        assert_eq!(a.lr, b.lr);
    }
    assert_eq!(resumed.steps, full.steps);

    // Files: logs with a header and one row per epoch (appended across the resume).
    for f in [
        "epochs.csv",
        "epochs.jsonl",
        "last.safetensors",
        "last.json",
        "last.optim.safetensors",
        "last.optim.json",
        "best.safetensors",
        "best.json",
        "loss.png",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.path().join("epochs.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert_eq!(
        lines[0],
        "epoch,lr,seconds,train_accuracy,train_loss,val_accuracy,val_loss"
    );
    assert!(lines[4].starts_with("4,"));
    let jsonl = std::fs::read_to_string(dir.path().join("epochs.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["epoch"], 3);
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("best.json")).unwrap())
            .unwrap();
    assert_eq!(
        best["epoch"].as_u64().map(|e| e as usize),
        resumed.best_epoch
    );
}

#[test]
fn early_stopping_and_monitor_errors() {
    let vm = SeededVarMap::new(1);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let opt = Adam::new(
        param_groups(vm.named_vars().unwrap(), &[]).unwrap(),
        AdamConfig::adam(0.01),
    )
    .unwrap();
    let cfg = TrainerConfig {
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 10.0,
        }),
        monitor: Monitor {
            metric: "val_accuracy".into(),
            goal: Goal::Max,
        },
        ..quiet(10, None)
    };
    let mut t = Trainer::new(opt, cfg).unwrap();
    let (train, val) = (batcher(48, 1), batcher(24, 2));
    let r = t
        .fit(&train, Some(&val), &mut Accuracy::default(), step(&net))
        .unwrap();
    // No improvement can beat min_delta = 10: epoch 1 sets the best, epochs 2 and 3 do not.
    assert!(r.stopped_early);
    assert_eq!(r.history.epochs.len(), 3);
    assert_eq!(r.best_epoch, Some(1));

    // Monitoring val_loss without validation data is reported with the available metrics.
    let opt = Adam::new(
        param_groups(vm.named_vars().unwrap(), &[]).unwrap(),
        AdamConfig::adam(0.01),
    )
    .unwrap();
    let mut t = Trainer::new(opt, quiet(2, None)).unwrap();
    let err = t
        .fit(&train, None, &mut Accuracy::default(), step(&net))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("val_loss") && err.contains("train_loss"),
        "{err}"
    );
}

#[test]
fn non_finite_loss_is_an_error() {
    let vm = SeededVarMap::new(1);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let opt = Adam::new(
        param_groups(vm.named_vars().unwrap(), &[]).unwrap(),
        AdamConfig::adam(0.01),
    )
    .unwrap();
    let mut t = Trainer::new(opt, quiet(1, None)).unwrap();
    let train = batcher(32, 1);
    let err = t
        .fit(&train, None, &mut (), |(x, _y): &Batch, _, _: &mut ()| {
            let l = net.forward(x)?.sum_all()?;
            Ok(StepOutput::new((l * f64::NAN)?, 16))
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            canopy_train::Error::NonFiniteLoss {
                epoch: 1,
                step: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn step_hook_freezes_the_backbone_for_the_first_steps() {
    let vm = SeededVarMap::new(1);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let groups = param_groups(
        vm.named_vars().unwrap(),
        &[("backbone", "backbone."), ("head", "head.")],
    )
    .unwrap();
    let opt = Adam::new(groups, AdamConfig::adam(0.01)).unwrap();
    let cfg = TrainerConfig {
        monitor: Monitor {
            metric: "train_loss".into(),
            goal: Goal::Min,
        },
        ..quiet(1, None)
    };
    let mut t = Trainer::new(opt, cfg)
        .unwrap()
        .with_step_hook(|s, o: &mut Adam| {
            o.set_lr_scale("backbone", if s < 100 { 0.0 } else { 1.0 })
        });
    let get = |name: &str| {
        vm.named_vars()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (b0, h0) = (get("backbone.fc1.weight"), get("head.fc2.weight"));
    let train = batcher(64, 1);
    t.fit(&train, None, &mut Accuracy::default(), step(&net))
        .unwrap();
    assert_eq!(get("backbone.fc1.weight"), b0);
    assert_ne!(get("head.fc2.weight"), h0);
    assert!(t
        .optimizer()
        .params()
        .var_state("backbone.fc1.weight")
        .is_none());
    assert_eq!(
        t.optimizer()
            .params()
            .var_state("head.fc2.weight")
            .unwrap()
            .step,
        4
    );
}

#[test]
fn step_logs_clipping_and_per_epoch_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let vm = SeededVarMap::new(1);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let opt = Adam::new(
        param_groups(vm.named_vars().unwrap(), &[]).unwrap(),
        AdamConfig::adam(0.01),
    )
    .unwrap();
    let cfg = TrainerConfig {
        log: LogFormat::Csv,
        log_steps: true,
        clip: Some(Clip::Norm {
            max_norm: 0.01,
            norm_type: 2.0,
        }),
        schedule_unit: ScheduleUnit::Epoch,
        monitor: Monitor {
            metric: "train_loss".into(),
            goal: Goal::Min,
        },
        plot: false,
        ..quiet(3, Some(dir.path()))
    };
    let mut t = Trainer::new(opt, cfg).unwrap().with_schedule(StepLr {
        base: 0.1,
        step_size: 1,
        gamma: 0.5,
    });
    let train = batcher(32, 1);
    let r = t
        .fit(&train, None, &mut (), |(x, y): &Batch, _, _: &mut ()| {
            Ok(
                StepOutput::new(cross_entropy(&net.forward(x)?, y)?, y.dims()[0])
                    .with_metric("ones", 1.0),
            )
        })
        .unwrap();
    let lrs: Vec<f64> = r.history.epochs.iter().map(|e| e.lr).collect();
    assert_eq!(lrs, [0.1, 0.05, 0.025]);
    assert_eq!(r.history.epochs[0].metrics["train_ones"], 1.0);
    let csv = std::fs::read_to_string(dir.path().join("steps.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,step,lr,loss,grad_norm,ones");
    assert_eq!(lines.len(), 1 + 3 * 2);
    assert!(lines[3].starts_with("2,2,0.05,"), "{}", lines[3]);
    // Only the CSV format was asked for, and no plot.
    assert!(!dir.path().join("epochs.jsonl").exists());
    assert!(!dir.path().join("steps.jsonl").exists());
    assert!(!dir.path().join("loss.png").exists());
    // The logged norm is the pre-clipping norm, far above max_norm.
    let norm: f64 = lines[1].split(',').nth(4).unwrap().parse().unwrap();
    assert!(norm > 0.01, "{norm}");
}

#[test]
fn empty_training_data_is_an_error() {
    let vm = SeededVarMap::new(1);
    let net = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu));
    let opt = Adam::new(
        param_groups(vm.named_vars().unwrap(), &[]).unwrap(),
        AdamConfig::adam(0.01),
    )
    .unwrap();
    let mut t = Trainer::new(opt, quiet(1, None)).unwrap();
    let none: Vec<Batch> = Vec::new();
    let err = t
        .fit(&none, None, &mut (), |(x, y): &Batch, _, _: &mut ()| {
            Ok(StepOutput::new(
                cross_entropy(&net.forward(x)?, y)?,
                y.dims()[0],
            ))
        })
        .unwrap_err();
    assert!(err.to_string().contains("no samples"), "{err}");
}
