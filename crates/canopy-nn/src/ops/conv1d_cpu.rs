//! 1-D convolution (one group, any stride, padding and dilation) on the CPU.
//!
//! **Forward, stride 1** (Winograd aside, below): the windows of a block of sequences are laid
//! out channel-major, a `(K·C_in) x n` matrix whose row `k·C_in + c` holds, for every output
//! column `(b, t)`, the input value `x[b, c, t + k·d - p]`: straight from the `(B, C_in, L)`
//! input, each row of a sequence one contiguous run between zeros, no transpose. One product
//! `W (C_out x K·C_in) · cols` gives the outputs channel-major, as the `(B, C_out, L_out)` result
//! wants them. `n` is a multiple of 16 and the columns are contiguous, so `gemm` reads the
//! matrix in place instead of packing it; blocks of ~[`COLS_BLOCK`] columns keep it in L2.
//! (InceptionTime's 41-, 21- and 11-tap layers on 45 steps: inference 153 -> ~122 ms per batch
//! of 256 on the AVX-512 machine; before, the windows were gathered time-major and packed again
//! by `gemm`, and those two copies took 43 % of the samples.)
//!
//! **Forward with stride > 1, and the backward passes:** a block of sequences `(nb, C_in, L)` is
//! transposed once into time-major rows (`C_in` values per row): `p` zero rows, then the
//! sequences `L_p` rows apart, where `L_p` is `max(L + p, L_out·s)` rounded up to a multiple of
//! the stride `s` — the zero rows between two sequences are the trailing padding of one and the
//! leading padding of the next. Output position `t` of sequence `b` reads rows
//! `b·L_p + t·s + k·d`, so across the block output column `j` (sequence `j / (L_p / s)`,
//! position `j mod (L_p / s)`) reads rows `j·s + k·d`: the input windows are strided views of
//! the rows, not copies. With dilation 1
//! the `K` rows of a window are contiguous and the forward pass is one product of depth `K·C_in`
//! with overlapping columns; with dilation `d > 1` it is `K` accumulated products of depth
//! `C_in`. Columns past a sequence's last output are computed and dropped. When those are more
//! than 15 % of the columns (short series, long kernels: MS-ResNet's 7-tap convolutions on 10
//! steps waste 5 of 11) and the dilation is 1, the valid windows are first gathered into a
//! matrix of their own (`lout` columns per sequence); the backward pass then computes the
//! window gradients in one product and adds them back onto the rows (measured on MS-ResNet's
//! 128->128 k7 layer at L = 10, batch 256: forward 12.9 -> 8.6 ms, with backward 38.7 -> 27.0 ms).
//! The transposes are the AVX2 register transposes of [`super::transpose`].
//!
//! Backward, per tap `k` (all in the same strided views, rows of the time-major gradient):
//!
//! ```text
//! dX[j·s + k·d] += dY[j] W_k          dW_k += Σ_j dY[j]ᵀ X[j·s + k·d]
//! ```
//!
//! The weight gradient is summed over at most [`MAX_PARTIALS`] fixed groups of blocks in group
//! order, so it does not depend on the number of threads.
//!
//! Kernels of 3, 5 or 7 taps with stride 1 and at least 64 channels in and out take the
//! Winograd kernels of [`super::winograd1d`] for the forward pass and both gradients. The f32
//! forward pass of kernels with more than one tap and fewer than 64 input channels runs on the
//! register-tiled direct kernel of [`super::conv1d_direct`] where the CPU has AVX2 + FMA; so
//! does the input gradient of a unit-stride convolution with fewer than 64 output channels (a
//! convolution of `dY` with the flipped kernel), whose weight gradient is then computed here.
//!
//! Compared with the im2col path of 2-D convolutions (which `conv1d` used for every
//! configuration before), this saves the gather of `K` copies of the input and runs products as
//! wide as a whole block of sequences, which matters for the short, many-channel series of
//! satellite time series (TempCNN, MS-ResNet, InceptionTime).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{
    par_appended, par_zeroed_map, slice, sum_in_order, with_scratch, xw_backward, zeros_par,
    Appender, Float, XwKernel,
};
use crate::ops::gemm::{matmul, Mat};
use crate::ops::im2col::copy_strided;
use crate::ops::transpose::transpose;
use crate::ops::winograd1d::{self, Dims1};

