//! Fused multi-head scaled dot-product attention for the CPU: `softmax(q kᵀ · scale + mask) v`
//! for every (sequence, head) pair as one candle op, with its backward pass as one op.
//!
//! Composed from candle ops, attention is two batched products of tiny matrices (45 x 32 for a
//! Sentinel-2 year) that candle dispatches through a spinning thread pool, a five-op softmax,
//! the copies that split the embedding into heads and merge them back, and the backward passes
//! of all of these. Here each sequence is one rayon task running single-threaded `gemm` calls
//! on matrices that stay in cache, reading each head as a column block of the `(B, L, E)`
//! projections (strided views, no split copies) and writing the output with the heads side by
//! side, as the output projection takes them. Self-attention takes the packed `(B, T, 3E)`
//! projection `[q | k | v]` of one linear layer (PyTorch's packed in-projection) as a single
//! operand, so its gradient is again one `(B, T, 3E)` tensor. The attention probabilities are
//! kept inside the op for the backward pass:
//!
//! ```text
//! dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),  dQ = scale · dS K,  dK = scale · dSᵀ Q
//! ```
//!
//! Dropout on the probabilities takes a keep mask drawn by the caller (so runs stay seedable):
//! the output is `(P ⊙ M / (1 - p)) v`, the gradient goes through the same mask, and the
//! probabilities kept and returned are `P` before dropout, as in the composed path.
//!
//! f32 and f64 on the CPU, no CUDA implementation, no second derivatives.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{dot8, max8, slice, sum8, zeros_par, Float, Saved, SavedCell};
use crate::ops::gemm::{matmul, Mat};

/// `(q (B, T, E), k (B, S, E), v (B, S, E)) -> (B, T, E)` (`CustomOp3`), or
/// `qkv (B, T, 3E) -> (B, T, E)` for self-attention (`CustomOp1`); `E = heads · Dh`.
#[derive(Debug, Clone)]
pub(crate) struct AttentionOp {
    pub heads: usize,
    pub scale: f64,
    /// `(B, S)` row-major, `true` = ignore that key.
    pub key_mask: Option<Vec<bool>>,
    /// Dropout on the probabilities: a `(BH, T, S)` keep mask and the scale `1 / (1 - p)` of
    /// the kept values.
    pub dropout: Option<(Vec<bool>, f64)>,
    probs: SavedCell,
}

impl AttentionOp {
    pub fn new(heads: usize, scale: f64, key_mask: Option<Vec<bool>>) -> Self {
        AttentionOp {
            heads,
            scale,
            key_mask,
            dropout: None,
            probs: SavedCell::default(),
        }
    }

    /// With dropout on the probabilities: `keep` is the `(BH, T, S)` row-major keep mask and
    /// `scale` the factor of the kept values (`1 / (1 - p)`).
    pub fn with_dropout(mut self, keep: Vec<bool>, scale: f64) -> Self {
        self.dropout = Some((keep, scale));
        self
    }

    /// The keep mask of pair `i` (`t * s` values) and the scale, if dropout is on.
    fn drop_of(&self, i: usize, ts: usize) -> Option<(&[bool], f64)> {
        self.dropout
            .as_ref()
            .and_then(|(m, sc)| m.get(i * ts..(i + 1) * ts).map(|m| (m, *sc)))
    }

    /// The probabilities of the last forward pass as a `(BH, T, S)` tensor (no gradient).
    pub fn probabilities(&self, shape: (usize, usize, usize)) -> candle_core::Result<Tensor> {
        let err = || candle_core::Error::Msg("attention: probabilities unavailable".into());
        let dev = candle_core::Device::Cpu;
        match self.probs.load()? {
            Saved::F32(p) => Tensor::from_slice(p.as_slice(), shape, &dev),
            Saved::F64(p) => Tensor::from_slice(p.as_slice(), shape, &dev),
            Saved::None => Err(err()),
        }
    }
}

/// The constant the kernels mask with.
trait Scalar: Float {
    const NEG_INF: Self;
}

impl Scalar for f32 {
    const NEG_INF: Self = f32::NEG_INFINITY;
}

