//! Activations whose gradients candle gets wrong.
//!
//! candle 0.11's `Tensor::gelu_erf` computes the exact forward value but its backward pass is off
//! by up to 1.7e-7 (measured against central differences in f64): enough to fail a
//! PyTorch golden test at 1e-10. [`gelu`] composes the exact form from `erf`, whose derivative
//! candle computes exactly.

use candle_core::Tensor;

use crate::Result;

/// Exact GELU, `0.5 x (1 + erf(x / sqrt(2)))` (`torch.nn.functional.gelu`, approximate="none").
///
/// # Shapes
/// Any shape, unchanged.
///
/// # Errors
/// Only on backend failures.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let e = (x / std::f64::consts::SQRT_2)?.erf()?;
    Ok(((e + 1.0)? * x)?.affine(0.5, 0.0)?)
}
