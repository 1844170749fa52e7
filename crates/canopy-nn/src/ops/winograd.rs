//! Winograd `F(2x2, 3x3)` convolution for 3x3 kernels with unit stride and dilation, the shape of
//! nearly every convolution in U-Net-style networks.
//!
//! Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): a 2x2 block of
//! outputs of a 3x3 correlation is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the 4x4 input patch `d` under
//! it. Summed over input channels, the element-wise product becomes 16 independent matrix
//! products `U[ξ] (C_out x C) · V[ξ] (C x tiles)`, with 16 multiplications per 2x2 outputs
//! instead of 36: 2.25x fewer multiply-adds than im2col + gemm, for extra additions in the
//! transforms (memory-bound, cheap next to the products). With the fixed matrices of `F(2, 3)`
//! (entries 0, ±1, ±½) the rounding error stays at the level of a direct convolution's (checked
//! against the im2col kernel in the tests; `F(4x4, 3x3)` would save more but loses about two
//! digits in f32, so it is not used).
//!
//! The work is cut into tasks of whole tile rows of one image, sized so that a task's transformed
//! input and products (16 x C x tiles and 16 x C_out x tiles values) stay in cache; each task
//! transforms its patches, runs its 16 single-threaded products and writes its output rows.
//! Small images (fewer than [`BATCHED_TILES`] tiles: the deep layers of a U-Net or ResNet) are
//! instead transformed a group of images at a time and multiplied once per frequency over all
//! their tiles ([`forward_batched`], [`backward_weight_batched`]), so that each transformed
//! weight matrix is read once per group rather than once per image; the weight gradient also
//! takes the grouped path when a task's tile rows would hold fewer than [`BATCHED_TILES`] tiles
//! (many channels on a medium image).
//!
//! The weights are transformed by one product with `G ⊗ G` ([`weight_transform`]), and the
//! input gradient (the forward pass of the flipped convolution) reads the same transform with
//! its frequencies permuted and its matrices transposed ([`Weights`]): no flipped copy and no
//! second transform of the weights.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::ops::conv1d_cpu::Epilogue;
use crate::ops::conv_cpu::ConvGeom;
use crate::ops::cpu::{with_scratch, zeros_par, Float};
use crate::ops::gemm::{matmul, Mat};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the Winograd paths of the CPU convolutions on (the default) or off, process-wide: the
/// 2-D `F(2x2, 3x3)` kernels here and the 1-D `F(2, r)` kernels of `conv1d`. Off, 2-D
/// convolutions run through im2col + gemm (about 1.5-2x slower on 3x3 layers) and 1-D ones
/// through the direct kernel, with the summation order of a direct convolution. For benchmarks
/// and for comparing the paths.
pub fn set_winograd_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the Winograd path is on.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Bytes of transformed input a task aims for.
const TASK_BYTES: usize = 1 << 20;
/// Fewest tiles a forward task takes (whole images below that), even past [`TASK_BYTES`]: the
/// tiles are the width of its products, and narrow products lose more than the cache saves.
/// A ConvLSTM gate convolution (77 -> 256 channels on 24 x 24) had tasks of 60 and 24 tiles:
/// forward 14.8 -> 12.8 ms, with backward 54 -> 50 ms; 384 -> 128 channels on 32 x 32 (32
/// tiles per task before) forward + backward 41 -> 34.5 ms. 128 tiles were not enough.
const TASK_TILES: usize = 256;

/// Whether [`forward`] applies: 3x3 kernel, unit stride and dilation, one group, padding of at
/// most 2 on each axis, and enough channels for the products to pay off (the 3-channel first
/// layer of an image network stays with im2col).
pub(crate) fn applies(cv: &ConvGeom) -> bool {
    let g = &cv.g;
    let unit = |a: crate::ops::Axis1| a.stride == 1 && a.dilation == 1 && a.padding <= 2;
    g.kh == 3
        && g.kw == 3
        && unit(g.ah)
        && unit(g.aw)
        && cv.groups == 1
        && g.c >= 16
        && cv.c_out >= 16
        && g.ho >= 2
        && g.wo >= 2
}

/// `K = G ⊗ G` (16 x 9, row-major): frequency `ξ = (r, k)` of the transform `G g Gᵀ` of a 3x3
/// kernel `g` is `Σ_tap K[ξ][tap] g[tap]` over taps `(i, j)`, with `K[ξ][(i, j)] = G[r][i]
/// G[k][j]` and `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`. Its entries are 0, ±1, ±½,
/// ±¼, so every product with it is exact and only the sums round.
fn kron_g<T: Float>() -> [T; 144] {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    std::array::from_fn(|e| {
        let (xi, tap) = (e / 9, e % 9);
        T::from_f64(G[xi / 4][tap / 3] * G[xi % 4][tap % 3])
    })
}

/// `U[ξ][co][ci] = (G g Gᵀ)[ξ]` for every kernel `g = w[co, ci]`: 16 matrices `C_out x C`,
/// laid out `(16, C_out, C)`. One product `K · W` with the kernels as the 9-row columns of `W`
/// (gemm's packing does the transposition; a 512 -> 512 layer has 262,144 kernels, and a loop
/// over them took as long as the small-image products themselves).
fn weight_transform<T: Float + Send + Sync>(
    w: &[T],
    c_out: usize,
    c: usize,
) -> Result<Vec<T>, String> {
    let n = c_out * c;
    let kernels = Mat {
        data: w,
        rows: 9,
        cols: n,
        rs: 1,
        cs: 9,
    };
    new_product(Mat::row_major(&kron_g::<T>(), 16, 9), kernels)
}

/// `lhs · rhs` into a new row-major matrix, on all threads.
fn new_product<T: Float + Send + Sync>(lhs: Mat<'_, T>, rhs: Mat<'_, T>) -> Result<Vec<T>, String> {
    let mut out = zeros_par(lhs.rows * rhs.cols);
    let threads = rayon::current_num_threads();
    matmul(&mut out, rhs.cols, lhs, rhs, false, threads)?;
    Ok(out)
}

