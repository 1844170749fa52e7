//! Activations whose gradients candle gets wrong or slowly.
//!
//! candle 0.11's `Tensor::gelu_erf` computes the exact forward value but its backward pass is off
//! by up to 1.7e-7 (measured against central differences in f64): enough to fail a
//! PyTorch golden test at 1e-10. [`gelu`] composes the exact form from `erf`, whose derivative
//! candle computes exactly.
//!
//! candle's `Tensor::relu` backward pass builds `x >= 0` as a new tensor (a zero tensor, a
//! comparison, a dtype conversion, a product: four single-threaded passes over the activation)
//! and passes a gradient of 1 at `x = 0`; [`relu`] is one parallel op on the CPU whose backward
//! pass keeps the gradient where the output is positive, as PyTorch's `threshold_backward`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{slice, Float};
use crate::Result;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `max(x, 0)`; the gradient is passed where the output is positive (0 at `x = 0`, as PyTorch).
///
/// # Shapes
/// Any shape, unchanged.
///
/// # Errors
/// Only on backend failures.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    {
        return Ok(x.contiguous()?.apply_op1(ReluOp)?);
    }
    Ok(x.relu()?)
}

#[derive(Debug, Clone, Copy)]
struct ReluOp;

/// `max(x, 0)`, or with `gate` the gradient `x` where `gate > 0`.
fn relu_map<T: Float>(x: &[T], gate: Option<&[T]>) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    match gate {
        None => y
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| {
                for (o, &u) in yc.iter_mut().zip(xc) {
                    *o = if u > T::ZERO { u } else { T::ZERO };
                }
            }),
        Some(g) => y
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((yc, xc), gc)| {
                for ((o, &u), &v) in yc.iter_mut().zip(xc).zip(gc) {
                    *o = if v > T::ZERO { u } else { T::ZERO };
                }
            }),
    }
    y
}

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "canopy-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(relu_map(slice::<f32>(s, l, "relu")?, None)),
            CpuStorage::F64(_) => CpuStorage::F64(relu_map(slice::<f64>(s, l, "relu")?, None)),
            _ => return Err(candle_core::Error::Msg("relu: f32 or f64 only".into())),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (sg, lg) = grad.storage_and_layout();
        let (sy, ly) = res.storage_and_layout();
        let (Storage::Cpu(sg), Storage::Cpu(sy)) = (&*sg, &*sy) else {
            return Err(candle_core::Error::Msg(
                "relu backward: CPU tensors only".into(),
            ));
        };
        let g = match sg {
            CpuStorage::F32(_) => Tensor::from_vec(
                relu_map(
                    slice::<f32>(sg, lg, "relu")?,
                    Some(slice::<f32>(sy, ly, "relu")?),
                ),
                grad.shape(),
                grad.device(),
            )?,
            CpuStorage::F64(_) => Tensor::from_vec(
                relu_map(
                    slice::<f64>(sg, lg, "relu")?,
                    Some(slice::<f64>(sy, ly, "relu")?),
                ),
                grad.shape(),
                grad.device(),
            )?,
            _ => {
                return Err(candle_core::Error::Msg(
                    "relu backward: f32 or f64 only".into(),
                ))
            }
        };
        Ok(Some(g))
    }
}

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
