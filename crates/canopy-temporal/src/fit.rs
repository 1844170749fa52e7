//! Training and evaluating a [`SeriesClassifier`] on in-memory series: the loop the command-line
//! tool and the examples share.
//!
//! [`fit`] runs canopy-train's [`Trainer`] with the reference recipe's optimizer (Adam with
//! coupled L2 weight decay, see [`crate::recipe`]), seeded shuffled batches, cross-entropy on the
//! logits and a [`ConfusionMatrix`] as the epoch metric (accuracy, kappa, mIoU, macro F1 in the
//! logs); with an output directory it writes the trainer's logs, `loss.png` and checkpoints.
//! [`predict_logits`] and [`evaluate`] run a model in evaluation mode in batches.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use canopy_nn::SeededVarMap;
use canopy_train::batch::{BatchConfig, Batcher};
use canopy_train::checkpoint::CheckpointMeta;
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use canopy_train::metrics::ConfusionMatrix;
use canopy_train::optim::{param_groups, Adam, AdamConfig};
use canopy_train::progress::ProgressMode;
use canopy_train::trainer::{FitReport, Goal, Monitor, Phase, StepOutput, Trainer, TrainerConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{Error, Recipe, Result, SeriesClassifier};

/// Series with their class labels, in memory.
#[derive(Debug, Clone)]
pub struct LabelledSeries {
    /// The series, `(N, T, C)` f32 (normalised as the model expects).
    pub x: Tensor,
    /// One class index per series.
    pub y: Vec<u32>,
}

impl LabelledSeries {
    /// Checks that `x` is `(N, T, C)` with one label per series.
    ///
    /// # Errors
    /// [`Error::Shape`] naming both sizes.
    pub fn new(x: Tensor, y: Vec<u32>) -> Result<Self> {
        let n = x.dims3().map(|d| d.0).map_err(|_| Error::Shape {
            model: "LabelledSeries",
            expected: "series (N, T, C)".into(),
            actual: format!("{:?}", x.dims()),
        })?;
        if n != y.len() {
            return Err(Error::Shape {
                model: "LabelledSeries",
                expected: format!("{n} labels, one per series"),
                actual: format!("{} labels", y.len()),
            });
        }
        Ok(LabelledSeries { x, y })
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// How [`fit`] trains.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Optimizer settings and batch size (epochs are taken from [`epochs`](Self::epochs)).
    pub recipe: Recipe,
    /// Passes over the training series.
    pub epochs: usize,
    /// Seeds batch order and dropout.
    pub seed: u64,
    /// Where the trainer writes logs, `loss.png` and checkpoints (`None`: nothing written).
    pub out_dir: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressMode,
    /// Stored in the checkpoints' JSON sidecar (model config, class names, bands,
    /// normalisation).
    pub meta: CheckpointMeta,
}

impl FitOptions {
    /// The recipe's settings, `epochs` epochs, quiet, nothing written.
    pub fn new(recipe: Recipe, epochs: usize, seed: u64) -> Self {
        FitOptions {
            recipe,
            epochs,
            seed,
            out_dir: None,
            progress: ProgressMode::Quiet,
            meta: CheckpointMeta::default(),
        }
    }
}

/// Gathers the series `idx` of `data` into a batch.
fn gather(data: &LabelledSeries, idx: &[usize]) -> canopy_train::Result<(Tensor, Tensor)> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::from_vec(ids, idx.len(), data.x.device())?;
    let x = data.x.index_select(&ids, 0)?;
    let y: Vec<u32> = idx.iter().filter_map(|&i| data.y.get(i).copied()).collect();
    let n = y.len();
    Ok((x, Tensor::from_vec(y, n, data.x.device())?))
}

fn batcher(
    data: &LabelledSeries,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
) -> Result<Batcher<Vec<usize>, (Tensor, Tensor)>> {
    let shared = data.clone();
    Ok(Batcher::new(
        (0..data.len()).collect::<Vec<usize>>(),
        move |idx: Vec<usize>| gather(&shared, &idx),
        BatchConfig {
            batch_size,
            seed,
            shuffle,
            ..Default::default()
        },
    )?)
}

/// Trains `model` (whose variables live in `vars`) on `train`, validating on `val` after every
/// epoch; returns the trainer's report (per-epoch losses, accuracy, kappa, ...).
///
/// # Errors
/// Empty data, labels outside `0..K`, a diverging loss, failing writes into `out_dir`.
pub fn fit(
    model: &dyn SeriesClassifier,
    vars: &SeededVarMap,
    train: &LabelledSeries,
    val: Option<&LabelledSeries>,
    opts: &FitOptions,
) -> Result<FitReport> {
    if train.is_empty() {
        return Err(Error::Config {
            model: "fit",
            message: "no training series".into(),
        });
    }
    let k = model.num_classes();
    let train_b = batcher(train, opts.recipe.batch_size, opts.seed, true)?;
    let val_b = val
        .map(|v| batcher(v, opts.recipe.batch_size.max(512), opts.seed, false))
        .transpose()?;
    let adam = AdamConfig {
        weight_decay: opts.recipe.weight_decay,
        ..AdamConfig::adam(opts.recipe.lr)
    };
    let opt = Adam::new(param_groups(vars.named_vars()?, &[])?, adam)?;
    let mut tcfg = TrainerConfig::new(opts.epochs, opts.out_dir.clone());
    tcfg.progress = opts.progress;
    tcfg.meta = opts.meta.clone();
    tcfg.plot = opts.out_dir.is_some();
    tcfg.monitor = if val.is_some() {
        Monitor {
            metric: "val_accuracy".into(),
            goal: Goal::Max,
        }
    } else {
        Monitor {
            metric: "train_loss".into(),
            goal: Goal::Min,
        }
    };
    let mut trainer = Trainer::new(opt, tcfg)?;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_d00d);
    let mut confusion = ConfusionMatrix::new(k)?;
    let ce = CrossEntropyConfig::default();
    let report = trainer.fit(
        &train_b,
        val_b.as_ref(),
        &mut confusion,
        |(x, y), phase: Phase, cm| {
            let training = phase == Phase::Train;
            let logits = model.forward_t(x, training, &mut rng).map_err(|e| {
                canopy_train::Error::InvalidArgument {
                    op: "fit",
                    message: e.to_string(),
                }
            })?;
            cm.update_from_logits(&logits, y, None)?;
            let loss = cross_entropy(&logits, y, &ce)?;
            Ok(StepOutput::new(loss, y.dims()[0]))
        },
    )?;
    Ok(report)
}