/// Share of wasted columns above which the valid windows are gathered (see [`compact`]).
const COMPACT_WASTE: f64 = 0.15;
/// Output columns a task's products cover at least (time-major rows).
const BLOCK_COLS: usize = 1024;
/// Output columns a task's product covers at least in the channel-major forward pass: with
/// InceptionTime's 41 taps of 32 channels the window matrix of 256 columns is 1.3 MB.
const COLS_BLOCK: usize = 256;
/// Partial weight gradients at most.
const MAX_PARTIALS: usize = 16;

/// What a forward pass applies to each output value as it stores it: a per-channel bias, then
/// an optional ReLU (the bias and activation of [`super::conv1d_act`], or batch normalisation
/// in evaluation folded into the weights and the bias). Stored this way they cost no pass of
/// their own over the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    /// `(C_out,)`, added to every value of its channel.
    pub bias: Option<&'a [T]>,
    /// Whether negative values become zero (after the bias).
    pub relu: bool,
}

impl<'a, T: Float> Epilogue<'a, T> {
    /// Values stored as computed.
    pub(crate) fn none() -> Self {
        Epilogue {
            bias: None,
            relu: false,
        }
    }

    /// `dst = epilogue(src)` for consecutive values of output channel `o`.
    pub(crate) fn store_channel(&self, o: usize, src: &[T], dst: &mut [T]) {
        let b = self.bias.map_or(T::ZERO, |b| b[o]);
        match (self.bias.is_some(), self.relu) {
            (false, false) => dst.copy_from_slice(src),
            (true, false) => {
                for (v, &u) in dst.iter_mut().zip(src) {
                    *v = u + b;
                }
            }
            (_, true) => {
                for (v, &u) in dst.iter_mut().zip(src) {
                    let t = u + b;
                    *v = if t > T::ZERO { t } else { T::ZERO };
                }
            }
        }
    }

    /// Whether values are stored as computed.
    pub(crate) fn is_none(&self) -> bool {
        self.bias.is_none() && !self.relu
    }

    /// The epilogue in place on consecutive values of output channel `o` (as
    /// [`store_channel`](Self::store_channel): a NaN becomes 0 under the ReLU, like
    /// [`crate::ops::relu`]).
    pub(crate) fn apply_channel(&self, o: usize, v: &mut [T]) {
        let b = self.bias.map_or(T::ZERO, |b| b[o]);
        match (self.bias.is_some(), self.relu) {
            (false, false) => {}
            (true, false) => {
                for x in v.iter_mut() {
                    *x += b;
                }
            }
            (_, true) => {
                for x in v.iter_mut() {
                    let t = *x + b;
                    *x = if t > T::ZERO { t } else { T::ZERO };
                }
            }
        }
    }

    /// Appends `epilogue(out)` to `yb` as `(nbl, C_out, L_out)` for a product
    /// `out (C_out x n)` whose columns hold the sequences `pitch` apart (the first `L_out` of
    /// each are outputs).
    pub(crate) fn store_block(
        &self,
        out: &[T],
        pitch: usize,
        (nbl, lout): (usize, usize),
        yb: &mut Appender<'_, T>,
    ) {
        let co = yb.capacity() / (nbl * lout).max(1);
        let n = out.len() / co.max(1);
        for bl in 0..nbl {
            for o in 0..co {
                let src = &out[o * n + bl * pitch..][..lout];
                let b = self.bias.map_or(T::ZERO, |b| b[o]);
                match (self.bias.is_some(), self.relu) {
                    (false, false) => yb.extend_map(src, |u| u),
                    (true, false) => yb.extend_map(src, |u| u + b),
                    (_, true) => yb.extend_map(src, |u| {
                        let t = u + b;
                        if t > T::ZERO {
                            t
                        } else {
                            T::ZERO
                        }
                    }),
                }
            }
        }
    }

