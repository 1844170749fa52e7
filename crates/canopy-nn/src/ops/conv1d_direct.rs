//! A direct 1-D convolution for f32 on AVX2 / AVX-512: register tiles of output channels x
//! output steps accumulated straight from the channel-major input, with no window matrix and
//! no transpose.
//!
//! The other paths of [`super::conv1d_cpu`] hand the work to `gemm`, which wants its operands
//! as matrices: a `(K·C_in) x n` window matrix (`K` copies of the input) or time-major rows
//! (transposes in and out), and `gemm` then packs one of them again. For many channels that is
//! a small price. For few input channels the copies are a large share of the work and the
//! products are short (`m = C_out = 32`): MS-ResNet's 32-channel layers and its 13 -> 32 stem
//! ran 1.13-1.51x faster here, InceptionTime's 21- and 11-tap layers 1.2x (per-layer A/B in
//! docs/benchmarks.md, `conv_layers --ab-direct`). With 64 input channels `gemm` was as fast
//! or faster, so [`Geometry::applies`] sends only `C_in <` [`MAX_CHANNELS`] here.
//!
//! **Layout.** A block of sequences is laid out as one zero-padded stream per input channel:
//! `p` zeros, then the sequences `lp` positions apart (`lp = max(L + p, L_out·s)` rounded up
//! to a multiple of the stride `s`; the zeros between two sequences are the right padding of
//! one and the left padding of the next), then zeros. The stream is stored as `s` *phase
//! rows*: row `(c, r)` column `m` holds stream position `m·s + r`. Output step `t` of
//! sequence `b` reads, for tap `k` (dilation `d`), stream position `b·lp + t·s + k·d`, which
//! is phase `(k·d) mod s`, column `j + ⌊k·d / s⌋` with `j = b·lq + t` and `lq = lp / s`: every
//! tap is a contiguous run of one phase row, for any stride and dilation, and
//!
//! ```text
//! out[o, j] = Σ_q w[o, q] · P[row(q)][j + shift(q)]        q = (c, k)
//! ```
//!
//! a sum of shifted rows per output channel. The register tiles either run over the block's
//! columns end to end ([`Columns::Packed`]: the `lq - L_out` columns between two sequences'
//! outputs are computed and dropped) or start afresh at each sequence
//! ([`Columns::PerSequence`]: `⌈L_out / width⌉` tiles each, the last one's columns past
//! `L_out` dropped), whichever drops fewer; with more than [`MAX_WASTE`] dropped the window
//! matrix is used instead. InceptionTime's 41 taps with 20 zeros of padding on 45 steps drop
//! 20 of 65 columns packed and 3 of 48 per sequence: 1.39x faster than the window matrix
//! that way, even with it packed.
//!
//! **Register tile.** [`MR`] = 6 output channels x [`NV`] = 2 vectors of columns (6 x 16
//! values with AVX2, 6 x 32 with AVX-512), the shape of `gemm`'s own AVX2 kernel: per tap two
//! vector loads of a phase row and six broadcast weights feed twelve FMAs into twelve
//! accumulators, fifteen of the sixteen AVX2 registers (a 4 x 3 tile needed seventeen and
//! spilled accumulators to the stack: 1.5x slower). Weights are packed once per call in
//! panels of six channels; the last channels (`C_out mod 6`) get tiles of their own height.
//! A task takes a block of sequences and, per [`DEPTH`] taps, runs each weight panel (6 KB,
//! in L1) over all column tiles of the block, adding to the partial sums of the taps before.
//!
//! The input gradient of a unit-stride convolution is the convolution of `dY` with the flipped
//! kernel (`F[c, o, j] = W[o, c, K - 1 - j]`, padding `d(K - 1) - p`), so the backward pass of
//! [`super::conv1d_cpu`] runs it here too when that convolution qualifies (fewer than 64
//! *output* channels in the layer); strided layers' input gradients and all weight gradients
//! stay on `gemm`.
//!
//! Each output is one sum in a fixed order (over `c`, then `k`), whatever the number of
//! threads. f64, and CPUs without AVX2 + FMA, take the `gemm` paths.

use std::any::TypeId;

use crate::ops::conv1d_cpu::Epilogue;
use crate::ops::cpu::{par_appended, with_scratch, Appender, Float};
use crate::ops::gates_fast::{Lanes, Narrow, Wide};
use crate::ops::im2col::copy_strided;

