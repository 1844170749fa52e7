//! Softmax and log-softmax built from primitives whose gradients candle computes correctly.
//!
//! candle's fused `candle_nn::ops::softmax_last_dim` returns from `backward()` without a gradient
//! for its input (candle issues 3011, 3569): everything upstream silently stops learning. These
//! versions subtract the (detached) maximum for stability — the result does not depend on it, so
//! detaching it changes no gradient — then exponentiate and normalise.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};
use rayon::prelude::*;

use crate::ops::cpu::{slice, zeros_par, Float};
use crate::Result;

/// Softmax over `dim`. On the CPU in f32/f64 over the last dimension this is one fused op
/// (rows in parallel; backward `dx = y (dy - Σ dy y)`), elsewhere [`softmax_reference`].
///
/// # Shapes
/// Any shape; the output has the input's shape.
///
/// # Errors
/// When `dim` is out of range.
pub fn softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    let d = dim.to_index(x.shape(), "softmax")?;
    if d + 1 == x.rank()
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dim(d)? > 0
    {
        return Ok(x.contiguous()?.apply_op1(SoftmaxLastDim)?);
    }
    softmax_reference(x, dim)
}

/// Softmax composed from candle ops (any device, dtype and dimension): the reference the fused
/// CPU kernel is tested against.
///
/// # Shapes
/// Any shape; the output has the input's shape.
///
/// # Errors
/// When `dim` is out of range.
pub fn softmax_reference<Dm: candle_core::shape::Dim + Copy>(
    x: &Tensor,
    dim: Dm,
) -> Result<Tensor> {
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

/// Row-wise softmax over the last dimension of a contiguous CPU tensor.
#[derive(Debug, Clone, Copy)]
struct SoftmaxLastDim;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

fn softmax_rows<T: Float>(x: &[T], n: usize) -> Vec<T> {
    let mut y = zeros_par(x.len());
    y.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(x.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(yb, xb)| {
            for (yr, xr) in yb.chunks_mut(n).zip(xb.chunks(n)) {
                let max = xr
                    .iter()
                    .copied()
                    .fold(xr[0], |m, v| if v > m { v } else { m });
                let mut sum = T::ZERO;
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                let inv = T::ONE / sum;
                for o in yr.iter_mut() {
                    *o = *o * inv;
                }
            }
        });
    y
}

fn softmax_rows_backward<T: Float>(y: &[T], dy: &[T], n: usize) -> Vec<T> {
    let mut dx = zeros_par(y.len());
    dx.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(y.par_chunks(n * ROWS_PER_TASK))
        .zip(dy.par_chunks(n * ROWS_PER_TASK))
        .for_each(|((db, yb), gb)| {
            for ((dr, yr), gr) in db.chunks_mut(n).zip(yb.chunks(n)).zip(gb.chunks(n)) {
                let mut dot = T::ZERO;
                for (&a, &b) in yr.iter().zip(gr) {
                    dot += a * b;
                }
                for ((d, &a), &b) in dr.iter_mut().zip(yr).zip(gr) {
                    *d = a * (b - dot);
                }
            }
        });
    dx
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "canopy-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(softmax_rows(slice::<f32>(s, l, "softmax")?, n)),
            CpuStorage::F64(_) => CpuStorage::F64(softmax_rows(slice::<f64>(s, l, "softmax")?, n)),
            _ => return Err(candle_core::Error::Msg("softmax: f32 or f64 only".into())),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let n = res.dims().last().copied().unwrap_or(1).max(1);
        let (sy, ly) = res.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sy), Storage::Cpu(sg)) = (&*sy, &*sg) else {
            return Err(candle_core::Error::Msg(
                "softmax backward: CPU tensors only".into(),
            ));
        };
        let dx = match sy {
            CpuStorage::F32(_) => {
                let v = softmax_rows_backward(
                    slice::<f32>(sy, ly, "softmax")?,
                    slice::<f32>(sg, lg, "softmax")?,
                    n,
                );
                Tensor::from_vec(v, res.shape(), res.device())?
            }
            CpuStorage::F64(_) => {
                let v = softmax_rows_backward(
                    slice::<f64>(sy, ly, "softmax")?,
                    slice::<f64>(sg, lg, "softmax")?,
                    n,
                );
                Tensor::from_vec(v, res.shape(), res.device())?
            }
            _ => return Err(candle_core::Error::Msg("softmax: f32 or f64 only".into())),
        };
        Ok(Some(dx))
    }
}