    /// The epilogue in place on the values of every channel at one position (`C_out` values).
    #[inline(always)]
    pub(crate) fn apply_step(&self, v: &mut [T]) {
        if let Some(b) = self.bias {
            for (x, &c) in v.iter_mut().zip(b) {
                *x += c;
            }
        }
        if self.relu {
            for x in v.iter_mut() {
                if *x < T::ZERO {
                    *x = T::ZERO;
                }
            }
        }
    }
}

/// A convolution kernel that stores its outputs through an [`Epilogue`], for
/// [`forward_with_epilogue`].
pub(crate) trait EpilogueKernel {
    /// `epi(conv(x, w))` on contiguous operands.
    fn run<T: Float + Send + Sync>(
        &self,
        x: &[T],
        w: &[T],
        epi: Epilogue<'_, T>,
    ) -> Result<Vec<T>, String>;
}

impl EpilogueKernel for (Conv1dOp, Dims) {
    fn run<T: Float + Send + Sync>(
        &self,
        x: &[T],
        w: &[T],
        epi: Epilogue<'_, T>,
    ) -> Result<Vec<T>, String> {
        self.0.forward_epilogue(x, w, epi, self.1)
    }
}

/// The forward pass of a bias-and-activation convolution op (`conv1d_act`, `conv2d_act`):
/// checks that the bias is `(C_out,)`, then runs `kernel` with the bias and the ReLU as its
/// epilogue on three f32 or three f64 operands `[x, w, b]`; errors name `name`.
pub(crate) fn forward_with_epilogue<K: EpilogueKernel>(
    kernel: &K,
    name: &str,
    c_out: usize,
    relu: bool,
    [(sx, lx), (sw, lw), (sb, lb)]: [(&CpuStorage, &Layout); 3],
) -> candle_core::Result<CpuStorage> {
    let err = |m: String| candle_core::Error::Msg(format!("{name}: {m}"));
    if lb.shape().dims() != [c_out] {
        return Err(err(format!(
            "bias ({c_out},) expected, got {:?}",
            lb.shape()
        )));
    }
    macro_rules! run {
        ($t:ty) => {{
            let epi = Epilogue {
                bias: Some(slice::<$t>(sb, lb, name)?),
                relu,
            };
            let (x, w) = (slice::<$t>(sx, lx, name)?, slice::<$t>(sw, lw, name)?);
            kernel.run(x, w, epi).map_err(err)?
        }};
    }
    Ok(match (sx, sw, sb) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(run!(f32)),
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(run!(f64)),
        _ => return Err(err("x, w and b must all be f32 or all f64".into())),
    })
}

/// `(x (B, C_in, L), w (C_out, C_in, K)) -> (B, C_out, L_out)`, one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv1dOp {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    b: usize,
    ci: usize,
    l: usize,
    co: usize,
    k: usize,
    /// Rows from one sequence to the next: `max(L + p, L_out·s)` rounded up to a multiple of the
    /// stride.
    lp: usize,
    /// Output columns per sequence, `lp / s` (the first `lout` are valid).
    lq: usize,
    lout: usize,
    /// Sequences per block.
    nb: usize,
    /// Whether the valid windows are gathered into a matrix of their own (see [`compact`]).
    compact: bool,
}

impl Dims {
    /// Output columns per sequence in the products: all `lq` of the strided view, or the
    /// `lout` valid ones when compact.
    fn pitch(&self) -> usize {
        if self.compact {
            self.lout
        } else {
            self.lq
        }
    }

    /// Rows of a block of `nb` sequences: the leading padding, `nb·lp`, and zero rows after it
    /// so that the window of every column stays inside the buffer.
    fn block_rows(&self, op: &Conv1dOp, nb: usize) -> usize {
        op.padding + nb * self.lp + op.dilation * (self.k - 1) + op.stride
    }
}

impl XwKernel for Conv1dOp {
    const NAME: &'static str = "conv1d";
    type Dims = Dims;