/// Frequency `(p(r), p(k))` for frequency `(r, k)`, `p` swapping 0 and 3 (see [`Weights`]).
const FLIP: [usize; 16] = [15, 13, 14, 12, 7, 5, 6, 4, 11, 9, 10, 8, 3, 1, 2, 0];

/// The transformed weights a forward pass multiplies with: a convolution's own
/// ([`weight_transform`]), or, `flipped`, those of its flipped convolution (its input
/// gradient, kernel `w'[ci][co] = rot180(w[co][ci])`) read from the same transform. As
/// `G J = P G` for the column reversal `J` and the permutation `P` that swaps rows 0 and 3,
/// `G w' Gᵀ = P (G g Gᵀ) Pᵀ`: frequency `(r, k)` of the flipped kernels is frequency
/// `(p(r), p(k))` of the convolution's, transposed. No flipped copy of the weights is made.
#[derive(Debug, Clone, Copy)]
struct Weights<'a, T> {
    /// `(16, C_out, C)` of the convolution the transform was computed for.
    u: &'a [T],
    c_out: usize,
    c: usize,
    flipped: bool,
}

impl<'a, T> Weights<'a, T> {
    /// The `C_out' x C'` matrix of frequency `ξ` for the convolution being run.
    fn freq(&self, xi: usize) -> Mat<'a, T> {
        let n = self.c_out * self.c;
        if self.flipped {
            Mat::row_major(
                &self.u[FLIP[xi] * n..(FLIP[xi] + 1) * n],
                self.c_out,
                self.c,
            )
            .t()
        } else {
            Mat::row_major(&self.u[xi * n..(xi + 1) * n], self.c_out, self.c)
        }
    }

    /// Output and input channels of the convolution being run.
    fn channels(&self) -> (usize, usize) {
        if self.flipped {
            (self.c, self.c_out)
        } else {
            (self.c_out, self.c)
        }
    }
}

/// Tile rows per task so that a task's transformed operands (16 values per tile and channel,
/// `channels` the larger channel count) take about [`TASK_BYTES`].
fn rows_per_task<T>(channels: usize, tw: usize, th: usize) -> usize {
    let per_row = 16 * channels * tw * std::mem::size_of::<T>();
    (TASK_BYTES / per_row.max(1)).clamp(1, th.max(1))
}

/// One task: image `b`, tile rows `r0 .. r1`, and the output rows it writes, one slice per
/// output channel (rows `2 r0 .. min(2 r1, H_out)` of that channel's plane).
struct Task<'a, T> {
    b: usize,
    r0: usize,
    r1: usize,
    out: Vec<&'a mut [T]>,
}

/// `y = epi(conv(x, w))` for a convolution [`applies`] accepts: `x` `(B, C, H, W)`, `w`
/// `(C_out, C, 3, 3)`, both contiguous; returns `(B, C_out, H_out, W_out)`. The epilogue (bias,
/// ReLU) is applied to each output row as the output transform writes it.
pub(crate) fn forward<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    w: &[T],
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let u = weight_transform(w, cv.c_out, cv.g.c)?;
    let weights = Weights {
        u: &u,
        c_out: cv.c_out,
        c: cv.g.c,
        flipped: false,
    };
    forward_transformed(cv, x, weights, epi)
}

/// The input gradient `dx` `(B, C, H, W)` of a convolution with weights `w`
/// `(C_out, C, 3, 3)`, as the forward pass of its flipped convolution `flip` (which [`applies`]
/// must accept) on `dy`, with the transform of `w` read as the flipped kernels' (see
/// [`Weights`]).
pub(crate) fn backward_input<T: Float + Send + Sync>(
    flip: &ConvGeom,
    dy: &[T],
    w: &[T],
) -> Result<Vec<T>, String> {
    let (c_out, c) = (flip.g.c, flip.c_out);
    let u = weight_transform(w, c_out, c)?;
    let weights = Weights {
        u: &u,
        c_out,
        c,
        flipped: true,
    };
    forward_transformed(flip, dy, weights, Epilogue::none())
}

/// [`forward`] with transformed weights.
fn forward_transformed<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    u: Weights<'_, T>,
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (c, c_out, ho, wo) = (g.c, cv.c_out, g.ho, g.wo);
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    if u.channels() != (c_out, c) || u.u.len() != 16 * c_out * c {
        return Err(format!(
            "winograd: {} transformed weights for {c_out} x {c} channels",
            u.u.len()
        ));
    }
    if th * tw < BATCHED_TILES {
        return forward_batched(cv, x, u, epi);
    }
    // filled by all threads (a serial `vec![0; n]` of a U-Net activation is tens of MB on one
    // core); the tasks own per-plane segments, not contiguous chunks, so not `par_zeroed`
    let mut y = zeros_par(g.b * c_out * ho * wo);
    if y.is_empty() {
        return Ok(y);
    }
    // tile rows per task: about TASK_BYTES of transformed input, but at least TASK_TILES tiles
    // (the width of the task's 16 products), and at least two tasks per thread overall when the
    // batch allows
    let mut rows = rows_per_task::<T>(c.max(c_out), tw, th)
        .max(TASK_TILES.div_ceil(tw.max(1)))
        .min(th.max(1));
    let want = 2 * rayon::current_num_threads();
    while rows > 1 && g.b * th.div_ceil(rows) < want {
        rows = rows.div_ceil(2);
    }
    let tasks_per_image = th.div_ceil(rows);
    let mut tasks: Vec<Task<T>> = (0..g.b * tasks_per_image)
        .map(|i| {
            let (b, k) = (i / tasks_per_image, i % tasks_per_image);
            Task {
                b,
                r0: k * rows,
                r1: ((k + 1) * rows).min(th),
                out: Vec::with_capacity(c_out),
            }
        })
        .collect();
    for (p, plane) in y.chunks_mut(ho * wo).enumerate() {
        let b = p / c_out;
        for (k, seg) in plane.chunks_mut(2 * rows * wo).enumerate() {
            tasks[b * tasks_per_image + k].out.push(seg);
        }
    }
    let img_len = c * g.h * g.w;
    tasks
        .into_par_iter()
        .try_for_each(|mut task| -> Result<(), String> {
            let nt = (task.r1 - task.r0) * tw;
            let img = &x[task.b * img_len..(task.b + 1) * img_len];
            with_scratch(16 * c * nt, 16 * c_out * nt, |v: &mut [T], m: &mut [T]| {
                input_transform(cv, img, task.r0, task.r1, tw, v);
                for xi in 0..16 {
                    matmul(
                        &mut m[xi * c_out * nt..(xi + 1) * c_out * nt],
                        nt,
                        u.freq(xi),
                        Mat::row_major(&v[xi * c * nt..(xi + 1) * c * nt], c, nt),
                        false,
                        1,
                    )?;
                }
                output_transform(m, c_out, nt, tw, wo, &mut task.out, epi);
                Ok(())
            })
        })?;
    Ok(y)
}

