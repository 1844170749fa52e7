//! Overlap losses on probabilities: soft IoU (Jaccard) and Dice, and the cross-entropy + soft
//! IoU combination used for building footprints.
//!
//! Soft IoU (Rahman & Wang, ISVC 2016) replaces the set operations of the IoU by products and
//! sums of probabilities `p` and (one-hot) targets `y`, which makes it differentiable:
//!
//! ```text
//! I = Σ p·y        U = Σ (p + y - p·y)        IoU = (I + s) / (U + s)        loss = 1 - IoU
//! ```
//!
//! Dice (Milletari et al., V-Net, 3DV 2016): `D = (2·I + s) / (Σ p + Σ y + s)` with the
//! [`DiceDenominator::Linear`] denominator, or `(2·I + s) / (Σ p² + Σ y² + s)` with the
//! paper's [`DiceDenominator::Squared`] one; `loss = 1 - D`.
//!
//! The sums run over the whole batch and all positions (the batch-level variant). The binary
//! forms use `p = σ(x)` and float targets. The multi-class forms use `p = softmax(x, 1)` and
//! one-hot targets, compute one score per class, ignore positions whose label is the ignore
//! index (in `p` and `y` alike) and return `1 - mean over the K classes`. The smoothing `s`
//! (default 1) keeps a class that is absent from both targets and predictions at a score near 1
//! instead of `0 / 0`; it is negligible next to the pixel counts of a batch.
//!
//! [`ce_soft_iou_loss`] is `CE + λ · soft IoU loss`, the combination behind the best entries
//! of the Inria Aerial Image Labeling benchmark (Huang et al., IGARSS 2018) and the loss the
//! Inria TITANE team (Tarabalka, Maggiori, Girard et al.) recommends for aerial image
//! labelling: cross-entropy gives well-conditioned per-pixel gradients, the IoU term optimises
//! the metric the benchmark reports and pushes probabilities towards 0 and 1.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{cross_entropy, log_sigmoid, same_shape, ClassTargets, CrossEntropyConfig, Reduction};
use crate::error::invalid;
use crate::Result;

/// Settings of the soft IoU losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftIouConfig {
    /// Smoothing `s >= 0` added to numerator and denominator.
    pub smooth: f64,
    /// Multi-class form only: positions with this label are left out.
    pub ignore_index: Option<u32>,
}

impl Default for SoftIouConfig {
    /// `s = 1`, no ignored label.
    fn default() -> Self {
        SoftIouConfig {
            smooth: 1.0,
            ignore_index: None,
        }
    }
}

/// The denominator of the Dice score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DiceDenominator {
    /// `Σ p + Σ y` (the common form; equals the F1 score for hard predictions).
    #[default]
    Linear,
    /// `Σ p² + Σ y²` (Milletari et al.).
    Squared,
}

/// Settings of the Dice losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiceConfig {
    /// Smoothing `s >= 0` added to numerator and denominator.
    pub smooth: f64,
    /// Multi-class form only: positions with this label are left out.
    pub ignore_index: Option<u32>,
    /// Which denominator.
    pub denominator: DiceDenominator,
}

impl Default for DiceConfig {
    /// `s = 1`, no ignored label, linear denominator.
    fn default() -> Self {
        DiceConfig {
            smooth: 1.0,
            ignore_index: None,
            denominator: DiceDenominator::Linear,
        }
    }
}

/// Settings of [`ce_soft_iou_loss`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeSoftIouConfig {
    /// The cross-entropy term; its `ignore_index` also applies to the IoU term, and its
    /// reduction must be `Mean` or `Sum`.
    pub ce: CrossEntropyConfig,
    /// Weight `λ` of the soft IoU term.
    pub iou_weight: f64,
    /// Smoothing of the soft IoU term.
    pub smooth: f64,
}

impl Default for CeSoftIouConfig {
    /// Mean cross-entropy plus the soft IoU loss with `λ = 1`, `s = 1`.
    fn default() -> Self {
        CeSoftIouConfig {
            ce: CrossEntropyConfig::default(),
            iou_weight: 1.0,
            smooth: 1.0,
        }
    }
}