    fn dims(&self, lx: &Layout, lw: &Layout) -> candle_core::Result<Dims> {
        let (b, ci, l) = lx.shape().dims3()?;
        let (co, wi, k) = lw.shape().dims3()?;
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        let span = d * k.saturating_sub(1);
        if wi != ci || k == 0 || s == 0 || d == 0 || l + 2 * p <= span {
            return Err(candle_core::Error::Msg(format!(
                "conv1d: x (B, C_in, L) and w (C_out, C_in, K) with L + 2p > d(K - 1) and \
                 positive stride and dilation expected, got {:?} and {:?} (stride {s}, padding \
                 {p}, dilation {d})",
                lx.shape(),
                lw.shape(),
            )));
        }
        let lout = (l + 2 * p - span - 1) / s + 1;
        // at least `L + p` rows (the windows stay inside their sequence and its zeros) and at
        // least `L_out · s` (every output has a column: padding wider than the kernel span
        // gives more outputs than `L + p` rows would hold)
        let lp = (l + p).max(lout * s).div_ceil(s) * s;
        let lq = lp / s;
        let compact = compact(d, lq, lout);
        let pitch = if compact { lout } else { lq };
        Ok(Dims {
            b,
            ci,
            l,
            co,
            k,
            lp,
            lq,
            lout,
            nb: BLOCK_COLS.div_ceil(pitch).clamp(1, b.max(1)),
            compact,
        })
    }

    fn out_shape(d: &Dims) -> Shape {
        Shape::from((d.b, d.co, d.lout))
    }

    fn forward<T: Float>(&self, x: &[T], w: &[T], d: Dims) -> Result<Vec<T>, String> {
        self.forward_epilogue(x, w, Epilogue::none(), d)
    }

