//! Transposed convolutions (`conv_transpose1d` / `conv_transpose2d`), any stride, padding,
//! output padding, dilation and groups, with correct gradients.
//!
//! A transposed convolution is the adjoint of a convolution: the input is spread out with
//! `stride - 1` zeros between samples, padded by `dilation * (k - 1) - padding` on each side
//! (plus `output_padding` at the end), and convolved with the kernel flipped in space and with
//! input/output channels swapped per group. Every step is a candle primitive with a correct
//! backward (`cat`, `narrow`, `index_select`, and [`conv2d`](crate::ops::conv2d)). candle's own
//! `conv_transpose1d` fast path gives wrong forward results and it has no grouped transposed
//! convolution.
//!
//! On the CPU (f32/f64, output padding smaller than the stride) a transposed convolution runs
//! as what it is, the input gradient of a convolution, on the convolution kernels of
//! `conv_cpu` (matrix product then col2im scatter, or the flipped-kernel convolution at unit
//! stride; Winograd where that applies): no zero-dilated copy of the input, whose convolution
//! would multiply `stride²` times more zeros than values. The composed path stays for other
//! devices and dtypes and for output padding at least the stride (allowed when the dilation is
//! larger).

use candle_core::Tensor;

use crate::error::{invalid, shape};
use crate::ops::conv::{conv2d, Axis1, Conv2dConfig};
use crate::ops::conv_cpu::{Conv2dOp, ConvGeom, Pass};
use crate::ops::im2col::Geometry;
use crate::Result;

/// Stride, padding, output padding and dilation of one axis of a transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposeAxis {
    /// Stride of the convolution this is the transpose of.
    pub stride: usize,
    /// Its padding.
    pub padding: usize,
    /// Extra outputs at the end (must be smaller than the stride or the dilation).
    pub output_padding: usize,
    /// Kernel dilation.
    pub dilation: usize,
}

impl Default for TransposeAxis {
    fn default() -> Self {
        TransposeAxis {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
        }
    }
}

impl TransposeAxis {
    /// Stride and padding, no output padding, no dilation.
    pub fn new(stride: usize, padding: usize) -> Self {
        TransposeAxis {
            stride,
            padding,
            ..TransposeAxis::default()
        }
    }
}

/// Spreads `x` along `dim` with `s - 1` zeros between samples.
fn dilate(x: &Tensor, dim: usize, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(x.clone());
    }
    let len = x.dim(dim)?;
    let mut zshape = x.dims().to_vec();
    zshape.insert(dim + 1, s - 1);
    let z = Tensor::zeros(zshape, x.dtype(), x.device())?;
    let spread = Tensor::cat(&[&x.unsqueeze(dim + 1)?, &z], dim + 1)?; // (.., len, s, ..)
    let mut merged = x.dims().to_vec();
    merged[dim] = len * s;
    Ok(spread.reshape(merged)?.narrow(dim, 0, (len - 1) * s + 1)?)
}

/// Pads (or crops, when negative) `x` along `dim`.
fn pad_or_crop(x: &Tensor, dim: usize, left: isize, right: isize) -> Result<Tensor> {
    let mut x = x.clone();
    if left < 0 {
        let n = x.dim(dim)?;
        x = x.narrow(dim, (-left) as usize, n - (-left) as usize)?;
    }
    if right < 0 {
        let n = x.dim(dim)?;
        x = x.narrow(dim, 0, n - (-right) as usize)?;
    }
    Ok(x.pad_with_zeros(dim, left.max(0) as usize, right.max(0) as usize)?)
}