impl Scalar for f64 {
    const NEG_INF: Self = f64::NEG_INFINITY;
}

/// Sizes of one call: batch `B`, query length `T`, key length `S`, embedding `E`, heads `H`.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    s: usize,
    e: usize,
    h: usize,
}

impl Dims {
    /// Size of one head.
    fn dh(&self) -> usize {
        self.e / self.h
    }
}

/// Sizes of separate `q (B, T, E)`, `k (B, S, E)`, `v (B, S, E)` operands.
fn separate_dims(lq: &Layout, lk: &Layout, lv: &Layout, heads: usize) -> candle_core::Result<Dims> {
    let (b, t, e) = lq.shape().dims3()?;
    let (kb, s, ke) = lk.shape().dims3()?;
    if kb != b || ke != e || lv.shape().dims() != lk.shape().dims() || heads == 0 || e % heads != 0
    {
        return Err(candle_core::Error::Msg(format!(
            "attention: q (B, T, E), k and v (B, S, E) with E divisible by {heads} heads \
             expected, got {:?}, {:?}, {:?}",
            lq.shape(),
            lk.shape(),
            lv.shape()
        )));
    }
    Ok(Dims {
        b,
        t,
        s,
        e,
        h: heads,
    })
}

/// Sizes of a packed `qkv (B, T, 3E)` operand (self-attention: `S = T`).
fn packed_dims(l: &Layout, heads: usize) -> candle_core::Result<Dims> {
    let (b, t, e3) = l.shape().dims3()?;
    if e3 % 3 != 0 || heads == 0 || (e3 / 3) % heads != 0 {
        return Err(candle_core::Error::Msg(format!(
            "attention: packed qkv (B, T, 3E) with E divisible by {heads} heads expected, got {:?}",
            l.shape()
        )));
    }
    Ok(Dims {
        b,
        t,
        s: t,
        e: e3 / 3,
        h: heads,
    })
}

/// Where the heads of `q`, `k` and `v` lie: three `(B, L, E)` buffers, or one `(B, T, 3E)` buffer
/// with `q`, `k`, `v` side by side in each row. Head `h` of a part is the column block
/// `h·Dh..(h+1)·Dh` of its rows.
#[derive(Clone, Copy)]
struct Src<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    /// Row stride of each part (`E` or `3E`).
    rs: usize,
    /// Column offsets of the `q`, `k`, `v` parts in a row.
    off: [usize; 3],
}

impl<'a, T> Src<'a, T> {
    fn separate(q: &'a [T], k: &'a [T], v: &'a [T], d: Dims) -> Self {
        Src {
            q,
            k,
            v,
            rs: d.e,
            off: [0; 3],
        }
    }

    fn packed(qkv: &'a [T], d: Dims) -> Self {
        Src {
            q: qkv,
            k: qkv,
            v: qkv,
            rs: 3 * d.e,
            off: [0, d.e, 2 * d.e],
        }
    }

    /// Head `h` of part `part` (0 = q, 1 = k, 2 = v) of sequence `b`, as an `L x Dh` matrix.
    fn head(&self, part: usize, b: usize, h: usize, d: Dims) -> Mat<'a, T> {
        let (data, len) = match part {
            0 => (self.q, d.t),
            1 => (self.k, d.s),
            _ => (self.v, d.s),
        };
        let start = (b * len * self.rs + self.off[part] + h * d.dh()).min(data.len());
        Mat {
            data: &data[start..],
            rows: len,
            cols: d.dh(),
            rs: self.rs,
            cs: 1,
        }
    }
}

/// The masked, scaled softmax of the `T x S` score rows of one (sequence, head) pair, in place.
fn softmax_rows<T: Scalar>(p: &mut [T], s: usize, scale: T, mask: Option<&[bool]>) {
    for row in p.chunks_mut(s) {
        match mask {
            Some(m) => {
                for (x, &masked) in row.iter_mut().zip(m) {
                    *x = if masked { T::NEG_INF } else { *x * scale };
                }
            }
            None => {
                for x in row.iter_mut() {
                    *x = *x * scale;
                }
            }
        }
        let max = max8(row, T::NEG_INF);
        for x in row.iter_mut() {
            *x = (*x - max).exp();
        }
        let inv = T::ONE / sum8(row, |u| u);
        for x in row.iter_mut() {
            *x = *x * inv;
        }
        if let Some(m) = mask {
            // exactly zero (the vectorised f32 exp saturates at ~1e-38 instead of 0)
            for (x, &masked) in row.iter_mut().zip(m) {
                if masked {
                    *x = T::ZERO;
                }
            }
        }
    }
}

