//! Max and average pooling for any kernel, stride and padding (and `ceil_mode`), with
//! gradients. candle's `max_pool2d` gradient is scaled by 1/k² and missing when kernel !=
//! stride; `avg_pool2d` likewise.
//!
//! Max pooling of f32/f64 CPU tensors is one parallel op ([`MaxPoolOp`]): the forward pass takes
//! the window maxima along each input row, then the maxima of those over each window's rows
//! (NaN propagates); the backward pass scans each window clipped to the input for its first
//! maximum and adds the output gradient there (PyTorch's rule: one gradient per window, to
//! its first maximum in row-major order). Other devices and dtypes, and average pooling, gather
//! every window with `index_select` and reduce it ([`gather_windows`]; the gather is also the
//! reference the op is tested against).
//!
//! Semantics follow PyTorch: max pooling pads with -inf; average pooling counts the zero padding
//! in the divisor (`count_include_pad=True`) but not the extra cells `ceil_mode` adds past it.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor, D};
use rayon::prelude::*;

use crate::error::{invalid, shape};
use crate::ops::cpu::{chunk_at, par_build, slice, zeros_par, Float};
use crate::Result;

/// Kernel, stride and padding of one pooled axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolAxis {
    /// Window length.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding at both ends (at most half the kernel, as in PyTorch).
    pub padding: usize,
}

impl PoolAxis {
    /// A window of `kernel` with stride `kernel` and no padding (PyTorch's default stride).
    pub fn new(kernel: usize) -> Self {
        PoolAxis {
            kernel,
            stride: kernel,
            padding: 0,
        }
    }

    /// Output length (PyTorch's `pooling_output_shape`), and the padded length needed.
    fn out_len(&self, op: &'static str, len: usize, ceil: bool) -> Result<(usize, usize)> {
        if self.kernel == 0 || self.stride == 0 {
            return Err(invalid(op, "kernel and stride must be positive"));
        }
        if self.padding * 2 > self.kernel {
            return Err(invalid(
                op,
                format!(
                    "padding {} exceeds half the kernel {}",
                    self.padding, self.kernel
                ),
            ));
        }
        let padded = len + 2 * self.padding;
        if padded < self.kernel {
            return Err(invalid(
                op,
                format!(
                    "input of length {len} is shorter than the kernel {}",
                    self.kernel
                ),
            ));
        }
        let span = padded - self.kernel;
        let mut out = if ceil {
            span.div_ceil(self.stride)
        } else {
            span / self.stride
        } + 1;
        // the last window must start inside the input or the left padding
        if ceil && (out - 1) * self.stride >= len + self.padding {
            out -= 1;
        }
        let needed = (out - 1) * self.stride + self.kernel;
        Ok((out, needed.max(padded)))
    }
}

/// How pooled windows are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduce {
    Max,
    Avg,
}

