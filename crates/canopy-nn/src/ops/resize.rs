//! Resizing as products with small interpolation matrices: bilinear and nearest upsampling to
//! any output size, and adaptive average pooling. `out = R_h · x · R_wᵀ` per channel, so the
//! backward pass is two matrix products — candle has no backward for
//! `upsample_bilinear2d` at all and none for nearest upsampling by non-integer factors.
//!
//! Source-index rules follow PyTorch (`aten/src/ATen/native/UpSample.h`) when an output *size*
//! is given: bilinear with `align_corners=False` samples `(dst + 0.5) * in/out - 0.5` clamped at
//! 0, with `align_corners=True` samples `dst * (in-1)/(out-1)`; nearest takes
//! `floor(dst * in/out)`; adaptive pooling averages `[floor(i*in/out), ceil((i+1)*in/out))`.

use candle_core::{DType, Device, Tensor};

use crate::error::{invalid, shape};
use crate::Result;

/// How bilinear resizing maps output to input coordinates (`align_corners` in PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlignCorners {
    /// `align_corners=False` (PyTorch's default): pixel areas are aligned.
    #[default]
    No,
    /// `align_corners=True`: the corner pixels' centres are aligned.
    Yes,
}

fn matrix(rows: Vec<f64>, out: usize, inp: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(rows, (out, inp), device)?.to_dtype(dtype)?)
}

/// `(out, in)` bilinear interpolation weights along one axis.
fn bilinear_weights(inp: usize, out: usize, align: AlignCorners) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    for d in 0..out {
        let src = match align {
            AlignCorners::Yes => {
                if out > 1 {
                    d as f64 * (inp as f64 - 1.0) / (out as f64 - 1.0)
                } else {
                    0.0
                }
            }
            AlignCorners::No => ((d as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0),
        };
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let l1 = src - i0 as f64;
        m[d * inp + i0] += 1.0 - l1;
        m[d * inp + i1] += l1;
    }
    m
}

fn nearest_weights(inp: usize, out: usize) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    let scale = inp as f64 / out as f64;
    for d in 0..out {
        let s = ((d as f64 * scale).floor() as usize).min(inp - 1);
        m[d * inp + s] = 1.0;
    }
    m
}

fn adaptive_weights(inp: usize, out: usize) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    for d in 0..out {
        let start = d * inp / out;
        let end = ((d + 1) * inp).div_ceil(out);
        let n = (end - start) as f64;
        for s in start..end {
            m[d * inp + s] = 1.0 / n;
        }
    }
    m
}

/// Applies `(out_h, H)` and `(out_w, W)` matrices to the last two dimensions.
fn apply(x: &Tensor, mh: Vec<f64>, mw: Vec<f64>, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let rh = matrix(mh, out_h, h, x.dtype(), x.device())?;
    let rwt = matrix(mw, out_w, w, x.dtype(), x.device())?.t()?; // (W, out_w)
    let y = x.broadcast_matmul(&rwt)?; // (B, C, H, out_w)
    Ok(rh.broadcast_matmul(&y)?) // (B, C, out_h, out_w)
}

fn check(op: &'static str, x: &Tensor, out_h: usize, out_w: usize) -> Result<()> {
    let (_, _, h, w) = x
        .dims4()
        .map_err(|_| shape(op, "input (B, C, H, W)", x.dims()))?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(invalid(
            op,
            format!("sizes must be positive: input {h}x{w}, output {out_h}x{out_w}"),
        ));
    }
    Ok(())
}

/// Bilinear resize to `(out_h, out_w)` (`F.interpolate(mode="bilinear", size=...)`).
///
/// # Shapes
/// `(B, C, H, W)` -> `(B, C, out_h, out_w)`.
///
/// # Errors
/// For a non-4-D input or a zero size.
pub fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align: AlignCorners,
) -> Result<Tensor> {
    check("upsample_bilinear2d", x, out_h, out_w)?;
    let (_, _, h, w) = x.dims4()?;
    apply(
        x,
        bilinear_weights(h, out_h, align),
        bilinear_weights(w, out_w, align),
        out_h,
        out_w,
    )
}

/// Nearest-neighbour resize to `(out_h, out_w)` (`F.interpolate(mode="nearest", size=...)`),
/// any factor, integer or not.
///
/// # Shapes
/// `(B, C, H, W)` -> `(B, C, out_h, out_w)`.
///
/// # Errors
/// For a non-4-D input or a zero size.
pub fn upsample_nearest2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    check("upsample_nearest2d", x, out_h, out_w)?;
    let (_, _, h, w) = x.dims4()?;
    apply(
        x,
        nearest_weights(h, out_h),
        nearest_weights(w, out_w),
        out_h,
        out_w,
    )
}

/// Adaptive average pooling to `(out_h, out_w)` (`F.adaptive_avg_pool2d`).
///
/// # Shapes
/// `(B, C, H, W)` -> `(B, C, out_h, out_w)`.
///
/// # Errors
/// For a non-4-D input or a zero size.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    check("adaptive_avg_pool2d", x, out_h, out_w)?;
    let (_, _, h, w) = x.dims4()?;
    apply(
        x,
        adaptive_weights(h, out_h),
        adaptive_weights(w, out_w),
        out_h,
        out_w,
    )
}

/// Linear resize of a sequence to `out_len` (`F.interpolate(mode="linear", size=...)`), used by
/// MS-ResNet which stretches time series to a fixed length.
///
/// # Shapes
/// `(B, C, L)` -> `(B, C, out_len)`.
///
/// # Errors
/// For a non-3-D input or a zero size.
pub fn interpolate_linear1d(x: &Tensor, out_len: usize, align: AlignCorners) -> Result<Tensor> {
    let (b, c, l) = x
        .dims3()
        .map_err(|_| shape("interpolate_linear1d", "input (B, C, L)", x.dims()))?;
    if l == 0 || out_len == 0 {
        return Err(invalid("interpolate_linear1d", "sizes must be positive"));
    }
    let m = matrix(
        bilinear_weights(l, out_len, align),
        out_len,
        l,
        x.dtype(),
        x.device(),
    )?
    .t()?;
    Ok(x.reshape((b * c, l))?
        .matmul(&m)?
        .reshape((b, c, out_len))?)
}
