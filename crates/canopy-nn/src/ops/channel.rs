//! Per-channel kernels of convolutional networks, fused into one parallel pass over the data:
//! a per-channel affine map with an optional ReLU (batch normalisation in evaluation, or in
//! training with the batch statistics folded into the scale and shift, followed by its
//! activation).
//!
//! candle runs each of these as several single-threaded element-wise passes (multiply, add,
//! ReLU: three full-size temporaries); at U-Net's first level (4 x 32 x 256 x 256) they cost as
//! much as the convolutions. The ops have explicit backward passes (checked by finite
//! differences in `tests/ops.rs`).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{invalid, shape};
use crate::ops::cpu::{
    chunk_at, par_build, par_zeroed_map, slice, sum8, zeros_par, Float, Saved, SavedCell,
};
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

/// Elements per parallel task: whole channel planes, as many as fit (time series have planes of
/// a few dozen values, `(N, C)` inputs planes of one; one task per plane would be all overhead).
const TASK: usize = 1 << 14;

/// Channel planes per parallel task for planes of `inner` elements.
fn per_task(inner: usize) -> usize {
    (TASK / inner.max(1)).max(1)
}

/// The channel of every plane from plane `first` on, for `c` channels (no division per plane).
fn channels(first: usize, c: usize) -> impl Iterator<Item = usize> {
    (0..c.max(1)).cycle().skip(first % c.max(1))
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
    let per = per_task(inner);
    par_build(x.len(), per * inner, |task, yt: &mut [T]| {
        let xt = chunk_at(x, per * inner, task);
        let planes = yt.chunks_mut(inner).zip(xt.chunks(inner));
        for ((yp, xp), ch) in planes.zip(channels(task * per, c)) {
            let (a, o) = (s[ch], b[ch]);
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
        }
    })
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
    // per plane: (sum g * x, sum g) over the unmasked elements
    let per = per_task(inner);
    let built = par_zeroed_map(x.len(), per * inner, |task, dt: &mut [T]| {
        let (xt, yt, gt) = (
            chunk_at(x, per * inner, task),
            chunk_at(y, per * inner, task),
            chunk_at(g, per * inner, task),
        );
        let mut st = Vec::with_capacity(per);
        let planes = dt.chunks_mut(inner).zip(xt.chunks(inner));
        let planes = planes.zip(yt.chunks(inner)).zip(gt.chunks(inner));
        for ((((dp, xp), yp), gp), ch) in planes.zip(channels(task * per, c)) {
            let a = s[ch];
            let (mut gx, mut gs) = (T::ZERO, T::ZERO);
            for (((d, &u), &v), &w) in dp.iter_mut().zip(xp).zip(yp).zip(gp) {
                let w = if relu && v <= T::ZERO { T::ZERO } else { w };
                *d = w * a;
                gx += w * u;
                gs += w;
            }
            st.push((gx, gs));
        }
        Ok::<_, std::convert::Infallible>(st)
    });
    let (dx, sums) = match built {
        Ok(b) => b,
        Err(never) => match never {},
    };
    let mut ds = zeros_par(c);
    let mut db = zeros_par(c);
    for ((gx, gs), ch) in sums.into_iter().flatten().zip(channels(0, c)) {
        ds[ch] += gx;
        db[ch] += gs;
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

/// `x + bias[c]` for `x` of shape `(N, C, ...)`: the bias of a convolution.
///
/// candle's `broadcast_add` computes the same, but its backward pass sums the gradient over the
/// broadcast axes with a strided single-threaded reduction (on U-Net's last up-sampling layer,
/// 8 M values, it is a few percent of a training step). Here the bias gradient is a parallel
/// sum over contiguous channel planes and the input gradient is the output gradient itself.
///
/// # Shapes
/// `x`: `(N, C, ...)`, `bias`: `(C,)` -> like `x`.
///
/// # Errors
/// Shape errors; dtypes other than f32/f64 (other dtypes and CUDA tensors take candle's
/// `broadcast_add`).
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let op = "add_channel_bias";
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(shape(op, "an input (N, C, ...)", dims));
    }
    let c = dims[1];
    if bias.dims() != [c] {
        return Err(shape(op, format!("bias ({c},)"), bias.dims()));
    }
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !fast {
        let mut bs = vec![1usize; dims.len()];
        bs[1] = c;
        return Ok(x.broadcast_add(&bias.to_dtype(x.dtype())?.reshape(bs)?)?);
    }
    Ok(x.contiguous()?
        .apply_op2(&bias.to_dtype(x.dtype())?.contiguous()?, ChannelBias)?)
}

