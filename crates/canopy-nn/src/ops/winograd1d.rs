//! Winograd (Toom-Cook) `F(2, r)` 1-D convolutions with odd kernels of 3, 5 or
//! 7 taps, unit stride and dilation, one group, at least [`MIN_CHANNELS`] channels in and out:
//! the convolutions of TempCNN (k7, k5) and of MS-ResNet's stride-1 layers from 64 channels on.
//!
//! Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), in one
//! dimension: two outputs of an `r`-tap correlation over the `n = r + 1` inputs `d` under them
//! are `Aᵀ [(G g) ⊙ (Bᵀ d)]`. Summed over input channels the element-wise product becomes `n`
//! independent matrix products `U[ξ] (C_out x C_in) · V[ξ] (C_in x tiles)`: `n` multiplications
//! per two outputs instead of `2r`, i.e. 1.5x (k3), 1.67x (k5) and 1.75x (k7) fewer
//! multiply-adds than the direct product, for transforms that are a few percent of the work.
//!
//! The matrices come from the Toom-Cook construction with the finite points
//! `0, 1, -1, 1/2, -1/2, 3/2, -3/2` (the first `r` of them) and the point at infinity, computed
//! in f64 and rounded once. Larger point sets lose accuracy fast; with these, one f32 7-tap
//! transform on unit normal data errs by at most `5.8e-6` (root mean square `5.8e-7`) against
//! `1.4e-6` for a direct f32 sum, measured when the point set was chosen (`±1/2, ±2` gave
//! `7.1e-6`, `±1/2, ±3/4` `1.4e-5`). Summed over channels the difference stays at a few ulps of
//! the output: the tests bound it against the direct convolution, and a 16-channel TempCNN
//! golden case run through these kernels matched PyTorch to `2.6e-7` in log-probabilities
//! (when the threshold was 16 channels).
//!
//! The backward pass of a convolution that ran here runs here too: the input gradient is the
//! forward transform applied to `dY` with the flipped kernel, the weight gradient is computed in
//! the transform domain ([`weight_grad`]: `n` products `C_in x tiles · tiles x C_out`, then
//! `Gᵀ`), summed over fixed groups of blocks so that it does not depend on the thread count.
//! [`super::set_winograd_enabled`] turns this path off together with the 2-D one.

use rayon::prelude::*;

use crate::ops::conv1d_cpu::{to_rows, Epilogue};
use crate::ops::cpu::{par_zeroed, sum_in_order, with_scratch, zeros_par, Float};
use crate::ops::gemm::{matmul, Mat};
use crate::ops::transpose::transpose;

/// The finite interpolation points, taken in this order: `F(2, r)` uses the first `r`.
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5];

/// Tile columns (pairs of outputs) a task's products cover at least.
const TASK_TILES: usize = 192;
/// Partial weight gradients at most (fixed groups of blocks, summed in order).
const MAX_PARTIALS: usize = 16;

/// Channels in and out from which the Winograd kernels replace the direct ones. Below it the
/// transforms (short vector passes along the channels, `n` output streams per tile) cost more
/// than the products they save: MS-ResNet's 32 -> 32 layers (batch 256, ~60 steps) ran their
/// forward pass in 0.94 / 1.36 / 1.93 ms (k3 / k5 / k7) here and 0.65 / 0.99 / 1.24 ms on the
/// direct kernel, forward + backward 3.4 / 4.4 / 5.2 against 2.6 / 3.1 / 3.7 ms; at 64 -> 64
/// (~30 steps) Winograd was ahead (forward 0.88 / 1.28 / 1.43 against 1.09 / 1.40 / 1.77 ms).
pub(crate) const MIN_CHANNELS: usize = 64;

/// Whether the Winograd forward pass applies to a 1-D convolution with these sizes.
pub(crate) fn applies(k: usize, stride: usize, dilation: usize, c_in: usize, c_out: usize) -> bool {
    crate::ops::winograd::enabled()
        && matches!(k, 3 | 5 | 7)
        && stride == 1
        && dilation == 1
        && c_in >= MIN_CHANNELS
        && c_out >= MIN_CHANNELS
}