fn gather_windows(
    x: &Tensor,
    axes: &[PoolAxis],
    ceil: bool,
    reduce: Reduce,
    op: &'static str,
) -> Result<Tensor> {
    // x: (N, C, L) for 1-D, (N, C, H, W) for 2-D
    let dims = x.dims().to_vec();
    let nd = axes.len();
    if dims.len() != 2 + nd {
        return Err(shape(
            op,
            format!(
                "a {}-D input (N, C, {})",
                2 + nd,
                if nd == 1 { "L" } else { "H, W" }
            ),
            &dims,
        ));
    }
    let (n, c) = (dims[0], dims[1]);
    let mut outs = Vec::new();
    let mut padded = x.clone();
    for (i, a) in axes.iter().enumerate() {
        let len = dims[2 + i];
        let (out, needed) = a.out_len(op, len, ceil)?;
        let right = needed - len - a.padding;
        let dim = 2 + i;
        padded = match reduce {
            Reduce::Avg => padded.pad_with_zeros(dim, a.padding, right)?,
            Reduce::Max => {
                let mut shape = padded.dims().to_vec();
                let mut parts = Vec::new();
                if a.padding > 0 {
                    shape[dim] = a.padding;
                    parts.push(
                        Tensor::full(f64::NEG_INFINITY, shape.clone(), x.device())?
                            .to_dtype(x.dtype())?,
                    );
                }
                parts.push(padded.clone());
                if right > 0 {
                    shape[dim] = right;
                    parts.push(
                        Tensor::full(f64::NEG_INFINITY, shape.clone(), x.device())?
                            .to_dtype(x.dtype())?,
                    );
                }
                Tensor::cat(&parts, dim)?
            }
        };
        outs.push((out, needed));
    }
    let pdims = padded.dims().to_vec();
    let spatial: usize = pdims[2..].iter().product();
    let flat = padded.reshape((n, c, spatial))?;
    let (idx, positions, window) = window_indices(axes, &outs);
    let cols = flat
        .index_select(&Tensor::from_vec(idx, positions * window, x.device())?, 2)?
        .reshape((n, c, positions, window))?;
    let out_shape: Vec<usize> = [n, c].into_iter().chain(outs.iter().map(|o| o.0)).collect();
    let y = match reduce {
        Reduce::Max => cols.max(D::Minus1)?,
        Reduce::Avg => {
            let div = avg_divisors(axes, &outs, &dims[2..], x.device())?.to_dtype(x.dtype())?;
            cols.sum(D::Minus1)?.broadcast_div(&div)?
        }
    };
    Ok(y.reshape(out_shape)?)
}

/// Flat indices into the padded input for every (output position, window element).
fn window_indices(axes: &[PoolAxis], outs: &[(usize, usize)]) -> (Vec<u32>, usize, usize) {
    match axes {
        [a] => {
            let (out, _) = outs[0];
            let idx = (0..out)
                .flat_map(|o| (0..a.kernel).map(move |k| (o * a.stride + k) as u32))
                .collect();
            (idx, out, a.kernel)
        }
        _ => {
            let (ah, aw) = (axes[0], axes[1]);
            let ((oh, _), (ow, wp)) = (outs[0], outs[1]);
            let mut idx = Vec::with_capacity(oh * ow * ah.kernel * aw.kernel);
            for i in 0..oh {
                for j in 0..ow {
                    for ki in 0..ah.kernel {
                        for kj in 0..aw.kernel {
                            idx.push(((i * ah.stride + ki) * wp + j * aw.stride + kj) as u32);
                        }
                    }
                }
            }
            (idx, oh * ow, ah.kernel * aw.kernel)
        }
    }
}

