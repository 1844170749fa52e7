//! `nn.Linear` with PyTorch's names and default initialisation, computed as one 2-D matrix
//! product over all leading dimensions.
//!
//! candle-nn's `Linear` broadcasts its weight over the batch of a 3-D input
//! (`(B, T, in) x (B, in, out)`); the backward pass of that broadcast materialises one weight
//! gradient per batch element (`B x out x in` values) before summing them: 256 copies of the
//! weight for a batch of 256 sequences. Flattening `(B, T, in)` to `(B·T, in)` gives the same
//! numbers with a single product in each direction.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::shape;
use crate::init::pytorch_uniform;
use crate::ops::linear_kernel::LinearOp;
use crate::Result;

/// `y = x Wᵀ + b` over the last dimension of `x` (any number of leading dimensions).
///
/// # Shapes
/// `x`: `(.., in)`, `weight`: `(out, in)`, `bias`: `(out,)` -> `(.., out)`.
///
/// # Errors
/// When the last dimension of `x` is not `in`, or the bias is not `(out,)`.
pub fn linear_forward(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_impl(x, weight, bias, true, false)
}

/// `relu(x Wᵀ + b)`: [`linear_forward`] followed by a ReLU. On the CPU in f32/f64 the ReLU is
/// applied to each block of rows right after its product, while it is in cache, and the
/// backward pass masks the output gradient inside the linear op (no separate activation pass,
/// no extra tensor); elsewhere it is the two ops.
///
/// # Shapes
/// As [`linear_forward`].
///
/// # Errors
/// As [`linear_forward`].
pub fn linear_relu_forward(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_impl(x, weight, bias, true, true)
}

/// [`linear_forward`] composed from candle ops only (a matmul with the transposed weight and a
/// broadcast addition): any device and dtype. On the CPU in f32/f64, `linear_forward` runs one
/// op instead (`ops/linear_kernel.rs`), whose backward pass computes the input, weight
/// and bias gradients together; this is the reference it is tested against.
///
/// # Shapes
/// As [`linear_forward`].
///
/// # Errors
/// As [`linear_forward`].
pub fn linear_forward_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    linear_impl(x, weight, bias, false, false)
}