/// The three matrices of `F(2, r)`, row-major in f64: `at` (2 x n), `g` (n x r), `bt` (n x n).
#[derive(Debug, Clone)]
struct Transform {
    n: usize,
    at: Vec<f64>,
    g: Vec<f64>,
    bt: Vec<f64>,
}

/// Coefficients (lowest power first) of `Π (x - root)`.
fn poly_from_roots(roots: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut c = vec![1.0];
    for root in roots {
        let mut next = vec![0.0; c.len() + 1];
        for (j, &v) in c.iter().enumerate() {
            next[j + 1] += v;
            next[j] -= root * v;
        }
        c = next;
    }
    c
}

/// The Toom-Cook matrices of `F(2, r)` for `r` in `1..=7`.
fn transform(r: usize) -> Transform {
    let n = r + 1;
    let a = &POINTS[..n - 1];
    // outputs: y_i = Σ_p a_p^i m_p (+ m_∞ for the last output)
    let mut at = vec![0.0; 2 * n];
    for (i, row) in at.chunks_mut(n).enumerate() {
        for (p, &ap) in a.iter().enumerate() {
            row[p] = ap.powi(i as i32);
        }
    }
    at[n + n - 1] = 1.0;
    // kernel: the kernel polynomial at every point, over the Lagrange denominator
    let mut g = vec![0.0; n * r];
    for (p, &ap) in a.iter().enumerate() {
        let f: f64 = a
            .iter()
            .enumerate()
            .filter(|&(q, _)| q != p)
            .map(|(_, &aq)| ap - aq)
            .product();
        for k in 0..r {
            g[p * r + k] = ap.powi(k as i32) / f;
        }
    }
    g[(n - 1) * r + r - 1] = 1.0;
    // input: the coefficients of Π_{q≠p} (x - a_q), and of Π_q (x - a_q) for the last row
    let mut bt = vec![0.0; n * n];
    for p in 0..n - 1 {
        let others = a
            .iter()
            .enumerate()
            .filter(|&(q, _)| q != p)
            .map(|(_, &aq)| aq);
        let c = poly_from_roots(others);
        bt[p * n..p * n + c.len()].copy_from_slice(&c);
    }
    let c = poly_from_roots(a.iter().copied());
    bt[(n - 1) * n..].copy_from_slice(&c);
    Transform { n, at, g, bt }
}

/// Sizes of one call: `x (b, c_in, l)`, `w (c_out, c_in, k)`, padding `pad`, `lout` outputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims1 {
    pub b: usize,
    pub c_in: usize,
    pub l: usize,
    pub c_out: usize,
    pub k: usize,
    pub pad: usize,
    pub lout: usize,
}