    /// `(dx, dw)`.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        d: Dims,
        need_dx: bool,
    ) -> Result<(Option<Vec<T>>, Vec<T>), String> {
        let kc = d.k * d.ci;
        if d.b == 0 || d.co == 0 || d.ci == 0 {
            let dx = need_dx.then(|| zeros_par(d.b * d.ci * d.l));
            return Ok((dx, zeros_par(d.co * kc)));
        }
        let (s, dil) = (self.stride, self.dilation);
        if self.padding < d.k && winograd1d::applies(d.k, s, dil, d.ci, d.co) {
            return self.winograd_backward(x, w, dy, d, need_dx);
        }
        // with unit stride the input gradient is the convolution of dY with the flipped kernel
        // (padding d(K - 1) - p): on the direct kernel where that applies, and the products
        // below compute the weight gradient only
        #[cfg(target_arch = "x86_64")]
        if need_dx && s == 1 && self.padding <= dil * (d.k - 1) {
            let g = crate::ops::conv1d_direct::Geometry {
                b: d.b,
                ci: d.co,
                l: d.lout,
                co: d.ci,
                k: d.k,
                stride: 1,
                pad: dil * (d.k - 1) - self.padding,
                dil,
                lout: d.l,
            };
            if g.applies() && crate::ops::conv::direct_conv1d_enabled() {
                let flipped = flipped_kernel(w, d);
                if let Some(dx) =
                    crate::ops::conv1d_direct::forward(dy, &flipped, g, Epilogue::none())
                {
                    let dx = dx?;
                    let (_, dw) = self.backward(x, w, dy, d, false)?;
                    return Ok((Some(dx), dw));
                }
            }
        }
        let wt = taps(w, d);
        let blocks = d.b.div_ceil(d.nb);
        let per = blocks.div_ceil(MAX_PARTIALS); // blocks per partial
                                                 // one task per part: its blocks' rows, its partial weight gradient, and (when wanted)
                                                 // its chunk of the input gradient
        let run_part = |part: usize, mut dxp: Option<&mut [T]>| -> Result<Vec<T>, String> {
            let (mut xr, mut dyr, mut dxr) = (Vec::new(), Vec::new(), Vec::new());
            let (mut cols, mut dcols) = (Vec::new(), Vec::new());
            let mut dwt = zeros_par(d.co * kc);
            for blk in part * per..((part + 1) * per).min(blocks) {
                let (b0, nbl) = (blk * d.nb, d.nb.min(d.b - blk * d.nb));
                let n = nbl * d.pitch();
                let total = d.block_rows(self, nbl);
                xr.resize(total * d.ci, T::ZERO);
                to_rows(
                    x,
                    (d.ci, d.l),
                    (b0, nbl),
                    (self.padding, d.lp, total),
                    &mut xr,
                );
                // dY as time-major rows (n, C_out), zero past each sequence's outputs
                dyr.resize(n * d.co, T::ZERO);
                to_rows(dy, (d.co, d.lout), (b0, nbl), (0, d.pitch(), n), &mut dyr);
                let dym = Mat::row_major(&dyr[..n * d.co], n, d.co);
                if dxp.is_some() {
                    dxr.clear();
                    dxr.resize(total * d.ci, T::ZERO);
                }
                if d.compact {
                    cols.resize(n * kc, T::ZERO);
                    gather_windows(&xr, d, s, nbl, &mut cols);
                    let windows = Mat::row_major(&cols[..n * kc], n, kc);
                    matmul(&mut dwt, kc, dym.t(), windows, true, 1)?;
                    if dxp.is_some() {
                        dcols.resize(n * kc, T::ZERO);
                        let wm = Mat::row_major(&wt, d.co, kc);
                        matmul(&mut dcols, kc, dym, wm, false, 1)?;
                        scatter_windows(&dcols[..n * kc], d, s, nbl, &mut dxr);
                    }
                } else {
                    for k in 0..d.k {
                        let off = k * dil * d.ci;
                        if dxp.is_some() {
                            let wk = Mat {
                                data: &wt[k * d.ci..],
                                rows: d.co,
                                cols: d.ci,
                                rs: kc,
                                cs: 1,
                            };
                            // rows j·s + k·d of dX
                            matmul(&mut dxr[off..], s * d.ci, dym, wk, true, 1)?;
                        }
                        if dil > 1 {
                            let xk = Mat {
                                data: &xr[off..],
                                rows: n,
                                cols: d.ci,
                                rs: s * d.ci,
                                cs: 1,
                            };
                            matmul(&mut dwt[k * d.ci..], kc, dym.t(), xk, true, 1)?;
                        }
                    }
                    if dil == 1 {
                        // all taps in one product: a window is K·C_in contiguous values
                        let windows = Mat {
                            data: &xr,
                            rows: n,
                            cols: kc,
                            rs: s * d.ci,
                            cs: 1,
                        };
                        matmul(&mut dwt, kc, dym.t(), windows, true, 1)?;
                    }
                }
                if let Some(dxp) = dxp.as_deref_mut() {
                    let base = (blk - part * per) * d.nb;
                    for bl in 0..nbl {
                        // the sequence's L rows of C_in values, transposed into (C_in, L)
                        transpose(
                            &dxr[(self.padding + bl * d.lp) * d.ci..][..d.l * d.ci],
                            (d.l, d.ci),
                            &mut dxp[(base + bl) * d.ci * d.l..][..d.ci * d.l],
                        );
                    }
                }
            }
            Ok(dwt)
        };
        let (dx, partials) = if need_dx {
            let (dx, partials) = par_zeroed_map(
                d.b * d.ci * d.l,
                per * d.nb * d.ci * d.l,
                |part, dxp: &mut [T]| run_part(part, Some(dxp)),
            )?;
            (Some(dx), partials)
        } else {
            let partials = (0..blocks.div_ceil(per))
                .into_par_iter()
                .map(|part| run_part(part, None))
                .collect::<Result<Vec<_>, String>>()?;
            (None, partials)
        };
        let dwt = sum_in_order(partials, d.co * kc);
        let mut dw = zeros_par(d.co * kc);
        for o in 0..d.co {
            for k in 0..d.k {
                for c in 0..d.ci {
                    dw[(o * d.ci + c) * d.k + k] = dwt[o * kc + k * d.ci + c];
                }
            }
        }
        Ok((dx, dw))
    }
}