#[derive(Debug, Clone, Copy)]
struct ChannelBias;

impl ChannelBias {
    fn forward<T: Float + Send + Sync>(x: &[T], b: &[T], c: usize, inner: usize) -> Vec<T> {
        let per = per_task(inner);
        par_build(x.len(), per * inner, |task, yt: &mut [T]| {
            let xt = chunk_at(x, per * inner, task);
            let planes = yt.chunks_mut(inner).zip(xt.chunks(inner));
            for ((yp, xp), ch) in planes.zip(channels(task * per, c)) {
                let o = b[ch];
                for (v, &u) in yp.iter_mut().zip(xp) {
                    *v = u + o;
                }
            }
        })
    }

    fn bias_grad<T: Float + Send + Sync>(g: &[T], c: usize, inner: usize) -> Vec<T> {
        channel_totals(&plane_sums(g, (c, inner), |_, p| sum8(p, |u| u)), c)
            .into_iter()
            .map(T::from_f64)
            .collect()
    }
}

impl candle_core::CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "canopy-add-channel-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, inner) = planes(xl);
        let name = "add_channel_bias";
        let out = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(Self::forward(
                slice::<f32>(xs, xl, name)?,
                slice::<f32>(bs, bl, name)?,
                c,
                inner,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(Self::forward(
                slice::<f64>(xs, xl, name)?,
                slice::<f64>(bs, bl, name)?,
                c,
                inner,
            )),
            _ => return Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let db = channel_bias_grad(&grad)?;
        Ok((Some(grad), Some(db)))
    }
}

/// The gradient of a per-channel bias from the output gradient `grad` `(N, C, ...)`: its sum
/// over every axis but 1, as a parallel sum over contiguous channel planes.
/// For `y = act(z + b)` with a per-channel bias `b` and an optional ReLU (`res` is `y`): the
/// gradient of `z` (the output gradient masked where the ReLU cut) and the bias gradient (its
/// sum per channel), as the convolution epilogues' backward passes need them.
pub(crate) fn bias_act_grads(
    relu: bool,
    res: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let g = if relu {
        crate::ops::activation::relu_grad(res, grad)?
    } else {
        grad.contiguous()?
    };
    let db = channel_bias_grad(&g)?;
    Ok((g, db))
}

pub(crate) fn channel_bias_grad(grad: &Tensor) -> candle_core::Result<Tensor> {
    let name = "channel bias backward";
    let grad = grad.contiguous()?;
    let (sg, lg) = grad.storage_and_layout();
    let (c, inner) = planes(lg);
    let Storage::Cpu(sg) = &*sg else {
        return Err(candle_core::Error::Msg(format!("{name}: CPU tensors only")));
    };
    match sg {
        CpuStorage::F32(_) => Tensor::from_vec(
            ChannelBias::bias_grad(slice::<f32>(sg, lg, name)?, c, inner),
            c,
            grad.device(),
        ),
        CpuStorage::F64(_) => Tensor::from_vec(
            ChannelBias::bias_grad(slice::<f64>(sg, lg, name)?, c, inner),
            c,
            grad.device(),
        ),
        _ => Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
    }
}

