//! Fused scaled dot-product attention for the CPU: `softmax(q kᵀ · scale + mask) v` for every
//! (sequence, head) pair as one candle op, with its backward pass as one op.
//!
//! Composed from candle ops, attention is two batched products of tiny matrices (45 x 32 for a
//! Sentinel-2 year) that candle dispatches through a spinning thread pool, a five-op softmax and
//! their backward passes; here each (sequence, head) pair is one rayon task running single-
//! threaded `gemm` calls on matrices that stay in cache. The attention probabilities are kept
//! inside the op for the backward pass:
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

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{slice, Float, Saved, SavedCell};
use crate::ops::gemm::{matmul, Mat};

/// `(q (BH, T, D), k (BH, S, D), v (BH, S, D)) -> (BH, T, D)`.
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

/// Sizes `(BH, T, S, D)` of the three operands.
fn sizes(
    lq: &Layout,
    lk: &Layout,
    lv: &Layout,
) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (bh, t, d) = lq.shape().dims3()?;
    let (kb, s, kd) = lk.shape().dims3()?;
    if kb != bh || kd != d || lv.shape().dims() != lk.shape().dims() {
        return Err(candle_core::Error::Msg(format!(
            "attention: q (BH, T, D), k and v (BH, S, D) expected, got {:?}, {:?}, {:?}",
            lq.shape(),
            lk.shape(),
            lv.shape()
        )));
    }
    Ok((bh, t, s, d))
}

fn forward<T: Scalar>(
    op: &AttentionOp,
    q: &[T],
    k: &[T],
    v: &[T],
    (bh, t, s, d): (usize, usize, usize, usize),
) -> Result<(Vec<T>, Vec<T>), String> {
    let mut out = vec![T::ZERO; bh * t * d];
    let mut probs = vec![T::ZERO; bh * t * s];
    let scale = T::from_f64(op.scale);
    if op
        .dropout
        .as_ref()
        .is_some_and(|(m, _)| m.len() != bh * t * s)
    {
        return Err(format!("dropout mask must hold {} values", bh * t * s));
    }
    out.par_chunks_mut(t * d)
        .zip(probs.par_chunks_mut(t * s))
        .enumerate()
        .try_for_each_init(Vec::<T>::new, |pd, (i, (o, p))| -> Result<(), String> {
            let (qi, ki, vi) = (
                &q[i * t * d..(i + 1) * t * d],
                &k[i * s * d..(i + 1) * s * d],
                &v[i * s * d..(i + 1) * s * d],
            );
            matmul(
                p,
                s,
                Mat::row_major(qi, t, d),
                Mat::row_major(ki, s, d).t(),
                false,
                1,
            )?;
            let mask = op
                .key_mask
                .as_ref()
                .map(|m| &m[(i / op.heads) * s..(i / op.heads + 1) * s]);
            for row in p.chunks_mut(s) {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = if mask.is_some_and(|m| m[j]) {
                        T::NEG_INF
                    } else {
                        *x * scale
                    };
                }
                let max = row
                    .iter()
                    .copied()
                    .fold(T::NEG_INF, |m, x| if x > m { x } else { m });
                let mut sum = T::ZERO;
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = T::ONE / sum;
                for x in row.iter_mut() {
                    *x = *x * inv;
                }
            }
            let pm = match op.drop_of(i, t * s) {
                None => Mat::row_major(&*p, t, s),
                Some((keep, sc)) => {
                    let sc = T::from_f64(sc);
                    pd.clear();
                    pd.extend(
                        p.iter()
                            .zip(keep)
                            .map(|(&x, &k)| if k { x * sc } else { T::ZERO }),
                    );
                    Mat::row_major(pd.as_slice(), t, s)
                }
            };
            matmul(o, d, pm, Mat::row_major(vi, s, d), false, 1)
        })?;
    Ok((out, probs))
}