impl Conv1dOp {
    /// The forward pass with `epi` applied to every output value as it is stored.
    pub(crate) fn forward_epilogue<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        epi: Epilogue<'_, T>,
        d: Dims,
    ) -> Result<Vec<T>, String> {
        if winograd1d::applies(d.k, self.stride, self.dilation, d.ci, d.co) {
            return winograd1d::forward(x, w, self.winograd_dims(d), epi);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let g = crate::ops::conv1d_direct::Geometry {
                b: d.b,
                ci: d.ci,
                l: d.l,
                co: d.co,
                k: d.k,
                stride: self.stride,
                pad: self.padding,
                dil: self.dilation,
                lout: d.lout,
            };
            if g.applies() && crate::ops::conv::direct_conv1d_enabled() {
                if let Some(y) = crate::ops::conv1d_direct::forward(x, w, g, epi) {
                    return y;
                }
            }
        }

        // pointwise kernels with a stride (MS-ResNet's shortcuts) read their inputs as a strided
        // copy of each channel row: no window overlaps, nothing is computed and dropped
        if self.stride == 1 || d.k == 1 {
            return self.forward_channel_major(x, w, epi, d);
        }
        if d.b * d.co * d.lout == 0 {
            return Ok(Vec::new());
        }
        let wt = taps(w, d);
        let (s, dil) = (self.stride, self.dilation);
        let kc = d.k * d.ci;
        par_appended(
            d.b * d.co * d.lout,
            d.nb * d.co * d.lout,
            |blk, yb: &mut Appender<'_, T>| -> Result<(), String> {
                let nbl = yb.capacity() / (d.co * d.lout);
                let total = d.block_rows(self, nbl);
                let n = nbl * d.pitch();
                let cols_len = if d.compact { n * kc } else { 0 };
                // per-thread work space: the rows, then the product and the gathered windows
                with_scratch(total * d.ci, d.co * n + cols_len, |rows: &mut [T], work| {
                    let geom = (self.padding, d.lp, total);
                    to_rows(x, (d.ci, d.l), (blk * d.nb, nbl), geom, rows);
                    let (out, cols) = work.split_at_mut(d.co * n);
                    // column j of the window of tap k: rows j·s + k·d
                    let window = |k: usize, depth: usize| Mat {
                        data: &rows[k * dil * d.ci..],
                        rows: depth,
                        cols: n,
                        rs: 1,
                        cs: s * d.ci,
                    };
                    let lhs = Mat::row_major(&wt, d.co, kc);
                    if d.compact {
                        gather_windows(rows, d, s, nbl, cols);
                        matmul(out, n, lhs, Mat::row_major(cols, n, kc).t(), false, 1)?;
                    } else if dil == 1 {
                        matmul(out, n, lhs, window(0, kc), false, 1)?;
                    } else {
                        for k in 0..d.k {
                            let lhs = Mat {
                                data: &wt[k * d.ci..],
                                rows: d.co,
                                cols: d.ci,
                                rs: kc,
                                cs: 1,
                            };
                            matmul(out, n, lhs, window(k, d.ci), k > 0, 1)?;
                        }
                    }
                    epi.store_block(&out[..d.co * n], d.pitch(), (nbl, d.lout), yb);
                    Ok(())
                })
            },
        )
    }

    /// The stride-1 forward pass on channel-major windows (see the module docs).
    fn forward_channel_major<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        epi: Epilogue<'_, T>,
        d: Dims,
    ) -> Result<Vec<T>, String> {
        if d.b * d.co * d.lout == 0 {
            return Ok(Vec::new());
        }
        let wt = taps(w, d);
        let kc = d.k * d.ci;
        let nb = COLS_BLOCK.div_ceil(d.lout).clamp(1, d.b.max(1));
        par_appended(
            d.b * d.co * d.lout,
            nb * d.co * d.lout,
            |blk, yb: &mut Appender<'_, T>| -> Result<(), String> {
                let nbl = yb.capacity() / (d.co * d.lout);
                // a multiple of 16 columns: gemm then reads the columns in place (no packing)
                let n = (nbl * d.lout).next_multiple_of(16);
                with_scratch(kc * n, d.co * n, |cols: &mut [T], out| {
                    let cols = &mut cols[..kc * n];
                    self.channel_major_windows(x, d, (blk * nb, nbl), n, cols);
                    let lhs = Mat::row_major(&wt, d.co, kc);
                    matmul(out, n, lhs, Mat::row_major(cols, kc, n), false, 1)?;
                    epi.store_block(&out[..d.co * n], d.lout, (nbl, d.lout), yb);
                    Ok(())
                })
            },
        )
    }

    /// The windows of the outputs of sequences `b0..b0 + nbl` as the `n` columns of the
    /// `(K·C_in) x n` matrix `cols`: row `k·C_in + c`, column `bl·L_out + t` holds
    /// `x[b0 + bl, c, t·s + k·d - p]` (zero outside the sequence), columns past `nbl·L_out` are
    /// zero. With stride 1 every row of a sequence is one contiguous run of `x` between zeros.
    fn channel_major_windows<T: Float>(
        &self,
        x: &[T],
        d: Dims,
        (b0, nbl): (usize, usize),
        n: usize,
        cols: &mut [T],
    ) {
        let (s, p, dil) = (self.stride, self.padding, self.dilation);
        for k in 0..d.k {
            let shift = k * dil; // input step of output 0 is shift - p
            for c in 0..d.ci {
                let row = &mut cols[(k * d.ci + c) * n..][..n];
                for bl in 0..nbl {
                    let src = &x[((b0 + bl) * d.ci + c) * d.l..][..d.l];
                    let dst = &mut row[bl * d.lout..][..d.lout];
                    // outputs t whose input step t·s + shift - p lies in 0..L
                    let lo = p.saturating_sub(shift).div_ceil(s).min(d.lout);
                    let hi = (d.l + p)
                        .saturating_sub(shift)
                        .div_ceil(s)
                        .clamp(lo, d.lout);
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    if hi > lo {
                        let first = lo * s + shift - p;
                        // stride 2 (MS-ResNet's stem) vectorised: 3.8 % -> 2.2 % of its
                        // inference, where a `step_by` loop stayed scalar
                        copy_strided(&mut dst[lo..hi], &src[first..], s);
                    }
                }
                row[nbl * d.lout..].fill(T::ZERO);
            }
        }
    }

    /// `(dx, dw)` of a convolution whose forward pass ran as Winograd products: the input
    /// gradient is the convolution of dY with the flipped kernel (padding `K - 1 - p`), the
    /// weight gradient comes from the transform domain ([`winograd1d::weight_grad`]).
    fn winograd_backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        d: Dims,
        need_dx: bool,
    ) -> Result<(Option<Vec<T>>, Vec<T>), String> {
        let dw = winograd1d::weight_grad(x, dy, self.winograd_dims(d))?;
        if !need_dx {
            return Ok((None, dw));
        }
        // dX[c, i] = Σ_o Σ_j dY[o, i + (K - 1 - p) - j] · W[o, c, K - 1 - j]
        let flipped = flipped_kernel(w, d);
        let back = Dims1 {
            b: d.b,
            c_in: d.co,
            l: d.lout,
            c_out: d.ci,
            k: d.k,
            pad: d.k - 1 - self.padding,
            lout: d.l,
        };
        Ok((
            Some(winograd1d::forward(dy, &flipped, back, Epilogue::none())?),
            dw,
        ))
    }

    /// The sizes of this convolution for [`winograd1d`].
    fn winograd_dims(&self, d: Dims) -> Dims1 {
        Dims1 {
            b: d.b,
            c_in: d.ci,
            l: d.l,
            c_out: d.co,
            k: d.k,
            pad: self.padding,
            lout: d.lout,
        }
    }
}