/// `y = conv1d(x, w)` (no bias, stride 1, dilation 1), `x` and `w` contiguous; returns
/// `(B, C_out, L_out)`.
///
/// A task takes a block of sequences, copies them into time-major rows (`C_in` values per row,
/// sequences `lpw` rows apart with zeros between them: every tile's `n` rows lie inside its own
/// sequence's padded span), transforms every tile with vector operations along the channels,
/// runs the `n` products `V[ξ] (tiles x C_in) · U[ξ] (C_in x C_out)` and transforms the products
/// back into the output rows of each sequence, applying `epi` to each output position's values.
pub(crate) fn forward<T: Float>(
    x: &[T],
    w: &[T],
    d: Dims1,
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let (ci, co, k) = (d.c_in, d.c_out, d.k);
    if x.len() != d.b * ci * d.l
        || w.len() != co * ci * k
        || k == 0
        || d.lout + k != d.l + 2 * d.pad + 1
    {
        return Err(format!("winograd conv1d: inconsistent sizes {d:?}"));
    }
    let tf = transform(k);
    let n = tf.n;
    // U[ξ] = (G g)[ξ] for every kernel g = w[o, c], stored as n matrices C_in x C_out
    let mut u = zeros_par(n * ci * co);
    u.par_chunks_mut(ci * co)
        .enumerate()
        .for_each(|(xi, slab)| {
            let gx = &tf.g[xi * k..(xi + 1) * k];
            for (oc, g) in w.chunks(k).enumerate() {
                let (o, c) = (oc / ci, oc % ci);
                let v: f64 = gx.iter().zip(g).map(|(&a, &b)| a * b.to_f64()).sum();
                slab[c * co + o] = T::from_f64(v);
            }
        });
    let bt: Vec<T> = tf.bt.iter().map(|&v| T::from_f64(v)).collect();
    let at: Vec<T> = tf.at.iter().map(|&v| T::from_f64(v)).collect();
    let t = d.lout.div_ceil(2); // tiles per sequence
                                // tile j of a sequence reads its rows 2j .. 2j + n - 1 (row 0 = the first padding row)
    let lpw = 2 * t + n - 2 - d.pad;
    if d.b * co * d.lout == 0 {
        return Ok(Vec::new());
    }
    let nb = TASK_TILES.div_ceil(t).clamp(1, d.b);
    par_zeroed(
        d.b * co * d.lout,
        nb * co * d.lout,
        |blk, yb: &mut [T]| -> Result<(), String> {
            let nbl = yb.len() / (co * d.lout);
            let cols = nbl * t;
            let total = nbl * lpw + d.pad;
            let (n1, n2) = (total * ci + n * cols * ci, n * cols * co + d.lout * co);
            with_scratch(n1, n2, |a: &mut [T], b: &mut [T]| {
                let (rows, v) = a.split_at_mut(total * ci);
                let (m, ybuf) = b.split_at_mut(n * cols * co);
                to_rows(x, (ci, d.l), (blk * nb, nbl), (d.pad, lpw, total), rows);
                input_transform(rows, (&bt, n), (nbl, t, lpw, ci), v);
                for xi in 0..n {
                    matmul(
                        &mut m[xi * cols * co..(xi + 1) * cols * co],
                        co,
                        Mat::row_major(&v[xi * cols * ci..(xi + 1) * cols * ci], cols, ci),
                        Mat::row_major(&u[xi * ci * co..(xi + 1) * ci * co], ci, co),
                        false,
                        1,
                    )?;
                }
                pulp::Arch::new().dispatch(OutputTransform {
                    m,
                    at: &at,
                    dims: (n, t, cols, co, d.lout),
                    epi,
                    ybuf,
                    yb,
                });
                Ok(())
            })
        },
    )
}

/// The output stage of [`forward`] for one block of sequences as a pulp op (vectorised for
/// AVX2 / AVX-512 under run-time dispatch, the same arithmetic bit for bit): each output
/// position of each sequence is `Aᵀ` applied to its tile's `n` product rows `m`, then the
/// epilogue, into the time-major `ybuf`; each sequence is then transposed into `yb`.
/// `dims` = `(n, tiles per sequence, tiles in the block, C_out, L_out)`.
struct OutputTransform<'a, T> {
    m: &'a [T],
    at: &'a [T],
    dims: (usize, usize, usize, usize, usize),
    epi: Epilogue<'a, T>,
    ybuf: &'a mut [T],
    yb: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for OutputTransform<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let (n, t, cols, co, lout) = self.dims;
        let (m, ybuf) = (self.m, self.ybuf);
        for (s, ys) in self.yb.chunks_mut(co * lout).enumerate() {
            for pos in 0..lout {
                let (tile, i) = (s * t + pos / 2, pos % 2);
                let dst = &mut ybuf[pos * co..(pos + 1) * co];
                combine(&self.at[i * n..(i + 1) * n], dst, |xi| {
                    &m[(xi * cols + tile) * co..(xi * cols + tile + 1) * co]
                });
                self.epi.apply_step(dst);
            }
            from_rows(&ybuf[..lout * co], co, ys);
        }
    }
}