/// Returns `(dq, dk, dv)`.
#[allow(clippy::type_complexity)]
fn backward<T: Scalar>(
    op: &AttentionOp,
    q: &[T],
    k: &[T],
    v: &[T],
    probs: &[T],
    dout: &[T],
    (bh, t, s, d): (usize, usize, usize, usize),
) -> Result<(Vec<T>, Vec<T>, Vec<T>), String> {
    let (mut dq, mut dk, mut dv) = (
        vec![T::ZERO; bh * t * d],
        vec![T::ZERO; bh * s * d],
        vec![T::ZERO; bh * s * d],
    );
    let scale = T::from_f64(op.scale);
    dq.par_chunks_mut(t * d)
        .zip(dk.par_chunks_mut(s * d))
        .zip(dv.par_chunks_mut(s * d))
        .enumerate()
        .try_for_each_init(
            || (Vec::<T>::new(), Vec::<T>::new()),
            |(ds, pd), (i, ((dqi, dki), dvi))| -> Result<(), String> {
                let (qi, ki, vi) = (
                    &q[i * t * d..(i + 1) * t * d],
                    &k[i * s * d..(i + 1) * s * d],
                    &v[i * s * d..(i + 1) * s * d],
                );
                let (p, doi) = (
                    &probs[i * t * s..(i + 1) * t * s],
                    &dout[i * t * d..(i + 1) * t * d],
                );
                let drop = op.drop_of(i, t * s);
                let dom = Mat::row_major(doi, t, d);
                let pm = match drop {
                    None => Mat::row_major(p, t, s),
                    Some((keep, sc)) => {
                        let sc = T::from_f64(sc);
                        pd.clear();
                        pd.extend(
                            p.iter()
                                .zip(keep)
                                .map(|(&x, &k)| if k { x * sc } else { T::ZERO }),
                        );
                        Mat::row_major(pd.as_slice(), t, s)
                    }
                };
                matmul(dvi, d, pm.t(), dom, false, 1)?; // dV = P_dropᵀ dO
                ds.resize(t * s, T::ZERO);
                matmul(ds, s, dom, Mat::row_major(vi, s, d).t(), false, 1)?; // dP_drop = dO Vᵀ
                if let Some((keep, sc)) = drop {
                    let sc = T::from_f64(sc);
                    for (x, &k) in ds.iter_mut().zip(keep) {
                        *x = if k { *x * sc } else { T::ZERO }; // dP
                    }
                }
                for (dr, pr) in ds.chunks_mut(s).zip(p.chunks(s)) {
                    let mut dot = T::ZERO;
                    for (&a, &b) in dr.iter().zip(pr) {
                        dot += a * b;
                    }
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot) * scale; // dS, with the score scale folded in
                    }
                }
                let dsm = Mat::row_major(ds.as_slice(), t, s);
                matmul(dqi, d, dsm, Mat::row_major(ki, s, d), false, 1)?; // dQ = dS K
                matmul(dki, d, dsm.t(), Mat::row_major(qi, t, d), false, 1) // dK = dSᵀ Q
            },
        )?;
    Ok((dq, dk, dv))
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
        let dims = sizes(l1, l2, l3)?;
        let err = |m: String| candle_core::Error::Msg(format!("attention: {m}"));
        let (out, probs) = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (o, p) = forward::<f32>(
                    self,
                    slice(s1, l1, "attention")?,
                    slice(s2, l2, "attention")?,
                    slice(s3, l3, "attention")?,
                    dims,
                )
                .map_err(err)?;
                (CpuStorage::F32(o), Saved::F32(Arc::new(p)))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (o, p) = forward::<f64>(
                    self,
                    slice(s1, l1, "attention")?,
                    slice(s2, l2, "attention")?,
                    slice(s3, l3, "attention")?,
                    dims,
                )
                .map_err(err)?;
                (CpuStorage::F64(o), Saved::F64(Arc::new(p)))
            }
            _ => return Err(err("q, k, v must all be f32 or all f64".into())),
        };
        self.probs.store(probs)?;
        Ok((out, Shape::from((dims.0, dims.1, dims.3))))
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
        let dims = sizes(lq, lk, lv)?;
        let dev = q.device();
        macro_rules! run {
            ($t:ty, $p:expr) => {{
                let (dq, dk, dv) = backward::<$t>(
                    self,
                    slice(sq, lq, "attention")?,
                    slice(sk, lk, "attention")?,
                    slice(sv, lv, "attention")?,
                    $p,
                    slice(sg, lg, "attention")?,
                    dims,
                )
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
