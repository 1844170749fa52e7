//! Trains a small MLP classifier on synthetic 2-D Gaussian blobs with canopy-train's loop:
//! seeded batches, AdamW with a warm-up + cosine schedule, logs, checkpoints, plots.
//!
//! ```text
//! cargo run -p canopy-train --example train_synthetic -- --out runs/synthetic
//! ```

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use canopy_nn::init::SeededVarMap;
use canopy_train::batch::{BatchConfig, Batcher};
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use canopy_train::metrics::ConfusionMatrix;
use canopy_train::optim::{param_groups, Adam, AdamConfig};
use canopy_train::plot::{plot_confusion, ConfusionNorm};
use canopy_train::schedule::{CosineAnnealingLr, LinearLr, Sequential};
use canopy_train::trainer::{Goal, Monitor, Phase, StepOutput, Trainer, TrainerConfig};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "Train a small classifier on synthetic blobs with canopy-train")]
struct Args {
    /// Output folder (logs, checkpoints, plots).
    #[arg(long)]
    out: PathBuf,
    /// Number of epochs.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Seed of data, weights and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const CLASSES: [&str; 4] = ["water", "forest", "crops", "urban"];

/// `n` samples: 2-D points around one centre per class.
fn blobs(n: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres = [(-2.0f32, -1.0f32), (2.0, -1.0), (0.0, 2.0), (0.5, 0.2)];
    (0..n)
        .map(|i| {
            let c = i % CLASSES.len();
            let (cx, cy) = centres[c];
            let x = vec![
                cx + 1.6 * (rng.random::<f32>() - 0.5),
                cy + 1.6 * (rng.random::<f32>() - 0.5),
            ];
            (x, c as u32)
        })
        .collect()
}

fn collate(items: Vec<(Vec<f32>, u32)>) -> canopy_train::Result<(Tensor, Tensor)> {
    let n = items.len();
    let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let y: Vec<u32> = items.iter().map(|(_, y)| *y).collect();
    Ok((
        Tensor::from_vec(x, (n, 2), &Device::Cpu)?,
        Tensor::from_vec(y, n, &Device::Cpu)?,
    ))
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Mlp {
            fc1: linear(2, 32, vb.pp("fc1"))?,
            fc2: linear(32, CLASSES.len(), vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

fn main() -> Result<()> {
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    let vm = SeededVarMap::new(args.seed);
    let model = Mlp::new(vm.var_builder(DType::F32, &Device::Cpu))?;
    let cfg = BatchConfig {
        batch_size: 32,
        seed: args.seed,
        ..Default::default()
    };
    let train = Batcher::new(blobs(1024, args.seed), collate, cfg.clone())?;
    let val = Batcher::new(
        blobs(256, args.seed + 1),
        collate,
        BatchConfig {
            shuffle: false,
            ..cfg
        },
    )?;

    let opt = Adam::new(
        param_groups(vm.named_vars()?, &[])?,
        AdamConfig::adamw(0.01),
    )?;
    let steps = args.epochs * train.len();
    let schedule = Sequential::warmup_then(
        LinearLr::warmup(0.01, 0.1, 32),
        32,
        CosineAnnealingLr {
            base: 0.01,
            t_max: steps.saturating_sub(32).max(1),
            eta_min: 1e-4,
        },
    );
    let mut tcfg = TrainerConfig::new(args.epochs, Some(args.out.clone()));
    tcfg.monitor = Monitor {
        metric: "val_accuracy".into(),
        goal: Goal::Max,
    };
    tcfg.meta.class_names = CLASSES.iter().map(|s| s.to_string()).collect();
    tcfg.meta.band_order = vec!["x".into(), "y".into()];
    let mut trainer = Trainer::new(opt, tcfg)?.with_schedule(schedule);

    let mut confusion = ConfusionMatrix::new(CLASSES.len())?;
    let ce = CrossEntropyConfig::default();
    let report = trainer.fit(
        &train,
        Some(&val),
        &mut confusion,
        |(x, y), _phase: Phase, cm| {
            let logits = model.forward(x)?; // (B, K)
            cm.update_from_logits(&logits, y, None)?;
            let loss = cross_entropy(&logits, y, &ce)?;
            Ok(StepOutput::new(loss, y.dims()[0]))
        },
    )?;
    // The metric holds the last validation epoch.
    let names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
    plot_confusion(
        args.out.join("confusion.png"),
        &confusion.to_rows(),
        &names,
        ConfusionNorm::Rows,
        "validation confusion matrix",
    )?;
    println!(
        "validation, last epoch:\n{}",
        confusion.to_table(Some(&CLASSES))
    );
    println!(
        "best val_accuracy {:.4} at epoch {}; {} steps; outputs in {}",
        report.best_value.unwrap_or(f64::NAN),
        report.best_epoch.unwrap_or(0),
        report.steps,
        args.out.display()
    );
    Ok(())
}