/// `P ⊙ keep · scale` into `buf`, or `P` itself without dropout.
fn dropped<'a, T: Scalar>(
    p: &'a [T],
    drop: Option<(&[bool], f64)>,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    match drop {
        None => p,
        Some((keep, sc)) => {
            let sc = T::from_f64(sc);
            buf.clear();
            buf.extend(
                p.iter()
                    .zip(keep)
                    .map(|(&x, &k)| if k { x * sc } else { T::ZERO }),
            );
            buf.as_slice()
        }
    }
}

/// Returns the output `(B, T, E)` (heads side by side, as `out_proj` takes them) and the
/// probabilities `(B, H, T, S)`.
fn forward<T: Scalar>(
    op: &AttentionOp,
    src: Src<'_, T>,
    d: Dims,
) -> Result<(Vec<T>, Vec<T>), String> {
    let (t, s, e, dh) = (d.t, d.s, d.e, d.dh());
    let mut out = zeros_par(d.b * t * e);
    let mut probs = zeros_par(d.b * d.h * t * s);
    if out.is_empty() || probs.is_empty() {
        return Ok((out, probs));
    }
    if op
        .dropout
        .as_ref()
        .is_some_and(|(m, _)| m.len() != probs.len())
    {
        return Err(format!("dropout mask must hold {} values", probs.len()));
    }
    let scale = T::from_f64(op.scale);
    out.par_chunks_mut(t * e)
        .zip(probs.par_chunks_mut(d.h * t * s))
        .enumerate()
        .try_for_each_init(Vec::<T>::new, |buf, (b, (ob, pb))| -> Result<(), String> {
            let mask = op.key_mask.as_ref().map(|m| &m[b * s..(b + 1) * s]);
            for (h, p) in pb.chunks_mut(t * s).enumerate() {
                let (qh, kh, vh) = (
                    src.head(0, b, h, d),
                    src.head(1, b, h, d),
                    src.head(2, b, h, d),
                );
                matmul(p, s, qh, kh.t(), false, 1)?;
                softmax_rows(p, s, scale, mask);
                let pm = dropped(p, op.drop_of(b * d.h + h, t * s), buf);
                matmul(&mut ob[h * dh..], e, Mat::row_major(pm, t, s), vh, false, 1)?;
            }
            Ok(())
        })?;
    Ok((out, probs))
}

