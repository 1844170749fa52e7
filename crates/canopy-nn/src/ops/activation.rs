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

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Storage, Tensor};

use crate::ops::cpu::{chunk_at, par_build, par_build_appended, slice, Float};
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
    par_build(x.len(), CHUNK, |i, yc: &mut [T]| {
        let xc = chunk_at(x, CHUNK, i);
        match gate {
            None => {
                for (o, &u) in yc.iter_mut().zip(xc) {
                    *o = if u > T::ZERO { u } else { T::ZERO };
                }
            }
            Some(g) => {
                for ((o, &u), &v) in yc.iter_mut().zip(xc).zip(chunk_at(g, CHUNK, i)) {
                    *o = if v > T::ZERO { u } else { T::ZERO };
                }
            }
        }
    })
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
        Ok(Some(relu_grad(res, grad)?))
    }
}

/// The gradient of a ReLU (or of [`add_relu`]) from its output `res`: `grad` where `res > 0`.
pub(crate) fn relu_grad(res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
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
    Ok(g)
}

/// `max(a + b, 0)` in one pass; the gradient of both operands is the output gradient where
/// the output is positive. `b` may be a view whose last axis is contiguous and whose leading
/// axes step by whole rows (e.g. `narrow` on the last axis of a contiguous tensor): it is read
/// in place.
///
/// # Shapes
/// `a`, `b`: the same shape -> that shape.
///
/// # Errors
/// Different shapes or dtypes; backend failures.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Err(crate::error::shape(
            "add_relu",
            format!(
                "two operands of shape {:?} and dtype {:?}",
                a.dims(),
                a.dtype()
            ),
            b.dims(),
        ));
    }
    let float = matches!(a.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if a.device().is_cpu() && b.device().is_cpu() && float {
        let b = if rows_of(b.layout()).is_some() {
            b.clone()
        } else {
            b.contiguous()?
        };
        return Ok(a.contiguous()?.apply_op2(&b, AddReluOp)?);
    }
    relu(&(a + b)?)
}

/// `(offset, row length, rows, row stride)` when `l` is a stack of contiguous rows (its last
/// axis) with a constant step between rows.
fn rows_of(l: &Layout) -> Option<(usize, usize, usize, usize)> {
    let (dims, strides) = (l.dims(), l.stride());
    let Some((&len, lead)) = dims.split_last() else {
        return Some((l.start_offset(), 1, 1, 1)); // a scalar
    };
    if len > 1 && strides[dims.len() - 1] != 1 {
        return None;
    }
    let rows: usize = lead.iter().product();
    // the row step is the stride of the innermost leading axis longer than 1; the others must
    // follow from it
    let mut step = None;
    let mut expected = 0;
    for (&d, &s) in lead.iter().zip(strides).rev() {
        if d == 1 {
            continue;
        }
        match step {
            None => {
                step = Some(s);
                expected = s * d;
            }
            Some(_) if s == expected => expected = s * d,
            Some(_) => return None,
        }
    }
    Some((l.start_offset(), len, rows, step.unwrap_or(len)))
}

#[derive(Debug, Clone, Copy)]
struct AddReluOp;

fn add_relu_rows<T: Float>(
    a: &[T],
    b: &[T],
    (off, len, rows, step): (usize, usize, usize, usize),
) -> Vec<T> {
    if rows * len == 0 {
        return Vec::new();
    }
    let rows_per_task = (CHUNK / len.max(1)).max(1);
    // every value is written: appended, not zero-filled first
    par_build_appended(rows * len, rows_per_task * len, |task, yc| {
        let ac = chunk_at(a, rows_per_task * len, task);
        for (r, ar) in ac.chunks(len).enumerate() {
            let br = &b[off + (task * rows_per_task + r) * step..][..len];
            yc.extend(ar.iter().zip(br).map(|(&u, &v)| {
                let s = u + v;
                if s > T::ZERO {
                    s
                } else {
                    T::ZERO
                }
            }));
        }
    })
}

impl CustomOp2 for AddReluOp {
    fn name(&self) -> &'static str {
        "canopy-add-relu"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = rows_of(lb).ok_or_else(|| {
            candle_core::Error::Msg("add_relu: b must be a view of whole rows".into())
        })?;
        let out = match (sa, sb) {
            (CpuStorage::F32(_), CpuStorage::F32(b)) => {
                CpuStorage::F32(add_relu_rows(slice::<f32>(sa, la, "add_relu")?, b, rows))
            }
            (CpuStorage::F64(_), CpuStorage::F64(b)) => {
                CpuStorage::F64(add_relu_rows(slice::<f64>(sa, la, "add_relu")?, b, rows))
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "add_relu: two f32 or two f64 operands expected".into(),
                ))
            }
        };
        Ok((out, la.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(res, grad)?;
        Ok((Some(g.clone()), Some(g)))
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