/// `F[c, o, j] = W[o, c, K - 1 - j]`, `(C_in, C_out, K)`: the kernel whose convolution of `dY`
/// (unit stride, padding `d(K - 1) - p`) is the input gradient of a unit-stride convolution.
fn flipped_kernel<T: Float>(w: &[T], d: Dims) -> Vec<T> {
    let mut flipped = zeros_par(w.len());
    for (oc, taps) in w.chunks(d.k).enumerate() {
        let (o, c) = (oc / d.ci, oc % d.ci);
        let dst = &mut flipped[(c * d.co + o) * d.k..][..d.k];
        for (f, &v) in dst.iter_mut().rev().zip(taps) {
            *f = v;
        }
    }
    flipped
}

/// Sequences `src[b0..b0 + nb]` (`(·, c, len)`) as `total` time-major rows of `c` values,
/// sequence `bl` starting at row `first + bl·lp` (other rows zero), in `rows[..total·c]`,
/// whatever it held before: only the rows between sequences are cleared.
#[allow(clippy::too_many_arguments)]
pub(crate) fn to_rows<T: Float>(
    src: &[T],
    (c, len): (usize, usize),
    (b0, nb): (usize, usize),
    (first, lp, total): (usize, usize, usize),
    rows: &mut [T],
) {
    let rows = &mut rows[..total * c];
    let mut end = 0; // first row not yet written or cleared
    for bl in 0..nb {
        let start = first + bl * lp;
        rows[end * c..start * c].fill(T::ZERO);
        end = start + len;
        let sb = &src[(b0 + bl) * c * len..(b0 + bl + 1) * c * len];
        let r = &mut rows[start * c..end * c];
        transpose(sb, (c, len), r);
    }
    rows[end * c..].fill(T::ZERO);
}

