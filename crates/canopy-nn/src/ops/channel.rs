//! Per-channel kernels of convolutional networks, fused into one parallel pass over the data:
//! a per-channel affine map with an optional ReLU (batch normalisation in evaluation, or in
//! training with the batch statistics folded into the scale and shift, followed by its
//! activation), and max-pooling over non-overlapping blocks (U-Net's 2x2 pooling).
//!
//! candle runs each of these as several single-threaded element-wise passes (multiply, add,
//! ReLU: three full-size temporaries) or, for pooling, as a gather of every window; at U-Net's
//! first level (4 x 32 x 256 x 256) they cost as much as the convolutions. Both ops have
//! explicit backward passes (checked by finite differences in `tests/ops.rs`).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{invalid, shape};
use crate::ops::cpu::{slice, Float};
use crate::Result;

/// `max(x * scale[c] + shift[c], 0)` (or without the `max` when `relu` is false) for `x` of
/// shape `(N, C, ...)`.
///
/// # Shapes
/// `x`: `(N, C, ...)`, `scale`, `shift`: `(C,)` -> like `x`.
///
/// # Errors
/// Shape errors; dtypes other than f32/f64; non-CPU tensors.
pub fn scale_shift(x: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Result<Tensor> {
    let op = "scale_shift";
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(shape(op, "an input (N, C, ...)", dims));
    }
    let c = dims[1];
    for (name, t) in [("scale", scale), ("shift", shift)] {
        if t.dims() != [c] {
            return Err(shape(op, format!("{name} ({c},)"), t.dims()));
        }
    }
    if !x.device().is_cpu() {
        return Err(invalid(op, "not implemented on CUDA (CPU tensors only)"));
    }
    let dt = x.dtype();
    Ok(x.contiguous()?.apply_op3(
        &scale.to_dtype(dt)?.contiguous()?,
        &shift.to_dtype(dt)?.contiguous()?,
        ScaleShift { relu },
    )?)
}

#[derive(Debug, Clone, Copy)]
struct ScaleShift {
    relu: bool,
}

/// Number of elements per channel plane and channel count of `(N, C, ...)`.
fn planes(l: &Layout) -> (usize, usize) {
    let d = l.shape().dims();
    let c = d.get(1).copied().unwrap_or(1).max(1);
    let inner: usize = d.iter().skip(2).product();
    (c, inner.max(1))
}

fn forward<T: Float + Send + Sync>(
    x: &[T],
    s: &[T],
    b: &[T],
    c: usize,
    inner: usize,
    relu: bool,
) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(inner)
        .zip(x.par_chunks(inner))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let (a, o) = (s[p % c], b[p % c]);
            if relu {
                for (v, &u) in yp.iter_mut().zip(xp) {
                    let t = u * a + o;
                    *v = if t > T::ZERO { t } else { T::ZERO };
                }
            } else {
                for (v, &u) in yp.iter_mut().zip(xp) {
                    *v = u * a + o;
                }
            }
        });
    y
}

/// `(dx, dscale, dshift)` from the input, the output (for the ReLU mask) and the output's
/// gradient.
fn backward<T: Float + Send + Sync>(
    x: &[T],
    y: &[T],
    g: &[T],
    s: &[T],
    c: usize,
    inner: usize,
    relu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dx = vec![T::ZERO; x.len()];
    // per plane: (sum g * x, sum g) over the unmasked elements
    let sums: Vec<(T, T)> = dx
        .par_chunks_mut(inner)
        .zip(x.par_chunks(inner))
        .zip(y.par_chunks(inner))
        .zip(g.par_chunks(inner))
        .enumerate()
        .map(|(p, (((dp, xp), yp), gp))| {
            let a = s[p % c];
            let (mut gx, mut gs) = (T::ZERO, T::ZERO);
            for (((d, &u), &v), &w) in dp.iter_mut().zip(xp).zip(yp).zip(gp) {
                let w = if relu && v <= T::ZERO { T::ZERO } else { w };
                *d = w * a;
                gx += w * u;
                gs += w;
            }
            (gx, gs)
        })
        .collect();
    let mut ds = vec![T::ZERO; c];
    let mut db = vec![T::ZERO; c];
    for (p, (gx, gs)) in sums.into_iter().enumerate() {
        ds[p % c] += gx;
        db[p % c] += gs;
    }
    (dx, ds, db)
}

impl CustomOp3 for ScaleShift {
    fn name(&self) -> &'static str {
        "canopy-scale-shift"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, inner) = planes(xl);
        let out = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward(
                slice::<f32>(xs, xl, "scale_shift")?,
                slice::<f32>(ss, sl, "scale_shift")?,
                slice::<f32>(bs, bl, "scale_shift")?,
                c,
                inner,
                self.relu,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(forward(
                slice::<f64>(xs, xl, "scale_shift")?,
                slice::<f64>(ss, sl, "scale_shift")?,
                slice::<f64>(bs, bl, "scale_shift")?,
                c,
                inner,
                self.relu,
            )),
            _ => {
                return Err(candle_core::Error::Msg(
                    "scale_shift: f32 or f64 only".into(),
                ))
            }
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sy, ly) = res.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (ss, ls) = scale.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sy), Storage::Cpu(sg), Storage::Cpu(ss)) =
            (&*sx, &*sy, &*sg, &*ss)
        else {
            return Err(candle_core::Error::Msg(
                "scale_shift backward: CPU tensors only".into(),
            ));
        };
        let (c, inner) = planes(lx);
        let dev = x.device();
        macro_rules! run {
            ($t:ty) => {{
                let (dx, ds, db) = backward(
                    slice::<$t>(sx, lx, "scale_shift")?,
                    slice::<$t>(sy, ly, "scale_shift")?,
                    slice::<$t>(sg, lg, "scale_shift")?,
                    slice::<$t>(ss, ls, "scale_shift")?,
                    c,
                    inner,
                    self.relu,
                );
                (
                    Tensor::from_vec(dx, x.shape(), dev)?,
                    Tensor::from_vec(ds, c, dev)?,
                    Tensor::from_vec(db, c, dev)?,
                )
            }};
        }
        let (dx, ds, db) = match sx {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            _ => {
                return Err(candle_core::Error::Msg(
                    "scale_shift: f32 or f64 only".into(),
                ))
            }
        };
        Ok((Some(dx), Some(ds), Some(db)))
    }
}