/// Output channels per register tile.
const MR: usize = 6;
/// Vectors of output columns per register tile.
const NV: usize = 2;
/// Input channels below which the forward pass of a convolution with more than one tap runs
/// here (with more, `gemm`'s products are the faster, and stride-1 layers of 3, 5 or 7 taps
/// take the Winograd kernels).
const MAX_CHANNELS: usize = 64;
/// Share of computed columns that are not outputs above which the window-matrix path is the
/// faster (InceptionTime's 41 taps with 20 zeros of padding on 45 steps, 65 columns per 45
/// outputs, ran as fast here as on the window matrix).
const MAX_WASTE: f64 = 0.2;
/// Taps `(c, k)` summed per pass over a block: a panel's weights for them (`MR · DEPTH` values,
/// 6 KB) stay in L1 next to the phase rows.
const DEPTH: usize = 256;
/// Output columns a task covers at least.
const TASK_COLS: usize = 512;

/// Sizes of one direct convolution: `x (B, C_in, L)`, `w (C_out, C_in, K)`, stride, padding,
/// dilation, and the output length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub b: usize,
    pub ci: usize,
    pub l: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub lout: usize,
}

impl Geometry {
    /// Positions from one sequence to the next in a block: `max(L + p, L_out·s)` rounded up to
    /// a multiple of the stride (the zeros between two sequences are the right padding of one
    /// and the left padding of the next).
    fn lp(&self) -> usize {
        (self.l + self.pad)
            .max(self.lout * self.stride)
            .next_multiple_of(self.stride)
    }

    /// Output columns per sequence, `lp / s` (the first `L_out` are outputs).
    fn lq(&self) -> usize {
        self.lp() / self.stride
    }

    /// How the register tiles of `width` columns cover a block, and the share of the columns
    /// they compute that are not outputs.
    fn columns(&self, width: usize) -> (Columns, f64) {
        let (lq, lout) = (self.lq(), self.lout);
        let packed = (lq - lout) as f64 / lq as f64;
        let tiles = lout.div_ceil(width);
        let per_sequence = (tiles * width - lout) as f64 / (tiles * width) as f64;
        if per_sequence < packed {
            (Columns::PerSequence { tiles }, per_sequence)
        } else {
            (Columns::Packed, packed)
        }
    }

    /// Whether the forward pass runs here: more than one tap, fewer than [`MAX_CHANNELS`]
    /// input channels, at most [`MAX_WASTE`] of the columns computed and dropped.
    pub(crate) fn applies(&self) -> bool {
        self.k > 1 && self.ci < MAX_CHANNELS && self.columns(tile_width()).1 <= MAX_WASTE
    }
}

/// The columns of a register tile on this CPU (2 vectors of 16 lanes with AVX-512, of 8
/// with AVX2).
fn tile_width() -> usize {
    NV * if pulp::x86::V4::try_new().is_some() {
        16
    } else {
        8
    }
}

/// Which columns the register tiles of a block compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns {
    /// Consecutive tiles over the block's columns as the phase rows hold them (`lq` per
    /// sequence, the last `lq - L_out` of each dropped): short gaps between sequences.
    Packed,
    /// `tiles` tiles from the first column of each sequence, written `tiles · width` apart:
    /// long gaps (long kernels with "same" padding on short series: InceptionTime's 41 taps
    /// with 20 zeros each side give 65 columns per 45 outputs, 3 tiles of 16 cover 48).
    PerSequence { tiles: usize },
}

/// Whether this CPU runs the kernel (AVX2 + FMA or AVX-512).
#[cfg(test)]
pub(crate) fn available() -> bool {
    pulp::x86::V3::try_new().is_some()
}

/// `epi(conv1d(x, w))` as `(B, C_out, L_out)`, or `None` when `T` is not f32 or the CPU has
/// neither AVX-512 nor AVX2 + FMA.
///
/// # Errors
/// When the slices do not match `g`.
pub(crate) fn forward<T: Float>(
    x: &[T],
    w: &[T],
    g: Geometry,
    epi: Epilogue<'_, T>,
) -> Option<Result<Vec<T>, String>> {
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        return None;
    }
    // (T is f32: the casts only change the static type)
    let (x, w): (&[f32], &[f32]) = (bytemuck::cast_slice(x), bytemuck::cast_slice(w));
    if let Some(simd) = pulp::x86::V4::try_new() {
        return Some(forward_with::<T, _, _>(Wide(simd), simd, x, w, g, epi));
    }
    if let Some(simd) = pulp::x86::V3::try_new() {
        return Some(forward_with::<T, _, _>(Narrow(simd), simd, x, w, g, epi));
    }
    None
}

