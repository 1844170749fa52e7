//! Binary cross-entropy on logits, in the form that stays finite for any finite logit.
//!
//! For a logit `x` and a target `y` in `[0, 1]`:
//!
//! ```text
//! l = max(x, 0) - x·y + log(1 + exp(-|x|))
//! ```
//!
//! which equals `-(y·log σ(x) + (1 - y)·log(1 - σ(x)))` without ever evaluating `log(0)` or
//! `exp` of a large positive number. With a positive-class weight `p` (PyTorch `pos_weight`),
//! `l = (1 - y)·x + (1 + (p - 1)·y)·(log(1 + exp(-|x|)) + max(-x, 0))`, which up-weights the
//! `-y·log σ(x)` term by `p`. A per-element `weight` multiplies `l`. The mean is the plain mean
//! over elements (the weights are not renormalised), as in PyTorch.

use candle_core::Tensor;

use super::{broadcast_weight, reduce, same_shape, softplus_neg_abs, Reduction};
use crate::Result;

/// Binary cross-entropy with logits, equal to PyTorch's `F.binary_cross_entropy_with_logits`.
///
/// # Shapes
/// - `logits`, `targets`: the same shape, any rank; `targets` are floats in `[0, 1]` (soft
///   labels allowed).
/// - `weight`: broadcastable to the logits' shape (e.g. `(N, 1, H, W)` pixel weights).
/// - `pos_weight`: broadcastable to the logits' shape; for `(N, C)` logits one weight per class
///   `(C)`, for dense `(N, C, H, W)` logits use `(C, 1, 1)`.
/// - output: a scalar, or the logits' shape for [`Reduction::None`].
///
/// # Errors
/// [`crate::Error::Shape`] when the targets' shape differs or a weight does not broadcast.
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const OP: &str = "bce_with_logits";
    same_shape(OP, logits, targets, "targets")?;
    let y = targets.to_dtype(logits.dtype())?;
    let w = broadcast_weight(OP, weight, logits, "weight")?;
    let p = broadcast_weight(OP, pos_weight, logits, "pos_weight")?;
    let x = logits;
    let sp = softplus_neg_abs(x)?;
    let per = match p {
        None => ((x.relu()? - (x * &y)?)? + sp)?,
        Some(p) => {
            let lw = (((p - 1.0)? * &y)? + 1.0)?;
            // -log σ(x) = log(1 + exp(-|x|)) + max(-x, 0), with max(-x, 0) = max(x, 0) - x so
            // that the gradient at x = 0 is exact.
            let neg_log_sig = ((sp + x.relu()?)? - x)?;
            (((1.0 - &y)? * x)? + (lw * neg_log_sig)?)?
        }
    };
    let per = match w {
        Some(w) => (per * w)?,
        None => per,
    };
    let n = per.elem_count() as f64;
    reduce(per, reduction, n)
}

/// The unreduced binary cross-entropy, shared with the focal loss.
pub(crate) fn bce_elementwise(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(((x.relu()? - (x * y)?)? + softplus_neg_abs(x)?)?)
}