/// `V[ξ][tile] = Σ_r Bᵀ[ξ][r] · rows[tile start + r]` for the `nbl · t` tiles of a block whose
/// sequences start `lpw` rows apart; `V` is `n` matrices `tiles x c`.
fn input_transform<T: Float>(
    rows: &[T],
    (bt, n): (&[T], usize),
    dims: (usize, usize, usize, usize),
    v: &mut [T],
) {
    pulp::Arch::new().dispatch(InputTransform {
        rows,
        bt,
        n,
        dims,
        v,
    });
}

/// [`input_transform`] as a pulp op: the vector operations along the channels compiled for
/// AVX2 / AVX-512 under run-time dispatch (the same arithmetic, bit for bit).
struct InputTransform<'a, T> {
    rows: &'a [T],
    bt: &'a [T],
    n: usize,
    dims: (usize, usize, usize, usize),
    v: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for InputTransform<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        input_transform_body(self.rows, (self.bt, self.n), self.dims, self.v);
    }
}

#[inline(always)]
fn input_transform_body<T: Float>(
    rows: &[T],
    (bt, n): (&[T], usize),
    (nbl, t, lpw, c): (usize, usize, usize, usize),
    v: &mut [T],
) {
    let cols = nbl * t;
    for s in 0..nbl {
        for j in 0..t {
            let base = s * lpw + 2 * j;
            let tile = s * t + j;
            for xi in 0..n {
                let dst = &mut v[(xi * cols + tile) * c..][..c];
                combine(&bt[xi * n..(xi + 1) * n], dst, |r| {
                    &rows[(base + r) * c..(base + r + 1) * c]
                });
            }
        }
    }
}

