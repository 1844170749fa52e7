//! CPU convolution kernels: blocked im2col + `gemm` (AVX-512 / AVX2 micro-kernels chosen at run
//! time), as candle custom ops with explicit backward passes.
//!
//! Forward: 3x3 convolutions with unit stride and at least 16 channels run as Winograd
//! `F(2x2, 3x3)` ([`winograd`], 2.25x fewer multiply-adds); the others as follows. The output
//! positions of every image are cut into blocks of a few hundred; each block
//! is one task on the rayon pool that gathers its columns into a cache-sized buffer
//! ([`Geometry::gather`]) and multiplies the weights by it with a single-threaded `gemm` call, one
//! per channel group. 1x1 convolutions with unit stride skip the gather and multiply the image in
//! place.
//!
//! Backward, input: with unit stride, the input gradient is a convolution of the output
//! gradient with the spatially flipped, in/out-transposed kernel (padding `d(k-1) - p`), which
//! runs on the same forward kernel (about twice as fast as a transposed convolution). Other
//! strides multiply `Wᵀ · dY` block by block and scatter the columns back ([`Geometry::scatter_add`]),
//! one image per task.
//!
//! Backward, weight: `dW += dY_block · colsᵀ` over all blocks, summed in a fixed order (a fixed
//! number of partial sums, added in sequence), so results do not depend on thread scheduling.
//!
//! f32 and f64 only; these ops have no CUDA implementation (candle reports that as an error;
//! [`conv2d`](crate::ops::conv2d) only takes this path for CPU tensors). Second derivatives are
//! not supported by the backward ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::conv1d_cpu::{forward_with_epilogue, Epilogue, EpilogueKernel};
use crate::ops::cpu::{slice, zeros_par, Float};
use crate::ops::gemm::{matmul, GemmScalar, Mat};
use crate::ops::im2col::Geometry;
use crate::ops::winograd;

/// Target size of one gathered column block, in bytes (fits the 1 MiB L2 of the machines we
/// measure on, next to gemm's packed panels).
const BLOCK_BYTES: usize = 192 * 1024;

/// Number of partial sums the weight gradient is split into (fixed, so the summation order and
/// hence the result are the same whatever the thread count).
const WEIGHT_PARTIALS: usize = 16;

/// A convolution: geometry plus channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub g: Geometry,
    pub c_out: usize,
    pub groups: usize,
}

impl ConvGeom {
    fn cg(&self) -> usize {
        self.g.c / self.groups
    }

