//! `nn.Linear` with PyTorch's names and default initialisation, computed as one 2-D matrix
//! product over all leading dimensions.
//!
//! candle-nn's `Linear` broadcasts its weight over the batch of a 3-D input
//! (`(B, T, in) x (B, in, out)`); the backward pass of that broadcast materialises one weight
//! gradient per batch element (`B x out x in` values) before summing them: 256 copies of the
//! weight for a batch of 256 sequences. Flattening `(B, T, in)` to `(B·T, in)` gives the same
//! numbers with a single product in each direction.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::shape;
use crate::init::pytorch_uniform;
use crate::Result;

/// `y = x Wᵀ + b` over the last dimension of `x` (any number of leading dimensions).
///
/// # Shapes
/// `x`: `(.., in)`, `weight`: `(out, in)`, `bias`: `(out,)` -> `(.., out)`.
///
/// # Errors
/// When the last dimension of `x` is not `in`, or the bias is not `(out,)`.
pub fn linear_forward(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight
        .dims2()
        .map_err(|_| shape("linear", "weight (out, in)", weight.dims()))?;
    let dims = x.dims();
    if dims.last() != Some(&in_dim) {
        return Err(shape("linear", format!("input (.., {in_dim})"), dims));
    }
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?; // (.., in) -> (rows, out)
    let y = match bias {
        Some(b) if b.dims() == [out_dim] => y.broadcast_add(b)?,
        Some(b) => return Err(shape("linear", format!("bias ({out_dim},)"), b.dims())),
        None => y,
    };
    let mut out_dims = dims.to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = out_dim;
    }
    Ok(y.reshape(out_dims)?)
}

/// `torch.nn.Linear`: parameters `weight (out, in)` and optional `bias (out,)`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Wraps existing parameters.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// The `(out, in)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(out,)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    /// # Shapes
    /// `(.., in)` -> `(.., out)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear_forward(x, &self.weight, self.bias.as_ref())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// A [`Linear`] layer with PyTorch's default initialisation (`U(-1/sqrt(in), 1/sqrt(in))` for
/// weight and bias; candle's `linear` uses Kaiming-normal), variables `weight` and `bias`.
///
/// # Errors
/// When the variables cannot be created or loaded.
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let init = pytorch_uniform(in_dim);
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", init)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn equals_candles_broadcast_product_and_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 4, 5), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 5), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f64, 1.0, 2, &dev).unwrap()).unwrap();
        let ours = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let theirs = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let (y1, y2) = (
            ours.forward(x.as_tensor()).unwrap(),
            theirs.forward(x.as_tensor()).unwrap(),
        );
        assert_eq!(y1.dims(), &[3, 4, 2]);
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(diff(&y1, &y2) < 1e-12);
        let g1 = y1.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let d = diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-12, "{d}");
        }
        assert!(linear_forward(x.as_tensor(), b.as_tensor(), None).is_err());
    }
}