/// Batch normalisation in training mode, with an optional ReLU, as one op:
/// `y = max(γ[c] (x - μ[c]) / sqrt(σ²[c] + eps) + β[c], 0)` with the batch mean `μ` and biased
/// variance `σ²` of each channel over every axis but 1. Returns `(y, μ, σ²)`; `μ` and `σ²` are
/// plain values (no gradient), for the running statistics.
///
/// The gradient with respect to `x` goes through the statistics as well (the full batch-norm
/// backward, `dx = γ/σ (g - mean(g) - x̂ mean(g x̂))` on the ReLU-masked gradient `g`), in two
/// parallel passes over the data; composing the same from candle's reductions and broadcasts
/// takes about a dozen single-threaded full-size passes and as many temporaries.
///
/// # Shapes
/// `x`: `(N, C, ...)`, `weight` (`γ`), `bias` (`β`): `(C,)` -> `y` like `x`; `μ`, `σ²`: `(C,)`.
///
/// # Errors
/// Shape errors; fewer than two values per channel; dtypes other than f32/f64; non-CPU
/// tensors.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "batch_norm_train";
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(shape(op, "an input (N, C, ...)", dims));
    }
    let c = dims[1];
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [c] {
            return Err(shape(op, format!("{name} ({c},)"), t.dims()));
        }
    }
    if x.elem_count() / c.max(1) < 2 {
        return Err(invalid(
            op,
            "training needs more than one value per channel",
        ));
    }
    if eps.is_nan() || eps < 0.0 {
        return Err(invalid(op, format!("eps {eps} must be >= 0")));
    }
    if !x.device().is_cpu() {
        return Err(invalid(op, "not implemented on CUDA (CPU tensors only)"));
    }
    let dt = x.dtype();
    let saved = SavedCell::default();
    let y = x.contiguous()?.apply_op3(
        &weight.to_dtype(dt)?.contiguous()?,
        &bias.to_dtype(dt)?.contiguous()?,
        BatchNormTrain {
            eps,
            relu,
            saved: saved.clone(),
        },
    )?;
    // the forward pass kept `(μ, 1/σ, σ²)`, 3C values
    let stats = match saved.load()? {
        Saved::F32(v) => Tensor::from_slice(v.as_slice(), (3, c), x.device())?,
        Saved::F64(v) => Tensor::from_slice(v.as_slice(), (3, c), x.device())?,
        Saved::None => return Err(invalid(op, "the forward pass kept no statistics")),
    };
    Ok((y, stats.get(0)?, stats.get(2)?))
}

#[derive(Debug, Clone)]
struct BatchNormTrain {
    eps: f64,
    relu: bool,
    /// `(μ, 1/σ, σ²)` per channel, from the forward pass.
    saved: SavedCell,
}

/// Per-channel totals of per-plane values, summed in f64 in plane order (deterministic).
fn channel_totals<T: Float>(per_plane: &[T], c: usize) -> Vec<f64> {
    let mut t = vec![0.0f64; c];
    for (&v, ch) in per_plane.iter().zip(channels(0, c)) {
        t[ch] += v.to_f64();
    }
    t
}

/// `f(channel, plane)` for each plane of `inner` elements of an input with `c` channels, in
/// parallel tasks of whole planes.
fn plane_sums<T: Float>(
    x: &[T],
    (c, inner): (usize, usize),
    f: impl Fn(usize, &[T]) -> T + Sync,
) -> Vec<T> {
    let per = per_task(inner);
    let mut sums = zeros_par(x.len() / inner.max(1));
    sums.par_chunks_mut(per)
        .zip(x.par_chunks(per * inner))
        .enumerate()
        .for_each(|(task, (st, xt))| {
            let planes = st.iter_mut().zip(xt.chunks(inner));
            for ((o, xp), ch) in planes.zip(channels(task * per, c)) {
                *o = f(ch, xp);
            }
        });
    sums
}