/// Tiles per image below which [`forward`] transforms all images of a group together and runs
/// one product per frequency over all their tiles ([`forward_batched`]).
const BATCHED_TILES: usize = 128;
/// Bytes of transformed input (or output) a group of [`forward_batched`] takes at most (64 KB
/// in unit tests, so that they run several groups).
const BATCHED_BYTES: usize = if cfg!(test) { 64 << 10 } else { 16 << 20 };

/// [`forward`] for small images (deep layers of a U-Net or ResNet: 8 x 8 or 16 x 16 outputs).
/// Per image, the products `U_ξ · V_ξ` would have only a few dozen columns, and every task
/// would stream all 16 transformed weight matrices (16 MB for 512 -> 512 channels) for them.
/// Here the images of a group are transformed together, in three parallel phases: the input
/// transform by channel chunks into `V (C, 16, N)` (`N` = the group's tiles), one product per
/// frequency `M_ξ = U_ξ V_ξ` (each `U_ξ` read once per group), and the output transform by
/// image and channel chunk, which applies the epilogue.
fn forward_batched<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    u: Weights<'_, T>,
    epi: Epilogue<'_, T>,
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (c, c_out, ho, wo) = (g.c, cv.c_out, g.ho, g.wo);
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let nt = th * tw;
    let plane = ho * wo;
    let mut y = zeros_par(g.b * c_out * plane);
    if y.is_empty() {
        return Ok(y);
    }
    let per_image = 16 * c.max(c_out) * nt * std::mem::size_of::<T>();
    let group = (BATCHED_BYTES / per_image.max(1)).clamp(1, g.b);
    let threads = rayon::current_num_threads();
    let img_len = c * g.h * g.w;
    let out_len = c_out * plane;
    for (gi, y_group) in y.chunks_mut(group * out_len).enumerate() {
        let b0 = gi * group;
        let m_imgs = y_group.len() / out_len;
        let n = m_imgs * nt;
        let cc = c.div_ceil(4 * threads).max(1);
        with_scratch(c * 16 * n, 16 * c_out * n, |v: &mut [T], m: &mut [T]| {
            // V (C, 16, N): a task owns a run of input channels of every image in the group
            by_channel_runs(v, (c, cc), (m_imgs, nt), |j, layout, part| {
                let img = &x[(b0 + j) * img_len..(b0 + j + 1) * img_len];
                input_transform_into(cv, img, (0, th, tw), layout, part);
            });
            // M (16, C_out, N): one product per frequency
            let v: &[T] = v;
            m.par_chunks_mut(c_out * n)
                .enumerate()
                .try_for_each(|(xi, mx)| {
                    matmul(mx, n, u.freq(xi), frequency(v, xi, c, n), false, 1)
                })?;
            // outputs: a task owns a run of output channels of one image
            let m: &[T] = m;
            let oc = c_out.div_ceil((4 * threads).div_ceil(m_imgs)).max(1);
            let mut tasks = Vec::new();
            for (j, y_img) in y_group.chunks_mut(out_len).enumerate() {
                for (k, seg) in y_img.chunks_mut(oc * plane).enumerate() {
                    tasks.push((j, k * oc, seg));
                }
            }
            tasks.into_par_iter().for_each(|(j, co0, seg)| {
                let mut planes: Vec<&mut [T]> = seg.chunks_mut(plane).collect();
                output_transform_from(m, (c_out, n, j * nt, co0), tw, wo, &mut planes, epi);
            });
            Ok::<(), String>(())
        })?;
    }
    Ok(y)
}

/// Frequency `ξ` of a `(rows, 16, N)` buffer as a `rows x N` matrix.
fn frequency<T>(buf: &[T], xi: usize, rows: usize, n: usize) -> Mat<'_, T> {
    Mat {
        data: &buf[xi * n..],
        rows,
        cols: n,
        rs: 16 * n,
        cs: 1,
    }
}

/// Fills `buf`, laid out `(channels, 16, N)` with `N = images · nt`, in parallel by runs of
/// `run` channels: `fill(j, layout, part)` writes image `j`'s transform (its tiles from column
/// `j · nt`) into the task's part of `buf`.
fn by_channel_runs<T: Float + Send + Sync>(
    buf: &mut [T],
    (total, run): (usize, usize),
    (images, nt): (usize, usize),
    fill: impl Fn(usize, &VLayout, &mut [T]) + Sync,
) {
    let n = images * nt;
    buf.par_chunks_mut(run * 16 * n)
        .enumerate()
        .for_each(|(k, part)| {
            let c0 = k * run;
            for j in 0..images {
                let layout = VLayout {
                    channels: c0..(c0 + run).min(total),
                    xi_stride: n,
                    ci_stride: 16 * n,
                    col0: j * nt,
                };
                fill(j, &layout, part);
            }
        });
}