    fn og(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of one group's column matrix.
    fn rows(&self) -> usize {
        self.cg() * self.g.kk()
    }

    /// Output columns a block aims for: about [`BLOCK_BYTES`] of gathered columns, at least 256.
    fn target_block<T>(&self) -> usize {
        let per_col = self.rows().max(1) * std::mem::size_of::<T>();
        (BLOCK_BYTES / per_col).clamp(256, 1 << 16)
    }

    /// Output positions per block of one image.
    fn block<T>(&self) -> usize {
        self.target_block::<T>().min(self.g.n()).max(1)
    }

    /// Images whose columns share one block: more than one when an image has fewer output
    /// positions than a block (1-D series, small feature maps), so that each product has enough
    /// columns to amortise packing the weights. (Until 2026-12-03 this divided the block already
    /// capped at one image's size, so it was always 1 and the shared blocks never ran.)
    fn images_per_block<T>(&self) -> usize {
        let n = self.g.n().max(1);
        if self.pointwise() || self.g.b < 2 {
            return 1;
        }
        (self.target_block::<T>() / n).clamp(1, self.g.b)
    }

    /// Columns of images `b0 .. b0 + m` for group `gi`, side by side: `(rows, m · N)`.
    fn gather_images<T: Copy + Default>(
        &self,
        x: &[T],
        b0: usize,
        m: usize,
        gi: usize,
        tmp: &mut Vec<T>,
        cols: &mut Vec<T>,
    ) {
        let g = &self.g;
        let (n, rows, cg) = (g.n(), self.rows(), self.cg());
        let img_len = g.c * g.h * g.w;
        let width = m * n;
        tmp.resize(rows * n, T::default());
        cols.resize(rows * width, T::default());
        for j in 0..m {
            let img = &x[(b0 + j) * img_len..(b0 + j + 1) * img_len];
            g.gather(img, gi * cg, cg, 0, n, tmp);
            for r in 0..rows {
                cols[r * width + j * n..r * width + (j + 1) * n]
                    .copy_from_slice(&tmp[r * n..(r + 1) * n]);
            }
        }
    }

    /// 1x1 kernel, unit stride, no padding: the image itself is the column matrix.
    fn pointwise(&self) -> bool {
        let g = &self.g;
        g.kh == 1
            && g.kw == 1
            && g.ah.stride == 1
            && g.aw.stride == 1
            && g.ah.padding == 0
            && g.aw.padding == 0
    }

    /// The convolution whose forward pass is this one's input gradient, when the stride is 1
    /// and the padding does not exceed the dilated kernel reach.
    fn flipped(&self) -> Option<ConvGeom> {
        let g = &self.g;
        let axis = |a: crate::ops::Axis1, k: usize| {
            let reach = a.dilation * (k - 1);
            (a.stride == 1 && a.padding <= reach).then(|| crate::ops::Axis1 {
                stride: 1,
                padding: reach - a.padding,
                dilation: a.dilation,
            })
        };
        Some(ConvGeom {
            g: Geometry {
                b: g.b,
                c: self.c_out,
                h: g.ho,
                w: g.wo,
                kh: g.kh,
                kw: g.kw,
                ah: axis(g.ah, g.kh)?,
                aw: axis(g.aw, g.kw)?,
                ho: g.h,
                wo: g.w,
            },
            c_out: g.c,
            groups: self.groups,
        })
    }
}

/// `y = conv(x, w)` without bias: `x` `(B, C, H, W)`, `w` `(C_out, C/groups, K_h, K_w)`, both
/// contiguous; returns `(B, C_out, H_out, W_out)`.
///
/// A task owns a contiguous run of output channels of one image (all positions), so it writes
/// straight into the output: images x groups x channel chunks, with enough chunks to keep every
/// thread busy (at least 8 channels each).
fn forward<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    w: &[T],
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    if winograd::enabled() && winograd::applies(cv) {
        return winograd::forward(cv, x, w, epi);
    }
    forward_im2col(cv, x, w, epi)
}

/// [`forward`] through im2col blocks and gemm, for every convolution; the epilogue is applied
/// to each block of outputs right after its product, while it is in cache.
pub(crate) fn forward_im2col<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    w: &[T],
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    if cv.images_per_block::<T>() > 1 {
        return forward_folded(cv, x, w, epi);
    }
    let g = &cv.g;
    let (n, cg, og, rows) = (g.n(), cv.cg(), cv.og(), cv.rows());
    let nb = cv.block::<T>();
    let mut y = zeros_par(g.b * cv.c_out * n);
    if y.is_empty() {
        return Ok(y);
    }
    let want = (2 * rayon::current_num_threads()).div_ceil(g.b * cv.groups);
    let splits = want.clamp(1, (og / 8).max(1));
    let chunk = og.div_ceil(splits);
    let img_len = g.c * g.h * g.w;
    // (image, group, first channel in group, output rows)
    let mut tasks = Vec::new();
    for (b, y_img) in y.chunks_mut(cv.c_out * n).enumerate() {
        for (gi, y_grp) in y_img.chunks_mut(og * n).enumerate() {
            for (k, seg) in y_grp.chunks_mut(chunk * n).enumerate() {
                tasks.push((b, gi, k * chunk, seg));
            }
        }
    }
    tasks.into_par_iter().try_for_each_init(
        Vec::<T>::new,
        |cols, (b, gi, co0, seg)| -> Result<(), String> {
            let cc = seg.len() / n;
            let img = &x[b * img_len..(b + 1) * img_len];
            let w0 = (gi * og + co0) * rows;
            let w_c = Mat::row_major(&w[w0..w0 + cc * rows], cc, rows);
            let mut n0 = 0;
            while n0 < n {
                let len = nb.min(n - n0);
                let dst = &mut seg[n0..];
                if cv.pointwise() {
                    let view = Mat {
                        data: &img[gi * cg * n + n0..],
                        rows: cg,
                        cols: len,
                        rs: n,
                        cs: 1,
                    };
                    matmul(dst, n, w_c, view, false, 1)?;
                } else {
                    cols.resize(rows * len, T::ZERO);
                    g.gather(img, gi * cg, cg, n0, len, cols);
                    matmul(dst, n, w_c, Mat::row_major(cols, rows, len), false, 1)?;
                }
                if !epi.is_none() {
                    for r in 0..cc {
                        epi.apply_channel(gi * og + co0 + r, &mut dst[r * n..r * n + len]);
                    }
                }
                n0 += len;
            }
            Ok(())
        },
    )?;
    Ok(y)
}

