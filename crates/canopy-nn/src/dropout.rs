//! Dropout with a mask drawn from a caller-provided, seedable RNG: candle's CPU RNG cannot be
//! seeded (`set_seed` is unsupported on CPU), so candle's dropout makes runs irreproducible.
//!
//! The caller's RNG gives one 64-bit seed per call; element `i` of the keep mask is decided by
//! the high 32 bits of SplitMix64 at position `i` of the stream from that seed (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014), so the mask is drawn in
//! parallel and is the same for every thread count. On the CPU in f32/f64 the mask is applied
//! by one op whose backward pass multiplies the gradient by the same mask; composed as
//! `x * mask`, candle's backward pass would also compute, zero-fill and accumulate a gradient
//! for the mask tensor.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rand::Rng;
use rayon::prelude::*;

use crate::error::invalid;
use crate::ops::cpu::{chunk_at, par_build, slice, Float};
use crate::Result;

/// Elements per parallel task of the mask.
const MASK_CHUNK: usize = 1 << 14;

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function at state `z`.
#[inline(always)]
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keep mask of `len` elements, each kept with probability `1 - p` (to 2⁻³² resolution),
/// from one `u64` drawn from `rng`.
pub(crate) fn keep_mask<R: Rng + ?Sized>(rng: &mut R, len: usize, p: f64) -> Vec<bool> {
    let seed = rng.next_u64();
    // keep when the 32-bit draw is at least p·2³²
    let threshold = (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64;
    let mut keep = vec![false; len];
    keep.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(c, keep)| {
            pulp::Arch::new().dispatch(MaskChunk {
                keep,
                seed,
                first: (c * MASK_CHUNK) as u64,
                threshold,
            })
        });
    keep
}

/// One chunk of [`keep_mask`] (elements `first..` of the stream) as a pulp op: the loop is
/// compiled inside the dispatched AVX2 / AVX-512 function, where the 64-bit multiplies of
/// SplitMix64 vectorise (AVX-512DQ has them; the baseline x86-64 build computed one element
/// at a time). The same draws bit for bit.
struct MaskChunk<'a> {
    keep: &'a mut [bool],
    seed: u64,
    first: u64,
    threshold: u64,
}

impl pulp::WithSimd for MaskChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (i, k) in self.keep.iter_mut().enumerate() {
            let z = self
                .seed
                .wrapping_add((self.first + i as u64 + 1).wrapping_mul(GAMMA));
            *k = (splitmix64(z) >> 32) >= self.threshold;
        }
    }
}

/// `x ⊙ keep · scale` with the same mask in the backward pass.
#[derive(Debug, Clone)]
struct DropoutOp {
    keep: Arc<Vec<bool>>,
    scale: f64,
}

fn apply_mask<T: Float>(x: &[T], keep: &[bool], scale: T) -> Vec<T> {
    // built in parallel chunks, each zeroed by its task (a serial `vec![0; n]` before was a
    // single-threaded pass over the whole output)
    par_build(x.len(), MASK_CHUNK, |c, yc: &mut [T]| {
        let (xc, kc) = (chunk_at(x, MASK_CHUNK, c), chunk_at(keep, MASK_CHUNK, c));
        for ((o, &u), &k) in yc.iter_mut().zip(xc).zip(kc) {
            *o = if k { u * scale } else { T::ZERO };
        }
    })
}

impl DropoutOp {
    fn run(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
        if l.shape().elem_count() != self.keep.len() {
            return Err(candle_core::Error::Msg(format!(
                "dropout: mask of {} values for a tensor of shape {:?}",
                self.keep.len(),
                l.shape()
            )));
        }
        Ok(match s {
            CpuStorage::F32(_) => CpuStorage::F32(apply_mask(
                slice::<f32>(s, l, "dropout")?,
                &self.keep,
                self.scale as f32,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(apply_mask(
                slice::<f64>(s, l, "dropout")?,
                &self.keep,
                self.scale,
            )),
            _ => return Err(candle_core::Error::Msg("dropout: f32 or f64 only".into())),
        })
    }
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "canopy-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((self.run(s, l)?, l.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (s, l) = grad.storage_and_layout();
        let Storage::Cpu(s) = &*s else {
            return Err(candle_core::Error::Msg(
                "dropout backward: CPU tensors only".into(),
            ));
        };
        let g = match self.run(s, l)? {
            CpuStorage::F32(v) => Tensor::from_vec(v, grad.shape(), grad.device())?,
            CpuStorage::F64(v) => Tensor::from_vec(v, grad.shape(), grad.device())?,
            _ => return Err(candle_core::Error::Msg("dropout: f32 or f64 only".into())),
        };
        Ok(Some(g))
    }
}

/// Inverted dropout (`torch.nn.Dropout`): in training, zeroes each element with probability
/// `p` and scales the rest by `1 / (1 - p)`; in evaluation, the identity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// A dropout layer with drop probability `p` in `[0, 1)`.
    ///
    /// # Errors
    /// When `p` is outside `[0, 1)`.
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(invalid("Dropout", format!("p = {p} must be in [0, 1)")));
        }
        Ok(Dropout { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Applies dropout when `train`; the mask comes from `rng`.
    ///
    /// # Shapes
    /// Any shape, unchanged.
    ///
    /// # Errors
    /// When the mask cannot be allocated on the input's device.
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut R,
    ) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        // the scale rounded through f32 in every dtype (as the mask tensor of earlier versions)
        let scale = f64::from((1.0 / (1.0 - self.p)) as f32);
        let keep = keep_mask(rng, x.elem_count(), self.p);
        if x.device().is_cpu()
            && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        {
            let op = DropoutOp {
                keep: Arc::new(keep),
                scale,
            };
            return Ok(x.contiguous()?.apply_op1(op)?);
        }
        let mask: Vec<f32> = keep
            .iter()
            .map(|&k| if k { scale as f32 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    /// The dispatched mask equals the element-by-element SplitMix64 stream (the draws that
    /// trained models and golden runs depend on), across chunk boundaries and vector tails.
    #[test]
    fn mask_equals_the_splitmix64_stream() {
        let len = 3 * MASK_CHUNK + 77;
        for p in [0.0, 0.1, 0.5, 0.99] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let keep = keep_mask(&mut rng, len, p);
            let seed = rand::rngs::StdRng::seed_from_u64(7).next_u64();
            let threshold = (p * 4_294_967_296.0).round() as u64;
            for (i, &k) in keep.iter().enumerate() {
                let z = seed.wrapping_add((i as u64 + 1).wrapping_mul(GAMMA));
                assert_eq!(k, (splitmix64(z) >> 32) >= threshold, "p {p}, element {i}");
            }
            let kept = keep.iter().filter(|&&k| k).count() as f64 / len as f64;
            assert!((kept - (1.0 - p)).abs() < 0.01, "p {p}: kept {kept}");
        }
    }

    /// Throughput of the mask (run with `--ignored --nocapture` in release).
    #[test]
    #[ignore]
    fn mask_speed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 1 << 24;
        let t = std::time::Instant::now();
        for _ in 0..10 {
            std::hint::black_box(keep_mask(&mut rng, n, 0.2));
        }
        println!(
            "{:.2} ns per element",
            t.elapsed().as_secs_f64() * 1e9 / (10 * n) as f64
        );
    }
}