/// The weight gradient of [`forward`]: `dW[o, c, k] = Σ_b Σ_j dY[b, o, j] · x_pad[b, c, j + k]`
/// (`dy` contiguous `(B, C_out, L_out)`), returned as `(C_out, C_in, K)`.
///
/// In the transform domain `dU[ξ] = Σ_tiles V[ξ] ⊗ dM[ξ]` with `dM[ξ] = Σ_i Aᵀ[i][ξ] dY_i` (the
/// output transform run backwards over the tile's two output gradients), `n` products
/// `C_in x tiles · tiles x C_out`; then `dW = Gᵀ dU` per kernel. The products of fixed groups of
/// blocks are summed in group order, so the result does not depend on the thread count.
pub(crate) fn weight_grad<T: Float>(x: &[T], dy: &[T], d: Dims1) -> Result<Vec<T>, String> {
    let (ci, co, k) = (d.c_in, d.c_out, d.k);
    if x.len() != d.b * ci * d.l
        || dy.len() != d.b * co * d.lout
        || k == 0
        || d.lout + k != d.l + 2 * d.pad + 1
    {
        return Err(format!(
            "winograd conv1d weight gradient: inconsistent sizes {d:?}"
        ));
    }
    let tf = transform(k);
    let n = tf.n;
    let bt: Vec<T> = tf.bt.iter().map(|&v| T::from_f64(v)).collect();
    let at: Vec<T> = tf.at.iter().map(|&v| T::from_f64(v)).collect();
    let t = d.lout.div_ceil(2);
    let lpw = 2 * t + n - 2 - d.pad;
    let nb = TASK_TILES.div_ceil(t).clamp(1, d.b.max(1));
    let blocks = d.b.div_ceil(nb);
    let per = blocks.div_ceil(MAX_PARTIALS).max(1);
    let partials: Vec<Vec<T>> = (0..blocks.div_ceil(per))
        .into_par_iter()
        .map(|part| -> Result<Vec<T>, String> {
            let mut du = zeros_par(n * ci * co);
            for blk in part * per..((part + 1) * per).min(blocks) {
                let (b0, nbl) = (blk * nb, nb.min(d.b - blk * nb));
                let cols = nbl * t;
                let total = nbl * lpw + d.pad;
                let (n1, n2) = (total * ci + n * cols * ci, 2 * cols * co + n * cols * co);
                with_scratch(n1, n2, |a: &mut [T], b: &mut [T]| -> Result<(), String> {
                    let (rows, v) = a.split_at_mut(total * ci);
                    let (dyr, dm) = b.split_at_mut(2 * cols * co);
                    to_rows(x, (ci, d.l), (b0, nbl), (d.pad, lpw, total), rows);
                    input_transform(rows, (&bt, n), (nbl, t, lpw, ci), v);
                    // dY as rows: sequence s at rows 2t·s .., a zero row after an odd length
                    to_rows(dy, (co, d.lout), (b0, nbl), (0, 2 * t, 2 * cols), dyr);
                    for tile in 0..cols {
                        for xi in 0..n {
                            let dst = &mut dm[(xi * cols + tile) * co..][..co];
                            combine(&[at[xi], at[n + xi]], dst, |i| {
                                &dyr[(2 * tile + i) * co..(2 * tile + i + 1) * co]
                            });
                        }
                    }
                    for xi in 0..n {
                        matmul(
                            &mut du[xi * ci * co..(xi + 1) * ci * co],
                            co,
                            Mat::row_major(&v[xi * cols * ci..(xi + 1) * cols * ci], cols, ci).t(),
                            Mat::row_major(&dm[xi * cols * co..(xi + 1) * cols * co], cols, co),
                            true,
                            1,
                        )?;
                    }
                    Ok(())
                })?;
            }
            Ok(du)
        })
        .collect::<Result<_, String>>()?;
    let du = sum_in_order(partials, n * ci * co);
    let mut dw = zeros_par(co * ci * k);
    dw.par_chunks_mut(ci * k).enumerate().for_each(|(o, rows)| {
        for (c, dst) in rows.chunks_mut(k).enumerate() {
            for (j, out) in dst.iter_mut().enumerate() {
                let v: f64 = (0..n)
                    .map(|xi| tf.g[xi * k + j] * du[(xi * ci + c) * co + o].to_f64())
                    .sum();
                *out = T::from_f64(v);
            }
        }
    });
    Ok(dw)
}

/// `dst = Σ_i coefs[i] · row(i)` over the rows with a non-zero coefficient (vector operations
/// along the row).
#[inline(always)]
fn combine<'a, T: Float + 'a>(coefs: &[T], dst: &mut [T], row: impl Fn(usize) -> &'a [T]) {
    let mut first = true;
    for (i, &coef) in coefs.iter().enumerate() {
        if coef == T::ZERO {
            continue;
        }
        let src = row(i);
        if first {
            for (o, &s) in dst.iter_mut().zip(src) {
                *o = coef * s;
            }
            first = false;
        } else {
            for (o, &s) in dst.iter_mut().zip(src) {
                *o += coef * s;
            }
        }
    }
    if first {
        dst.fill(T::ZERO);
    }
}