/// [`forward`] for images smaller than a block: a task computes several images at once (one
/// product over their side-by-side columns) and copies each image's rows into place.
fn forward_folded<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    w: &[T],
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (n, og, rows) = (g.n(), cv.og(), cv.rows());
    let ib = cv.images_per_block::<T>();
    let mut y = zeros_par(g.b * cv.c_out * n);
    if y.is_empty() {
        return Ok(y);
    }
    let image_groups = g.b.div_ceil(ib);
    // one task per thread: every channel chunk of an image group gathers that group's columns
    // again (256 -> 512 channels, 3x3 stride 2 on 16 x 16, batch 4: 4.5 -> 3.3 ms with half
    // the chunks)
    let want = rayon::current_num_threads().div_ceil(image_groups * cv.groups);
    let splits = want.clamp(1, (og / 8).max(1));
    let chunk = og.div_ceil(splits);
    let chunks = og.div_ceil(chunk);
    // task (image group, group, channel chunk) owns one row run per image
    let mut segs: Vec<Vec<&mut [T]>> = (0..image_groups * cv.groups * chunks)
        .map(|_| Vec::with_capacity(ib))
        .collect();
    for (b, y_img) in y.chunks_mut(cv.c_out * n).enumerate() {
        for (gi, y_grp) in y_img.chunks_mut(og * n).enumerate() {
            for (k, seg) in y_grp.chunks_mut(chunk * n).enumerate() {
                segs[((b / ib) * cv.groups + gi) * chunks + k].push(seg);
            }
        }
    }
    segs.into_par_iter().enumerate().try_for_each_init(
        || (Vec::<T>::new(), Vec::<T>::new(), Vec::<T>::new()),
        |(tmp, cols, out), (t, mut segs)| -> Result<(), String> {
            let (bg, gi, k) = (
                t / (cv.groups * chunks),
                (t / chunks) % cv.groups,
                t % chunks,
            );
            let (b0, m) = (bg * ib, segs.len());
            let cc = segs.first().map_or(0, |s| s.len() / n);
            let w0 = (gi * og + k * chunk) * rows;
            let w_c = Mat::row_major(&w[w0..w0 + cc * rows], cc, rows);
            cv.gather_images(x, b0, m, gi, tmp, cols);
            let width = m * n;
            out.resize(cc * width, T::ZERO);
            matmul(out, width, w_c, Mat::row_major(cols, rows, width), false, 1)?;
            let c0 = gi * og + k * chunk;
            for (j, seg) in segs.iter_mut().enumerate() {
                for r in 0..cc {
                    epi.store_channel(
                        c0 + r,
                        &out[r * width + j * n..r * width + (j + 1) * n],
                        &mut seg[r * n..(r + 1) * n],
                    );
                }
            }
            Ok(())
        },
    )?;
    Ok(y)
}

/// Weight gradient `(C_out, C/groups, K_h, K_w)` from `x` and `dy`, both contiguous.
fn backward_weight<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    dy: &[T],
) -> Result<Vec<T>, String> {
    if winograd::enabled() && winograd::applies(cv) {
        return winograd::backward_weight(cv, x, dy);
    }
    backward_weight_im2col(cv, x, dy)
}

