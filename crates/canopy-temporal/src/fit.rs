//! Training and evaluating a [`SeriesClassifier`] on in-memory series: the loop the command-line
//! tool and the examples share.
//!
//! [`fit`] runs canopy-train's [`Trainer`] with the reference recipe's optimizer (Adam with
//! coupled L2 weight decay, see [`crate::recipe`]), seeded shuffled batches, cross-entropy on the
//! logits and a [`ConfusionMatrix`] as the epoch metric (accuracy, kappa, mIoU, macro F1 in the
//! logs); with an output directory it writes the trainer's logs, `loss.png` and checkpoints.
//! [`predict_logits`] and [`evaluate`] run a model in evaluation mode in batches.
//!
//! [`fit_tiles`] and [`evaluate_tiles`] do the same for the per-pixel ConvLSTM / ConvGRU
//! classifier of [`crate::mtlcc`] on image-series tiles, with an optional label that the loss
//! and the metrics skip (unlabelled or dropped classes that stay in the tiles as context).

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

use crate::mtlcc::ConvRnnClassifier;
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
    /// Also log every optimizer step's loss to `out_dir/steps.{csv,jsonl}`.
    pub log_steps: bool,
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
            log_steps: false,
            progress: ProgressMode::Quiet,
            meta: CheckpointMeta::default(),
        }
    }
}

/// Gathers items `idx` (along dimension 0) of `x` and `y` into a batch.
fn gather(x: &Tensor, y: &Tensor, idx: &[usize]) -> canopy_train::Result<(Tensor, Tensor)> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::from_vec(ids, idx.len(), x.device())?;
    Ok((x.index_select(&ids, 0)?, y.index_select(&ids, 0)?))
}

/// Batches of items (as index lists) gathered into `(x, y)` tensors.
type TensorBatcher = Batcher<Vec<usize>, (Tensor, Tensor)>;

/// How [`fit`] and [`fit_tiles`] cut and order their batches.
fn batch_config(batch_size: usize, seed: u64, shuffle: bool) -> BatchConfig {
    BatchConfig {
        batch_size,
        seed,
        shuffle,
        ..Default::default()
    }
}

/// Seeded batches of the items of `x` and their labels `y` (same first dimension).
fn batcher(
    x: &Tensor,
    y: &Tensor,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
) -> Result<TensorBatcher> {
    let (x, y) = (x.clone(), y.clone());
    let n = x.dim(0)?;
    Ok(Batcher::new(
        (0..n).collect::<Vec<usize>>(),
        move |idx: Vec<usize>| gather(&x, &y, &idx),
        batch_config(batch_size, seed, shuffle),
    )?)
}

/// The training batches that [`fit`] and [`fit_tiles`] serve in epoch `epoch` (0-based) for
/// `n` training items with options `opts`: lists of item indices, in the order the optimizer
/// sees them. With the initial weights they make a run reproducible elsewhere (for instance
/// in PyTorch: `examples/cloud_robustness.rs --trace` and `tools/sits_reference_train.py
/// replay`).
///
/// # Errors
/// A batch size of 0.
pub fn train_batches(n: usize, opts: &FitOptions, epoch: usize) -> Result<Vec<Vec<usize>>> {
    let cfg = BatchConfig {
        prefetch: 0,
        ..batch_config(opts.recipe.batch_size, opts.seed, true)
    };
    let order = Batcher::new((0..n).collect::<Vec<usize>>(), Ok, cfg)?;
    Ok(order
        .epoch(epoch)
        .collect::<canopy_train::Result<Vec<Vec<usize>>>>()?)
}

/// The labels of `data` as a `(N,)` u32 tensor.
fn label_tensor(data: &LabelledSeries) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        data.y.clone(),
        data.len(),
        data.x.device(),
    )?)
}