fn check_smooth(op: &'static str, s: f64) -> Result<()> {
    if s.is_nan() || s < 0.0 || s.is_infinite() {
        return Err(invalid(
            op,
            format!("smooth must be finite and >= 0, got {s}"),
        ));
    }
    Ok(())
}

/// Per-class sums `(K)` of a `(N, K, d..)` tensor over every dimension but 1.
fn class_sums(t: &Tensor, ct: &ClassTargets) -> Result<Tensor> {
    Ok(t.reshape((ct.n, ct.k, ct.s))?.sum(2)?.sum(0)?) // (N, K, S) -> (K)
}

/// Masked probabilities `p·v`, one-hot targets `y` and their class sums, for the multi-class
/// overlap losses: returns `(Σ p·y, Σ p, Σ y, p·v)` with sums of shape `(K)`.
fn multiclass_terms(
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    ignore: Option<u32>,
) -> Result<(Tensor, Tensor, Tensor, Tensor, ClassTargets)> {
    let ct = ClassTargets::new(op, logits, targets, ignore)?;
    let p = canopy_nn::ops::softmax(logits, 1)?;
    let valid = ct.per_class(logits, |ok, _, _| if ok { 1.0 } else { 0.0 })?;
    let y = ct.per_class(logits, |ok, t, c| if ok && c == t { 1.0 } else { 0.0 })?;
    let pv = (p * valid)?;
    let inter = class_sums(&(&pv * &y)?, &ct)?;
    let sum_p = class_sums(&pv, &ct)?;
    let sum_y = class_sums(&y, &ct)?;
    Ok((inter, sum_p, sum_y, pv, ct))
}

/// `1 - (num + s) / (den + s)` averaged over the elements of `num`.
fn one_minus_ratio(num: Tensor, den: Tensor, s: f64) -> Result<Tensor> {
    let score = ((num + s)? / (den + s)?)?;
    Ok((1.0 - score.mean_all()?)?)
}

/// Binary soft IoU loss on logits: `1 - (Σ σ(x)·y + s) / (Σ (σ(x) + y - σ(x)·y) + s)` over
/// all elements.
///
/// # Shapes
/// `logits`, `targets` (floats in `[0, 1]`): the same shape, any rank; output: a scalar.
///
/// # Errors
/// [`crate::Error::Shape`] when the shapes differ; [`crate::Error::InvalidArgument`] for a
/// negative smoothing.
pub fn soft_iou_loss(logits: &Tensor, targets: &Tensor, cfg: &SoftIouConfig) -> Result<Tensor> {
    const OP: &str = "soft_iou_loss";
    same_shape(OP, logits, targets, "targets")?;
    check_smooth(OP, cfg.smooth)?;
    let y = targets.to_dtype(logits.dtype())?;
    let p = log_sigmoid(logits)?.exp()?;
    let inter = (&p * &y)?.sum_all()?;
    let union = ((p.sum_all()? + y.sum_all()?)? - &inter)?;
    one_minus_ratio(inter, union, cfg.smooth)
}

/// Multi-class soft IoU loss: softmax probabilities against one-hot targets, one IoU per class,
/// `1 - mean IoU`.
///
/// # Shapes
/// - `logits`: `(N, K)` or `(N, K, d1, ..)`; `targets`: `(N)` or `(N, d1, ..)`, `u32`.
/// - output: a scalar.
///
/// # Errors
/// As [`cross_entropy`], and [`crate::Error::InvalidArgument`] for a negative smoothing.
pub fn soft_iou_loss_multiclass(
    logits: &Tensor,
    targets: &Tensor,
    cfg: &SoftIouConfig,
) -> Result<Tensor> {
    const OP: &str = "soft_iou_loss_multiclass";
    check_smooth(OP, cfg.smooth)?;
    let (inter, sum_p, sum_y, _, _) = multiclass_terms(OP, logits, targets, cfg.ignore_index)?;
    let union = ((sum_p + sum_y)? - &inter)?;
    one_minus_ratio(inter, union, cfg.smooth)
}