/// [`backward_weight`] through im2col blocks and gemm, for every convolution.
pub(crate) fn backward_weight_im2col<T: GemmScalar + Default + std::ops::AddAssign>(
    cv: &ConvGeom,
    x: &[T],
    dy: &[T],
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (n, cg, og, rows) = (g.n(), cv.cg(), cv.og(), cv.rows());
    let nb = cv.block::<T>();
    let blocks = n.div_ceil(nb);
    let ib = cv.images_per_block::<T>();
    // tasks: (image, block) pairs, or groups of `ib` whole images when images are small
    let total = if ib > 1 {
        g.b.div_ceil(ib)
    } else {
        g.b * blocks
    };
    let wlen = cv.c_out * rows;
    let img_len = g.c * g.h * g.w;
    let per_part = total.div_ceil(WEIGHT_PARTIALS).max(1);
    // fewer partials than threads (a batch of a few small images is one task): the products
    // use the idle threads (gemm splits rows and columns, not the inner sum, so the result
    // does not depend on the thread count)
    let gemm_threads = (rayon::current_num_threads() / total.div_ceil(per_part).max(1)).max(1);
    let task_ids: Vec<usize> = (0..total).collect();
    let partials: Vec<Vec<T>> = task_ids
        .par_chunks(per_part)
        .map(|ids| -> Result<Vec<T>, String> {
            let mut acc = zeros_par(wlen);
            let (mut cols, mut tmp, mut dyt) = (Vec::<T>::new(), Vec::<T>::new(), Vec::<T>::new());
            for &t in ids {
                if ib > 1 {
                    let b0 = t * ib;
                    let m = ib.min(g.b - b0);
                    let width = m * n;
                    for gi in 0..cv.groups {
                        cv.gather_images(x, b0, m, gi, &mut tmp, &mut cols);
                        dyt.resize(og * width, T::ZERO);
                        for j in 0..m {
                            for r in 0..og {
                                let src = ((b0 + j) * cv.c_out + gi * og + r) * n;
                                dyt[r * width + j * n..r * width + (j + 1) * n]
                                    .copy_from_slice(&dy[src..src + n]);
                            }
                        }
                        let dst = &mut acc[gi * og * rows..(gi + 1) * og * rows];
                        matmul(
                            dst,
                            rows,
                            Mat::row_major(&dyt, og, width),
                            Mat::row_major(&cols, rows, width).t(),
                            true,
                            gemm_threads,
                        )?;
                    }
                    continue;
                }
                let (b, n0) = (t / blocks, (t % blocks) * nb);
                let len = nb.min(n - n0);
                let img = &x[b * img_len..(b + 1) * img_len];
                let dy_img = &dy[b * cv.c_out * n..(b + 1) * cv.c_out * n];
                for gi in 0..cv.groups {
                    let dy_g = Mat {
                        data: &dy_img[gi * og * n + n0..],
                        rows: og,
                        cols: len,
                        rs: n,
                        cs: 1,
                    };
                    let cols_t = if cv.pointwise() {
                        Mat {
                            data: &img[gi * cg * n + n0..],
                            rows: cg,
                            cols: len,
                            rs: n,
                            cs: 1,
                        }
                        .t()
                    } else {
                        cols.resize(rows * len, T::ZERO);
                        g.gather(img, gi * cg, cg, n0, len, &mut cols);
                        Mat::row_major(&cols, rows, len).t()
                    };
                    let dst = &mut acc[gi * og * rows..(gi + 1) * og * rows];
                    matmul(dst, rows, dy_g, cols_t, true, gemm_threads)?;
                }
            }
            Ok(acc)
        })
        .collect::<Result<_, String>>()?;
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| zeros_par(wlen));
    for p in parts {
        for (a, v) in dw.iter_mut().zip(p) {
            *a += v;
        }
    }
    Ok(dw)
}