fn forward_with<T: Float, L: Lanes + Send + Sync, S: pulp::Simd>(
    lanes: L,
    simd: S,
    x: &[f32],
    w: &[f32],
    g: Geometry,
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let (s, d, kc) = (g.stride, g.dil, g.k * g.ci);
    let span = d * g.k.saturating_sub(1);
    if x.len() != g.b * g.ci * g.l
        || w.len() != g.co * kc
        || s == 0
        || d == 0
        || g.k == 0
        || g.l + 2 * g.pad <= span
        || g.lout != (g.l + 2 * g.pad - span - 1) / s + 1
    {
        return Err(format!("direct conv1d: inconsistent sizes {g:?}"));
    }
    if g.b * g.co * g.lout == 0 {
        return Ok(Vec::new());
    }
    let lq = g.lq();
    let width = NV * L::N; // columns per register tile
    let layout = g.columns(width).0;
    let panels = g.co.div_ceil(MR);
    // weights in panels of MR channels: wp[(panel·kc + q)·MR + i] = w[panel·MR + i, q]
    let mut wp = vec![0.0f32; panels * kc * MR];
    for (o, row) in w.chunks_exact(kc).enumerate() {
        let (panel, i) = (o / MR, o % MR);
        for (q, &v) in row.iter().enumerate() {
            wp[(panel * kc + q) * MR + i] = v;
        }
    }
    let nb = TASK_COLS.div_ceil(lq).clamp(1, g.b);
    // the phase rows of a block: the left padding, nb sequences, then zeros for the last
    // tile's shifted loads
    let wrow = g.pad.div_ceil(s) + nb * lq + width + span / s + 1;
    // the offset of tap q = (c, k) in the phase rows
    let offsets: Vec<usize> = (0..kc)
        .map(|q| {
            let (c, k) = (q / g.k, q % g.k);
            (c * s + (k * d) % s) * wrow + (k * d) / s
        })
        .collect();
    par_appended(
        g.b * g.co * g.lout,
        nb * g.co * g.lout,
        |blk, yb: &mut Appender<'_, T>| {
            let nbl = yb.capacity() / (g.co * g.lout);
            // the tiles' first columns in the phase rows and in `out`, and `out`'s width
            let (tiles, cols, pitch): (Vec<(usize, usize)>, usize, usize) = match layout {
                Columns::Packed => {
                    // up to the last valid output of the block, in whole tiles
                    let cols = ((nbl - 1) * lq + g.lout).next_multiple_of(width);
                    let tiles = (0..cols).step_by(width).map(|j| (j, j)).collect();
                    (tiles, cols, lq)
                }
                Columns::PerSequence { tiles: per } => {
                    let tiles = (0..nbl * per)
                        .map(|i| ((i / per) * lq + (i % per) * width, i * width))
                        .collect();
                    (tiles, nbl * per * width, per * width)
                }
            };
            with_scratch(
                g.ci * s * wrow,
                g.co * cols,
                |rows: &mut [T], out: &mut [T]| {
                    let rows: &mut [f32] = bytemuck::cast_slice_mut(rows);
                    let out32: &mut [f32] = bytemuck::cast_slice_mut(out);
                    phase_rows(x, g, (blk * nb, nbl), wrow, rows);
                    simd.vectorize(Tiles {
                        lanes,
                        rows,
                        offsets: &offsets,
                        wp: &wp,
                        kc,
                        co: g.co,
                        tiles: &tiles,
                        cols,
                        out: out32,
                    });
                    epi.store_block(&out[..g.co * cols], pitch, (nbl, g.lout), yb);
                },
            );
            Ok::<(), String>(())
        },
    )
}

