//! Focal loss (Lin et al., *Focal Loss for Dense Object Detection*, ICCV 2017): cross-entropy
//! scaled by `(1 - p_t)^γ`, which shrinks the loss of well-classified examples so that training
//! concentrates on the hard ones.
//!
//! Binary form (torchvision's `sigmoid_focal_loss`), with `p = σ(x)`:
//!
//! ```text
//! p_t = p·y + (1 - p)·(1 - y)
//! α_t = α·y + (1 - α)·(1 - y)                  (1 when α is None)
//! l   = α_t · (1 - p_t)^γ · BCE_with_logits(x, y)
//! ```
//!
//! Multi-class form, with `lp = log_softmax(x, 1)` and per-class weights `α` (all ones when
//! absent): `l = -α[t] · (1 - exp(lp[t]))^γ · lp[t]`, 0 at ignored positions; the mean divides
//! by the number of positions that are not ignored (the `α` are not renormalised).
//!
//! With `γ = 0` both reduce to (weighted) cross-entropy. For `0 < γ < 1` the derivative of
//! `u^γ` is infinite at `u = 1 - p_t = 0`, which a saturated logit (beyond about ±37 in f64)
//! reaches exactly; there `u` is floored at `1e-30` before the power, so the gradient stays
//! finite (and is zero at such a pixel, as the true gradient nearly is). The change in value is
//! below `1e-30^γ` times a cross-entropy that is itself below `1e-16`.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::binary::bce_elementwise;
use super::{check_class_weights, log_sigmoid, reduce, same_shape, ClassTargets, Reduction};
use crate::error::invalid;
use crate::Result;

/// Settings of the binary [`focal_loss`] (torchvision's `sigmoid_focal_loss` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FocalConfig {
    /// Focusing parameter `γ >= 0`.
    pub gamma: f64,
    /// Weight `α` in `[0, 1]` of the positive class (`1 - α` for the negative); `None` for no
    /// class weighting.
    pub alpha: Option<f64>,
    /// Reduction over elements (the mean is the plain mean).
    pub reduction: Reduction,
}

impl Default for FocalConfig {
    /// `γ = 2`, `α = 0.25`, mean: the paper's and torchvision's defaults.
    fn default() -> Self {
        FocalConfig {
            gamma: 2.0,
            alpha: Some(0.25),
            reduction: Reduction::Mean,
        }
    }
}

/// Settings of [`focal_loss_multiclass`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FocalMulticlassConfig {
    /// Focusing parameter `γ >= 0`.
    pub gamma: f64,
    /// One weight `α` per class; `None` weighs every class 1.
    pub alpha: Option<Vec<f64>>,
    /// Targets equal to this label contribute nothing.
    pub ignore_index: Option<u32>,
    /// Reduction over samples and positions.
    pub reduction: Reduction,
}

impl Default for FocalMulticlassConfig {
    /// `γ = 2`, no class weights, no ignored label, mean.
    fn default() -> Self {
        FocalMulticlassConfig {
            gamma: 2.0,
            alpha: None,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }
}

fn check_gamma(op: &'static str, gamma: f64) -> Result<()> {
    if gamma.is_nan() || gamma < 0.0 || gamma.is_infinite() {
        return Err(invalid(
            op,
            format!("gamma must be finite and >= 0, got {gamma}"),
        ));
    }
    Ok(())
}

/// Smallest base of the power when `γ < 1` (see the module docs).
const FLOOR: f64 = 1e-30;

/// `base^γ`, skipping the power (and its gradient at `base = 0`) when `γ = 0`, and flooring
/// the base when `0 < γ < 1` so that the gradient stays finite.
fn modulate(base: Tensor, gamma: f64) -> Result<Option<Tensor>> {
    if gamma == 0.0 {
        Ok(None)
    } else if gamma == 1.0 {
        Ok(Some(base))
    } else if gamma < 1.0 {
        Ok(Some(base.maximum(FLOOR)?.powf(gamma)?))
    } else {
        Ok(Some(base.powf(gamma)?))
    }
}

/// Binary focal loss on logits, equal to torchvision's `sigmoid_focal_loss`.
///
/// # Shapes
/// - `logits`, `targets`: the same shape, any rank; targets are floats in `[0, 1]`.
/// - output: a scalar, or the logits' shape for [`Reduction::None`].
///
/// # Errors
/// [`crate::Error::Shape`] when the shapes differ; [`crate::Error::InvalidArgument`] for
/// `γ < 0` or `α` outside `[0, 1]`.
pub fn focal_loss(logits: &Tensor, targets: &Tensor, cfg: &FocalConfig) -> Result<Tensor> {
    const OP: &str = "focal_loss";
    same_shape(OP, logits, targets, "targets")?;
    check_gamma(OP, cfg.gamma)?;
    if let Some(a) = cfg.alpha {
        if !(0.0..=1.0).contains(&a) {
            return Err(invalid(OP, format!("alpha must be in [0, 1], got {a}")));
        }
    }
    let y = targets.to_dtype(logits.dtype())?;
    let ce = bce_elementwise(logits, &y)?;
    let p = log_sigmoid(logits)?.exp()?;
    let p_t = ((&p * &y)? + ((1.0 - &p)? * (1.0 - &y)?)?)?;
    let mut per = match modulate((1.0 - p_t)?, cfg.gamma)? {
        Some(f) => (ce * f)?,
        None => ce,
    };
    if let Some(a) = cfg.alpha {
        let alpha_t = ((&y * a)? + ((1.0 - &y)? * (1.0 - a))?)?;
        per = (per * alpha_t)?;
    }
    let n = per.elem_count() as f64;
    reduce(per, cfg.reduction, n)
}

/// Multi-class focal loss on logits with class labels.
///
/// # Shapes
/// - `logits`: `(N, K)` or `(N, K, d1, ..)`; `targets`: `(N)` or `(N, d1, ..)`, `u32`.
/// - output: a scalar, or the targets' shape for [`Reduction::None`].
///
/// # Errors
/// As [`crate::loss::cross_entropy`], and [`crate::Error::InvalidArgument`] for `γ < 0`.
pub fn focal_loss_multiclass(
    logits: &Tensor,
    targets: &Tensor,
    cfg: &FocalMulticlassConfig,
) -> Result<Tensor> {
    const OP: &str = "focal_loss_multiclass";
    check_gamma(OP, cfg.gamma)?;
    let ct = ClassTargets::new(OP, logits, targets, cfg.ignore_index)?;
    let alpha = cfg.alpha.as_deref();
    check_class_weights(OP, alpha, ct.k)?;
    let lp = canopy_nn::ops::log_softmax(logits, 1)?;
    // Ignored positions pick class 0 and are zeroed afterwards, so that no power of 0 enters
    // the graph.
    let onehot = ct.per_class(logits, |_, t, c| if c == t { 1.0 } else { 0.0 })?;
    let lp_t = (lp * onehot)?.sum(1)?; // (N, K, d..) -> (N, d..)
    let scale = ct.per_target(logits, |ok, t| {
        if ok {
            alpha.and_then(|a| a.get(t).copied()).unwrap_or(1.0)
        } else {
            0.0
        }
    })?;
    let ce = (lp_t.neg()? * scale)?;
    let per = match modulate((1.0 - lp_t.exp()?)?, cfg.gamma)? {
        Some(f) => (ce * f)?,
        None => ce,
    };
    reduce(per, cfg.reduction, ct.count_valid() as f64)
}