/// [`backward_weight`] for small images, in the layout of [`forward_batched`]: per group of
/// images, the input transform `V (C, 16, N)` and the output-gradient transform
/// `dM (C_out, 16, N)` by channel chunks, then one product per frequency
/// `dU_ξ += dM_ξ V_ξᵀ` over all the group's tiles (groups added in order: the result does not
/// depend on the thread count). Per image, each task would fill and add a partial `dU` of
/// `16·C_out·C` values (16 MB for 512 -> 512 channels) for a few dozen tiles.
fn backward_weight_batched<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    dy: &[T],
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (c, c_out, ho, wo) = (g.c, cv.c_out, g.ho, g.wo);
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let nt = th * tw;
    let mut du = zeros_par(16 * c_out * c);
    if g.b == 0 || du.is_empty() {
        return weight_adjoint(&du, c_out, c);
    }
    let per_image = 16 * c.max(c_out) * nt * std::mem::size_of::<T>();
    let group = (BATCHED_BYTES / per_image.max(1)).clamp(1, g.b);
    let threads = rayon::current_num_threads();
    let (img_len, out_len) = (c * g.h * g.w, c_out * ho * wo);
    for (gi, b0) in (0..g.b).step_by(group).enumerate() {
        let m_imgs = group.min(g.b - b0);
        let n = m_imgs * nt;
        with_scratch(c * 16 * n, c_out * 16 * n, |v: &mut [T], dm: &mut [T]| {
            // V (C, 16, N) and dM (C_out, 16, N), by channel runs of every image
            let runs = |total: usize| (total, total.div_ceil(4 * threads).max(1));
            by_channel_runs(v, runs(c), (m_imgs, nt), |j, layout, part| {
                let img = &x[(b0 + j) * img_len..(b0 + j + 1) * img_len];
                input_transform_into(cv, img, (0, th, tw), layout, part);
            });
            by_channel_runs(dm, runs(c_out), (m_imgs, nt), |j, layout, part| {
                let dy_img = &dy[(b0 + j) * out_len..(b0 + j + 1) * out_len];
                output_adjoint_into(dy_img, (ho, wo), (0, th, tw), layout, part);
            });
            let (v, dm): (&[T], &[T]) = (v, dm);
            du.par_chunks_mut(c_out * c)
                .enumerate()
                .try_for_each(|(xi, du_xi)| {
                    let (lhs, rhs) = (frequency(dm, xi, c_out, n), frequency(v, xi, c, n));
                    matmul(du_xi, c, lhs, rhs.t(), gi > 0, 1)
                })
        })?;
    }
    weight_adjoint(&du, c_out, c)
}

/// Number of partial weight gradients summed in a fixed order (as in the im2col kernel, so the
/// result does not depend on the thread count), limited so that they take at most 64 MiB.
fn weight_partials<T>(c_out: usize, c: usize, tasks: usize) -> usize {
    let bytes = 16 * c_out * c * std::mem::size_of::<T>();
    ((64 << 20) / bytes.max(1)).clamp(1, 16).min(tasks.max(1))
}

/// Weight gradient `(C_out, C, 3, 3)` of a convolution [`applies`] accepts, from `x` and `dy`
/// (both contiguous), in the transform domain: `dU[ξ] = Σ_t dM[ξ][·, t] V[ξ][·, t]ᵀ` with
/// `dM = A dY Aᵀ` per output tile (the adjoint of the output transform), then `dg = Gᵀ dU G`.
/// 16 products with 2.25x fewer multiply-adds than the im2col weight gradient.
pub(crate) fn backward_weight<T: Float + Send + Sync>(
    cv: &ConvGeom,
    x: &[T],
    dy: &[T],
) -> Result<Vec<T>, String> {
    let g = &cv.g;
    let (c, c_out, ho, wo) = (g.c, cv.c_out, g.ho, g.wo);
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    // independent of the thread count, so that the partial sums are too
    let rows = rows_per_task::<T>(c.max(c_out), tw, th);
    // the tiles of a task are the inner dimension of its products, which accumulate into the
    // whole `C_out x C` partial: with fewer than BATCHED_TILES of them (many channels on a
    // medium image, 384 -> 128 channels on 32 x 32: 32 tiles) the groups of images are faster
    // (that layer's forward + backward 46 -> 37 ms), with more (128 -> 32 on 128 x 128) slower
    if th * tw < BATCHED_TILES || rows * tw < BATCHED_TILES {
        return backward_weight_batched(cv, x, dy);
    }
    let tasks_per_image = th.div_ceil(rows);
    let tasks: Vec<(usize, usize, usize)> = (0..g.b * tasks_per_image)
        .map(|i| {
            let (b, k) = (i / tasks_per_image, i % tasks_per_image);
            (b, k * rows, ((k + 1) * rows).min(th))
        })
        .collect();
    let parts = weight_partials::<T>(c_out, c, tasks.len());
    let per_part = tasks.len().div_ceil(parts);
    let ulen = 16 * c_out * c;
    let (img_len, out_len) = (c * g.h * g.w, c_out * ho * wo);
    let partials: Vec<Vec<T>> = tasks
        .par_chunks(per_part)
        .map(|chunk| -> Result<Vec<T>, String> {
            let mut du = vec![T::ZERO; ulen];
            for &(b, r0, r1) in chunk {
                let nt = (r1 - r0) * tw;
                let img = &x[b * img_len..(b + 1) * img_len];
                let dy_img = &dy[b * out_len..(b + 1) * out_len];
                with_scratch(16 * c * nt, 16 * c_out * nt, |v: &mut [T], dm: &mut [T]| {
                    input_transform(cv, img, r0, r1, tw, v);
                    output_adjoint(dy_img, c_out, ho, wo, r0, r1, tw, dm);
                    for xi in 0..16 {
                        matmul(
                            &mut du[xi * c_out * c..(xi + 1) * c_out * c],
                            c,
                            Mat::row_major(&dm[xi * c_out * nt..(xi + 1) * c_out * nt], c_out, nt),
                            Mat::row_major(&v[xi * c * nt..(xi + 1) * c * nt], c, nt).t(),
                            true,
                            1,
                        )?;
                    }
                    Ok::<(), String>(())
                })?;
            }
            Ok(du)
        })
        .collect::<Result<_, String>>()?;
    let mut parts = partials.into_iter();
    let mut du = parts.next().unwrap_or_else(|| vec![T::ZERO; ulen]);
    for p in parts {
        for (a, v) in du.iter_mut().zip(p) {
            *a += v;
        }
    }
    weight_adjoint(&du, c_out, c)
}