/// 2-D transposed convolution like `torch.nn.functional.conv_transpose2d`.
///
/// # Shapes
/// `x`: `(B, C_in, H, W)`, `weight`: `(C_in, C_out / groups, K_h, K_w)`, `bias`: `(C_out,)` ->
/// `(B, C_out, H_out, W_out)` with `H_out = (H - 1) s - 2p + d (K_h - 1) + output_padding + 1`.
///
/// # Errors
/// Shape and configuration errors naming the expected shapes.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    h: TransposeAxis,
    w: TransposeAxis,
    groups: usize,
) -> Result<Tensor> {
    let op = "conv_transpose2d";
    let (_, c_in, hi, wi) = x
        .dims4()
        .map_err(|_| shape(op, "input (B, C_in, H, W)", x.dims()))?;
    let (wc, og, kh, kw) = weight
        .dims4()
        .map_err(|_| shape(op, "weight (C_in, C_out/groups, K_h, K_w)", weight.dims()))?;
    if groups == 0 || c_in % groups != 0 || wc != c_in {
        return Err(shape(
            op,
            format!("weight with {c_in} input channels divisible by groups = {groups}"),
            weight.dims(),
        ));
    }
    for (a, k, name) in [(h, kh, "H"), (w, kw, "W")] {
        if a.stride == 0 || a.dilation == 0 || k == 0 {
            return Err(invalid(
                op,
                format!("{name}: stride, dilation and kernel must be positive"),
            ));
        }
        if a.output_padding >= a.stride.max(a.dilation) {
            return Err(invalid(
                op,
                format!(
                    "{name}: output_padding {} must be smaller than stride or dilation",
                    a.output_padding
                ),
            ));
        }
    }
    let out_len = |n: usize, a: TransposeAxis, k: usize| -> isize {
        (n as isize - 1) * a.stride as isize - 2 * a.padding as isize
            + (a.dilation * (k - 1)) as isize
            + a.output_padding as isize
            + 1
    };
    if out_len(hi, h, kh) <= 0 || out_len(wi, w, kw) <= 0 {
        return Err(invalid(
            op,
            format!("padding too large: the output of a {hi}x{wi} input would be empty"),
        ));
    }
    let ig = c_in / groups;
    let c_out = og * groups;
    let patch = |a: TransposeAxis, k: usize| {
        a.stride == k && a.padding == 0 && a.dilation == 1 && a.output_padding == 0
    };
    if groups == 1 && patch(h, kh) && patch(w, kw) {
        return transpose_patches(x, weight, bias);
    }
    let fast = x.device().is_cpu()
        && weight.dtype() == x.dtype()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && h.output_padding < h.stride
        && w.output_padding < w.stride;
    if fast {
        // the input gradient of the convolution that maps the output's shape back to x's
        let axis = |a: TransposeAxis| Axis1 {
            stride: a.stride,
            padding: a.padding,
            dilation: a.dilation,
        };
        let cv = ConvGeom {
            g: Geometry {
                b: x.dim(0)?,
                c: c_out,
                h: out_len(hi, h, kh) as usize,
                w: out_len(wi, w, kw) as usize,
                kh,
                kw,
                ah: axis(h),
                aw: axis(w),
                ho: hi,
                wo: wi,
            },
            c_out: c_in,
            groups,
        };
        let y = x.contiguous()?.apply_op2(
            &weight.contiguous()?,
            Conv2dOp {
                cv,
                pass: Pass::Transposed,
            },
        )?;
        return match bias {
            None => Ok(y),
            Some(b) if b.dims() == [c_out] => crate::ops::add_channel_bias(&y, b),
            Some(b) => Err(shape(op, format!("bias ({c_out},)"), b.dims())),
        };
    }
    // flip the kernel in space and swap in/out channels per group
    let rev = |k: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..k as u32).rev().collect();
        Ok(Tensor::from_vec(v, k, x.device())?)
    };
    let wf = weight
        .index_select(&rev(kh)?, 2)?
        .index_select(&rev(kw)?, 3)?;
    let wf = wf
        .reshape((groups, ig, og, kh, kw))?
        .transpose(1, 2)? // (g, og, ig, kh, kw)
        .contiguous()?
        .reshape((c_out, ig, kh, kw))?;
    let mut xs = dilate(x, 2, h.stride)?;
    xs = dilate(&xs, 3, w.stride)?;
    for (dim, a, k) in [(2usize, h, kh), (3usize, w, kw)] {
        let edge = (a.dilation * (k - 1)) as isize - a.padding as isize;
        xs = pad_or_crop(&xs, dim, edge, edge + a.output_padding as isize)?;
    }
    let cfg = Conv2dConfig {
        h: Axis1 {
            stride: 1,
            padding: 0,
            dilation: h.dilation,
        },
        w: Axis1 {
            stride: 1,
            padding: 0,
            dilation: w.dilation,
        },
        groups,
    };
    conv2d(&xs, &wf, bias, cfg)
}

/// The transposed convolution whose stride equals its kernel (no padding, dilation, groups):
/// every input pixel writes its own `K_h x K_w` output patch, so the whole operation is one
/// matrix product `(B H W, C_in) x (C_in, C_out K_h K_w)` and a reordering of the result —
/// instead of a convolution over an input dilated with zeros (4x the work for U-Net's 2x2
/// up-convolutions, and several full-size copies). Gradients come from the product and the
/// reshapes.
fn transpose_patches(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c_in, hi, wi) = x.dims4()?;
    let (_, c_out, kh, kw) = weight.dims4()?;
    let rows = x
        .permute((0, 2, 3, 1))? // (B, H, W, C_in)
        .contiguous()?
        .reshape((b * hi * wi, c_in))?;
    let w = weight.reshape((c_in, c_out * kh * kw))?;
    let y = rows
        .matmul(&w)? // (B H W, C_out K_h K_w)
        .reshape((b, hi, wi, c_out, kh, kw))?
        .permute((0, 3, 1, 4, 2, 5))? // (B, C_out, H, K_h, W, K_w)
        .contiguous()?
        .reshape((b, c_out, hi * kh, wi * kw))?;
    match bias {
        None => Ok(y),
        Some(bias) => {
            if bias.dims() != [c_out] {
                return Err(shape(
                    "conv_transpose2d",
                    format!("bias ({c_out},)"),
                    bias.dims(),
                ));
            }
            crate::ops::add_channel_bias(&y, bias)
        }
    }
}

/// 1-D transposed convolution like `torch.nn.functional.conv_transpose1d`.
///
/// # Shapes
/// `x`: `(B, C_in, L)`, `weight`: `(C_in, C_out / groups, K)`, `bias`: `(C_out,)` ->
/// `(B, C_out, L_out)`.
///
/// # Errors
/// As [`conv_transpose2d`].
pub fn conv_transpose1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    axis: TransposeAxis,
    groups: usize,
) -> Result<Tensor> {
    let op = "conv_transpose1d";
    x.dims3()
        .map_err(|_| shape(op, "input (B, C_in, L)", x.dims()))?;
    weight
        .dims3()
        .map_err(|_| shape(op, "weight (C_in, C_out/groups, K)", weight.dims()))?;
    let y = conv_transpose2d(
        &x.unsqueeze(2)?,
        &weight.unsqueeze(2)?,
        bias,
        TransposeAxis::default(),
        axis,
        groups,
    )?;
    Ok(y.squeeze(2)?)
}