/// Whether a convolution gathers its valid windows into a matrix of their own rather than
/// reading them as a strided view of the time-major rows. The view computes `lq` columns per
/// sequence of which only `lout` are outputs; with short sequences and long kernels (MS-ResNet's
/// 7-tap convolutions on 10 steps: 5 of 11 columns wasted) the copy of the windows costs less
/// than the wasted products. Dilated windows are not contiguous and keep the view.
fn compact(dilation: usize, lq: usize, lout: usize) -> bool {
    dilation == 1 && (lq - lout) as f64 > COMPACT_WASTE * lq as f64
}

/// The `K·C_in` values of the window of every output of a block (`nbl` sequences, dilation 1)
/// as the rows of `cols`: output `t` of sequence `bl` is row `bl·lout + t`.
fn gather_windows<T: Float>(rows: &[T], d: Dims, s: usize, nbl: usize, cols: &mut [T]) {
    let kc = d.k * d.ci;
    for (j, col) in cols.chunks_exact_mut(kc).take(nbl * d.lout).enumerate() {
        let (bl, t) = (j / d.lout, j % d.lout);
        col.copy_from_slice(&rows[(bl * d.lp + t * s) * d.ci..][..kc]);
    }
}

/// Adds the window gradients `dcols` (laid out as [`gather_windows`] makes them) back onto the
/// rows they were read from.
fn scatter_windows<T: Float>(dcols: &[T], d: Dims, s: usize, nbl: usize, dxr: &mut [T]) {
    let kc = d.k * d.ci;
    for bl in 0..nbl {
        for t in 0..d.lout {
            let src = &dcols[(bl * d.lout + t) * kc..][..kc];
            let dst = &mut dxr[(bl * d.lp + t * s) * d.ci..][..kc];
            for (o, &v) in dst.iter_mut().zip(src) {
                *o += v;
            }
        }
    }
}

/// The weight `(C_out, C_in, K)` as `C_out x (K·C_in)` (column `k·C_in + c`).
fn taps<T: Float>(w: &[T], d: Dims) -> Vec<T> {
    let mut out = zeros_par(w.len());
    for o in 0..d.co {
        for c in 0..d.ci {
            for k in 0..d.k {
                out[o * d.k * d.ci + k * d.ci + c] = w[(o * d.ci + c) * d.k + k];
            }
        }
    }
    out
}

crate::ops::cpu::xw_custom_op!(Conv1dOp, "canopy-conv1d");

/// `act(conv1d(x, w) + b)`: [`Conv1dOp`] with a bias `(C_out,)` and an optional ReLU applied as
/// the outputs are stored ([`Epilogue`]). The backward pass masks the output gradient where the
/// ReLU cut, sums it over batch and time for the bias, and runs the convolution's backward pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv1dActOp {
    pub conv: Conv1dOp,
    pub relu: bool,
}

impl CustomOp3 for Conv1dActOp {
    fn name(&self) -> &'static str {
        "canopy-conv1d-act"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.conv.dims(lx, lw)?;
        let kernel = (self.conv, d);
        let operands = [(sx, lx), (sw, lw), (sb, lb)];
        let out = forward_with_epilogue(&kernel, "conv1d_act", d.co, self.relu, operands)?;
        Ok((out, Conv1dOp::out_shape(&d)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, db) = crate::ops::channel::bias_act_grads(self.relu, res, grad)?;
        let (dx, dw) = xw_backward(&self.conv, x, w, &g)?;
        Ok((dx, dw, Some(db)))
    }
}