/// `dM[ξ][co][t] = (A dY_t Aᵀ)[ξ]` for the 2x2 output-gradient block `dY_t` of every tile of tile
/// rows `r0 .. r1` (zeros beyond the output's edge), laid out like the forward products.
#[allow(clippy::too_many_arguments)]
fn output_adjoint<T: Float>(
    dy: &[T],
    c_out: usize,
    ho: usize,
    wo: usize,
    r0: usize,
    r1: usize,
    tw: usize,
    dm: &mut [T],
) {
    let nt = (r1 - r0) * tw;
    let layout = VLayout {
        channels: 0..c_out,
        xi_stride: c_out * nt,
        ci_stride: nt,
        col0: 0,
    };
    output_adjoint_into(dy, (ho, wo), (r0, r1, tw), &layout, dm);
}

/// [`output_adjoint`] of the output channels `layout.channels` into any layout (as
/// [`input_transform_into`]: frequency `ξ`, channel `co`, tile `t` at `ξ·xi_stride +
/// (co - channels.start)·ci_stride + col0 + t`).
#[inline(always)]
fn output_adjoint_into_body<T: Float>(
    dy: &[T],
    (ho, wo): (usize, usize),
    (r0, r1, tw): (usize, usize, usize),
    layout: &VLayout,
    dm: &mut [T],
) {
    // per chunk of tile rows c0 .. c1 (see CHUNK_TILES), h[(2k + i)·np + t]: the row product
    // `· Aᵀ` (e, e + o, e - o, -o) of the even / odd columns of output row i of tile t's block
    let rows = chunk_rows(tw);
    let np = rows * tw;
    let mut h = vec![T::ZERO; 8 * np];
    for co in layout.channels.clone() {
        let plane = &dy[co * ho * wo..(co + 1) * ho * wo];
        let co_at = (co - layout.channels.start) * layout.ci_stride + layout.col0;
        for c0 in (r0..r1).step_by(rows) {
            let c1 = (c0 + rows).min(r1);
            let nt = (c1 - c0) * tw;
            for q in 0..2 * (c1 - c0) {
                let oy = 2 * c0 + q;
                let [h0, h1, h2, h3] = runs4(&mut h, (q % 2) * np + (q / 2) * tw, 2 * np, tw);
                if oy >= ho {
                    for hk in [h0, h1, h2, h3] {
                        hk.fill(T::ZERO);
                    }
                    continue;
                }
                let row = &plane[oy * wo..(oy + 1) * wo];
                let mut pairs = row.chunks_exact(2);
                for ((((pair, a), b), c), d) in (&mut pairs)
                    .zip(h0.iter_mut())
                    .zip(h1.iter_mut())
                    .zip(h2.iter_mut())
                    .zip(h3.iter_mut())
                {
                    let (e, o) = (pair[0], pair[1]);
                    *a = e;
                    *b = e + o;
                    *c = e - o;
                    *d = T::ZERO - o;
                }
                if let [last] = pairs.remainder() {
                    (h0[tw - 1], h1[tw - 1], h2[tw - 1], h3[tw - 1]) =
                        (*last, *last, *last, T::ZERO);
                }
            }
            // the column product `A ·`: dM[4r + k] = (h_k0, h_k0 + h_k1, h_k0 - h_k1,
            // -h_k1)[r], each a contiguous run over the chunk's tiles
            let base = co_at + (c0 - r0) * tw;
            for k in 0..4 {
                let (e, o) = h[2 * k * np..(2 * k + 2) * np].split_at(np);
                let (e, o) = (&e[..nt], &o[..nt]);
                let at = |r: usize| (r * 4 + k) * layout.xi_stride + base;
                for (d, &e) in dm[at(0)..][..nt].iter_mut().zip(e) {
                    *d = e;
                }
                for ((d, &e), &o) in dm[at(1)..][..nt].iter_mut().zip(e).zip(o) {
                    *d = e + o;
                }
                for ((d, &e), &o) in dm[at(2)..][..nt].iter_mut().zip(e).zip(o) {
                    *d = e - o;
                }
                for (d, &o) in dm[at(3)..][..nt].iter_mut().zip(o) {
                    *d = T::ZERO - o;
                }
            }
        }
    }
}