/// `dst (c x len)` = the transpose of the time-major rows `rows (len x c)`.
fn from_rows<T: Float>(rows: &[T], c: usize, dst: &mut [T]) {
    transpose(rows, (rows.len() / c.max(1), c), dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrices compute a 2-output correlation exactly (in f64) for every supported size.
    #[test]
    fn transforms_compute_the_correlation() {
        for r in [1, 2, 3, 4, 5, 6, 7] {
            let tf = transform(r);
            let n = tf.n;
            let d: Vec<f64> = (0..n).map(|i| ((i * 7 + 3) as f64 * 0.37).sin()).collect();
            let g: Vec<f64> = (0..r).map(|i| ((i * 5 + 1) as f64 * 0.91).cos()).collect();
            let v: Vec<f64> = (0..n)
                .map(|p| (0..n).map(|k| tf.bt[p * n + k] * d[k]).sum())
                .collect();
            let u: Vec<f64> = (0..n)
                .map(|p| (0..r).map(|k| tf.g[p * r + k] * g[k]).sum())
                .collect();
            for i in 0..2 {
                let wino: f64 = (0..n).map(|p| tf.at[i * n + p] * u[p] * v[p]).sum();
                let direct: f64 = (0..r).map(|k| d[i + k] * g[k]).sum();
                assert!(
                    (wino - direct).abs() < 1e-12,
                    "r {r} output {i}: {wino} vs {direct}"
                );
            }
        }
    }

    /// Kernel sizes 3, 5, 7, paddings from 0 to 3, odd and even output lengths, a single tile,
    /// and batches of several tasks (and of several partial weight gradients).
    fn cases() -> Vec<Dims1> {
        [
            (3, 16, 17, 9, 3, 1),
            (2, 18, 16, 10, 5, 2),
            (70, 16, 16, 13, 7, 3),
            (5, 17, 19, 8, 7, 0),
            (2, 16, 16, 7, 7, 1),
            (1, 16, 20, 2, 3, 2),
        ]
        .into_iter()
        .map(|(b, c_in, c_out, l, k, pad)| Dims1 {
            b,
            c_in,
            l,
            c_out,
            k,
            pad,
            lout: l + 2 * pad + 1 - k,
        })
        .collect()
    }

    fn input(d: &Dims1) -> Vec<f64> {
        (0..d.b * d.c_in * d.l)
            .map(|i| ((i * 13 + 5) as f64 * 0.173).sin())
            .collect()
    }

    fn f32s(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&u| u as f32).collect()
    }

    /// `got` (f64) within `tol64` and `got32` within `2e-5` of `want`, relative to its largest
    /// magnitude.
    fn check(want: &[f64], got: &[f64], got32: &[f32], tol64: f64, d: &Dims1) {
        let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f64, |a, (p, q)| a.max((p - q).abs()));
        assert!(err < tol64 * scale, "{d:?}: f64 error {err}");
        let err32 = got32
            .iter()
            .zip(want)
            .fold(0.0f64, |a, (&p, q)| a.max((f64::from(p) - q).abs()));
        assert!(
            err32 < 2e-5 * scale,
            "{d:?}: f32 error {err32} (scale {scale})"
        );
    }

    fn direct(x: &[f64], w: &[f64], d: Dims1) -> Vec<f64> {
        let mut y = vec![0.0; d.b * d.c_out * d.lout];
        for b in 0..d.b {
            for o in 0..d.c_out {
                for j in 0..d.lout {
                    let mut acc = 0.0;
                    for c in 0..d.c_in {
                        for k in 0..d.k {
                            let i = (j + k) as isize - d.pad as isize;
                            if i >= 0 && (i as usize) < d.l {
                                acc += x[(b * d.c_in + c) * d.l + i as usize]
                                    * w[(o * d.c_in + c) * d.k + k];
                            }
                        }
                    }
                    y[(b * d.c_out + o) * d.lout + j] = acc;
                }
            }
        }
        y
    }

    /// Forward equals a direct sum in f64 (to rounding) and in f32 (to a few ulps of the sums)
    /// over kernel sizes, paddings, odd and even output lengths, blocks of many sequences.
    #[test]
    fn forward_equals_the_direct_sum() {
        for d in cases() {
            let x = input(&d);
            let w: Vec<f64> = (0..d.c_out * d.c_in * d.k)
                .map(|i| ((i * 11 + 2) as f64 * 0.291).cos() * 0.2)
                .collect();
            let want = direct(&x, &w, d);
            let got = forward(&x, &w, d, Epilogue::none()).unwrap();
            let got32 = forward(&f32s(&x), &f32s(&w), d, Epilogue::none()).unwrap();
            check(&want, &got, &got32, 1e-12, &d);
        }
    }

    fn direct_weight_grad(x: &[f64], dy: &[f64], d: Dims1) -> Vec<f64> {
        let mut dw = vec![0.0; d.c_out * d.c_in * d.k];
        for b in 0..d.b {
            for o in 0..d.c_out {
                for c in 0..d.c_in {
                    for k in 0..d.k {
                        let mut acc = 0.0;
                        for j in 0..d.lout {
                            let i = (j + k) as isize - d.pad as isize;
                            if i >= 0 && (i as usize) < d.l {
                                acc += dy[(b * d.c_out + o) * d.lout + j]
                                    * x[(b * d.c_in + c) * d.l + i as usize];
                            }
                        }
                        dw[(o * d.c_in + c) * d.k + k] += acc;
                    }
                }
            }
        }
        dw
    }

    /// The transform-domain weight gradient equals the direct sum (f64 to rounding, f32 to a
    /// few ulps of the sums), across blocks and partial sums.
    #[test]
    fn weight_gradient_equals_the_direct_sum() {
        for d in cases() {
            let x = input(&d);
            let dy: Vec<f64> = (0..d.b * d.c_out * d.lout)
                .map(|i| ((i * 7 + 3) as f64 * 0.411).cos())
                .collect();
            let want = direct_weight_grad(&x, &dy, d);
            let got = weight_grad(&x, &dy, d).unwrap();
            let got32 = weight_grad(&f32s(&x), &f32s(&dy), d).unwrap();
            check(&want, &got, &got32, 1e-11, &d);
        }
    }

    #[test]
    fn inconsistent_sizes_are_errors() {
        let d = Dims1 {
            b: 1,
            c_in: 16,
            l: 8,
            c_out: 16,
            k: 3,
            pad: 1,
            lout: 9,
        };
        assert!(forward(&[0.0f32; 128], &[0.0f32; 768], d, Epilogue::none()).is_err());
    }

    /// The input transform gives the same bits compiled for the dispatched instruction set and
    /// for the baseline (channels not a multiple of the vector width).
    #[test]
    fn dispatched_input_transform_equals_the_baseline_bit_for_bit() {
        let tf = transform(7);
        let bt: Vec<f32> = tf.bt.iter().map(|&v| v as f32).collect();
        let (nbl, t, c) = (3, 4, 19);
        let lpw = 2 * t + tf.n - 2;
        let rows: Vec<f32> = (0..(nbl * lpw + 2) * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let run = |dispatch: bool| {
            let mut v = vec![0f32; tf.n * nbl * t * c];
            let op = InputTransform {
                rows: &rows,
                bt: &bt,
                n: tf.n,
                dims: (nbl, t, lpw, c),
                v: &mut v,
            };
            crate::ops::cpu::run_simd(op, dispatch);
            v
        };
        let got = run(true);
        assert!(got.iter().any(|&x| x != 0.0));
        assert_eq!(got, run(false));
    }

    /// The output stage likewise, with a bias + ReLU epilogue and an odd length.
    #[test]
    fn dispatched_output_transform_equals_the_baseline_bit_for_bit() {
        let tf = transform(5);
        let at: Vec<f32> = tf.at.iter().map(|&v| v as f32).collect();
        let (nbl, lout, co) = (2usize, 7usize, 21usize);
        let t = lout.div_ceil(2);
        let cols = nbl * t;
        let m: Vec<f32> = (0..tf.n * cols * co)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 5.0)
            .collect();
        let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.3 - 3.0).collect();
        let run = |dispatch: bool| {
            let (mut ybuf, mut yb) = (vec![0f32; lout * co], vec![0f32; nbl * co * lout]);
            let op = OutputTransform {
                m: &m,
                at: &at,
                dims: (tf.n, t, cols, co, lout),
                epi: Epilogue {
                    bias: Some(&bias),
                    relu: true,
                },
                ybuf: &mut ybuf,
                yb: &mut yb,
            };
            crate::ops::cpu::run_simd(op, dispatch);
            yb
        };
        let got = run(true);
        assert!(got.iter().any(|&x| x > 0.0) && got.contains(&0.0));
        assert_eq!(got, run(false));
    }
}