/// The training loop [`fit`] and [`fit_tiles`] share: Adam with the recipe's settings,
/// cross-entropy (skipping `ignore`), a confusion matrix as the epoch metric, validation
/// accuracy monitored when there is validation data. `forward(x, training)` gives the logits.
fn run_fit(
    vars: &SeededVarMap,
    classes: usize,
    (train_b, val_b): (&TensorBatcher, Option<&TensorBatcher>),
    opts: &FitOptions,
    ignore: Option<u32>,
    mut forward: impl FnMut(&Tensor, bool) -> Result<Tensor>,
) -> Result<FitReport> {
    let adam = AdamConfig {
        weight_decay: opts.recipe.weight_decay,
        ..AdamConfig::adam(opts.recipe.lr)
    };
    let opt = Adam::new(param_groups(vars.named_vars()?, &[])?, adam)?;
    let mut tcfg = TrainerConfig::new(opts.epochs, opts.out_dir.clone());
    tcfg.progress = opts.progress;
    tcfg.meta = opts.meta.clone();
    tcfg.plot = opts.out_dir.is_some();
    tcfg.log_steps = opts.log_steps && opts.out_dir.is_some();
    tcfg.monitor = if val_b.is_some() {
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
    let mut confusion = ConfusionMatrix::new(classes)?;
    if let Some(label) = ignore {
        confusion = confusion.with_ignore_label(label);
    }
    let ce = CrossEntropyConfig {
        ignore_index: ignore,
        ..Default::default()
    };
    let report = trainer.fit(
        train_b,
        val_b,
        &mut confusion,
        |(x, y), phase: Phase, cm| {
            let logits = forward(x, phase == Phase::Train).map_err(|e| {
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
    let train_b = batcher(
        &train.x,
        &label_tensor(train)?,
        opts.recipe.batch_size,
        opts.seed,
        true,
    )?;
    let val_b = val
        .map(|v| -> Result<_> {
            let b = opts.recipe.batch_size.max(512);
            batcher(&v.x, &label_tensor(v)?, b, opts.seed, false)
        })
        .transpose()?;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_d00d);
    run_fit(
        vars,
        model.num_classes(),
        (&train_b, val_b.as_ref()),
        opts,
        None,
        |x, training| model.forward_t(x, training, &mut rng),
    )
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

/// Image-series tiles with per-pixel labels, in memory: what [`fit_tiles`] trains on.
#[derive(Debug, Clone)]
pub struct LabelledTiles {
    /// The tiles, `(N, T, C, H, W)` f32 (normalised as the model expects).
    pub x: Tensor,
    /// Per-pixel class indices, `(N, H, W)` u32.
    pub y: Tensor,
}

impl LabelledTiles {
    /// Checks that `x` is `(N, T, C, H, W)` f32 and `y` `(N, H, W)` u32.
    ///
    /// # Errors
    /// [`Error::Shape`] naming both shapes.
    pub fn new(x: Tensor, y: Tensor) -> Result<Self> {
        let ok = match (x.dims(), y.dims()) {
            ([n, _, _, h, w], [m, hy, wy]) => n == m && h == hy && w == wy,
            _ => false,
        };
        if !ok || x.dtype() != DType::F32 || y.dtype() != DType::U32 {
            return Err(Error::Shape {
                model: "LabelledTiles",
                expected: "f32 tiles (N, T, C, H, W) and u32 labels (N, H, W)".into(),
                actual: format!(
                    "{:?} {:?} and {:?} {:?}",
                    x.dtype(),
                    x.dims(),
                    y.dtype(),
                    y.dims()
                ),
            });
        }
        Ok(LabelledTiles { x, y })
    }

    /// Tiles from `(values, labels)` pairs, each tile's values `(T, C, H, W)` and labels
    /// `(H, W)` flattened in that order; `(t, c, h, w)` are the tile sizes.
    ///
    /// # Errors
    /// [`Error::Shape`] when an item has the wrong number of values or labels.
    pub fn from_items(
        items: impl IntoIterator<Item = (Vec<f32>, Vec<u32>)>,
        (t, c, h, w): (usize, usize, usize, usize),
    ) -> Result<Self> {
        let (mut x, mut y, mut n) = (Vec::new(), Vec::new(), 0);
        for (xi, yi) in items {
            if xi.len() != t * c * h * w || yi.len() != h * w {
                return Err(Error::Shape {
                    model: "LabelledTiles",
                    expected: format!("tiles of {t}x{c}x{h}x{w} values and {h}x{w} labels"),
                    actual: format!("{} values and {} labels", xi.len(), yi.len()),
                });
            }
            x.extend(xi);
            y.extend(yi);
            n += 1;
        }
        let dev = candle_core::Device::Cpu;
        LabelledTiles::new(
            Tensor::from_vec(x, (n, t, c, h, w), &dev)?,
            Tensor::from_vec(y, (n, h, w), &dev)?,
        )
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.y.dims()[0]
    }

    /// Whether there are no tiles.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Trains the per-pixel classifier `model` (variables in `vars`) on `train` tiles, validating
/// on `val` after every epoch, as [`fit`] does for series: pixels labelled `ignore` count in
/// neither the loss nor the metrics. Batches hold `opts.recipe.batch_size` tiles.
///
/// # Errors
/// Empty data, labels outside `0..K` (other than `ignore`), a diverging loss, failing writes
/// into `out_dir`.
pub fn fit_tiles(
    model: &ConvRnnClassifier,
    vars: &SeededVarMap,
    train: &LabelledTiles,
    val: Option<&LabelledTiles>,
    opts: &FitOptions,
    ignore: Option<u32>,
) -> Result<FitReport> {
    if train.is_empty() {
        return Err(Error::Config {
            model: "fit_tiles",
            message: "no training tiles".into(),
        });
    }
    let size = opts.recipe.batch_size;
    let train_b = batcher(&train.x, &train.y, size, opts.seed, true)?;
    let val_b = val
        .map(|v| batcher(&v.x, &v.y, size, opts.seed, false))
        .transpose()?;
    run_fit(
        vars,
        model.config().num_classes,
        (&train_b, val_b.as_ref()),
        opts,
        ignore,
        |x, _training| model.forward(x, None),
    )
}

/// Per-pixel logits `(N, K, H, W)` of `x` `(N, T, C, H, W)`, `batch` tiles at a time.
///
/// # Errors
/// As the model's forward pass.
pub fn predict_tiles(model: &ConvRnnClassifier, x: &Tensor, batch: usize) -> Result<Tensor> {
    let n = x.dim(0)?;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        parts.push(model.forward(&x.narrow(0, start, len)?, None)?.detach());
        start += len;
    }
    if parts.is_empty() {
        return Err(Error::Config {
            model: "predict_tiles",
            message: "no tiles".into(),
        });
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The confusion matrix of `model` on every pixel of `data` except those labelled `ignore`.
///
/// # Errors
/// As [`predict_tiles`]; labels outside `0..K`.
pub fn evaluate_tiles(
    model: &ConvRnnClassifier,
    data: &LabelledTiles,
    ignore: Option<u32>,
    batch: usize,
) -> Result<ConfusionMatrix> {
    let logits = predict_tiles(model, &data.x, batch)?;
    let mut cm = ConfusionMatrix::new(model.config().num_classes)?;
    if let Some(label) = ignore {
        cm = cm.with_ignore_label(label);
    }
    cm.update_from_logits(&logits, &data.y, None)?;
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

    fn last_val_accuracy(report: &FitReport) -> Option<f64> {
        let last = report.history.epochs.last()?;
        last.metrics.get("val_accuracy").copied()
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

    impl MeanLinear {
        /// The toy problem's model: 2 bands in, 3 classes out, variables in `vars`.
        fn two_bands_three_classes(vars: &SeededVarMap) -> anyhow::Result<Self> {
            let vb = vars.var_builder(DType::F32, &Device::Cpu);
            Ok(MeanLinear {
                head: canopy_nn::linear(2, 3, true, vb.pp("head"))?,
                k: 3,
                c: 2,
            })
        }
    }

    #[test]
    fn fit_learns_a_separable_problem_and_evaluate_agrees() -> anyhow::Result<()> {
        let vars = SeededVarMap::new(3);
        let model = MeanLinear::two_bands_three_classes(&vars)?;
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
        assert_eq!(last_val_accuracy(&report), Some(cm.accuracy()));
        assert_eq!(predict_logits(&model, &val.x, 7)?.dims(), &[90, 3]);
        Ok(())
    }

    #[test]
    fn log_steps_writes_one_row_per_optimizer_step_whose_mean_is_the_epoch_loss(
    ) -> anyhow::Result<()> {
        let vars = SeededVarMap::new(4);
        let model = MeanLinear::two_bands_three_classes(&vars)?;
        let dir = tempfile::tempdir()?;
        let recipe = Recipe {
            lr: 0.05,
            weight_decay: 0.0,
            batch_size: 25,
            epochs: 2,
            tuned: false,
        };
        let opts = FitOptions {
            out_dir: Some(dir.path().to_path_buf()),
            log_steps: true,
            ..FitOptions::new(recipe, 2, 0)
        };
        let report = fit(&model, &vars, &toy(100, 1)?, None, &opts)?;
        let text = std::fs::read_to_string(dir.path().join("steps.jsonl"))?;
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?;
        assert_eq!(rows.len(), 8);
        // equal batches: the epoch's loss is the mean of its steps' losses
        let first: f64 = rows[..4]
            .iter()
            .map(|r| r["loss"].as_f64().unwrap_or(f64::NAN))
            .sum::<f64>()
            / 4.0;
        let logged = report.history.series("train_loss")[0].1;
        assert!((first - logged).abs() < 1e-6, "{first} vs {logged}");
        Ok(())
    }

    /// Tiles whose pixels are class 1 where band 0 is high over time, class 0 where it is
    /// low; every pixel of the last column is labelled `IGNORED` (outside `0..K`).
    fn toy_tiles(n: usize, seed: u64) -> anyhow::Result<LabelledTiles> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (t, c, side) = (4, 1, 5);
        let mut labels = Vec::with_capacity(n * side * side);
        for _ in 0..n * side * side {
            labels.push(rng.random_range(0..2u32));
        }
        let mut x = vec![0f32; n * t * c * side * side];
        for i in 0..n {
            for step in 0..t {
                for p in 0..side * side {
                    let k = labels[i * side * side + p] as f32;
                    x[((i * t + step) * side * side) + p] =
                        2.0 * k - 1.0 + rng.random_range(-0.5..0.5);
                }
            }
            for r in 0..side {
                labels[i * side * side + r * side + side - 1] = IGNORED;
            }
        }
        Ok(LabelledTiles::new(
            Tensor::from_vec(x, (n, t, c, side, side), &Device::Cpu)?,
            Tensor::from_vec(labels, (n, side, side), &Device::Cpu)?,
        )?)
    }

    const IGNORED: u32 = 255;

    #[test]
    fn fit_tiles_learns_pixels_and_skips_the_ignored_label() -> anyhow::Result<()> {
        let vars = SeededVarMap::new(5);
        let cfg = crate::mtlcc::ConvRnnConfig {
            hidden: 6,
            ..crate::mtlcc::ConvRnnConfig::mtlcc(1, 2)
        };
        let model = ConvRnnClassifier::new(&cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
        let (train, val) = (toy_tiles(12, 1)?, toy_tiles(4, 2)?);
        let recipe = Recipe {
            lr: 0.02,
            weight_decay: 0.0,
            batch_size: 4,
            epochs: 12,
            tuned: false,
        };
        let opts = FitOptions::new(recipe, 12, 0);
        let report = fit_tiles(&model, &vars, &train, Some(&val), &opts, Some(IGNORED))?;
        assert_eq!(report.steps, 12 * 3);
        let cm = evaluate_tiles(&model, &val, Some(IGNORED), 3)?;
        assert_eq!(cm.total(), 4 * 5 * 4, "the ignored column is not counted");
        assert!(cm.accuracy() > 0.9, "accuracy {}", cm.accuracy());
        assert_eq!(last_val_accuracy(&report), Some(cm.accuracy()));
        assert_eq!(predict_tiles(&model, &val.x, 3)?.dims(), &[4, 2, 5, 5]);
        // without the ignore label the out-of-range labels are an error, not garbage
        assert!(evaluate_tiles(&model, &val, None, 3).is_err());
        assert!(LabelledTiles::new(val.x.clone(), val.y.narrow(1, 0, 4)?).is_err());
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

    #[test]
    fn train_batches_are_the_batches_fit_serves() -> anyhow::Result<()> {
        // item i carries the value i, so a served batch names its items
        let n = 23;
        let x = Tensor::arange(0u32, n as u32, &Device::Cpu)?.to_dtype(DType::F32)?;
        let y = Tensor::arange(0u32, n as u32, &Device::Cpu)?;
        let recipe = Recipe {
            lr: 0.01,
            weight_decay: 0.0,
            batch_size: 5,
            epochs: 3,
            tuned: false,
        };
        let opts = FitOptions::new(recipe, 3, 11);
        let served = batcher(&x, &y, 5, opts.seed, true)?;
        let mut orders = Vec::new();
        for epoch in 0..3 {
            let expected = train_batches(n, &opts, epoch)?;
            let got = served
                .epoch(epoch)
                .map(|b| -> anyhow::Result<Vec<usize>> {
                    let (_, yb) = b?;
                    Ok(yb.to_vec1::<u32>()?.iter().map(|&v| v as usize).collect())
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            assert_eq!(expected, got, "epoch {epoch}");
            assert_eq!(expected.len(), 5);
            let mut all: Vec<usize> = expected.concat();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            orders.push(expected);
        }
        assert_ne!(orders[0], orders[1], "epochs are shuffled differently");
        Ok(())
    }
}