/// The four runs of `len` values of `buf` at `first`, `first + step`, `first + 2·step` and
/// `first + 3·step` (`step >= len`), borrowed together.
#[inline(always)]
fn runs4<T>(buf: &mut [T], first: usize, step: usize, len: usize) -> [&mut [T]; 4] {
    let (a, rest) = buf[first..].split_at_mut(step);
    let (b, rest) = rest.split_at_mut(step);
    let (c, d) = rest.split_at_mut(step);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// `dg = Gᵀ dU[·][co][ci] G` for every kernel: the adjoint of [`weight_transform`], one
/// product `dUᵀ K` `(C_out·C, 16) x (16, 9)` straight into the `(C_out, C, 3, 3)` layout.
fn weight_adjoint<T: Float + Send + Sync>(
    du: &[T],
    c_out: usize,
    c: usize,
) -> Result<Vec<T>, String> {
    let n = c_out * c;
    new_product(
        Mat::row_major(du, 16, n).t(),
        Mat::row_major(&kron_g::<T>(), 16, 9),
    )
}

/// `V[ξ][ci][t] = (Bᵀ d B)[ξ]` for the 4x4 patch `d` of every tile `t` of tile rows `r0 .. r1`
/// and every channel (zeros where the patch reads padding).
///
/// Two passes per channel and chunk of whole tile rows ([`CHUNK_TILES`]): the row product
/// `· B` once per input row (tile `j` reads columns `2j .. 2j + 3` of the padded row), into
/// planes of even and odd rows; then the column product `Bᵀ ·` element-wise over all of the
/// chunk's tiles at once (contiguous runs, whatever the width of a tile row).
fn input_transform<T: Float>(
    cv: &ConvGeom,
    img: &[T],
    r0: usize,
    r1: usize,
    tw: usize,
    v: &mut [T],
) {
    let nt = (r1 - r0) * tw;
    let layout = VLayout {
        channels: 0..cv.g.c,
        xi_stride: cv.g.c * nt,
        ci_stride: nt,
        col0: 0,
    };
    input_transform_into(cv, img, (r0, r1, tw), &layout, v);
}

/// Where [`input_transform_into`] writes: the value of frequency `ξ`, channel `ci` (from
/// `channels`) and tile `t` of the image goes to `v[ξ·xi_stride + (ci - channels.start)·
/// ci_stride + col0 + t]`.
struct VLayout {
    channels: std::ops::Range<usize>,
    xi_stride: usize,
    ci_stride: usize,
    col0: usize,
}

/// [`input_transform`] of the channels `layout.channels` of tile rows `r0 .. r1` into any
/// layout.
#[inline(always)]
fn input_transform_into_body<T: Float>(
    cv: &ConvGeom,
    img: &[T],
    (r0, r1, tw): (usize, usize, usize),
    layout: &VLayout,
    v: &mut [T],
) {
    let g = &cv.g;
    let (h, w) = (g.h, g.w);
    let (ph, pw) = (g.ah.padding as isize, g.aw.padding);
    let pad_w = 2 * tw + 2;
    let n_copy = w.min(pad_w.saturating_sub(pw));
    // per chunk of tile rows c0 .. c1 (see CHUNK_TILES), the tiles read the 2·(c1 - c0) + 2
    // input rows from 2·c0 - ph; row q's product `· B` (d0 - d2, d1 + d2, d2 - d1, d1 - d3
    // over columns 2j .. 2j + 3) for tile column j goes to hb[(2k + q % 2)·np + (q / 2)·tw +
    // j], so that the rows under tile t are at t and t + tw of the even and odd planes
    let rows = chunk_rows(tw);
    let np = (rows + 1) * tw;
    let mut hb = vec![T::ZERO; 8 * np];
    let mut buf = vec![T::ZERO; pad_w];
    for ci in layout.channels.clone() {
        let plane = &img[ci * h * w..(ci + 1) * h * w];
        let ci_at = (ci - layout.channels.start) * layout.ci_stride + layout.col0;
        for c0 in (r0..r1).step_by(rows) {
            let c1 = (c0 + rows).min(r1);
            let nt = (c1 - c0) * tw;
            for q in 0..2 * (c1 - c0) + 2 {
                let yy = (2 * c0 + q) as isize - ph;
                let [h0, h1, h2, h3] = runs4(&mut hb, (q % 2) * np + (q / 2) * tw, 2 * np, tw);
                if yy < 0 || yy >= h as isize {
                    for hk in [h0, h1, h2, h3] {
                        hk.fill(T::ZERO);
                    }
                    continue;
                }
                let row = &plane[yy as usize * w..(yy as usize + 1) * w];
                buf[pw..pw + n_copy].copy_from_slice(&row[..n_copy]);
                // tile column j reads the pairs (2j, 2j + 1) and (2j + 2, 2j + 3)
                let pairs = buf.chunks_exact(2).zip(buf[2..].chunks_exact(2));
                for (((((p, q), a), b), c), e) in pairs
                    .zip(h0.iter_mut())
                    .zip(h1.iter_mut())
                    .zip(h2.iter_mut())
                    .zip(h3.iter_mut())
                {
                    let (d0, d1, d2, d3) = (p[0], p[1], q[0], q[1]);
                    *a = d0 - d2;
                    *b = d1 + d2;
                    *c = d2 - d1;
                    *e = d1 - d3;
                }
            }
            // the column product `Bᵀ ·` over the rows of each tile, a contiguous run over the
            // chunk's tiles per frequency: V[4r + k] = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)[r]
            // of the rows d0 .. d3 = even[t], odd[t], even[t + tw], odd[t + tw] of plane k
            let base = ci_at + (c0 - r0) * tw;
            for k in 0..4 {
                let (even, odd) = hb[2 * k * np..(2 * k + 2) * np].split_at(np);
                let (d0, d2) = (&even[..nt], &even[tw..]);
                let (d1, d3) = (&odd[..nt], &odd[tw..]);
                let at = |r: usize| (r * 4 + k) * layout.xi_stride + base;
                for ((o, &a), &b) in v[at(0)..][..nt].iter_mut().zip(d0).zip(d2) {
                    *o = a - b;
                }
                for ((o, &a), &b) in v[at(1)..][..nt].iter_mut().zip(d1).zip(d2) {
                    *o = a + b;
                }
                for ((o, &a), &b) in v[at(2)..][..nt].iter_mut().zip(d2).zip(d1) {
                    *o = a - b;
                }
                for ((o, &a), &b) in v[at(3)..][..nt].iter_mut().zip(d1).zip(d3) {
                    *o = a - b;
                }
            }
        }
    }
}

/// `y = Aᵀ M A` for every tile and output channel, written into the task's output rows (in
/// two passes per chunk of tile rows like [`input_transform`]: the column product over all of
/// the chunk's tiles, then the row product, then the even and odd columns interleaved into the
/// output rows).
fn output_transform<T: Float>(
    m: &[T],
    c_out: usize,
    nt: usize,
    tw: usize,
    wo: usize,
    out: &mut [&mut [T]],
    epi: Epilogue<'_, T>,
) {
    output_transform_from(m, (c_out, nt, 0, 0), tw, wo, out, epi);
}

/// [`output_transform`] reading `M` of frequency `ξ`, output channel `co0 + k` (for `out[k]`)
/// and tile `t` at `m[(ξ·C_out + co0 + k)·stride + col0 + t]`.
#[inline(always)]
fn output_transform_from_body<T: Float>(
    m: &[T],
    (c_out, stride, col0, co0): (usize, usize, usize, usize),
    tw: usize,
    wo: usize,
    out: &mut [&mut [T]],
    epi: Epilogue<'_, T>,
) {
    let rows = chunk_rows(tw);
    let np = rows * tw;
    // per chunk of tile rows: s[(2c + i)·np + t] = (q0 + q1 + q2, q1 - q2 - q3)[i] of
    // frequencies c, 4 + c, 8 + c, 12 + c (the column product `Aᵀ ·`)
    let mut s = vec![T::ZERO; 8 * np];
    for (k, seg) in out.iter_mut().enumerate() {
        let co = co0 + k;
        for (chunk, ys) in seg.chunks_mut(2 * rows * wo).enumerate() {
            let rows_here = ys.len() / wo;
            let nt = rows_here.div_ceil(2) * tw;
            let first = (co * stride) + col0 + chunk * np;
            for col in 0..4 {
                let q = |xi: usize| &m[xi * c_out * stride + first..][..nt];
                let (q0, q1, q2, q3) = (q(col), q(4 + col), q(8 + col), q(12 + col));
                let (s0, s1) = s[2 * col * np..(2 * col + 2) * np].split_at_mut(np);
                let q = q0.iter().zip(q1).zip(q2).zip(q3);
                for ((s0, s1), (((&a, &b), &c), &d)) in s0.iter_mut().zip(s1).zip(q) {
                    *s0 = a + b + c;
                    *s1 = b - c - d;
                }
            }
            // the row product `· A`, in place: the even / odd output columns of row i of
            // every tile's block into the runs of c = 0 and 1
            for i in 0..2 {
                let [a, b, c, d] = runs4(&mut s, i * np, 2 * np, nt);
                for (((a, b), &c), &d) in a.iter_mut().zip(b.iter_mut()).zip(&*c).zip(&*d) {
                    let (e, o) = (*a + *b + c, *b - c - d);
                    (*a, *b) = (e, o);
                }
            }
            for (oy, row) in ys.chunks_exact_mut(wo).enumerate() {
                let (ti, i) = (oy / 2, oy % 2);
                let even = &s[i * np + ti * tw..][..tw];
                let odd = &s[(2 + i) * np + ti * tw..][..tw];
                let mut pairs = row.chunks_exact_mut(2);
                for ((pair, &e), &o) in (&mut pairs).zip(even).zip(odd) {
                    pair[0] = e;
                    pair[1] = o;
                }
                if let [last] = pairs.into_remainder() {
                    *last = even[tw - 1];
                }
            }
        }
        epi.apply_channel(co, seg);
    }
}

/// Tiles the transforms take together (whole tile rows, at least one): their column passes run
/// over all of a chunk's tiles at once, and its row passes' results stay in the L1 cache (40
/// in unit tests, so that their images take several chunks, the last one partial).
const CHUNK_TILES: usize = if cfg!(test) { 40 } else { 256 };

/// Tile rows per chunk of the transforms (see [`CHUNK_TILES`]).
fn chunk_rows(tw: usize) -> usize {
    (CHUNK_TILES / tw.max(1)).max(1)
}

/// Tiles per row from which the transforms run compiled for the CPU's widest SIMD. Their
/// column passes run over all the tiles of a task, but the row passes run along one tile row,
/// and a 16-lane loop leaves a row of 12 tiles (a 24 x 24 map) entirely to its scalar tail;
/// shorter rows run at AVX2 width (8 lanes) where the CPU has it, the baseline build otherwise.
const WIDE_ROWS: usize = 32;

/// One call of a transform, run compiled for the instruction set that suits its rows (pulp's
/// run-time dispatch; the crate's baseline build vectorises its loops with SSE2 only), see
/// [`WIDE_ROWS`]. ConvLSTM step (16 x 77 -> 256 channels, 24 x 24), transform samples per
/// sample of the `gemm` microkernel, one thread: 0.42 on the baseline build, 0.37 at AVX2 width
/// (Zen 3).
enum Transform<'a, 'b, T> {
    /// [`input_transform_into_body`]`(cv, img, (r0, r1, tw), layout, v)`.
    Input(
        &'a ConvGeom,
        &'a [T],
        (usize, usize, usize),
        &'a VLayout,
        &'a mut [T],
    ),
    /// [`output_transform_from_body`]`(m, at, tw, wo, out, epi)`.
    Output(
        &'a [T],
        (usize, usize, usize, usize),
        usize,
        usize,
        &'a mut [&'b mut [T]],
        Epilogue<'a, T>,
    ),
    /// [`output_adjoint_into_body`]`(dy, (ho, wo), (r0, r1, tw), layout, dm)`.
    Adjoint(
        &'a [T],
        (usize, usize),
        (usize, usize, usize),
        &'a VLayout,
        &'a mut [T],
    ),
}