/// Binary Dice loss on logits: `1 - (2·Σ σ(x)·y + s) / (Σ σ(x) + Σ y + s)` (or with squares
/// in the denominator) over all elements.
///
/// # Shapes
/// `logits`, `targets` (floats in `[0, 1]`): the same shape, any rank; output: a scalar.
///
/// # Errors
/// [`crate::Error::Shape`] when the shapes differ; [`crate::Error::InvalidArgument`] for a
/// negative smoothing.
pub fn dice_loss(logits: &Tensor, targets: &Tensor, cfg: &DiceConfig) -> Result<Tensor> {
    const OP: &str = "dice_loss";
    same_shape(OP, logits, targets, "targets")?;
    check_smooth(OP, cfg.smooth)?;
    let y = targets.to_dtype(logits.dtype())?;
    let p = log_sigmoid(logits)?.exp()?;
    let inter = (&p * &y)?.sum_all()?;
    let den = match cfg.denominator {
        DiceDenominator::Linear => (p.sum_all()? + y.sum_all()?)?,
        DiceDenominator::Squared => (p.sqr()?.sum_all()? + y.sqr()?.sum_all()?)?,
    };
    one_minus_ratio((inter * 2.0)?, den, cfg.smooth)
}

/// Multi-class Dice loss: softmax probabilities against one-hot targets, one Dice score per
/// class, `1 - mean Dice`.
///
/// # Shapes
/// - `logits`: `(N, K)` or `(N, K, d1, ..)`; `targets`: `(N)` or `(N, d1, ..)`, `u32`.
/// - output: a scalar.
///
/// # Errors
/// As [`cross_entropy`], and [`crate::Error::InvalidArgument`] for a negative smoothing.
pub fn dice_loss_multiclass(logits: &Tensor, targets: &Tensor, cfg: &DiceConfig) -> Result<Tensor> {
    const OP: &str = "dice_loss_multiclass";
    check_smooth(OP, cfg.smooth)?;
    let (inter, sum_p, sum_y, pv, ct) = multiclass_terms(OP, logits, targets, cfg.ignore_index)?;
    let den = match cfg.denominator {
        DiceDenominator::Linear => (sum_p + sum_y)?,
        // y is 0/1, so Σ y² = Σ y.
        DiceDenominator::Squared => (class_sums(&pv.sqr()?, &ct)? + sum_y)?,
    };
    one_minus_ratio((inter * 2.0)?, den, cfg.smooth)
}

/// Cross-entropy plus `λ ·` multi-class soft IoU loss, the two sharing the ignored label.
///
/// # Shapes
/// - `logits`: `(N, K)` or `(N, K, d1, ..)`; `targets`: `(N)` or `(N, d1, ..)`, `u32`.
/// - output: a scalar.
///
/// # Errors
/// As [`cross_entropy`]; [`crate::Error::InvalidArgument`] when the cross-entropy reduction
/// is [`Reduction::None`] or `λ` is not finite.
pub fn ce_soft_iou_loss(
    logits: &Tensor,
    targets: &Tensor,
    cfg: &CeSoftIouConfig,
) -> Result<Tensor> {
    const OP: &str = "ce_soft_iou_loss";
    if cfg.ce.reduction == Reduction::None {
        return Err(invalid(
            OP,
            "the cross-entropy term must be reduced (Mean or Sum) to add the IoU term",
        ));
    }
    if !cfg.iou_weight.is_finite() {
        return Err(invalid(
            OP,
            format!("iou_weight must be finite, got {}", cfg.iou_weight),
        ));
    }
    let ce = cross_entropy(logits, targets, &cfg.ce)?;
    let iou_cfg = SoftIouConfig {
        smooth: cfg.smooth,
        ignore_index: cfg.ce.ignore_index,
    };
    let iou = soft_iou_loss_multiclass(logits, targets, &iou_cfg)?;
    Ok((ce + (iou * cfg.iou_weight)?)?)
}
