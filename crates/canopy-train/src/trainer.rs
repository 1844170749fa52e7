//! The training loop: epochs of training and validation over [`BatchSource`]s, a user closure
//! for the forward pass and loss (so any model fits), LR schedules, gradient clipping, CSV/JSONL
//! logs, best and last checkpoints, early stopping, resume and a progress display.
//!
//! The step closure receives the batch, the [`Phase`] and the [`EpochMetric`] of the run, and
//! returns a [`StepOutput`] (loss tensor, batch size, optional per-batch metrics). The trainer
//! back-propagates the loss in the training phase, optionally clips, sets the scheduled learning
//! rate and steps the optimizer.
//!
//! Files written into `out_dir`: `epochs.csv` / `epochs.jsonl` (one row per epoch),
//! `steps.csv` / `steps.jsonl` (with `log_steps`), `last.safetensors` + `last.json` +
//! `last.optim.safetensors` + `last.optim.json` (every epoch), `best.safetensors` + `best.json`
//! (when the monitored metric improves) and `loss.png`.
//!
//! A run that starts at epoch 0 replaces the log files it finds in `out_dir`; a resumed run
//! appends to them.
//!
//! Resuming from `last.safetensors` restores weights, optimizer state, step count, history, best
//! value and early-stopping counter; with a seeded [`crate::batch::Batcher`] the resumed run
//! continues exactly as the uninterrupted one would have.

mod config;
mod log;

pub use config::{
    Clip, EarlyStopping, EpochMetric, EpochRecord, FitReport, Goal, History, LogFormat, Monitor,
    Phase, ScheduleUnit, StepOutput, TrainerConfig,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Var};
use serde::{Deserialize, Serialize};

use crate::batch::BatchSource;
use crate::checkpoint::{load_checkpoint_into, save_checkpoint, CheckpointMeta};
use crate::clip::{clip_grad_norm, clip_grad_value};
use crate::error::invalid;
use crate::optim::{Optimizer, OptimizerState};
use crate::progress::Progress;
use crate::schedule::LrSchedule;
use crate::{Error, Result};
use log::{Cell, Logger, Row};

/// What the trainer keeps in a checkpoint's `extra` field to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    epoch: usize,
    step: u64,
    best: Option<f64>,
    best_epoch: Option<usize>,
    bad_epochs: usize,
    history: History,
}

type StepHook<O> = Box<dyn FnMut(u64, &mut O) -> Result<()>>;

/// The training loop; see the module docs.
pub struct Trainer<O: Optimizer> {
    cfg: TrainerConfig,
    opt: O,
    schedule: Option<Box<dyn LrSchedule>>,
    hook: Option<StepHook<O>>,
    vars: Vec<(String, Var)>,
    state: TrainerState,
}

impl<O: Optimizer> std::fmt::Debug for Trainer<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("cfg", &self.cfg)
            .field("optimizer", &self.opt.kind())
            .field("vars", &self.vars.len())
            .field("epoch", &self.state.epoch)
            .field("step", &self.state.step)
            .finish()
    }
}

#[derive(Default)]
struct Accum {
    n: usize,
    loss: f64,
    metrics: BTreeMap<String, f64>,
}

impl Accum {
    fn add(&mut self, loss: f64, out_bs: usize, metrics: &[(String, f64)]) {
        let w = out_bs as f64;
        self.n += out_bs;
        self.loss += loss * w;
        for (k, v) in metrics {
            *self.metrics.entry(k.clone()).or_insert(0.0) += v * w;
        }
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.n.max(1) as f64
    }

    fn first_metric(&self) -> Option<(&str, f64)> {
        let n = self.n.max(1) as f64;
        self.metrics.iter().next().map(|(k, v)| (k.as_str(), v / n))
    }

    fn into_metrics(self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        let n = self.n.max(1) as f64;
        out.insert(format!("{prefix}_loss"), self.loss / n);
        for (k, v) in self.metrics {
            out.insert(format!("{prefix}_{k}"), v / n);
        }
    }
}