impl<T: Float> pulp::WithSimd for Transform<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        match self {
            Transform::Input(cv, img, rows, layout, v) => {
                input_transform_into_body(cv, img, rows, layout, v)
            }
            Transform::Output(m, at, tw, wo, out, epi) => {
                output_transform_from_body(m, at, tw, wo, out, epi)
            }
            Transform::Adjoint(dy, size, rows, layout, dm) => {
                output_adjoint_into_body(dy, size, rows, layout, dm)
            }
        }
    }
}

impl<T: Float> Transform<'_, '_, T> {
    fn run(self) {
        let tw = match &self {
            Transform::Input(_, _, rows, ..) | Transform::Adjoint(_, _, rows, ..) => rows.2,
            Transform::Output(_, _, tw, ..) => *tw,
        };
        if tw >= WIDE_ROWS {
            pulp::Arch::new().dispatch(self);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            pulp::Simd::vectorize(simd, self);
            return;
        }
        pulp::WithSimd::with_simd(self, pulp::Scalar::new());
    }
}

/// [`input_transform_into_body`], see [`Transform`].
fn input_transform_into<T: Float>(
    cv: &ConvGeom,
    img: &[T],
    rows: (usize, usize, usize),
    layout: &VLayout,
    v: &mut [T],
) {
    Transform::Input(cv, img, rows, layout, v).run();
}

/// [`output_transform_from_body`], see [`Transform`].
fn output_transform_from<T: Float>(
    m: &[T],
    at: (usize, usize, usize, usize),
    tw: usize,
    wo: usize,
    out: &mut [&mut [T]],
    epi: Epilogue<'_, T>,
) {
    Transform::Output(m, at, tw, wo, out, epi).run();
}

