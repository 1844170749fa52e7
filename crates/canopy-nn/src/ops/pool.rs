//! Max and average pooling for any kernel, stride and padding (and `ceil_mode`), with
//! gradients: windows are gathered with `index_select`, then reduced. candle's `max_pool2d`
//! gradient is scaled by 1/k² and missing when kernel != stride; `avg_pool2d` likewise.
//!
//! Semantics follow PyTorch: max pooling pads with -inf; average pooling counts the zero padding
//! in the divisor (`count_include_pad=True`) but not the extra cells `ceil_mode` adds past it.

use candle_core::{Device, Tensor, D};

use crate::error::{invalid, shape};
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
    gather_windows(x, &[axis], ceil, Reduce::Max, "max_pool1d")
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
    // non-overlapping blocks without padding: the fused kernel (same result, gradient to the
    // first maximum of each block like the gather path and PyTorch)
    let blocks = |a: PoolAxis, len: usize| {
        a.kernel == a.stride
            && a.padding == 0
            && a.kernel > 0
            && len >= a.kernel
            && (!ceil || len % a.kernel == 0)
    };
    if let Ok((_, _, hh, ww)) = x.dims4() {
        let float = matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
        if float && x.device().is_cpu() && blocks(h, hh) && blocks(w, ww) {
            return crate::ops::channel::max_pool_blocks(x, h.kernel, w.kernel);
        }
    }
    gather_windows(x, &[h, w], ceil, Reduce::Max, "max_pool2d")
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
