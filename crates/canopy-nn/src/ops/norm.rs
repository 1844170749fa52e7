//! Layer normalisation whose gradients reach the input and the affine parameters.
//!
//! candle's `LayerNorm` and `ops::layer_norm` take a fused path on contiguous inputs whose
//! backward pass produces no gradient for the input (candle issue 3752); this version is built
//! from primitives. Numerics follow PyTorch: biased variance, `eps` inside the square root.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use crate::{error::shape, Result};

/// Normalises over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// # Shapes
/// `x`: `(..., N)`; `weight`, `bias`: `(N,)`.
///
/// # Errors
/// When `weight`/`bias` do not have `N` elements.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            if t.dims() != [n] {
                return Err(shape(
                    "layer_norm",
                    format!("{name} of shape ({n},)"),
                    t.dims(),
                ));
            }
        }
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(w)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

/// `torch.nn.LayerNorm(normalized_shape)` over the last dimension, with PyTorch's parameter
/// names `weight` and `bias` (initialised to ones and zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm over `size` features; `affine = false` has no parameters
    /// (`elementwise_affine=False`).
    ///
    /// # Errors
    /// When the variables cannot be created or loaded.
    pub fn new(size: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        let (weight, bias) = if affine {
            (
                Some(vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?),
                Some(vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm { weight, bias, eps })
    }

    /// Normalises over the last dimension.
    ///
    /// # Shapes
    /// `(..., size)` -> `(..., size)`.
    ///
    /// # Errors
    /// When the last dimension is not `size`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl candle_core::Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        LayerNorm::forward(self, x).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