/// [`output_adjoint_into_body`], see [`Transform`].
fn output_adjoint_into<T: Float>(
    dy: &[T],
    size: (usize, usize),
    rows: (usize, usize, usize),
    layout: &VLayout,
    dm: &mut [T],
) {
    Transform::Adjoint(dy, size, rows, layout, dm).run();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_cpu::forward_im2col;
    use crate::ops::im2col::Geometry;
    use crate::ops::Axis1;

    fn geom(
        b: usize,
        c: usize,
        c_out: usize,
        h: usize,
        w: usize,
        ph: usize,
        pw: usize,
    ) -> ConvGeom {
        let ax = |p| Axis1 {
            stride: 1,
            padding: p,
            dilation: 1,
        };
        ConvGeom {
            g: Geometry {
                b,
                c,
                h,
                w,
                kh: 3,
                kw: 3,
                ah: ax(ph),
                aw: ax(pw),
                ho: h + 2 * ph - 2,
                wo: w + 2 * pw - 2,
            },
            c_out,
            groups: 1,
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    /// `(B, C, C_out, H, W, p_h, p_w)` for every test: odd and even sizes, unequal channel
    /// counts (a transposed frequency matrix shows), paddings 0..2 per axis, a single-row tile
    /// grid; fewer than BATCHED_TILES tiles per image take the grouped paths (groups of 2 (f64)
    /// or 4 (f32) images for 5 x 8 x 8), 33 x 31 does not; 256 channels on 24 x 24 have 144
    /// tiles per image but tasks of 2 tile rows (24 tiles), so the weight gradient groups them
    /// too; rows of 35 tiles run the wide-SIMD transforms.
    const CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
        (2, 16, 19, 9, 8, 1, 1),
        (1, 19, 16, 7, 11, 0, 2),
        (3, 16, 18, 4, 5, 2, 0),
        (2, 32, 24, 33, 31, 1, 1),
        (1, 16, 16, 3, 40, 1, 1),
        (5, 16, 16, 8, 8, 1, 1),
        (1, 256, 16, 24, 24, 1, 1),
        (1, 16, 20, 30, 29, 1, 1),
        (1, 16, 17, 9, 70, 1, 1),
    ];

    /// Largest absolute difference of two equally long vectors.
    fn max_err(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn equals_the_im2col_convolution_for_odd_sizes_and_every_padding() {
        for &(b, c, co, h, w, ph, pw) in CASES {
            let cv = geom(b, c, co, h, w, ph, pw);
            assert!(applies(&cv));
            let x = values(b * c * h * w, 1);
            let wt = values(co * c * 9, 2);
            let want = forward_im2col(&cv, &x, &wt, Epilogue::none()).unwrap();
            let got = forward(&cv, &x, &wt, Epilogue::none()).unwrap();
            assert_eq!(got.len(), want.len());
            let err = max_err(&got, &want);
            assert!(err < 1e-12, "{b}x{c}x{h}x{w} pad {ph},{pw}: {err:e}");
            // f32: rounding comparable to the direct product's
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let w32: Vec<f32> = wt.iter().map(|&v| v as f32).collect();
            let got32 = forward(&cv, &x32, &w32, Epilogue::none()).unwrap();
            let direct32 = forward_im2col(&cv, &x32, &w32, Epilogue::none()).unwrap();
            let err = |a: &[f32]| {
                a.iter()
                    .zip(&want)
                    .map(|(&u, &v)| (u as f64 - v).abs())
                    .fold(0.0, f64::max)
            };
            let (e_w, e_d) = (err(&got32), err(&direct32));
            assert!(
                e_w < 4.0 * e_d.max(1e-7),
                "f32 winograd {e_w:e} vs direct {e_d:e}"
            );
        }
    }

    #[test]
    fn weight_gradient_equals_the_im2col_one() {
        use crate::ops::conv_cpu::backward_weight_im2col;
        for &(b, c, co, h, w, ph, pw) in CASES {
            let cv = geom(b, c, co, h, w, ph, pw);
            let x = values(b * c * h * w, 3);
            let dy = values(b * co * cv.g.ho * cv.g.wo, 4);
            let want = backward_weight_im2col(&cv, &x, &dy).unwrap();
            let got = backward_weight(&cv, &x, &dy).unwrap();
            let err = max_err(&got, &want);
            assert!(err < 1e-11, "{b}x{c}x{h}x{w} pad {ph},{pw}: {err:e}");
        }
    }

    #[test]
    fn input_gradient_equals_the_direct_adjoint() {
        for &(b, c, co, h, w, ph, pw) in CASES {
            let cv = geom(b, c, co, h, w, ph, pw);
            let (ho, wo) = (cv.g.ho, cv.g.wo);
            let flip = geom(b, co, c, ho, wo, 2 - ph, 2 - pw);
            assert!(applies(&flip) && flip.g.ho == h && flip.g.wo == w);
            let dy = values(b * co * ho * wo, 5);
            let wt = values(co * c * 9, 6);
            let mut want = vec![0.0; b * c * h * w];
            for bi in 0..b {
                for o in 0..co {
                    for ci in 0..c {
                        for (oy, ox) in (0..ho).flat_map(|y| (0..wo).map(move |x| (y, x))) {
                            let g = dy[((bi * co + o) * ho + oy) * wo + ox];
                            for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                                let (y, x) = (oy + i, ox + j);
                                if y < ph || x < pw || y - ph >= h || x - pw >= w {
                                    continue;
                                }
                                want[((bi * c + ci) * h + y - ph) * w + x - pw] +=
                                    g * wt[((o * c + ci) * 3 + i) * 3 + j];
                            }
                        }
                    }
                }
            }
            let got = backward_input(&flip, &dy, &wt).unwrap();
            assert_eq!(got.len(), want.len());
            let err = max_err(&got, &want);
            assert!(err < 1e-12, "{b}x{c}x{h}x{w} pad {ph},{pw}: {err:e}");
        }
    }

    #[test]
    fn is_chosen_only_for_the_shapes_it_handles() {
        assert!(
            !applies(&geom(1, 3, 32, 8, 8, 1, 1)),
            "3-channel input stays with im2col"
        );
        let mut cv = geom(1, 16, 16, 8, 8, 1, 1);
        cv.g.ah.stride = 2;
        assert!(!applies(&cv));
        let mut cv = geom(1, 16, 16, 8, 8, 1, 1);
        cv.groups = 2;
        assert!(!applies(&cv));
        assert!(
            !applies(&geom(1, 16, 16, 2, 8, 0, 1)),
            "a single output row"
        );
    }
}
