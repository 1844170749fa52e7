//! Configuration and records of the training loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointMeta;
use crate::progress::ProgressMode;

/// Whether a pass trains or validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Training: the model should use dropout / batch statistics; gradients are taken.
    Train,
    /// Validation: no update.
    Val,
}

impl Phase {
    /// `true` for [`Phase::Train`] (what `ModuleT::forward_t` takes).
    pub fn is_train(self) -> bool {
        self == Phase::Train
    }

    /// `"train"` or `"val"`, the prefix of this phase's metric names.
    pub fn prefix(self) -> &'static str {
        match self {
            Phase::Train => "train",
            Phase::Val => "val",
        }
    }
}

/// What the step closure returns for one batch.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The scalar loss (its graph is back-propagated in the training phase).
    pub loss: Tensor,
    /// Number of samples in the batch (weights the epoch means).
    pub batch_size: usize,
    /// Per-batch scalar metrics, averaged over the epoch weighted by batch size.
    pub metrics: Vec<(String, f64)>,
}

impl StepOutput {
    /// A loss for a batch of `batch_size` samples, no metrics.
    pub fn new(loss: Tensor, batch_size: usize) -> Self {
        StepOutput {
            loss,
            batch_size,
            metrics: Vec::new(),
        }
    }

    /// Adds a per-batch metric.
    pub fn with_metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }
}

/// A metric accumulated over an epoch (e.g. a confusion matrix): the trainer resets it before
/// each phase, the step closure feeds it, and its summary joins the epoch's metrics prefixed
/// with `train_` / `val_`.
pub trait EpochMetric {
    /// Clears the accumulated state.
    fn reset(&mut self);
    /// Named values for the epoch so far (e.g. `("accuracy", 0.93)`; see the
    /// implementation for [`crate::ConfusionMatrix`]).
    fn summary(&self) -> Vec<(String, f64)>;
}

/// No epoch metric.
impl EpochMetric for () {
    fn reset(&mut self) {}
    fn summary(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Whether smaller or larger values of the monitored metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    /// Lower is better (losses).
    Min,
    /// Higher is better (accuracy, IoU).
    Max,
}

/// The metric deciding the best checkpoint and early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    /// Full metric name, e.g. `"val_loss"` or `"val_accuracy"`.
    pub metric: String,
    /// Direction of improvement.
    pub goal: Goal,
}

impl Default for Monitor {
    /// `val_loss`, lower is better.
    fn default() -> Self {
        Monitor {
            metric: "val_loss".into(),
            goal: Goal::Min,
        }
    }
}

/// Stop when the monitored metric has not improved by more than `min_delta` for `patience`
/// epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement tolerated.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

/// Which log files the trainer writes into its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogFormat {
    /// `epochs.csv` (and `steps.csv` with step logging).
    Csv,
    /// `epochs.jsonl` (and `steps.jsonl`).
    Jsonl,
    /// Both.
    #[default]
    Both,
    /// No log files.
    None,
}

/// When the learning-rate schedule advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ScheduleUnit {
    /// Every optimizer step (`lr(step)`).
    #[default]
    Step,
    /// Every epoch (`lr(epoch)`, epoch 0-based).
    Epoch,
}

/// Gradient clipping applied before every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Clip {
    /// [`crate::clip::clip_grad_norm`] with this maximum norm and norm type.
    Norm {
        /// Maximum global norm.
        max_norm: f64,
        /// Norm type (2 for the Euclidean norm).
        norm_type: f64,
    },
    /// [`crate::clip::clip_grad_value`] with this bound.
    Value(f64),
}

/// Settings of a [`crate::trainer::Trainer`].
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// Total number of epochs (a resumed run continues up to this count).
    pub epochs: usize,
    /// Folder for logs, checkpoints and plots; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Log files to write.
    pub log: LogFormat,
    /// Also log every training step.
    pub log_steps: bool,
    /// Metric for the best checkpoint and early stopping.
    pub monitor: Monitor,
    /// Early stopping, if wanted.
    pub early_stopping: Option<EarlyStopping>,
    /// Progress display.
    pub progress: ProgressMode,
    /// When the schedule advances.
    pub schedule_unit: ScheduleUnit,
    /// Gradient clipping, if wanted.
    pub clip: Option<Clip>,
    /// Draw `loss.png` (train vs val loss per epoch) in `out_dir` at the end of `fit`.
    pub plot: bool,
    /// Template of every checkpoint's sidecar: model config, class names, band order,
    /// normalisation (the trainer fills epoch, step, metrics and the rest).
    pub meta: CheckpointMeta,
}

impl TrainerConfig {
    /// `epochs` epochs writing into `out_dir` (or nowhere), with the defaults: both log formats,
    /// no step logs, monitor `val_loss` (min), no early stopping, automatic progress display,
    /// per-step schedule, no clipping, loss plot on.
    pub fn new(epochs: usize, out_dir: Option<PathBuf>) -> Self {
        TrainerConfig {
            epochs,
            out_dir,
            log: LogFormat::Both,
            log_steps: false,
            monitor: Monitor::default(),
            early_stopping: None,
            progress: ProgressMode::Auto,
            schedule_unit: ScheduleUnit::Step,
            clip: None,
            plot: true,
            meta: CheckpointMeta::default(),
        }
    }
}

/// The summary of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Base learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time of the epoch (training + validation).
    pub seconds: f64,
    /// `train_loss`, `val_loss`, and every other metric with its phase prefix.
    pub metrics: BTreeMap<String, f64>,
}

/// Every epoch so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The records, in order.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// `(epoch, value)` of metric `key` for the epochs that have it.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.epochs
            .iter()
            .filter_map(|r| r.metrics.get(key).map(|v| (r.epoch as f64, *v)))
            .collect()
    }
}

/// What [`crate::trainer::Trainer::fit`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Every epoch (including those of a resumed earlier run).
    pub history: History,
    /// The epoch with the best monitored value (1-based).
    pub best_epoch: Option<usize>,
    /// That value.
    pub best_value: Option<f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Optimizer steps taken in total.
    pub steps: u64,
}