/// PyTorch's average-pool divisor per output position (`count_include_pad=True`).
fn avg_divisors(
    axes: &[PoolAxis],
    outs: &[(usize, usize)],
    lens: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let per_axis: Vec<Vec<f64>> = axes
        .iter()
        .zip(outs)
        .zip(lens)
        .map(|((a, &(out, _)), &len)| {
            (0..out)
                .map(|o| {
                    let start = (o * a.stride) as i64 - a.padding as i64;
                    let end = (start + a.kernel as i64).min((len + a.padding) as i64);
                    (end - start) as f64
                })
                .collect()
        })
        .collect();
    let v: Vec<f64> = match per_axis.as_slice() {
        [l] => l.clone(),
        [h, w] => h
            .iter()
            .flat_map(|&a| w.iter().map(move |&b| a * b))
            .collect(),
        _ => return Err(invalid("pool", "only 1-D and 2-D pooling")),
    };
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

/// `F.max_pool1d(x, kernel, stride, padding, ceil_mode=ceil)`.
///
/// # Shapes
/// `(N, C, L)` -> `(N, C, L_out)`.
///
/// # Errors
/// For bad shapes or parameters (padding above half the kernel, kernel longer than the input).
pub fn max_pool1d(x: &Tensor, axis: PoolAxis, ceil: bool) -> Result<Tensor> {
    let op = "max_pool1d";
    if fused_max_pool(x) {
        let (n, c, l) = x.dims3().map_err(|_| shape(op, "(N, C, L)", x.dims()))?;
        let (ow, _) = axis.out_len(op, l, ceil)?;
        let y = x
            .contiguous()?
            .reshape((n, c, 1, l))?
            .apply_op1(MaxPoolOp {
                h: Window::unit(),
                w: Window::new(axis, ow),
            })?;
        return Ok(y.reshape((n, c, ow))?);
    }
    gather_windows(x, &[axis], ceil, Reduce::Max, op)
}

/// `F.avg_pool1d(x, kernel, stride, padding, ceil_mode=ceil)` (`count_include_pad=True`).
///
/// # Shapes
/// `(N, C, L)` -> `(N, C, L_out)`.
///
/// # Errors
/// As [`max_pool1d`].
pub fn avg_pool1d(x: &Tensor, axis: PoolAxis, ceil: bool) -> Result<Tensor> {
    gather_windows(x, &[axis], ceil, Reduce::Avg, "avg_pool1d")
}

/// `F.max_pool2d` with per-axis kernel, stride and padding.
///
/// # Shapes
/// `(N, C, H, W)` -> `(N, C, H_out, W_out)`.
///
/// # Errors
/// As [`max_pool1d`].
pub fn max_pool2d(x: &Tensor, h: PoolAxis, w: PoolAxis, ceil: bool) -> Result<Tensor> {
    let op = "max_pool2d";
    if fused_max_pool(x) {
        let (_, _, hh, ww) = x.dims4().map_err(|_| shape(op, "(N, C, H, W)", x.dims()))?;
        let (oh, _) = h.out_len(op, hh, ceil)?;
        let (ow, _) = w.out_len(op, ww, ceil)?;
        return Ok(x.contiguous()?.apply_op1(MaxPoolOp {
            h: Window::new(h, oh),
            w: Window::new(w, ow),
        })?);
    }
    gather_windows(x, &[h, w], ceil, Reduce::Max, op)
}

/// Max pooling through the gathered windows on every device and dtype (the reference of the
/// fused CPU op).
///
/// # Errors
/// As [`max_pool1d`].
#[doc(hidden)]
pub fn max_pool_gather(x: &Tensor, axes: &[PoolAxis], ceil: bool) -> Result<Tensor> {
    gather_windows(x, axes, ceil, Reduce::Max, "max_pool")
}

/// Whether `x` takes [`MaxPoolOp`].
fn fused_max_pool(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// One pooled axis of [`MaxPoolOp`]: window, stride, padding and output length.
#[derive(Debug, Clone, Copy)]
struct Window {
    kernel: usize,
    stride: usize,
    padding: usize,
    out: usize,
}

impl Window {
    fn new(a: PoolAxis, out: usize) -> Self {
        Window {
            kernel: a.kernel,
            stride: a.stride,
            padding: a.padding,
            out,
        }
    }

    /// The axis of length 1 that 1-D pooling adds.
    fn unit() -> Self {
        Window {
            kernel: 1,
            stride: 1,
            padding: 0,
            out: 1,
        }
    }

    /// Input range `[start, end)` of output cell `o`, clipped to an axis of length `len` (the
    /// padding is -inf, so it never holds the maximum). `PoolAxis::out_len` guarantees every
    /// window keeps at least one input cell.
    fn range(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.stride).saturating_sub(self.padding);
        let end = (o * self.stride + self.kernel)
            .saturating_sub(self.padding)
            .min(len);
        (start, end.max(start + 1))
    }
}

impl Window {
    /// Output cells whose window lies inside an axis of length `len`: `[j0, j1)`.
    fn interior(&self, len: usize) -> (usize, usize) {
        let j0 = self.padding.div_ceil(self.stride);
        let j1 = if len + self.padding >= self.kernel {
            ((len + self.padding - self.kernel) / self.stride + 1).min(self.out)
        } else {
            0
        };
        (j0.min(j1), j1)
    }

    /// The window maxima of one row `x` into `y` (NaN propagates). Inside cells take `kernel`
    /// passes over the row (one per window offset: contiguous slices at stride 1, pairs of taps
    /// at stride 2, strided iterators otherwise); the few cells at the ends scan their clipped
    /// window (`cols`, from [`MaxPoolOp::ranges`]).
    fn row_max<T: Float>(&self, x: &[T], y: &mut [T], cols: &[Span]) {
        let (j0, j1) = self.interior(x.len());
        for (j, (o, &(c0, c1))) in y.iter_mut().zip(cols).enumerate() {
            if j < j0 || j >= j1 {
                *o = x[c0 + 1..c1].iter().fold(x[c0], |m, &v| max_nan(m, v));
            }
        }
        if j0 >= j1 {
            return;
        }
        let inside = &mut y[j0..j1];
        let first = j0 * self.stride - self.padding;
        if self.stride == 1 {
            // contiguous taps: plain slices, which the compiler vectorises (InceptionTime's
            // k3 s1 pools: a `step_by` iterator kept this loop scalar)
            let n = inside.len();
            inside.copy_from_slice(&x[first..first + n]);
            for k in 1..self.kernel {
                for (o, &v) in inside.iter_mut().zip(&x[first + k..first + k + n]) {
                    *o = max_nan(*o, v);
                }
            }
            return;
        }
        if self.stride == 2 {
            // taps k and k + 1 of every cell are the two halves of the pairs from `first + k`:
            // pairs de-interleave with shuffles, where `step_by` kept the loop scalar (the
            // MS-ResNet stem's k3 s2 pool was 4.5 % of its inference)
            let n = inside.len();
            for k in (0..self.kernel).step_by(2) {
                let two = k + 1 < self.kernel;
                let pairs = x[first + k..].chunks_exact(2);
                for (o, p) in inside.iter_mut().zip(pairs) {
                    let v = if two { max_nan(p[0], p[1]) } else { p[0] };
                    *o = if k == 0 { v } else { max_nan(*o, v) };
                }
                if !two {
                    // a lone last tap: the last cell's pair may reach one past the row, where
                    // the pairs run out a cell early (taking the tap twice changes nothing)
                    let (o, v) = (&mut inside[n - 1], x[first + k + 2 * (n - 1)]);
                    *o = if k == 0 { v } else { max_nan(*o, v) };
                }
            }
            return;
        }
        for (o, &v) in inside
            .iter_mut()
            .zip(x[first..].iter().step_by(self.stride))
        {
            *o = v;
        }
        for k in 1..self.kernel {
            let taps = x[first + k..].iter().step_by(self.stride);
            for (o, &v) in inside.iter_mut().zip(taps) {
                *o = max_nan(*o, v);
            }
        }
    }
}

/// `max(m, v)`, or `v` when it is NaN (a NaN in `m` stays: `v > NaN` is false).
#[inline(always)]
fn max_nan<T: Float>(m: T, v: T) -> T {
    #[allow(clippy::eq_op)]
    let nan = v != v;
    if v > m || nan {
        v
    } else {
        m
    }
}

/// Max pooling of `(N, C, H, W)` (1-D pooling with `H = 1`) on the CPU (see the module docs).
#[derive(Debug, Clone, Copy)]
struct MaxPoolOp {
    h: Window,
    w: Window,
}

/// An input range `[start, end)`.
type Span = (usize, usize);

/// Input elements per parallel task of [`MaxPoolOp`] (at least one plane).
const POOL_TASK: usize = 1 << 15;

impl MaxPoolOp {
    /// The clipped input range of every output row and column.
    fn ranges(&self, (h, w): (usize, usize)) -> (Vec<Span>, Vec<Span>) {
        let rows = (0..self.h.out).map(|i| self.h.range(i, h)).collect();
        let cols = (0..self.w.out).map(|j| self.w.range(j, w)).collect();
        (rows, cols)
    }

    /// Index within a plane of width `w` of the first maximum of the window `rows x cols`; NaN
    /// wins (it propagates, as in PyTorch).
    fn argmax<T: Float>(
        plane: &[T],
        w: usize,
        rows: (usize, usize),
        cols: (usize, usize),
    ) -> usize {
        let (c0, c1) = cols;
        let mut best = rows.0 * w + c0;
        let mut m = plane[best];
        for r in rows.0..rows.1 {
            let row = r * w;
            for (c, &v) in plane[row + c0..row + c1].iter().enumerate() {
                #[allow(clippy::eq_op)]
                let nan = v != v && m == m;
                if v > m || nan {
                    m = v;
                    best = row + c0 + c;
                }
            }
        }
        best
    }

    /// Planes per parallel task.
    fn planes_per_task(plane: usize) -> usize {
        (POOL_TASK / plane.max(1)).max(1)
    }

    fn forward<T: Float>(&self, x: &[T], hw: (usize, usize)) -> Vec<T> {
        let (oh, ow) = (self.h.out, self.w.out);
        let plane = hw.0 * hw.1;
        let n = x.len() / plane.max(1) * oh * ow;
        if n == 0 {
            return Vec::new();
        }
        let (rows, cols) = self.ranges(hw);
        let per = Self::planes_per_task(plane);
        par_build(n, per * oh * ow, |task, yt: &mut [T]| {
            let xt = chunk_at(x, per * plane, task);
            // separable: the window maxima along each input row, then the maxima of those over
            // each output row's input rows (contiguous rows: vectorised); the same values as a
            // scan of each window (max is associative, NaN propagates through both passes)
            let mut across = vec![T::ZERO; hw.0 * ow];
            for (yp, xp) in yt.chunks_mut(oh * ow).zip(xt.chunks(plane)) {
                if hw.0 == 1 && oh == 1 {
                    self.w.row_max(xp, yp, &cols); // 1-D pooling
                    continue;
                }
                for (xr, ar) in xp.chunks(hw.1).zip(across.chunks_mut(ow)) {
                    self.w.row_max(xr, ar, &cols);
                }
                for (yr, &(r0, r1)) in yp.chunks_mut(ow).zip(&rows) {
                    yr.copy_from_slice(&across[r0 * ow..(r0 + 1) * ow]);
                    for r in r0 + 1..r1 {
                        for (o, &v) in yr.iter_mut().zip(&across[r * ow..(r + 1) * ow]) {
                            *o = max_nan(*o, v);
                        }
                    }
                }
            }
        })
    }

    fn backward<T: Float>(&self, x: &[T], g: &[T], hw: (usize, usize)) -> Vec<T> {
        let (oh, ow) = (self.h.out, self.w.out);
        let plane = hw.0 * hw.1;
        let mut dx = zeros_par(x.len());
        if dx.is_empty() || oh * ow == 0 {
            return dx;
        }
        let (rows, cols) = self.ranges(hw);
        let per = Self::planes_per_task(plane);
        dx.par_chunks_mut(per * plane)
            .zip(x.par_chunks(per * plane))
            .zip(g.par_chunks(per * oh * ow))
            .for_each(|((dt, xt), gt)| {
                let planes = dt.chunks_mut(plane).zip(xt.chunks(plane));
                for ((dp, xp), gp) in planes.zip(gt.chunks(oh * ow)) {
                    for (gr, &r) in gp.chunks(ow).zip(&rows) {
                        for (&gv, &c) in gr.iter().zip(&cols) {
                            dp[Self::argmax(xp, hw.1, r, c)] += gv;
                        }
                    }
                }
            });
        dx
    }
}

/// `(H, W)` of a `(N, C, H, W)` layout.
fn plane_dims(l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "canopy-max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = plane_dims(l)?;
        let name = "max_pool";
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward(slice::<f32>(s, l, name)?, (h, w))),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward(slice::<f64>(s, l, name)?, (h, w))),
            _ => return Err(candle_core::Error::Msg("max_pool: f32 or f64 only".into())),
        };
        Ok((out, Shape::from((n, c, self.h.out, self.w.out))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sg)) = (&*sx, &*sg) else {
            return Err(candle_core::Error::Msg(
                "max_pool backward: CPU tensors only".into(),
            ));
        };
        let (_, _, h, w) = plane_dims(lx)?;
        let name = "max_pool backward";
        let dx = match sx {
            CpuStorage::F32(_) => Tensor::from_vec(
                self.backward(
                    slice::<f32>(sx, lx, name)?,
                    slice::<f32>(sg, lg, name)?,
                    (h, w),
                ),
                x.shape(),
                x.device(),
            )?,
            CpuStorage::F64(_) => Tensor::from_vec(
                self.backward(
                    slice::<f64>(sx, lx, name)?,
                    slice::<f64>(sg, lg, name)?,
                    (h, w),
                ),
                x.shape(),
                x.device(),
            )?,
            _ => {
                return Err(candle_core::Error::Msg(
                    "max_pool backward: f32 or f64 only".into(),
                ))
            }
        };
        Ok(Some(dx))
    }
}