impl BatchNormTrain {
    fn forward<T: Float + Send + Sync>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        c: usize,
        inner: usize,
    ) -> (Vec<T>, Vec<T>) {
        let n = (x.len() / c) as f64;
        let sums = plane_sums(x, (c, inner), |_, p| sum8(p, |u| u));
        let mean: Vec<f64> = channel_totals(&sums, c).iter().map(|s| s / n).collect();
        let mean_t: Vec<T> = mean.iter().map(|&m| T::from_f64(m)).collect();
        let sq = plane_sums(x, (c, inner), |ch, xp| {
            let m = mean_t[ch];
            sum8(xp, |u| (u - m) * (u - m))
        });
        let var: Vec<f64> = channel_totals(&sq, c).iter().map(|s| s / n).collect();
        let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let scale: Vec<T> = (0..c)
            .map(|i| T::from_f64(w[i].to_f64() * inv[i]))
            .collect();
        let shift: Vec<T> = (0..c)
            .map(|i| T::from_f64(b[i].to_f64() - mean[i] * w[i].to_f64() * inv[i]))
            .collect();
        let y = forward(x, &scale, &shift, c, inner, self.relu);
        let stats = mean
            .iter()
            .chain(&inv)
            .chain(&var)
            .map(|&v| T::from_f64(v))
            .collect();
        (y, stats)
    }

    /// `(dx, dγ, dβ)`.
    #[allow(clippy::too_many_arguments)]
    fn backward<T: Float + Send + Sync>(
        &self,
        x: &[T],
        y: &[T],
        g: &[T],
        w: &[T],
        stats: &[T],
        c: usize,
        inner: usize,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let relu = self.relu;
        let (mean, inv) = (&stats[..c], &stats[c..2 * c]);
        // per plane: Σ g and Σ g (x - μ) over the unmasked elements
        let per = per_task(inner);
        let mut sums = vec![(T::ZERO, T::ZERO); x.len() / inner.max(1)];
        sums.par_chunks_mut(per)
            .zip(x.par_chunks(per * inner))
            .zip(y.par_chunks(per * inner))
            .zip(g.par_chunks(per * inner))
            .enumerate()
            .for_each(|(task, (((st, xt), yt), gt))| {
                pulp::Arch::new().dispatch(BnGradSums {
                    st,
                    planes: [xt, yt, gt],
                    inner,
                    mean,
                    first: (task * per, c),
                    relu,
                });
            });
        let n = (x.len() / c) as f64;
        let sg = channel_totals(&sums.iter().map(|s| s.0).collect::<Vec<_>>(), c);
        let sgx = channel_totals(&sums.iter().map(|s| s.1).collect::<Vec<_>>(), c);
        // dβ = Σ g, dγ = Σ g x̂ = Σ g (x - μ) / σ
        let dbias: Vec<T> = sg.iter().map(|&v| T::from_f64(v)).collect();
        let dweight: Vec<T> = (0..c)
            .map(|i| T::from_f64(sgx[i] * inv[i].to_f64()))
            .collect();
        // dx = γ/σ (g - Σg/n - (x - μ) Σg(x - μ) / (n σ²)), as a · g + b · x + o per channel
        let coef: Vec<(T, T, T)> = (0..c)
            .map(|i| {
                let (iv, m) = (inv[i].to_f64(), mean[i].to_f64());
                let a = w[i].to_f64() * iv;
                let bx = -a * sgx[i] * iv * iv / n;
                let o = -a * sg[i] / n - bx * m;
                (T::from_f64(a), T::from_f64(bx), T::from_f64(o))
            })
            .collect();
        let mut dx = zeros_par(x.len());
        dx.par_chunks_mut(per * inner)
            .zip(x.par_chunks(per * inner))
            .zip(y.par_chunks(per * inner))
            .zip(g.par_chunks(per * inner))
            .enumerate()
            .for_each(|(task, (((dt, xt), yt), gt))| {
                pulp::Arch::new().dispatch(BnGradInput {
                    dt,
                    planes: [xt, yt, gt],
                    inner,
                    coef: &coef,
                    first: (task * per, c),
                    relu,
                });
            });
        (dx, dweight, dbias)
    }
}

/// `g`, or 0 where the ReLU after the norm was inactive (`y <= 0`).
#[inline(always)]
fn masked<T: Float>(relu: bool, y: T, g: T) -> T {
    if relu && y <= T::ZERO {
        T::ZERO
    } else {
        g
    }
}

/// Batch-norm backward, first pass of one task: `Σ g` and `Σ g (x - μ)` over the unmasked
/// elements of each of its planes (`x`, `y`, `g` in `planes`), into `st`. A pulp op: its loops
/// are compiled for the CPU's widest SIMD (the baseline build has SSE2 only).
struct BnGradSums<'a, T> {
    st: &'a mut [(T, T)],
    planes: [&'a [T]; 3],
    inner: usize,
    mean: &'a [T],
    /// First plane of the task, channel count.
    first: (usize, usize),
    relu: bool,
}

