//! Cross-entropy and negative log-likelihood with PyTorch's exact semantics: class weights,
//! an ignored label, label smoothing and the three reductions, for `(N, K)` and dense
//! `(N, K, d..)` inputs.
//!
//! With `lp = log_softmax(x, 1)`, target `t`, class weights `w` (all ones when absent), smoothing
//! `ε` and `K` classes, the loss of one position that is not ignored is
//!
//! ```text
//! l = (1 - ε) · w[t] · (-lp[t])  +  (ε / K) · Σ_c w[c] · (-lp[c])
//! ```
//!
//! and 0 at ignored positions. The mean divides the sum by `Σ w[t]` over the positions that are
//! not ignored (their count without weights): this is PyTorch's weighted mean, used for both
//! terms. When every target is ignored the mean is `0 / 0 = NaN`, as in PyTorch.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{check_class_weights, reduce, ClassTargets, Reduction};
use crate::error::invalid;
use crate::Result;

/// Settings of [`cross_entropy`] (PyTorch's `F.cross_entropy` arguments).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CrossEntropyConfig {
    /// One weight per class (PyTorch `weight`); `None` weighs every class 1.
    pub weight: Option<Vec<f64>>,
    /// Targets equal to this label contribute nothing, to the loss or to the mean's
    /// denominator (PyTorch `ignore_index`, whose default -100 has no `u32` equivalent).
    pub ignore_index: Option<u32>,
    /// Label smoothing `ε` in `[0, 1]`: the target distribution becomes
    /// `(1 - ε) · onehot + ε / K`.
    pub label_smoothing: f64,
    /// Reduction over samples and positions.
    pub reduction: Reduction,
}

/// Settings of [`nll_loss`] (PyTorch's `F.nll_loss` arguments).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NllConfig {
    /// One weight per class; `None` weighs every class 1.
    pub weight: Option<Vec<f64>>,
    /// Targets equal to this label contribute nothing.
    pub ignore_index: Option<u32>,
    /// Reduction over samples and positions.
    pub reduction: Reduction,
}

/// Cross-entropy between logits and class labels, equal to PyTorch's `F.cross_entropy`.
///
/// # Shapes
/// - `logits`: `(N, K)` or `(N, K, d1, d2, ..)`, any float dtype.
/// - `targets`: `(N)` or `(N, d1, d2, ..)`, `u32`.
/// - output: a scalar for [`Reduction::Mean`] and [`Reduction::Sum`], the targets' shape for
///   [`Reduction::None`].
///
/// # Errors
/// - [`crate::Error::Shape`] when the ranks or sizes disagree or the targets are not `u32`.
/// - [`crate::Error::TargetOutOfRange`] when a label is `>= K` and not the ignore index.
/// - [`crate::Error::InvalidArgument`] for a wrong number of class weights or a smoothing
///   outside `[0, 1]`.
///
/// # Example
/// ```
/// # fn main() -> canopy_train::Result<()> {
/// use candle_core::{Device, Tensor};
/// use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
/// let logits = Tensor::new(&[[2.0f64, 0.0], [0.0, 2.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[0u32, 1], &Device::Cpu)?;
/// let loss = cross_entropy(&logits, &targets, &CrossEntropyConfig::default())?;
/// let expected = (1.0 + (-2.0f64).exp()).ln();
/// assert!((loss.to_scalar::<f64>()? - expected).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    cfg: &CrossEntropyConfig,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let eps = cfg.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(invalid(
            OP,
            format!("label_smoothing must be in [0, 1], got {eps}"),
        ));
    }
    let ct = ClassTargets::new(OP, logits, targets, cfg.ignore_index)?;
    check_class_weights(OP, cfg.weight.as_deref(), ct.k)?;
    let lp = canopy_nn::ops::log_softmax(logits, 1)?;
    weighted_nll(&lp, &ct, cfg.weight.as_deref(), eps, cfg.reduction)
}

/// Negative log-likelihood of log-probabilities, equal to PyTorch's `F.nll_loss`: the loss at a
/// position is `-w[t] · input[t]`; the mean divides by the summed weights of the targets that
/// are not ignored.
///
/// # Shapes
/// - `log_probs`: `(N, K)` or `(N, K, d1, d2, ..)`, any float dtype.
/// - `targets`: `(N)` or `(N, d1, d2, ..)`, `u32`.
/// - output: a scalar, or the targets' shape for [`Reduction::None`].
///
/// # Errors
/// As [`cross_entropy`].
pub fn nll_loss(log_probs: &Tensor, targets: &Tensor, cfg: &NllConfig) -> Result<Tensor> {
    const OP: &str = "nll_loss";
    let ct = ClassTargets::new(OP, log_probs, targets, cfg.ignore_index)?;
    check_class_weights(OP, cfg.weight.as_deref(), ct.k)?;
    weighted_nll(log_probs, &ct, cfg.weight.as_deref(), 0.0, cfg.reduction)
}

/// `-Σ_c A[n, c, s] · lp[n, c, s]` with the coefficients `A` of the module docs, reduced.
fn weighted_nll(
    lp: &Tensor,
    ct: &ClassTargets,
    weight: Option<&[f64]>,
    eps: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let w = |c: usize| weight.and_then(|w| w.get(c).copied()).unwrap_or(1.0);
    let share = eps / ct.k as f64;
    let coef = ct.per_class(lp, |ok, t, c| {
        if !ok {
            0.0
        } else {
            let hit = if c == t { (1.0 - eps) * w(t) } else { 0.0 };
            hit + share * w(c)
        }
    })?;
    let per = (lp * coef)?.sum(1)?.neg()?; // (N, K, d..) -> (N, d..)
    let mut denominator = 0.0;
    for (&ok, &t) in ct.valid.iter().zip(&ct.labels) {
        if ok {
            denominator += w(t as usize);
        }
    }
    reduce(per, reduction, denominator)
}