impl<O: Optimizer> Trainer<O> {
    /// A trainer stepping `opt`; checkpoints hold the optimizer's parameters under their names.
    ///
    /// # Errors
    /// When `cfg.epochs` is 0 or the output folder cannot be created.
    pub fn new(opt: O, cfg: TrainerConfig) -> Result<Self> {
        if cfg.epochs == 0 {
            return Err(invalid("Trainer", "epochs must be at least 1"));
        }
        if let Some(dir) = &cfg.out_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let vars = opt.params().named_vars().cloned().collect();
        Ok(Trainer {
            cfg,
            opt,
            schedule: None,
            hook: None,
            vars,
            state: TrainerState::default(),
        })
    }

    /// Sets the learning rate from `schedule` (per step or epoch, see
    /// [`TrainerConfig::schedule_unit`]).
    pub fn with_schedule(mut self, schedule: impl LrSchedule + 'static) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    /// Calls `hook(step, optimizer)` before every optimizer step, after the schedule, e.g. to
    /// freeze a group for the first steps:
    /// `|s, o| o.set_lr_scale("backbone", if s < 1000 { 0.0 } else { 1.0 })`.
    pub fn with_step_hook(mut self, hook: impl FnMut(u64, &mut O) -> Result<()> + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Saves `vars` in checkpoints instead of the optimizer's parameters (e.g. every variable of
    /// a `VarMap`, including buffers and frozen weights the optimizer does not see).
    pub fn with_checkpoint_vars(mut self, vars: Vec<(String, Var)>) -> Self {
        self.vars = vars;
        self
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &O {
        &self.opt
    }

    /// The optimizer, mutably.
    pub fn optimizer_mut(&mut self) -> &mut O {
        &mut self.opt
    }

    /// The epochs run so far.
    pub fn history(&self) -> &History {
        &self.state.history
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// Restores weights, optimizer state and loop state from a checkpoint written by this
    /// trainer (normally `out_dir/last.safetensors`); the next [`Trainer::fit`] continues after
    /// its epoch. Returns the checkpoint's sidecar.
    ///
    /// # Errors
    /// When the checkpoint, its sidecar or its optimizer state is missing or does not fit the
    /// model and optimizer (the error names the file and the key).
    pub fn resume(&mut self, checkpoint: impl AsRef<Path>) -> Result<CheckpointMeta> {
        let path = checkpoint.as_ref();
        let meta = load_checkpoint_into(path, &self.vars)?;
        let file_err = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        let state: TrainerState = serde_json::from_value(meta.extra.clone())
            .map_err(|e| file_err(format!("no trainer state in the sidecar: {e}")))?;
        let opt_file = meta
            .optimizer_state
            .as_ref()
            .ok_or_else(|| file_err("the sidecar names no optimizer state".into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let opt_state = OptimizerState::load(dir.join(opt_file), &device)?;
        self.opt.load_state(&opt_state)?;
        self.state = state;
        Ok(meta)
    }

    fn out(&self, name: &str) -> Option<PathBuf> {
        self.cfg.out_dir.as_ref().map(|d| d.join(name))
    }

    /// The epoch and step loggers; a run starting at epoch 0 replaces old log files, a resumed
    /// run appends to them.
    fn loggers(&self) -> Result<(Logger, Logger)> {
        let (csv, jsonl) = match self.cfg.log {
            LogFormat::Csv => (true, false),
            LogFormat::Jsonl => (false, true),
            LogFormat::Both => (true, true),
            LogFormat::None => (false, false),
        };
        let pick = |on: bool, name: &str| if on { self.out(name) } else { None };
        let steps_on = self.cfg.log_steps;
        let fresh = self.state.epoch == 0;
        Ok((
            Logger::new(pick(csv, "epochs.csv"), pick(jsonl, "epochs.jsonl"), fresh)?,
            Logger::new(
                pick(csv && steps_on, "steps.csv"),
                pick(jsonl && steps_on, "steps.jsonl"),
                fresh,
            )?,
        ))
    }

    /// Trains from the current epoch up to `cfg.epochs`, validating on `val` after each epoch
    /// when given. `step` computes the loss of one batch; see the module docs.
    ///
    /// # Errors
    /// When a batch, the step closure, backward, the optimizer or a file write fails, when a
    /// phase yields no samples, when the loss is not finite ([`Error::NonFiniteLoss`]), or when the monitored metric is not among
    /// the epoch's metrics (the error lists them).
    pub fn fit<S, M, F>(
        &mut self,
        train: &S,
        val: Option<&S>,
        metric: &mut M,
        mut step: F,
    ) -> Result<FitReport>
    where
        S: BatchSource,
        M: EpochMetric,
        F: FnMut(&S::Batch, Phase, &mut M) -> Result<StepOutput>,
    {
        let (mut epoch_log, mut step_log) = self.loggers()?;
        let mut progress = Progress::new(self.cfg.progress);
        let mut stopped_early = false;
        let epochs = self.cfg.epochs;
        for epoch in self.state.epoch..epochs {
            let started = Instant::now();
            if let (Some(s), ScheduleUnit::Epoch) = (&self.schedule, self.cfg.schedule_unit) {
                self.opt.set_learning_rate(s.lr(epoch));
            }
            let mut metrics = BTreeMap::new();

            // Training.
            metric.reset();
            progress.start(
                format!("epoch {}/{epochs} train", epoch + 1),
                train.num_batches(),
            );
            let mut acc = Accum::default();
            for batch in train.batches(epoch)? {
                let batch = batch?;
                if let (Some(s), ScheduleUnit::Step) = (&self.schedule, self.cfg.schedule_unit) {
                    self.opt
                        .set_learning_rate(s.lr(step_index(self.state.step)));
                }
                if let Some(h) = &mut self.hook {
                    h(self.state.step, &mut self.opt)?;
                }
                let out = step(&batch, Phase::Train, metric)?;
                let loss = loss_value(&out, epoch, self.state.step)?;
                let mut grads = out.loss.backward()?;
                let grad_norm = match self.cfg.clip {
                    Some(Clip::Norm {
                        max_norm,
                        norm_type,
                    }) => Some(clip_grad_norm(
                        &mut grads,
                        self.opt.params().named_vars().map(|(_, v)| v),
                        max_norm,
                        norm_type,
                    )?),
                    Some(Clip::Value(c)) => {
                        clip_grad_value(
                            &mut grads,
                            self.opt.params().named_vars().map(|(_, v)| v),
                            c,
                        )?;
                        None
                    }
                    None => None,
                };
                self.opt.step(&grads)?;
                acc.add(loss, out.batch_size, &out.metrics);
                if self.cfg.log_steps {
                    let mut row: Row = vec![
                        ("epoch".into(), Cell::Int(epoch as u64 + 1)),
                        ("step".into(), Cell::Int(self.state.step)),
                        ("lr".into(), Cell::Float(self.opt.learning_rate())),
                        ("loss".into(), Cell::Float(loss)),
                    ];
                    if let Some(n) = grad_norm {
                        row.push(("grad_norm".into(), Cell::Float(n)));
                    }
                    row.extend(
                        out.metrics
                            .iter()
                            .map(|(k, v)| (k.clone(), Cell::Float(*v))),
                    );
                    step_log.write(&row)?;
                }
                self.state.step += 1;
                progress.step(out.batch_size, acc.mean_loss(), acc.first_metric());
            }
            if acc.n == 0 {
                return Err(invalid(
                    "Trainer::fit",
                    format!("epoch {}: the training data gave no samples", epoch + 1),
                ));
            }
            let speed = progress.samples_per_second();
            let train_loss = acc.mean_loss();
            acc.into_metrics("train", &mut metrics);
            add_summary(metric, "train", &mut metrics);
            progress.finish(&format!("loss {train_loss:.4} {speed:.0} samples/s"));

            // Validation.
            if let Some(val) = val {
                metric.reset();
                progress.start(
                    format!("epoch {}/{epochs} val", epoch + 1),
                    val.num_batches(),
                );
                let mut acc = Accum::default();
                for batch in val.batches(epoch)? {
                    let batch = batch?;
                    let out = step(&batch, Phase::Val, metric)?;
                    let loss = loss_value(&out, epoch, self.state.step)?;
                    acc.add(loss, out.batch_size, &out.metrics);
                    progress.step(out.batch_size, acc.mean_loss(), acc.first_metric());
                }
                if acc.n == 0 {
                    return Err(invalid(
                        "Trainer::fit",
                        format!("epoch {}: the validation data gave no samples", epoch + 1),
                    ));
                }
                let val_loss = acc.mean_loss();
                acc.into_metrics("val", &mut metrics);
                add_summary(metric, "val", &mut metrics);
                progress.finish(&format!("loss {val_loss:.4}"));
            }

            let record = EpochRecord {
                epoch: epoch + 1,
                lr: self.opt.learning_rate(),
                seconds: started.elapsed().as_secs_f64(),
                metrics,
            };
            let improved = self.update_monitor(&record)?;
            self.state.epoch = epoch + 1;
            self.state.history.epochs.push(record.clone());
            self.save_checkpoints(&record, improved)?;
            let mut row: Row = vec![
                ("epoch".into(), Cell::Int(record.epoch as u64)),
                ("lr".into(), Cell::Float(record.lr)),
                ("seconds".into(), Cell::Float(record.seconds)),
            ];
            row.extend(
                record
                    .metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), Cell::Float(*v))),
            );
            epoch_log.write(&row)?;
            if let Some(es) = self.cfg.early_stopping {
                if self.state.bad_epochs >= es.patience.max(1) {
                    stopped_early = true;
                    break;
                }
            }
        }
        if self.cfg.plot {
            if let Some(path) = self.out("loss.png") {
                crate::plot::plot_history(&path, &self.state.history, "loss")?;
            }
        }
        Ok(FitReport {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_value: self.state.best,
            stopped_early,
            steps: self.state.step,
        })
    }

    fn update_monitor(&mut self, record: &EpochRecord) -> Result<bool> {
        let m = &self.cfg.monitor;
        let v = *record.metrics.get(&m.metric).ok_or_else(|| {
            invalid(
                "Trainer::fit",
                format!(
                    "monitored metric {:?} is not among the epoch's metrics {:?} (validation data given?)",
                    m.metric,
                    record.metrics.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        let delta = self.cfg.early_stopping.map(|e| e.min_delta).unwrap_or(0.0);
        let better = match (self.state.best, m.goal) {
            (None, _) => !v.is_nan(),
            (Some(b), Goal::Min) => v < b - delta,
            (Some(b), Goal::Max) => v > b + delta,
        };
        if better {
            self.state.best = Some(v);
            self.state.best_epoch = Some(record.epoch);
            self.state.bad_epochs = 0;
        } else {
            self.state.bad_epochs += 1;
        }
        Ok(better)
    }

    fn save_checkpoints(&self, record: &EpochRecord, improved: bool) -> Result<()> {
        let (Some(last), Some(opt_path)) = (
            self.out("last.safetensors"),
            self.out("last.optim.safetensors"),
        ) else {
            return Ok(());
        };
        let mut meta = self.cfg.meta.clone();
        meta.epoch = record.epoch;
        meta.step = self.state.step;
        meta.metrics = record.metrics.clone();
        meta.extra = serde_json::to_value(&self.state).map_err(|e| {
            invalid(
                "Trainer",
                format!("cannot serialise the trainer state: {e}"),
            )
        })?;
        self.opt.state()?.save(&opt_path)?;
        meta.optimizer_state = Some("last.optim.safetensors".into());
        save_checkpoint(&last, &self.vars, &meta)?;
        if improved {
            if let Some(best) = self.out("best.safetensors") {
                meta.optimizer_state = None;
                save_checkpoint(&best, &self.vars, &meta)?;
            }
        }
        Ok(())
    }
}

fn step_index(step: u64) -> usize {
    usize::try_from(step).unwrap_or(usize::MAX)
}

fn loss_value(out: &StepOutput, epoch: usize, step: u64) -> Result<f64> {
    let value = out
        .loss
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let [value] = value.as_slice() else {
        return Err(crate::error::shape(
            "Trainer::fit",
            "a scalar loss (mean the per-sample losses)",
            out.loss.dims(),
        ));
    };
    if !value.is_finite() {
        return Err(Error::NonFiniteLoss {
            epoch: epoch + 1,
            step,
            value: *value,
        });
    }
    Ok(*value)
}

fn add_summary<M: EpochMetric>(metric: &M, prefix: &str, out: &mut BTreeMap<String, f64>) {
    for (k, v) in metric.summary() {
        out.insert(format!("{prefix}_{k}"), v);
    }
}