/// Where the backward pass writes one sequence's gradients: three `(L, E)` blocks, or one
/// `(T, 3E)` block laid out like the packed input.
enum Dst<'a, T> {
    Separate([&'a mut [T]; 3]),
    Packed(&'a mut [T]),
}

impl<T> Dst<'_, T> {
    /// The destination of head `h` of part `part` and its row stride.
    fn head(&mut self, part: usize, h: usize, d: Dims) -> (&mut [T], usize) {
        match self {
            Dst::Separate(parts) => (&mut parts[part][h * d.dh()..], d.e),
            Dst::Packed(buf) => (&mut buf[part * d.e + h * d.dh()..], 3 * d.e),
        }
    }
}

/// The gradients of one sequence `b` (all heads) into `dst`.
#[allow(clippy::too_many_arguments)]
fn backward_one<T: Scalar>(
    op: &AttentionOp,
    src: Src<'_, T>,
    probs: &[T],
    dout: &[T],
    b: usize,
    d: Dims,
    dst: &mut Dst<'_, T>,
    (ds, buf): (&mut Vec<T>, &mut Vec<T>),
) -> Result<(), String> {
    let (t, s, e) = (d.t, d.s, d.e);
    let scale = T::from_f64(op.scale);
    for h in 0..d.h {
        let (qh, kh, vh) = (
            src.head(0, b, h, d),
            src.head(1, b, h, d),
            src.head(2, b, h, d),
        );
        let p = &probs[(b * d.h + h) * t * s..(b * d.h + h + 1) * t * s];
        let dom = Mat {
            data: &dout[(b * t * e + h * d.dh()).min(dout.len())..],
            rows: t,
            cols: d.dh(),
            rs: e,
            cs: 1,
        };
        let drop = op.drop_of(b * d.h + h, t * s);
        let pm = Mat::row_major(dropped(p, drop, buf), t, s);
        let (dv, rs) = dst.head(2, h, d);
        matmul(dv, rs, pm.t(), dom, false, 1)?; // dV = P_dropᵀ dO
        ds.resize(t * s, T::ZERO);
        matmul(ds, s, dom, vh.t(), false, 1)?; // dP_drop = dO Vᵀ
        if let Some((keep, sc)) = drop {
            let sc = T::from_f64(sc);
            for (x, &k) in ds.iter_mut().zip(keep) {
                *x = if k { *x * sc } else { T::ZERO }; // dP
            }
        }
        for (dr, pr) in ds.chunks_mut(s).zip(p.chunks(s)) {
            let dot = dot8(dr, pr);
            for (x, &pv) in dr.iter_mut().zip(pr) {
                *x = pv * (*x - dot) * scale; // dS, with the score scale folded in
            }
        }
        let dsm = Mat::row_major(ds.as_slice(), t, s);
        let (dq, rs) = dst.head(0, h, d);
        matmul(dq, rs, dsm, kh, false, 1)?; // dQ = dS K
        let (dk, rs) = dst.head(1, h, d);
        matmul(dk, rs, dsm.t(), qh, false, 1)?; // dK = dSᵀ Q
    }
    Ok(())
}

/// The gradients of separate operands: `(dq, dk, dv)`.
#[allow(clippy::type_complexity)]
fn backward_separate<T: Scalar>(
    op: &AttentionOp,
    src: Src<'_, T>,
    probs: &[T],
    dout: &[T],
    d: Dims,
) -> Result<(Vec<T>, Vec<T>, Vec<T>), String> {
    let (t, s, e) = (d.t, d.s, d.e);
    let (mut dq, mut dk, mut dv) = (
        zeros_par(d.b * t * e),
        zeros_par(d.b * s * e),
        zeros_par(d.b * s * e),
    );
    if t == 0 || s == 0 || e == 0 {
        return Ok((dq, dk, dv));
    }
    dq.par_chunks_mut(t * e)
        .zip(dk.par_chunks_mut(s * e))
        .zip(dv.par_chunks_mut(s * e))
        .enumerate()
        .try_for_each_init(
            || (Vec::<T>::new(), Vec::<T>::new()),
            |(ds, buf), (b, ((dqb, dkb), dvb))| {
                let mut dst = Dst::Separate([dqb, dkb, dvb]);
                backward_one(op, src, probs, dout, b, d, &mut dst, (ds, buf))
            },
        )?;
    Ok((dq, dk, dv))
}

/// The gradient of a packed `(B, T, 3E)` operand.
fn backward_packed<T: Scalar>(
    op: &AttentionOp,
    src: Src<'_, T>,
    probs: &[T],
    dout: &[T],
    d: Dims,
) -> Result<Vec<T>, String> {
    let mut dqkv = zeros_par(d.b * d.t * 3 * d.e);
    if dqkv.is_empty() {
        return Ok(dqkv);
    }
    dqkv.par_chunks_mut(d.t * 3 * d.e)
        .enumerate()
        .try_for_each_init(
            || (Vec::<T>::new(), Vec::<T>::new()),
            |(ds, buf), (b, chunk)| {
                let mut dst = Dst::Packed(chunk);
                backward_one(op, src, probs, dout, b, d, &mut dst, (ds, buf))
            },
        )?;
    Ok(dqkv)
}

fn attention_err(m: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("attention: {m}"))
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "canopy-attention-packed"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = packed_dims(l1, self.heads)?;
        let (out, probs) = match s1 {
            CpuStorage::F32(_) => {
                let (o, p) = forward::<f32>(self, Src::packed(slice(s1, l1, "attention")?, d), d)
                    .map_err(attention_err)?;
                (CpuStorage::F32(o), Saved::F32(Arc::new(p)))
            }
            CpuStorage::F64(_) => {
                let (o, p) = forward::<f64>(self, Src::packed(slice(s1, l1, "attention")?, d), d)
                    .map_err(attention_err)?;
                (CpuStorage::F64(o), Saved::F64(Arc::new(p)))
            }
            _ => return Err(attention_err("qkv must be f32 or f64")),
        };
        self.probs.store(probs)?;
        Ok((out, Shape::from((d.b, d.t, d.e))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let err = |m: &str| candle_core::Error::Msg(format!("attention backward: {m}"));
        let probs = self.probs.load()?;
        let (sx, lx) = qkv.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sg)) = (&*sx, &*sg) else {
            return Err(err("CPU tensors only"));
        };
        let d = packed_dims(lx, self.heads)?;
        macro_rules! run {
            ($t:ty, $p:expr) => {{
                let src = Src::packed(slice::<$t>(sx, lx, "attention")?, d);
                let g = backward_packed::<$t>(self, src, $p, slice(sg, lg, "attention")?, d)
                    .map_err(|m| err(&m))?;
                Tensor::from_vec(g, qkv.shape(), qkv.device())?
            }};
        }
        let g = match (sx, &probs) {
            (CpuStorage::F32(_), Saved::F32(p)) => run!(f32, p.as_slice()),
            (CpuStorage::F64(_), Saved::F64(p)) => run!(f64, p.as_slice()),
            _ => return Err(err("no forward probabilities of the operand's dtype")),
        };
        Ok(Some(g))
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "canopy-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = separate_dims(l1, l2, l3, self.heads)?;
        macro_rules! run {
            ($t:ty) => {{
                let src = Src::separate(
                    slice::<$t>(s1, l1, "attention")?,
                    slice::<$t>(s2, l2, "attention")?,
                    slice::<$t>(s3, l3, "attention")?,
                    d,
                );
                forward::<$t>(self, src, d).map_err(attention_err)?
            }};
        }
        let (out, probs) = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (o, p) = run!(f32);
                (CpuStorage::F32(o), Saved::F32(Arc::new(p)))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (o, p) = run!(f64);
                (CpuStorage::F64(o), Saved::F64(Arc::new(p)))
            }
            _ => return Err(attention_err("q, k, v must all be f32 or all f64")),
        };
        self.probs.store(probs)?;
        Ok((out, Shape::from((d.b, d.t, d.e))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let err = |m: &str| candle_core::Error::Msg(format!("attention backward: {m}"));
        let probs = self.probs.load()?;
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sq), Storage::Cpu(sk), Storage::Cpu(sv), Storage::Cpu(sg)) =
            (&*sq, &*sk, &*sv, &*sg)
        else {
            return Err(err("CPU tensors only"));
        };
        let d = separate_dims(lq, lk, lv, self.heads)?;
        let dev = q.device();
        macro_rules! run {
            ($t:ty, $p:expr) => {{
                let src = Src::separate(
                    slice::<$t>(sq, lq, "attention")?,
                    slice::<$t>(sk, lk, "attention")?,
                    slice::<$t>(sv, lv, "attention")?,
                    d,
                );
                let (dq, dk, dv) =
                    backward_separate::<$t>(self, src, $p, slice(sg, lg, "attention")?, d)
                        .map_err(|m| err(&m))?;
                (
                    Tensor::from_vec(dq, q.shape(), dev)?,
                    Tensor::from_vec(dk, k.shape(), dev)?,
                    Tensor::from_vec(dv, v.shape(), dev)?,
                )
            }};
        }
        let (dq, dk, dv) = match (sq, &probs) {
            (CpuStorage::F32(_), Saved::F32(p)) => run!(f32, p.as_slice()),
            (CpuStorage::F64(_), Saved::F64(p)) => run!(f64, p.as_slice()),
            _ => return Err(err("no forward probabilities of the operands' dtype")),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
