//! Gradient clipping on a candle `GradStore`, with the semantics of PyTorch's
//! `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Only the gradients of the given variables are read and rewritten; variables without a
//! gradient are ignored, like parameters whose `.grad` is `None` in PyTorch.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::error::invalid;
use crate::Result;

fn scalar(t: &candle_core::Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Scales the gradients of `vars` so that their global `norm_type`-norm (the norm of the vector
/// of per-tensor norms; `f64::INFINITY` for the largest absolute value) is at most `max_norm`,
/// and returns the norm before clipping. As in PyTorch, the factor is
/// `min(1, max_norm / (total + 1e-6))` and is applied even when it is 1.
///
/// # Errors
/// When `max_norm` is negative or `norm_type` is not positive, or a tensor op fails.
pub fn clip_grad_norm<'a>(
    grads: &mut GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max_norm: f64,
    norm_type: f64,
) -> Result<f64> {
    let valid = max_norm >= 0.0 && norm_type > 0.0; // false for NaN too
    if !valid {
        return Err(invalid(
            "clip_grad_norm",
            format!("needs max_norm >= 0 and norm_type > 0, got {max_norm} and {norm_type}"),
        ));
    }
    let vars: Vec<&Var> = vars.into_iter().collect();
    let mut norms = Vec::with_capacity(vars.len());
    for v in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let a = g.abs()?;
            let n = if norm_type == f64::INFINITY {
                scalar(&a.flatten_all()?.max(0)?)?
            } else if norm_type == 2.0 {
                scalar(&g.sqr()?.sum_all()?)?.sqrt()
            } else if norm_type == 1.0 {
                scalar(&a.sum_all()?)?
            } else {
                scalar(&a.powf(norm_type)?.sum_all()?)?.powf(1.0 / norm_type)
            };
            norms.push(n);
        }
    }
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = if norm_type == f64::INFINITY {
        norms.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    } else if norm_type == 2.0 {
        norms.iter().map(|n| n * n).sum::<f64>().sqrt()
    } else {
        norms
            .iter()
            .map(|n| n.powf(norm_type))
            .sum::<f64>()
            .powf(1.0 / norm_type)
    };
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    for v in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let scaled = g.affine(coef, 0.0)?;
            grads.insert(v.as_tensor(), scaled);
        }
    }
    Ok(total)
}

/// Clamps every gradient of `vars` to `[-clip, clip]` (PyTorch's `clip_grad_value_`).
///
/// # Errors
/// When `clip` is negative or not finite, or a tensor op fails.
pub fn clip_grad_value<'a>(
    grads: &mut GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    clip: f64,
) -> Result<()> {
    if !(clip.is_finite() && clip >= 0.0) {
        return Err(invalid(
            "clip_grad_value",
            format!("needs a finite clip >= 0, got {clip}"),
        ));
    }
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let c = g.clamp(-clip, clip)?;
            grads.insert(v.as_tensor(), c);
        }
    }
    Ok(())
}