/// Input gradient `(B, C, H, W)` from `dy` and `w`, both contiguous.
fn backward_input<T: Float + Send + Sync>(
    cv: &ConvGeom,
    dy: &[T],
    w: &[T],
) -> Result<Vec<T>, String> {
    if let Some(flip) = cv.flipped() {
        if winograd::enabled() && winograd::applies(&flip) {
            return winograd::backward_input(&flip, dy, w);
        }
        return forward_im2col(&flip, dy, &flipped_weight(cv, w), Epilogue::none());
    }
    let g = &cv.g;
    let (n, cg, og, rows) = (g.n(), cv.cg(), cv.og(), cv.rows());
    let nb = cv.block::<T>();
    let img_len = g.c * g.h * g.w;
    let mut dx = zeros_par(g.b * img_len);
    if dx.is_empty() {
        return Ok(dx);
    }
    dx.par_chunks_mut(img_len).enumerate().try_for_each_init(
        Vec::<T>::new,
        |cols, (b, dx_img)| -> Result<(), String> {
            let dy_img = &dy[b * cv.c_out * n..(b + 1) * cv.c_out * n];
            let mut n0 = 0;
            while n0 < n {
                let len = nb.min(n - n0);
                for gi in 0..cv.groups {
                    let w_t =
                        Mat::row_major(&w[gi * og * rows..(gi + 1) * og * rows], og, rows).t();
                    let dy_g = Mat {
                        data: &dy_img[gi * og * n + n0..],
                        rows: og,
                        cols: len,
                        rs: n,
                        cs: 1,
                    };
                    cols.resize(rows * len, T::ZERO);
                    matmul(cols, len, w_t, dy_g, false, 1)?;
                    g.scatter_add(cols, gi * cg, cg, n0, len, dx_img);
                }
                n0 += len;
            }
            Ok(())
        },
    )?;
    Ok(dx)
}

/// `w'[g·cg + ci, co, i, j] = w[g·og + co, ci, K_h-1-i, K_w-1-j]`: the kernel of the flipped
/// convolution, `(C, C_out/groups, K_h, K_w)`.
fn flipped_weight<T: Copy + Default + Send + Sync>(cv: &ConvGeom, w: &[T]) -> Vec<T> {
    let (cg, og, kh, kw) = (cv.cg(), cv.og(), cv.g.kh, cv.g.kw);
    let mut out = vec![T::default(); w.len()];
    // one row of the flipped kernel `(C_out/groups, K_h, K_w)` per input channel, in parallel
    out.par_chunks_mut((og * kh * kw).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (gi, ci) = (row / cg.max(1), row % cg.max(1));
            for co in 0..og {
                for i in 0..kh {
                    for j in 0..kw {
                        let src =
                            (((gi * og + co) * cg + ci) * kh + (kh - 1 - i)) * kw + (kw - 1 - j);
                        dst[(co * kh + i) * kw + j] = w[src];
                    }
                }
            }
        });
    out
}

/// Runs `f` on two f32 or two f64 operands.
fn dispatch(
    name: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32_fn: impl Fn(&[f32], &[f32]) -> Result<Vec<f32>, String>,
    f64_fn: impl Fn(&[f64], &[f64]) -> Result<Vec<f64>, String>,
) -> candle_core::Result<CpuStorage> {
    let err = |m: String| candle_core::Error::Msg(format!("{name}: {m}"));
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok(CpuStorage::F32(
            f32_fn(slice(s1, l1, name)?, slice(s2, l2, name)?).map_err(err)?,
        )),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => Ok(CpuStorage::F64(
            f64_fn(slice(s1, l1, name)?, slice(s2, l2, name)?).map_err(err)?,
        )),
        _ => Err(err("operands must both be f32 or both f64".into())),
    }
}

/// Which computation a [`Conv2dOp`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// `(x, w) -> y`, differentiable through the two other passes.
    Forward,
    /// `(dy, w) -> dx`.
    BackwardInput,
    /// `(x, dy) -> dw`.
    BackwardWeight,
    /// `(y, w) -> x`: the transposed convolution (`conv_transpose2d` without bias; the weight
    /// `(C_in, C_out/groups, K_h, K_w)` of the transposed convolution is the convolution's
    /// `(C_out, C/groups, K_h, K_w)`). Computed as [`Pass::BackwardInput`], differentiable: its
    /// gradients are the convolution's forward pass (for `y`) and weight gradient (for `w`).
    Transposed,
}