fn linear_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    fused: bool,
    relu: bool,
) -> Result<Tensor> {
    let (out_dim, in_dim) = weight
        .dims2()
        .map_err(|_| shape("linear", "weight (out, in)", weight.dims()))?;
    let dims = x.dims();
    if dims.last() != Some(&in_dim) {
        return Err(shape("linear", format!("input (.., {in_dim})"), dims));
    }
    if let Some(b) = bias.filter(|b| b.dims() != [out_dim]) {
        return Err(shape("linear", format!("bias ({out_dim},)"), b.dims()));
    }
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let x2 = x.reshape((rows, in_dim))?;
    let same_dtype = weight.dtype() == x.dtype() && bias.is_none_or(|b| b.dtype() == x.dtype());
    let y = if fused
        && same_dtype
        && x.device().is_cpu()
        && weight.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
    {
        let (x2, w) = (x2.contiguous()?, weight.contiguous()?);
        let op = LinearOp { relu };
        match bias {
            Some(b) => x2.apply_op3(&w, &b.contiguous()?, op)?,
            None => x2.apply_op2(&w, op)?,
        }
    } else {
        let y = x2.matmul(&weight.t()?)?; // (.., in) -> (rows, out)
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        if relu {
            crate::ops::relu(&y)?
        } else {
            y
        }
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

impl Linear {
    /// `relu(self(x))` with the ReLU fused into the product (see [`linear_relu_forward`]).
    ///
    /// # Shapes
    /// `(.., in)` -> `(.., out)`.
    ///
    /// # Errors
    /// As [`linear_forward`].
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        linear_relu_forward(x, &self.weight, self.bias.as_ref())
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

    /// Largest absolute difference (0 for empty tensors).
    fn diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .fold(0.0, f64::max)
    }

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

    /// The fused op against the composed reference on shapes that span several row blocks
    /// and several partial weight gradients, with and without bias, in f64 and f32, plus
    /// finite-difference checks on a small case.
    #[test]
    fn fused_op_equals_the_composed_product_and_passes_gradient_checks() {
        use crate::gradcheck::{check_gradients, random_f64, GradCheckConfig};
        let dev = Device::Cpu;
        for (lead, i, o) in [
            (vec![3usize, 4], 5usize, 2usize),
            (vec![1100], 7, 9),
            (vec![2, 1300], 3, 4),
            (vec![0], 3, 2),
        ] {
            let mut xd = lead.clone();
            xd.push(i);
            for dtype in [DType::F64, DType::F32] {
                let x =
                    Var::from_tensor(&random_f64(&xd, 1, &dev).unwrap().to_dtype(dtype).unwrap())
                        .unwrap();
                let w = Var::from_tensor(
                    &random_f64(&[o, i], 2, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap();
                let b =
                    Var::from_tensor(&random_f64(&[o], 3, &dev).unwrap().to_dtype(dtype).unwrap())
                        .unwrap();
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-4 };
                for (with_bias, relu) in
                    [(true, false), (false, false), (true, true), (false, true)]
                {
                    let bias = with_bias.then(|| b.as_tensor());
                    let (y1, y2) = if relu {
                        let y2 = linear_forward_composed(x.as_tensor(), w.as_tensor(), bias)
                            .and_then(|y| crate::ops::relu(&y))
                            .unwrap();
                        (
                            linear_relu_forward(x.as_tensor(), w.as_tensor(), bias).unwrap(),
                            y2,
                        )
                    } else {
                        (
                            linear_forward(x.as_tensor(), w.as_tensor(), bias).unwrap(),
                            linear_forward_composed(x.as_tensor(), w.as_tensor(), bias).unwrap(),
                        )
                    };
                    if relu && !lead.contains(&0) {
                        let zeros = y1.eq(0.0).unwrap().to_dtype(DType::F64).unwrap();
                        let share = zeros.mean_all().unwrap().to_scalar::<f64>().unwrap();
                        assert!(
                            share > 0.1 && share < 0.9,
                            "ReLU cut {share} of the outputs"
                        );
                    }
                    let mut yd = lead.clone();
                    yd.push(o);
                    assert_eq!(y1.dims(), yd.as_slice());
                    assert!(diff(&y1, &y2) < tol, "{xd:?} bias {with_bias} relu {relu}");
                    let r = random_f64(y1.dims(), 4, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let vars: Vec<&Var> = if with_bias {
                        vec![&x, &w, &b]
                    } else {
                        vec![&x, &w]
                    };
                    for (k, v) in vars.into_iter().enumerate() {
                        let (a, c) = (g1.get(v.as_tensor()), g2.get(v.as_tensor()));
                        match (a, c) {
                            (Some(a), Some(c)) => {
                                assert!(diff(a, c) < tol * 10.0, "{xd:?} relu {relu} grad {k}")
                            }
                            // an empty input has empty gradients
                            _ => assert!(lead.contains(&0), "{xd:?} grad {k} missing"),
                        }
                    }
                }
            }
        }
        check_gradients(
            |t| linear_forward(&t[0], &t[1], Some(&t[2])),
            &[
                random_f64(&[2, 3, 4], 5, &dev).unwrap(),
                random_f64(&[5, 4], 6, &dev).unwrap(),
                random_f64(&[5], 7, &dev).unwrap(),
            ],
            GradCheckConfig::default(),
        )
        .unwrap();
        check_gradients(
            |t| linear_relu_forward(&t[0], &t[1], Some(&t[2])),
            &[
                random_f64(&[2, 3, 4], 15, &dev).unwrap(),
                random_f64(&[5, 4], 16, &dev).unwrap(),
                random_f64(&[5], 17, &dev).unwrap(),
            ],
            GradCheckConfig::default(),
        )
        .unwrap();
        let x = random_f64(&[2, 4], 8, &dev).unwrap();
        let w = random_f64(&[5, 4], 9, &dev).unwrap();
        assert!(linear_forward(&x, &w, Some(&random_f64(&[4], 1, &dev).unwrap())).is_err());
        assert!(linear_forward(&x, &w.t().unwrap(), None).is_err());
    }
}
