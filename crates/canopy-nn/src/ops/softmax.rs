//! Softmax and log-softmax built from primitives whose gradients candle computes correctly.
//!
//! candle's fused `candle_nn::ops::softmax_last_dim` returns from `backward()` without a gradient
//! for its input (candle issues 3011, 3569): everything upstream silently stops learning. These
//! versions subtract the (detached) maximum for stability — the result does not depend on it, so
//! detaching it changes no gradient — then exponentiate and normalise.

use candle_core::{Tensor, D};

use crate::Result;

/// Softmax over `dim`.
///
/// # Shapes
/// Any shape; the output has the input's shape.
///
/// # Errors
/// When `dim` is out of range.
pub fn softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    Ok(e.broadcast_div(&s)?)
}

/// Log-softmax over `dim`, computed as `x - max - log(sum(exp(x - max)))`.
///
/// # Shapes
/// Any shape; the output has the input's shape.
///
/// # Errors
/// When `dim` is out of range.
pub fn log_softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Softmax over the last dimension (the drop-in replacement for
/// `candle_nn::ops::softmax_last_dim`).
///
/// # Errors
/// When the tensor is a scalar.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax(x, D::Minus1)
}
