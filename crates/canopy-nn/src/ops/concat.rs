//! Concatenation of two tensors along the channel axis (axis 1) in one parallel pass.
//!
//! candle 0.11's `Tensor::cat` copies each input's rows one `memcpy` at a time on the calling
//! thread, and its backward pass hands `narrow` views to the consumers, which copy them again.
//! A U-Net decoder concatenates the upsampled features with the skip connection at every
//! level (tens of MB at full resolution), as does a ConvLSTM cell with its input and hidden
//! state at every step. [`cat_channels`] does it on all threads, and its backward pass returns
//! both gradients contiguous, also in parallel.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::error::shape;
use crate::ops::cpu::{par_build, slice, Float};
use crate::Result;

/// Output values per parallel task.
const TASK: usize = 1 << 16;

/// `cat([a, b], 1)`: `a (B, C_a, ...)` and `b (B, C_b, ...)` with the same other dimensions.
/// CPU f32/f64 tensors take one parallel copy (backward: the two gradients as parallel copies);
/// other devices and dtypes `Tensor::cat`.
///
/// # Shapes
/// `(B, C_a, ...)`, `(B, C_b, ...)` -> `(B, C_a + C_b, ...)`.
///
/// # Errors
/// Inputs of rank below 2, or whose dimensions other than 1 differ, or whose dtypes differ.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "cat_channels";
    let (da, db) = (a.dims(), b.dims());
    let same_rest = da.len() == db.len()
        && da.len() >= 2
        && da[0] == db[0]
        && da[2..] == db[2..]
        && a.dtype() == b.dtype();
    if !same_rest {
        return Err(shape(
            op,
            format!("a second operand (B, C, ...) matching {da:?} but in axis 1, same dtype"),
            db,
        ));
    }
    let fast = a.device().is_cpu()
        && b.device().is_cpu()
        && matches!(a.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !fast {
        return Ok(Tensor::cat(&[a, b], 1)?);
    }
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, CatChannels)?)
}

#[derive(Debug, Clone, Copy)]
struct CatChannels;

/// Per-batch-item lengths of `a`, `b` and the output, from the operands' layouts.
fn parts(la: &Layout, lb: &Layout) -> (usize, usize, usize) {
    let batch = la.shape().dims()[0].max(1);
    let (na, nb) = (
        la.shape().elem_count() / batch,
        lb.shape().elem_count() / batch,
    );
    (na, nb, na + nb)
}

/// The output `(B, n_a + n_b)` (per batch item: `a`'s values, then `b`'s).
fn forward<T: Float>(a: &[T], b: &[T], (na, nb, n): (usize, usize, usize)) -> Vec<T> {
    let total = a.len() + b.len();
    par_build(total, TASK, |task, out: &mut [T]| {
        let mut o = task * TASK;
        let mut rest = out;
        while !rest.is_empty() {
            let (item, at) = (o / n, o % n);
            let (src, len) = if at < na {
                (&a[item * na + at..], na - at)
            } else {
                (&b[item * nb + at - na..], n - at)
            };
            let len = len.min(rest.len());
            let (head, tail) = rest.split_at_mut(len);
            head.copy_from_slice(&src[..len]);
            rest = tail;
            o += len;
        }
    })
}

/// One operand's gradient from the output gradient `g`: per batch item, `len` values from
/// offset `skip` of each row of `n`.
fn split<T: Float>(g: &[T], (skip, len, n): (usize, usize, usize)) -> Vec<T> {
    let items = g.len() / n.max(1);
    let per = (TASK / len.max(1)).max(1);
    par_build(items * len, per * len, |task, out: &mut [T]| {
        for (k, dst) in out.chunks_mut(len).enumerate() {
            let item = task * per + k;
            dst.copy_from_slice(&g[item * n + skip..item * n + skip + len]);
        }
    })
}

impl CustomOp2 for CatChannels {
    fn name(&self) -> &'static str {
        "canopy-cat-channels"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = "cat_channels";
        let sizes = parts(la, lb);
        let out = match (sa, sb) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(forward(
                slice::<f32>(sa, la, name)?,
                slice::<f32>(sb, lb, name)?,
                sizes,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(forward(
                slice::<f64>(sa, la, name)?,
                slice::<f64>(sb, lb, name)?,
                sizes,
            )),
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: both operands f32 or both f64"
                )))
            }
        };
        let mut dims = la.shape().dims().to_vec();
        dims[1] += lb.shape().dims()[1];
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (na, nb) = (
            a.elem_count() / a.dim(0)?.max(1),
            b.elem_count() / b.dim(0)?.max(1),
        );
        let n = na + nb;
        let (sg, lg) = grad.storage_and_layout();
        let candle_core::Storage::Cpu(sg) = &*sg else {
            return Err(candle_core::Error::Msg(
                "cat_channels backward: CPU tensors only".into(),
            ));
        };
        let part =
            |skip: usize, len: usize, like: &Tensor| -> candle_core::Result<Option<Tensor>> {
                if !like.track_op() {
                    return Ok(None);
                }
                let dev = like.device();
                let t = match sg {
                    CpuStorage::F32(_) => Tensor::from_vec(
                        split(slice::<f32>(sg, lg, "cat_channels")?, (skip, len, n)),
                        like.shape(),
                        dev,
                    )?,
                    CpuStorage::F64(_) => Tensor::from_vec(
                        split(slice::<f64>(sg, lg, "cat_channels")?, (skip, len, n)),
                        like.shape(),
                        dev,
                    )?,
                    _ => {
                        return Err(candle_core::Error::Msg(
                            "cat_channels backward: f32 or f64 only".into(),
                        ))
                    }
                };
                Ok(Some(t))
            };
        Ok((part(0, na, a)?, part(na, nb, b)?))
    }
}