impl<T: Float> pulp::WithSimd for BnGradSums<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [xt, yt, gt] = self.planes;
        let (inner, relu) = (self.inner, self.relu);
        let planes = xt.chunks(inner).zip(yt.chunks(inner)).zip(gt.chunks(inner));
        let planes = planes.zip(channels(self.first.0, self.first.1)).enumerate();
        for (q, (((xp, yp), gp), ch)) in planes {
            let m = self.mean[ch];
            let (mut sg, mut sgx) = ([T::ZERO; 8], [T::ZERO; 8]);
            let mut i = 0;
            while i + 8 <= xp.len() {
                for k in 0..8 {
                    let gv = masked(relu, yp[i + k], gp[i + k]);
                    sg[k] += gv;
                    sgx[k] += gv * (xp[i + k] - m);
                }
                i += 8;
            }
            let (mut a, mut b) = (T::ZERO, T::ZERO);
            while i < xp.len() {
                let gv = masked(relu, yp[i], gp[i]);
                a += gv;
                b += gv * (xp[i] - m);
                i += 1;
            }
            self.st[q] = (
                sg.iter().fold(a, |s, &v| s + v),
                sgx.iter().fold(b, |s, &v| s + v),
            );
        }
    }
}

/// Batch-norm backward, second pass of one task: `dx = a·g + b·x + o` per plane (`g` masked by
/// the ReLU), with the channel coefficients `coef`. A pulp op like [`BnGradSums`].
struct BnGradInput<'a, T> {
    dt: &'a mut [T],
    planes: [&'a [T]; 3],
    inner: usize,
    coef: &'a [(T, T, T)],
    first: (usize, usize),
    relu: bool,
}

impl<T: Float> pulp::WithSimd for BnGradInput<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [xt, yt, gt] = self.planes;
        let (inner, relu) = (self.inner, self.relu);
        let planes = self.dt.chunks_mut(inner).zip(xt.chunks(inner));
        let planes = planes.zip(yt.chunks(inner)).zip(gt.chunks(inner));
        for ((((dp, xp), yp), gp), ch) in planes.zip(channels(self.first.0, self.first.1)) {
            let (a, bx, o) = self.coef[ch];
            for (((d, &u), &v), &gv) in dp.iter_mut().zip(xp).zip(yp).zip(gp) {
                *d = a * masked(relu, v, gv) + bx * u + o;
            }
        }
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "canopy-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, inner) = planes(xl);
        let name = "batch_norm_train";
        let out = match xs {
            CpuStorage::F32(_) => {
                let (y, st) = self.forward(
                    slice::<f32>(xs, xl, name)?,
                    slice::<f32>(ws, wl, name)?,
                    slice::<f32>(bs, bl, name)?,
                    c,
                    inner,
                );
                self.saved.store(Saved::F32(Arc::new(st)))?;
                CpuStorage::F32(y)
            }
            CpuStorage::F64(_) => {
                let (y, st) = self.forward(
                    slice::<f64>(xs, xl, name)?,
                    slice::<f64>(ws, wl, name)?,
                    slice::<f64>(bs, bl, name)?,
                    c,
                    inner,
                );
                self.saved.store(Saved::F64(Arc::new(st)))?;
                CpuStorage::F64(y)
            }
            _ => return Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = "batch_norm_train backward";
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sy, ly) = res.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (sw, lw) = weight.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sy), Storage::Cpu(sg), Storage::Cpu(sw)) =
            (&*sx, &*sy, &*sg, &*sw)
        else {
            return Err(candle_core::Error::Msg(format!("{name}: CPU tensors only")));
        };
        let (c, inner) = planes(lx);
        let dev = x.device();
        let saved = self.saved.load()?;
        macro_rules! run {
            ($t:ty, $st:expr) => {{
                let (dx, dw, db) = self.backward(
                    slice::<$t>(sx, lx, name)?,
                    slice::<$t>(sy, ly, name)?,
                    slice::<$t>(sg, lg, name)?,
                    slice::<$t>(sw, lw, name)?,
                    $st,
                    c,
                    inner,
                );
                (
                    Tensor::from_vec(dx, x.shape(), dev)?,
                    Tensor::from_vec(dw, c, dev)?,
                    Tensor::from_vec(db, c, dev)?,
                )
            }};
        }
        let (dx, dw, db) = match (sx, &saved) {
            (CpuStorage::F32(_), Saved::F32(st)) => run!(f32, st.as_slice()),
            (CpuStorage::F64(_), Saved::F64(st)) => run!(f64, st.as_slice()),
            _ => {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: no statistics of the input's dtype were kept"
                )))
            }
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}