/// `conv2d(x, w)` (no bias) on the CPU, or one of its gradients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv2dOp {
    pub cv: ConvGeom,
    pub pass: Pass,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "canopy-conv2d",
            Pass::BackwardInput => "canopy-conv2d-backward-input",
            Pass::Transposed => "canopy-conv-transpose2d",
            Pass::BackwardWeight => "canopy-conv2d-backward-weight",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cv = self.cv;
        let (g, pass) = (cv.g, self.pass);
        let out = dispatch(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |a, b| run_pass(pass, &cv, a, b),
            |a, b| run_pass(pass, &cv, a, b),
        )?;
        let shape = match pass {
            Pass::Forward => Shape::from((g.b, cv.c_out, g.ho, g.wo)),
            Pass::BackwardInput | Pass::Transposed => Shape::from((g.b, g.c, g.h, g.w)),
            Pass::BackwardWeight => Shape::from((cv.c_out, cv.cg(), g.kh, g.kw)),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let with = |pass| Conv2dOp { cv: self.cv, pass };
        // an operand that tracks no operation (data: a model's input, frozen weights) gets no
        // gradient; candle would only add it to a zero tensor and drop it
        let run = |operand: &Tensor, (a, b): (&Tensor, &Tensor), pass| {
            operand
                .track_op()
                .then(|| a.apply_op2_no_bwd(b, &with(pass)))
                .transpose()
        };
        match self.pass {
            Pass::Forward => Ok((
                run(x, (&grad, w), Pass::BackwardInput)?,
                run(w, (x, &grad), Pass::BackwardWeight)?,
            )),
            // here `x` is the transposed convolution's input, the convolution's output
            Pass::Transposed => Ok((
                run(x, (&grad, w), Pass::Forward)?,
                run(w, (&grad, x), Pass::BackwardWeight)?,
            )),
            Pass::BackwardInput | Pass::BackwardWeight => Err(candle_core::Error::Msg(format!(
                "{}: second derivatives are not supported",
                self.name()
            ))),
        }
    }
}

impl EpilogueKernel for ConvGeom {
    fn run<T: Float + Send + Sync>(
        &self,
        x: &[T],
        w: &[T],
        epi: Epilogue<'_, T>,
    ) -> Result<Vec<T>, String> {
        forward(self, x, w, epi)
    }
}

/// `act(conv2d(x, w) + b)`: the forward pass of [`Conv2dOp`] with a bias `(C_out,)` and an
/// optional ReLU applied by the kernels as they store their outputs ([`Epilogue`]). The backward
/// pass masks the output gradient where the ReLU cut, sums it per channel for the bias and runs
/// the convolution's gradient passes on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv2dActOp {
    pub cv: ConvGeom,
    pub relu: bool,
}

impl CustomOp3 for Conv2dActOp {
    fn name(&self) -> &'static str {
        "canopy-conv2d-act"
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
        let cv = self.cv;
        let operands = [(sx, lx), (sw, lw), (sb, lb)];
        let out = forward_with_epilogue(&cv, "conv2d_act", cv.c_out, self.relu, operands)?;
        let g = cv.g;
        Ok((out, Shape::from((g.b, cv.c_out, g.ho, g.wo))))
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
        let conv = Conv2dOp {
            cv: self.cv,
            pass: Pass::Forward,
        };
        // the convolution's backward pass does not read its result
        let (dx, dw) = conv.bwd(x, w, &g, &g)?;
        Ok((dx, dw, Some(db)))
    }
}

fn run_pass<T: Float + Send + Sync>(
    pass: Pass,
    cv: &ConvGeom,
    a: &[T],
    b: &[T],
) -> Result<Vec<T>, String> {
    match pass {
        Pass::Forward => forward(cv, a, b, Epilogue::none()),
        Pass::BackwardInput | Pass::Transposed => backward_input(cv, a, b),
        Pass::BackwardWeight => backward_weight(cv, a, b),
    }
}