/// Logits of `x` in evaluation mode, `batch` series at a time.
///
/// # Shapes
/// `x`: `(N, T, C)` -> `(N, K)`.
///
/// # Errors
/// As the model's forward pass.
pub fn predict_logits(model: &dyn SeriesClassifier, x: &Tensor, batch: usize) -> Result<Tensor> {
    let n = x.dims3().map(|d| d.0).map_err(|_| Error::Shape {
        model: "predict_logits",
        expected: "series (N, T, C)".into(),
        actual: format!("{:?}", x.dims()),
    })?;
    let mut rng = StdRng::seed_from_u64(0);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let logits = model.forward_t(&x.narrow(0, start, len)?, false, &mut rng)?;
        parts.push(logits.detach());
        start += len;
    }
    if parts.is_empty() {
        return Ok(Tensor::zeros(
            (0, model.num_classes()),
            DType::F32,
            x.device(),
        )?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The confusion matrix of `model` on `data` (evaluation mode).
///
/// # Errors
/// As [`predict_logits`]; labels outside `0..K`.
pub fn evaluate(model: &dyn SeriesClassifier, data: &LabelledSeries) -> Result<ConfusionMatrix> {
    let logits = predict_logits(model, &data.x, 512)?;
    let mut cm = ConfusionMatrix::new(model.num_classes())?;
    let y = Tensor::from_vec(data.y.clone(), data.len(), logits.device())?;
    cm.update_from_logits(&logits, &y, None)?;
    Ok(cm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use canopy_nn::Linear;
    use rand::{Rng, RngCore};

    /// Mean over time, then a linear layer: enough for series told apart by their level.
    struct MeanLinear {
        head: Linear,
        k: usize,
        c: usize,
    }

    impl SeriesClassifier for MeanLinear {
        fn forward_t(&self, x: &Tensor, _train: bool, _rng: &mut dyn RngCore) -> Result<Tensor> {
            Ok(candle_core::Module::forward(&self.head, &x.mean(1)?)?)
        }
        fn num_classes(&self) -> usize {
            self.k
        }
        fn input_dim(&self) -> usize {
            self.c
        }
    }

    fn toy(n: usize, seed: u64) -> anyhow::Result<LabelledSeries> {
        // class k: values around k - 1 in band 0, noise in band 1
        let mut rng = StdRng::seed_from_u64(seed);
        let (t, c) = (8, 2);
        let mut x = Vec::with_capacity(n * t * c);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let k = (i % 3) as u32;
            y.push(k);
            for _ in 0..t {
                x.push(k as f32 - 1.0 + rng.random_range(-0.3..0.3));
                x.push(rng.random_range(-1.0..1.0));
            }
        }
        Ok(LabelledSeries::new(
            Tensor::from_vec(x, (n, t, c), &Device::Cpu)?,
            y,
        )?)
    }

    #[test]
    fn fit_learns_a_separable_problem_and_evaluate_agrees() -> anyhow::Result<()> {
        let vars = SeededVarMap::new(3);
        let vb = vars.var_builder(DType::F32, &Device::Cpu);
        let model = MeanLinear {
            head: canopy_nn::linear(2, 3, true, vb.pp("head"))?,
            k: 3,
            c: 2,
        };
        let (train, val) = (toy(300, 1)?, toy(90, 2)?);
        let before = evaluate(&model, &val)?.accuracy();
        let recipe = Recipe {
            lr: 0.05,
            weight_decay: 0.0,
            batch_size: 32,
            epochs: 10,
            tuned: false,
        };
        let report = fit(
            &model,
            &vars,
            &train,
            Some(&val),
            &FitOptions::new(recipe, 10, 0),
        )?;
        assert_eq!(report.history.epochs.len(), 10);
        assert_eq!(report.steps, 10 * 300_u64.div_ceil(32));
        let cm = evaluate(&model, &val)?;
        assert!(
            cm.accuracy() > 0.95,
            "accuracy {} (before {before})",
            cm.accuracy()
        );
        let last = report
            .history
            .epochs
            .last()
            .and_then(|e| e.metrics.get("val_accuracy"));
        assert_eq!(last.copied(), Some(cm.accuracy()));
        assert_eq!(predict_logits(&model, &val.x, 7)?.dims(), &[90, 3]);
        Ok(())
    }

    #[test]
    fn mismatched_labels_are_a_shape_error() -> anyhow::Result<()> {
        let x = Tensor::zeros((4, 3, 2), DType::F32, &Device::Cpu)?;
        let e = LabelledSeries::new(x, vec![0; 3])
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("4 labels"));
        Ok(())
    }
}
