//! Matrix transposes for the layout changes around the 1-D convolutions: `(C, L)` sequences
//! into time-major rows and back.
//!
//! A plain element loop compiles to one scalar load and one scalar store per value, and even an
//! 8x8-blocked version in plain Rust stays scalar (tried and measured: no gain). Here `f32`
//! matrices go through 8x8 register transposes (eight 8-value row loads, the classic
//! `unpack` / `shuffle` / `permute2f128` network, eight 8-value row stores) under AVX2, selected
//! at run time with pulp; edges that do not fill a block, other types and other CPUs take the
//! element loop. Both give the same values (a transpose only moves them).

#[cfg(target_arch = "x86_64")]
use std::any::TypeId;

use crate::ops::cpu::Float;

/// `dst (cols x rows) = srcᵀ` for a row-major `src (rows x cols)`; `dst` row-major too.
///
/// # Panics
/// Never for consistent sizes; callers pass `src.len() >= rows·cols` and
/// `dst.len() >= rows·cols` (slicing past them panics like any out-of-bounds index).
pub(crate) fn transpose<T: Float>(src: &[T], (rows, cols): (usize, usize), dst: &mut [T]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && rows >= 8 && cols >= 8 {
        if let Some(simd) = pulp::x86::V3::try_new() {
            // T is f32 (checked above), so these casts only change the static type
            let src: &[f32] = bytemuck::cast_slice(src);
            let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
            pulp::Simd::vectorize(
                simd,
                Blocks8 {
                    simd,
                    src,
                    rows,
                    cols,
                    dst,
                },
            );
            return;
        }
    }
    transpose_scalar(src, (0, rows), (0, cols), (rows, cols), dst);
}

/// The element loop over `src[r0..r1, c0..c1]` of a `rows x cols` matrix into its transpose.
fn transpose_scalar<T: Copy>(
    src: &[T],
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    (rows, cols): (usize, usize),
    dst: &mut [T],
) {
    for r in r0..r1 {
        for c in c0..c1 {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// The AVX2 transpose: full 8x8 blocks in registers, the ragged right and bottom edges by
/// [`transpose_scalar`].
#[cfg(target_arch = "x86_64")]
struct Blocks8<'a> {
    simd: pulp::x86::V3,
    src: &'a [f32],
    rows: usize,
    cols: usize,
    dst: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Blocks8<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use core::arch::x86_64::__m256;
        let Blocks8 {
            simd,
            src,
            rows,
            cols,
            dst,
        } = self;
        let avx = simd.avx;
        let load = |off: usize| -> __m256 {
            let mut a = [0.0f32; 8];
            a.copy_from_slice(&src[off..off + 8]);
            pulp::cast(a)
        };
        let (rb, cb) = (rows / 8 * 8, cols / 8 * 8);
        for r in (0..rb).step_by(8) {
            for c in (0..cb).step_by(8) {
                let x: [__m256; 8] = std::array::from_fn(|i| load((r + i) * cols + c));
                // pairs of rows interleaved, then quads, then the two 128-bit halves swapped
                let t = [
                    avx._mm256_unpacklo_ps(x[0], x[1]),
                    avx._mm256_unpackhi_ps(x[0], x[1]),
                    avx._mm256_unpacklo_ps(x[2], x[3]),
                    avx._mm256_unpackhi_ps(x[2], x[3]),
                    avx._mm256_unpacklo_ps(x[4], x[5]),
                    avx._mm256_unpackhi_ps(x[4], x[5]),
                    avx._mm256_unpacklo_ps(x[6], x[7]),
                    avx._mm256_unpackhi_ps(x[6], x[7]),
                ];
                let s = [
                    avx._mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    avx._mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    avx._mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    avx._mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    avx._mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    avx._mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    avx._mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    avx._mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                let y = [
                    avx._mm256_permute2f128_ps::<0x20>(s[0], s[4]),
                    avx._mm256_permute2f128_ps::<0x20>(s[1], s[5]),
                    avx._mm256_permute2f128_ps::<0x20>(s[2], s[6]),
                    avx._mm256_permute2f128_ps::<0x20>(s[3], s[7]),
                    avx._mm256_permute2f128_ps::<0x31>(s[0], s[4]),
                    avx._mm256_permute2f128_ps::<0x31>(s[1], s[5]),
                    avx._mm256_permute2f128_ps::<0x31>(s[2], s[6]),
                    avx._mm256_permute2f128_ps::<0x31>(s[3], s[7]),
                ];
                for (j, v) in y.into_iter().enumerate() {
                    let off = (c + j) * rows + r;
                    dst[off..off + 8].copy_from_slice(&pulp::cast::<__m256, [f32; 8]>(v));
                }
            }
        }
        transpose_scalar(src, (0, rb), (cb, cols), (rows, cols), dst);
        transpose_scalar(src, (rb, rows), (0, cols), (rows, cols), dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched transpose equals the element loop for f32 and f64, at sizes below, at and
    /// around multiples of the block (ragged edges on either side).
    #[test]
    fn matches_the_element_loop() {
        for rows in [1, 3, 7, 8, 9, 16, 21, 32, 45] {
            for cols in [1, 5, 8, 13, 16, 24, 31, 64] {
                let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
                let mut got = vec![f32::NAN; rows * cols];
                transpose(&src, (rows, cols), &mut got);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(got[c * rows + r], src[r * cols + c], "f32 {rows}x{cols}");
                    }
                }
                let src64: Vec<f64> = src.iter().map(|&v| f64::from(v) + 0.25).collect();
                let mut got64 = vec![f64::NAN; rows * cols];
                transpose(&src64, (rows, cols), &mut got64);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            got64[c * rows + r],
                            src64[r * cols + c],
                            "f64 {rows}x{cols}"
                        );
                    }
                }
            }
        }
    }

    /// Only the `rows·cols` prefix of a longer destination is written.
    #[test]
    fn leaves_the_rest_of_the_destination() {
        let src: Vec<f32> = (0..16 * 9).map(|i| i as f32).collect();
        let mut dst = vec![-1.0f32; 16 * 9 + 5];
        transpose(&src, (16, 9), &mut dst);
        assert!(dst[16 * 9..].iter().all(|&v| v == -1.0));
    }
}