/// The phase rows of sequences `b0..b0 + nbl` (see the module docs) in `rows`, `wrow` values
/// per row, every value written (zeros around and after the sequences).
fn phase_rows(x: &[f32], g: Geometry, (b0, nbl): (usize, usize), wrow: usize, rows: &mut [f32]) {
    let (s, p, lp) = (g.stride, g.pad, g.lp());
    for c in 0..g.ci {
        for r in 0..s {
            let row = &mut rows[(c * s + r) * wrow..][..wrow];
            // column m holds stream position m·s + r; value i of sequence bl is at position
            // p + bl·lp + i, so the row takes values i0, i0 + s, .. (lp is a multiple of s)
            let i0 = (r + s - p % s) % s;
            let count = g.l.saturating_sub(i0).div_ceil(s);
            let mut end = 0;
            for bl in 0..nbl {
                let m0 = (p + bl * lp + i0 - r) / s;
                row[end..m0].fill(0.0);
                if count > 0 {
                    let src = &x[((b0 + bl) * g.ci + c) * g.l..][..g.l];
                    copy_strided(&mut row[m0..m0 + count], &src[i0..], s);
                }
                end = m0 + count;
            }
            row[end..].fill(0.0);
        }
    }
}

/// The register tiles of one block: `out (C_out x cols)`, `out[o, j] = Σ_q wp[o, q] ·
/// rows[offsets[q] + j]`.
struct Tiles<'a, L> {
    lanes: L,
    rows: &'a [f32],
    offsets: &'a [usize],
    wp: &'a [f32],
    kc: usize,
    co: usize,
    /// The first column of each tile in the phase rows and in `out`.
    tiles: &'a [(usize, usize)],
    /// `out`'s columns.
    cols: usize,
    out: &'a mut [f32],
}

impl<L: Lanes> pulp::WithSimd for Tiles<'_, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(mut self, _: S) {
        let full = self.co / MR;
        for q0 in (0..self.kc).step_by(DEPTH) {
            let taps = q0..(q0 + DEPTH).min(self.kc);
            for panel in 0..full {
                for &j0 in self.tiles {
                    self.tile::<MR>(panel, j0, taps.clone());
                }
            }
            // the last channels, fewer than MR, in tiles of their own height
            for &j0 in self.tiles {
                let taps = taps.clone();
                match self.co % MR {
                    0 => {}
                    1 => self.tile::<1>(full, j0, taps),
                    2 => self.tile::<2>(full, j0, taps),
                    3 => self.tile::<3>(full, j0, taps),
                    4 => self.tile::<4>(full, j0, taps),
                    _ => self.tile::<5>(full, j0, taps),
                }
            }
        }
    }
}