/// `F.avg_pool2d` with per-axis kernel, stride and padding (`count_include_pad=True`).
///
/// # Shapes
/// `(N, C, H, W)` -> `(N, C, H_out, W_out)`.
///
/// # Errors
/// As [`max_pool1d`].
pub fn avg_pool2d(x: &Tensor, h: PoolAxis, w: PoolAxis, ceil: bool) -> Result<Tensor> {
    gather_windows(x, &[h, w], ceil, Reduce::Avg, "avg_pool2d")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, random_f64, GradCheckConfig};

    fn ax(kernel: usize, stride: usize, padding: usize) -> PoolAxis {
        PoolAxis {
            kernel,
            stride,
            padding,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>())
            .unwrap_or(f64::INFINITY)
    }

    /// The fused op equals the gather reference (values and gradients, random values so there
    /// are no ties) for overlapping, padded, strided and ceil-mode windows, 1-D and 2-D, and its
    /// gradient passes finite differences.
    #[test]
    fn fused_max_pool_equals_the_gather_path() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [
            (ax(3, 2, 1), ax(3, 2, 1), true),
            (ax(3, 2, 1), ax(2, 1, 1), false),
            (ax(2, 2, 0), ax(2, 2, 0), false),
            (ax(3, 1, 1), ax(5, 3, 2), true),
            (ax(1, 1, 0), ax(4, 4, 0), true),
            // InceptionTime's k3 s1 p1 (the contiguous-tap loop of `row_max`)
            (ax(2, 2, 0), ax(3, 1, 1), false),
            // stride 2 along rows with an even kernel, and an odd one (a lone last tap)
            (ax(2, 1, 0), ax(4, 2, 1), true),
            (ax(3, 3, 0), ax(5, 2, 2), false),
            (ax(1, 1, 0), ax(5, 2, 0), true),
        ];
        for (seed, (h, w, ceil)) in cases.into_iter().enumerate() {
            let x = random_f64(&[2, 3, 9, 8], seed as u64, &dev)?;
            let a = max_pool2d(&x, h, w, ceil)?;
            let b = max_pool_gather(&x, &[h, w], ceil)?;
            assert_eq!(a.dims(), b.dims(), "{h:?} {w:?} {ceil}");
            assert_eq!(max_diff(&a, &b), 0.0, "{h:?} {w:?} {ceil}");
            let x1 = x.reshape((2, 3, 72))?.narrow(2, 0, 11)?; // a non-contiguous (2, 3, 11) view
            let a1 = max_pool1d(&x1, w, ceil)?;
            let b1 = max_pool_gather(&x1, &[w], ceil)?;
            assert_eq!(a1.dims(), b1.dims(), "1-D {w:?} {ceil}");
            assert_eq!(max_diff(&a1, &b1), 0.0, "1-D {w:?} {ceil}");
            let cfg = GradCheckConfig::default();
            check_gradients(
                |t| max_pool2d(&t[0], h, w, ceil),
                std::slice::from_ref(&x),
                cfg,
            )?;
            check_gradients(|t| max_pool1d(&t[0], w, ceil), &[x1.contiguous()?], cfg)?;
            // the gradients equal the reference's too
            let v = candle_core::Var::from_tensor(&x)?;
            let ga = max_pool2d(v.as_tensor(), h, w, ceil)?
                .sqr()?
                .sum_all()?
                .backward()?;
            let gb = max_pool_gather(v.as_tensor(), &[h, w], ceil)?
                .sqr()?
                .sum_all()?
                .backward()?;
            match (ga.get(v.as_tensor()), gb.get(v.as_tensor())) {
                (Some(p), Some(q)) => assert!(max_diff(p, q) < 1e-15, "{h:?} {w:?} {ceil}"),
                _ => panic!("a gradient is missing"),
            }
        }
        Ok(())
    }

    /// Ties send the whole gradient to the first maximum of the window (PyTorch's rule); -inf
    /// inputs stay -inf and NaN propagates; f32 equals f64.
    #[test]
    fn ties_infinities_and_nan() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::new(&[[[1f64, 1.0, 0.0, 1.0]]], &dev)?)?;
        let y = max_pool1d(x.as_tensor(), ax(2, 2, 0), false)?; // windows [1, 1] and [0, 1]
        let g = y.sum_all()?.backward()?;
        let gx: Vec<f64> = g
            .get(x.as_tensor())
            .map(|t| t.flatten_all()?.to_vec1())
            .transpose()?
            .unwrap_or_default();
        assert_eq!(gx, vec![1.0, 0.0, 0.0, 1.0]);
        let inf = f32::NEG_INFINITY;
        let x = Tensor::new(&[[[inf, inf, 2.0, f32::NAN, 1.0]]], &dev)?;
        let y: Vec<f32> = max_pool1d(&x, ax(2, 2, 1), true)?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(y.len(), 3);
        assert_eq!(y[0], inf);
        assert_eq!(y[1], 2.0); // window [-inf, 2]
        assert!(y[2].is_nan());
        // stride 1: NaN taken from any tap of an inside window, and kept once taken
        let x = Tensor::new(&[[[1f32, f32::NAN, 0.0, 2.0, 3.0, -1.0]]], &dev)?;
        let y: Vec<f32> = max_pool1d(&x, ax(3, 1, 1), false)?
            .flatten_all()?
            .to_vec1()?;
        assert!(y[..3].iter().all(|v| v.is_nan()), "{y:?}");
        assert_eq!(&y[3..], &[3.0, 3.0, 3.0]);
        // 2-D (separable passes): a NaN anywhere in a window makes that output NaN; the other
        // outputs are the reference's (whose candle max does not propagate NaN: the windows
        // holding one are found by pooling a NaN indicator)
        let mut vals: Vec<f64> = random_f64(&[2, 3, 9, 8], 5, &dev)?
            .flatten_all()?
            .to_vec1()?;
        let mut flags = vec![0f64; vals.len()];
        for i in [4, 37, 80, 150, 201, 215] {
            vals[i] = f64::NAN;
            flags[i] = 1.0;
        }
        let xn = Tensor::from_vec(vals, (2, 3, 9, 8), &dev)?;
        let flags = Tensor::from_vec(flags, (2, 3, 9, 8), &dev)?;
        for (h, w) in [(ax(3, 2, 1), ax(2, 1, 1)), (ax(2, 2, 0), ax(3, 3, 1))] {
            let flat = |t: Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_vec1()?) };
            let got = flat(max_pool2d(&xn, h, w, false)?)?;
            let values = flat(max_pool_gather(&xn, &[h, w], false)?)?;
            let has_nan = flat(max_pool_gather(&flags, &[h, w], false)?)?;
            assert!(has_nan.iter().any(|&f| f > 0.0) && has_nan.contains(&0.0));
            for ((g, v), f) in got.iter().zip(&values).zip(&has_nan) {
                if *f > 0.0 {
                    assert!(g.is_nan(), "{g} where the window holds a NaN");
                } else {
                    assert_eq!(g, v);
                }
            }
        }
        let x64 = random_f64(&[3, 4, 10, 7], 9, &dev)?;
        let a = max_pool2d(&x64.to_dtype(DType::F32)?, ax(3, 2, 1), ax(3, 2, 1), false)?;
        let b = max_pool2d(&x64, ax(3, 2, 1), ax(3, 2, 1), false)?;
        assert_eq!(
            max_diff(
                &a.to_dtype(DType::F64)?,
                &b.to_dtype(DType::F32)?.to_dtype(DType::F64)?
            ),
            0.0
        );
        Ok(())
    }
}