/// Max-pooling over non-overlapping `kh x kw` blocks (`F.max_pool2d(x, (kh, kw))` with stride =
/// kernel, no padding, floor mode). The gradient goes to the first maximum of each block, as in
/// PyTorch.
///
/// # Shapes
/// `(N, C, H, W)` -> `(N, C, H / kh, W / kw)`.
///
/// # Errors
/// Shape errors (input smaller than a block); dtypes other than f32/f64; non-CPU tensors.
pub(crate) fn max_pool_blocks(x: &Tensor, kh: usize, kw: usize) -> Result<Tensor> {
    let op = "max_pool2d";
    let (_, _, h, w) = x.dims4().map_err(|_| shape(op, "(N, C, H, W)", x.dims()))?;
    if kh == 0 || kw == 0 || h < kh || w < kw {
        return Err(invalid(
            op,
            format!("a {h}x{w} input is smaller than the {kh}x{kw} window"),
        ));
    }
    if !x.device().is_cpu() {
        return Err(invalid(op, "not implemented on CUDA (CPU tensors only)"));
    }
    Ok(x.contiguous()?.apply_op1(MaxPoolBlocks { kh, kw })?)
}

#[derive(Debug, Clone, Copy)]
struct MaxPoolBlocks {
    kh: usize,
    kw: usize,
}

impl MaxPoolBlocks {
    fn dims(&self, l: &Layout) -> (usize, usize, usize, usize, usize) {
        let d = l.shape().dims();
        let (h, w) = (d[2], d[3]);
        (d[0] * d[1], h, w, h / self.kh, w / self.kw)
    }

    /// Index (within the plane) of the first maximum of output cell `(i, j)`.
    fn argmax<T: Float>(&self, plane: &[T], w: usize, i: usize, j: usize) -> usize {
        let mut best = (i * self.kh) * w + j * self.kw;
        let mut m = plane[best];
        for a in 0..self.kh {
            let row = (i * self.kh + a) * w + j * self.kw;
            for (b, &v) in plane[row..row + self.kw].iter().enumerate() {
                // NaN propagates, as in PyTorch (`v` is NaN when it is not equal to itself)
                #[allow(clippy::eq_op)]
                let nan = v != v && m == m;
                if v > m || nan {
                    m = v;
                    best = row + b;
                }
            }
        }
        best
    }

    fn forward<T: Float + Send + Sync>(&self, x: &[T], l: &Layout) -> Vec<T> {
        let (planes, h, w, oh, ow) = self.dims(l);
        let mut y = vec![T::ZERO; planes * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(yp, xp)| {
                for i in 0..oh {
                    for j in 0..ow {
                        yp[i * ow + j] = xp[self.argmax(xp, w, i, j)];
                    }
                }
            });
        y
    }

    fn backward<T: Float + Send + Sync>(&self, x: &[T], g: &[T], l: &Layout) -> Vec<T> {
        let (_, h, w, oh, ow) = self.dims(l);
        let mut dx = vec![T::ZERO; x.len()];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(g.par_chunks(oh * ow))
            .for_each(|((dp, xp), gp)| {
                for i in 0..oh {
                    for j in 0..ow {
                        dp[self.argmax(xp, w, i, j)] += gp[i * ow + j];
                    }
                }
            });
        dx
    }
}

impl CustomOp1 for MaxPoolBlocks {
    fn name(&self) -> &'static str {
        "canopy-max-pool-blocks"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = (l.shape().dims()[0], l.shape().dims()[1]);
        let (_, _, _, oh, ow) = self.dims(l);
        let out = match s {
            CpuStorage::F32(_) => {
                CpuStorage::F32(self.forward(slice::<f32>(s, l, "max_pool2d")?, l))
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(self.forward(slice::<f64>(s, l, "max_pool2d")?, l))
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "max_pool2d: f32 or f64 only".into(),
                ))
            }
        };
        Ok((out, Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sg)) = (&*sx, &*sg) else {
            return Err(candle_core::Error::Msg(
                "max_pool2d backward: CPU tensors only".into(),
            ));
        };
        let dx = match sx {
            CpuStorage::F32(_) => {
                let v = self.backward(
                    slice::<f32>(sx, lx, "max_pool2d")?,
                    slice::<f32>(sg, lg, "max_pool2d")?,
                    lx,
                );
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            CpuStorage::F64(_) => {
                let v = self.backward(
                    slice::<f64>(sx, lx, "max_pool2d")?,
                    slice::<f64>(sg, lg, "max_pool2d")?,
                    lx,
                );
                Tensor::from_vec(v, x.shape(), x.device())?
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "max_pool2d: f32 or f64 only".into(),
                ))
            }
        };
        Ok(Some(dx))
    }
}