impl<L: Lanes> Tiles<'_, L> {
    /// Output channels `panel·MR ..` (`M` of them) at columns `j0 .. j0 + NV·N`: the sum over
    /// `taps`, added to the tile's values when the taps do not start at 0.
    #[inline(always)]
    fn tile<const M: usize>(
        &mut self,
        panel: usize,
        (jin, jout): (usize, usize),
        taps: std::ops::Range<usize>,
    ) {
        let (l, n) = (self.lanes, L::N);
        let mut acc = [[l.splat(0.0); NV]; M];
        if taps.start > 0 {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let src = &self.out[(panel * MR + i) * self.cols + jout..][..NV * n];
                for (v, a) in acc_i.iter_mut().enumerate() {
                    *a = l.load(&src[v * n..]);
                }
            }
        }
        let wpanel =
            &self.wp[(panel * self.kc + taps.start) * MR..(panel * self.kc + taps.end) * MR];
        for (&off, wq) in self.offsets[taps].iter().zip(wpanel.chunks_exact(MR)) {
            let src = &self.rows[off + jin..][..NV * n];
            let xv = [l.load(src), l.load(&src[n..])];
            for (acc_i, &wv) in acc.iter_mut().zip(wq) {
                let wv = l.splat(wv);
                for (a, &xv) in acc_i.iter_mut().zip(&xv) {
                    *a = l.fma(xv, wv, *a);
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            let dst = &mut self.out[(panel * MR + i) * self.cols + jout..][..NV * n];
            for (v, &a) in acc_i.iter().enumerate() {
                l.store(&mut dst[v * n..], a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` values drawn uniformly from [-1, 1).
    fn uniform(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// `epi(conv1d(x, w))` summed in f64, one output at a time.
    fn reference(x: &[f32], w: &[f32], g: Geometry, bias: &[f32], relu: bool) -> Vec<f64> {
        let mut y = vec![0.0; g.b * g.co * g.lout];
        for b in 0..g.b {
            for o in 0..g.co {
                for t in 0..g.lout {
                    let mut v = f64::from(bias[o]);
                    for c in 0..g.ci {
                        for k in 0..g.k {
                            let i = (t * g.stride + k * g.dil) as isize - g.pad as isize;
                            if (0..g.l as isize).contains(&i) {
                                v += f64::from(w[(o * g.ci + c) * g.k + k])
                                    * f64::from(x[(b * g.ci + c) * g.l + i as usize]);
                            }
                        }
                    }
                    y[(b * g.co + o) * g.lout + t] = if relu { v.max(0.0) } else { v };
                }
            }
        }
        y
    }

    /// `(B, C_in, L, C_out, K, stride, padding, dilation)`.
    fn geometry(
        (b, ci, l, co, k, s, p, d): (usize, usize, usize, usize, usize, usize, usize, usize),
    ) -> Geometry {
        let lout = (l + 2 * p - d * (k - 1) - 1) / s + 1;
        Geometry {
            b,
            ci,
            l,
            co,
            k,
            stride: s,
            pad: p,
            dil: d,
            lout,
        }
    }

    /// The kernel equals the f64 sum to f32 rounding for strides 1-3, dilations 1-3, padding
    /// beyond the kernel span, channel counts that do not fill a panel, one and many blocks,
    /// with and without the epilogue; the bits do not depend on the number of threads.
    /// The public op's configuration of `g` (one group).
    fn config(g: Geometry) -> crate::ops::Conv1dConfig {
        crate::ops::Conv1dConfig {
            axis: crate::ops::Axis1 {
                stride: g.stride,
                padding: g.pad,
                dilation: g.dil,
            },
            groups: 1,
        }
    }

    #[test]
    fn direct_kernel_equals_the_sum() {
        if !available() {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 with FMA");
            return;
        }
        let cases = [
            // (B, C_in, L, C_out, K, stride, padding, dilation)
            geometry((2, 3, 11, 4, 3, 1, 1, 1)),
            geometry((3, 2, 10, 3, 5, 2, 2, 1)),
            geometry((2, 4, 17, 2, 3, 3, 0, 2)),
            geometry((1, 1, 7, 6, 7, 1, 3, 1)),
            geometry((2, 3, 9, 5, 2, 2, 1, 3)),
            geometry((2, 3, 5, 2, 3, 1, 6, 1)),
            // MS-ResNet's stem and stride-2 layers, several blocks
            geometry((40, 13, 512, 32, 7, 2, 3, 1)),
            geometry((70, 32, 58, 64, 7, 2, 1, 1)),
            geometry((50, 64, 28, 128, 5, 2, 1, 1)),
            // 32 channels, stride 1; InceptionTime's 41 taps
            geometry((30, 32, 62, 32, 7, 1, 1, 1)),
            geometry((20, 32, 45, 32, 41, 1, 20, 1)),
            // pointwise with a stride
            geometry((30, 32, 61, 64, 1, 2, 0, 1)),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (i, &g) in cases.iter().enumerate() {
            let x = uniform(&mut rng, g.b * g.ci * g.l);
            let w = uniform(&mut rng, g.co * g.ci * g.k);
            let bias = uniform(&mut rng, g.co);
            for relu in [false, true] {
                let epi = Epilogue {
                    bias: Some(&bias),
                    relu,
                };
                let y = forward(&x, &w, g, epi).unwrap().unwrap();
                let want = reference(&x, &w, g, &bias, relu);
                assert_eq!(y.len(), want.len(), "case {i}");
                // each output sums C_in·K products of values below 1
                let tol = 2e-6 * (g.ci * g.k) as f64;
                for (j, (&u, &v)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(u) - v).abs() <= tol,
                        "case {i} {g:?} relu {relu}: output {j} is {u}, want {v}"
                    );
                }
                let one = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap();
                let y1 = one.install(|| forward(&x, &w, g, epi).unwrap().unwrap());
                assert!(
                    y1.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {i}"
                );
            }
        }
        // through the public op: the routing in `conv1d_cpu`, the bias and ReLU epilogue of
        // `conv1d_act`, and a layer that goes to the gemm paths (64 input channels)
        let dev = candle_core::Device::Cpu;
        for (i, g) in [
            geometry((9, 13, 64, 32, 7, 2, 3, 1)),
            geometry((7, 32, 30, 20, 5, 1, 1, 1)),
            geometry((5, 64, 23, 16, 7, 2, 1, 1)),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(g.applies(), i < 2, "case {i}");
            let x = uniform(&mut rng, g.b * g.ci * g.l);
            let w = uniform(&mut rng, g.co * g.ci * g.k);
            let bias = uniform(&mut rng, g.co);
            let xt = candle_core::Tensor::from_slice(&x, (g.b, g.ci, g.l), &dev).unwrap();
            let wt = candle_core::Tensor::from_slice(&w, (g.co, g.ci, g.k), &dev).unwrap();
            let bt = candle_core::Tensor::from_slice(&bias, g.co, &dev).unwrap();
            let cfg = config(g);
            let y = crate::ops::conv1d_act(&xt, &wt, Some(&bt), cfg, true).unwrap();
            assert_eq!(y.dims(), [g.b, g.co, g.lout]);
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = reference(&x, &w, g, &bias, true);
            let tol = 2e-6 * (g.ci * g.k) as f64;
            for (j, (&u, &v)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(u) - v).abs() <= tol,
                    "op case {i}: output {j} is {u}, want {v}"
                );
            }
        }
        // the input gradient of unit-stride convolutions with fewer than 64 output channels
        // (the flipped kernel on dY, padding d(K - 1) - p) against the f64 gemm path; the
        // weight gradient comes from the gemm path in both. The geometries take the direct
        // kernel at both tile widths (AVX2 and AVX-512): InceptionTime's 41 taps on 45 steps
        // would not at 32 columns (2 tiles, 30 % of them dropped), so the long-kernel case
        // runs on 64 steps (one tile row per sequence, with gaps)
        for (i, g) in [
            geometry((7, 20, 30, 32, 5, 1, 2, 1)),
            geometry((5, 8, 40, 16, 3, 1, 1, 2)),
            geometry((4, 6, 64, 32, 41, 1, 20, 1)),
        ]
        .into_iter()
        .enumerate()
        {
            let flipped = Geometry {
                ci: g.co,
                l: g.lout,
                co: g.ci,
                pad: g.dil * (g.k - 1) - g.pad,
                lout: g.l,
                ..g
            };
            assert!(flipped.applies(), "gradient case {i}");
            let x = uniform(&mut rng, g.b * g.ci * g.l);
            let w = uniform(&mut rng, g.co * g.ci * g.k);
            let r = uniform(&mut rng, g.b * g.co * g.lout);
            let cfg = config(g);
            let grads = |dt: candle_core::DType| {
                let t = |v: &[f32], shape: (usize, usize, usize)| {
                    let t = candle_core::Tensor::from_slice(v, shape, &dev).unwrap();
                    candle_core::Var::from_tensor(&t.to_dtype(dt).unwrap()).unwrap()
                };
                let (xv, wv) = (t(&x, (g.b, g.ci, g.l)), t(&w, (g.co, g.ci, g.k)));
                let rt = t(&r, (g.b, g.co, g.lout));
                let y = crate::ops::conv1d(xv.as_tensor(), wv.as_tensor(), None, cfg).unwrap();
                let gr = (&y * rt.as_tensor())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                [&xv, &wv].map(|v| {
                    let gv = gr.get(v.as_tensor()).unwrap();
                    let gv = gv.to_dtype(candle_core::DType::F64).unwrap();
                    gv.flatten_all().unwrap().to_vec1::<f64>().unwrap()
                })
            };
            let (got, want) = (
                grads(candle_core::DType::F32),
                grads(candle_core::DType::F64),
            );
            for (name, u, v, terms) in [
                ("dx", &got[0], &want[0], g.co * g.k),
                ("dw", &got[1], &want[1], g.b * g.lout),
            ] {
                assert_eq!(u.len(), v.len());
                let tol = 2e-6 * terms as f64;
                for (j, (a, b)) in u.iter().zip(v.iter()).enumerate() {
                    assert!(
                        (a - b).abs() <= tol,
                        "gradient case {i} {name}[{j}]: {a} vs {b}"
                    );
                }
            }
        }
        // f64 is not this kernel's
        assert!(forward(
            &[0.0f64; 6],
            &[0.0f64; 3],
            geometry((1, 1, 6, 1, 3, 1, 0, 1)),
            Epilogue::none()
        )
        .is_none());
        // sizes that do not match are errors
        let g = geometry((1, 1, 6, 1, 3, 1, 0, 1));
        assert!(forward(&[0.0f32; 5], &[0.0f32; 3], g, Epilogue::none())
            .unwrap()
            .is_err());
    }
}
