//! Convolutions with correct gradients for every shape, stride, padding, dilation and group
//! count, as im2col followed by a matrix product.
//!
//! Two paths compute the same thing: on the CPU in f32/f64, [`conv2d`] and [`conv1d`] run the
//! custom kernels of [`conv_cpu`](crate::ops::conv_cpu) (blocked im2col + `gemm`, explicit
//! backward); elsewhere, and as the reference the tests compare against, [`conv2d_reference`] /
//! [`conv1d_reference`] gather with `index_select` and multiply with candle's matmul.
//!
//! candle 0.11's own kernels are wrong in places: conv1d kernel gradients (the CPU backend makes
//! the kernel contiguous, then multiplies with the original layout), conv2d backward with
//! stride > 1 when `(H + 2p - k) mod s != (W + 2p - k) mod s`. Here the gradient comes from
//! `index_select` (scatter-add) and `matmul`, both of which candle differentiates correctly, so
//! these ops are the reference the fast kernels of this crate are tested against. They gather
//! `C x K` values per output position: memory grows with the kernel size.
//!
//! Numerics follow `torch.nn.functional.conv1d` / `conv2d` (cross-correlation, zero padding).

use candle_core::{Device, Tensor};

use crate::error::{invalid, shape};
use crate::ops::conv1d_cpu::{Conv1dActOp, Conv1dOp};
use crate::ops::conv_cpu::{Conv2dActOp, Conv2dOp, ConvGeom, Pass};
use crate::ops::im2col::Geometry;
use crate::ops::kn2row::{self, Kn2rowOp};
use crate::Result;

/// Stride, padding and dilation along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis1 {
    /// Step between windows.
    pub stride: usize,
    /// Zeros added at both ends.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
}

impl Default for Axis1 {
    fn default() -> Self {
        Axis1 {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

impl Axis1 {
    /// Output length for an input of `len` and a kernel of `k`, or an error naming the op.
    pub(crate) fn out_len(&self, op: &'static str, len: usize, k: usize) -> Result<usize> {
        if self.stride == 0 || self.dilation == 0 || k == 0 {
            return Err(invalid(
                op,
                "stride, dilation and kernel size must be positive",
            ));
        }
        let span = self.dilation * (k - 1) + 1;
        let padded = len + 2 * self.padding;
        if padded < span {
            return Err(invalid(
                op,
                format!(
                    "input of length {len} (+2x{} padding) is shorter than the kernel span {span}",
                    self.padding
                ),
            ));
        }
        Ok((padded - span) / self.stride + 1)
    }
}

/// Parameters of [`conv1d`] (PyTorch's `stride`, `padding`, `dilation`, `groups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dConfig {
    /// Stride, padding, dilation.
    pub axis: Axis1,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv1dConfig {
    fn default() -> Self {
        Conv1dConfig {
            axis: Axis1::default(),
            groups: 1,
        }
    }
}

/// Parameters of [`conv2d`], separate per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Along rows (H).
    pub h: Axis1,
    /// Along columns (W).
    pub w: Axis1,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            h: Axis1::default(),
            w: Axis1::default(),
            groups: 1,
        }
    }
}

impl Conv2dConfig {
    /// The same stride, padding and dilation on both axes.
    pub fn square(stride: usize, padding: usize, dilation: usize, groups: usize) -> Self {
        let a = Axis1 {
            stride,
            padding,
            dilation,
        };
        Conv2dConfig { h: a, w: a, groups }
    }
}

fn index_tensor(v: Vec<u32>, device: &Device) -> Result<Tensor> {
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

fn check_groups(
    op: &'static str,
    c_in: usize,
    c_out: usize,
    w_in: usize,
    groups: usize,
) -> Result<()> {
    if groups == 0 || c_in % groups != 0 || c_out % groups != 0 {
        return Err(invalid(
            op,
            format!("groups = {groups} must divide both {c_in} input and {c_out} output channels"),
        ));
    }
    if w_in != c_in / groups {
        return Err(shape(
            op,
            format!("weight with {} input channels per group", c_in / groups),
            w_in,
        ));
    }
    Ok(())
}

/// Grouped matrix product of gathered columns `(B, C, P, K)` with weights `(C_out, C/g, K)`,
/// giving `(B, C_out, P)`.
fn grouped_matmul(cols: &Tensor, weight: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, c, p, k) = cols.dims4()?;
    let c_out = weight.dim(0)?;
    let (cg, og) = (c / groups, c_out / groups);
    let mut outs = Vec::with_capacity(groups);
    for g in 0..groups {
        let cols_g = cols
            .narrow(1, g * cg, cg)?
            .permute((0, 2, 1, 3))? // (B, Cg, P, K) -> (B, P, Cg, K)
            .contiguous()?
            .reshape((b, p, cg * k))?;
        let w_g = weight.narrow(0, g * og, og)?.reshape((og, cg * k))?.t()?; // (Cg*K, Og)
        outs.push(cols_g.broadcast_matmul(&w_g)?); // (B, P, Og)
    }
    let out = if groups == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(&outs, 2)?
    };
    Ok(out.transpose(1, 2)?.contiguous()?) // (B, P, C_out) -> (B, C_out, P)
}

/// 1-D convolution (cross-correlation) like `torch.nn.functional.conv1d`. On the CPU in f32/f64
/// with one group it runs the direct kernels of `ops/conv1d_cpu.rs` (strided views of
/// time-major rows, no im2col buffer); grouped and pointwise (kernel 1, stride 1, no padding)
/// convolutions run as a 2-D convolution of height 1 ([`conv1d_as_2d`]), other devices and
/// dtypes the reference gather.
///
/// # Shapes
/// `x`: `(B, C_in, L)`, `weight`: `(C_out, C_in / groups, K)`, `bias`: `(C_out,)` ->
/// `(B, C_out, L_out)` with `L_out = (L + 2p - d(K-1) - 1) / s + 1`.
///
/// # Errors
/// Shape and configuration errors that name the expected shapes.
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv1dConfig,
) -> Result<Tensor> {
    let op = "conv1d";
    check_ranks_1d(x, weight)?;
    // pointwise convolutions are plain products on the (C, L) layout: the 2-D path runs them
    // without any gather, while the direct path would transpose in and out
    let pointwise = weight.dim(2)? == 1 && cfg.axis.stride == 1 && cfg.axis.padding == 0;
    let direct = cfg.groups == 1
        && !pointwise
        && x.device().is_cpu()
        && weight.dtype() == x.dtype()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if direct {
        let (_, c, l) = x.dims3()?;
        let (c_out, w_in, k) = weight.dims3()?;
        check_groups(op, c, c_out, w_in, 1)?;
        cfg.axis.out_len(op, l, k)?;
        let a = cfg.axis;
        let y = x.contiguous()?.apply_op2(
            &weight.contiguous()?,
            Conv1dOp {
                stride: a.stride,
                padding: a.padding,
                dilation: a.dilation,
            },
        )?;
        return add_bias(y, bias, c_out, op);
    }
    conv1d_as_2d(x, weight, bias, cfg)
}

/// `conv1d(x, weight) + bias`, then a ReLU when `relu` is set, with the bias and the ReLU
/// applied by the convolution kernel as it stores its outputs (no extra pass over the output,
/// no temporary). Where [`conv1d`] takes its direct CPU kernels (one group, f32/f64, not
/// pointwise) this is one op whose backward pass masks the gradient by the ReLU and sums it for
/// the bias; elsewhere it is [`conv1d`] followed by [`crate::ops::relu`]. Batch normalisation
/// in evaluation folds into it: scale the weight per output channel, shift the bias.
///
/// # Shapes
/// As [`conv1d`].
///
/// # Errors
/// As [`conv1d`].
pub fn conv1d_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv1dConfig,
    relu: bool,
) -> Result<Tensor> {
    let op = "conv1d_act";
    check_ranks_1d(x, weight)?;
    let pointwise = weight.dim(2)? == 1 && cfg.axis.stride == 1 && cfg.axis.padding == 0;
    let dt = x.dtype();
    let direct = cfg.groups == 1
        && !pointwise
        && x.device().is_cpu()
        && weight.dtype() == dt
        && matches!(dt, candle_core::DType::F32 | candle_core::DType::F64);
    if !direct || (bias.is_none() && !relu) {
        let y = conv1d(x, weight, bias, cfg)?;
        return if relu { crate::ops::relu(&y) } else { Ok(y) };
    }
    let (_, c, l) = x.dims3()?;
    let (c_out, w_in, k) = weight.dims3()?;
    check_groups(op, c, c_out, w_in, 1)?;
    cfg.axis.out_len(op, l, k)?;
    let bias = bias_or_zeros(bias, c_out, x, op)?;
    let a = cfg.axis;
    let conv = Conv1dOp {
        stride: a.stride,
        padding: a.padding,
        dilation: a.dilation,
    };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias, Conv1dActOp { conv, relu })?)
}

/// [`conv1d`] as a 2-D convolution of height 1 (the im2col kernels of
/// [`conv2d`]), the path grouped 1-D convolutions take: a second fast
/// implementation the direct one is tested against.
///
/// # Shapes
/// As [`conv1d`].
///
/// # Errors
/// As [`conv1d`].
pub fn conv1d_as_2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv1dConfig,
) -> Result<Tensor> {
    check_ranks_1d(x, weight)?;
    let cfg2 = Conv2dConfig {
        h: Axis1::default(),
        w: cfg.axis,
        groups: cfg.groups,
    };
    Ok(conv2d(&x.unsqueeze(2)?, &weight.unsqueeze(2)?, bias, cfg2)?.squeeze(2)?)
}

/// 1-D convolution, reference implementation (`index_select` gather; any device and dtype).
///
/// # Shapes
/// `x`: `(B, C_in, L)`, `weight`: `(C_out, C_in / groups, K)`, `bias`: `(C_out,)` ->
/// `(B, C_out, L_out)` with `L_out = (L + 2p - d(K-1) - 1) / s + 1`.
///
/// # Errors
/// Shape and configuration errors that name the expected shapes.
pub fn conv1d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv1dConfig,
) -> Result<Tensor> {
    let op = "conv1d";
    let (b, c, l) = x
        .dims3()
        .map_err(|_| shape(op, "input (B, C, L)", x.dims()))?;
    let (c_out, w_in, k) = weight
        .dims3()
        .map_err(|_| shape(op, "weight (C_out, C_in/groups, K)", weight.dims()))?;
    check_groups(op, c, c_out, w_in, cfg.groups)?;
    let a = cfg.axis;
    let l_out = a.out_len(op, l, k)?;
    let xp = if a.padding > 0 {
        x.pad_with_zeros(2, a.padding, a.padding)?
    } else {
        x.clone()
    };
    let idx: Vec<u32> = (0..l_out)
        .flat_map(|o| (0..k).map(move |t| (o * a.stride + t * a.dilation) as u32))
        .collect();
    let cols = xp
        .index_select(&index_tensor(idx, x.device())?, 2)?
        .reshape((b, c, l_out, k))?;
    let mut y = grouped_matmul(&cols, weight, cfg.groups)?; // (B, C_out, L_out)
    if let Some(bias) = bias {
        if bias.dims() != [c_out] {
            return Err(shape(op, format!("bias ({c_out},)"), bias.dims()));
        }
        y = crate::ops::add_channel_bias(&y, bias)?;
    }
    Ok(y)
}

static KN2ROW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether [`conv2d`] may take the kn2row kernel for convolutions with few output channels and
/// large kernels (on by default; process-wide). Off, those run on the im2col kernels like every
/// other shape: for comparisons and tests.
pub fn set_kn2row_enabled(on: bool) {
    KN2ROW.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn kn2row_enabled() -> bool {
    KN2ROW.load(std::sync::atomic::Ordering::Relaxed)
}

static DIRECT_1D: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether [`conv1d`] and [`conv1d_act`] may run the forward pass of f32 convolutions with few
/// input channels on the register-tiled direct kernel (AVX2 / AVX-512; on by default;
/// process-wide). Off, they take the `gemm` paths like every other shape: for comparisons and
/// tests.
pub fn set_direct_conv1d_enabled(on: bool) {
    DIRECT_1D.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn direct_conv1d_enabled() -> bool {
    DIRECT_1D.load(std::sync::atomic::Ordering::Relaxed)
}

/// 2-D convolution (cross-correlation) like `torch.nn.functional.conv2d`, with stride, padding
/// and dilation given per axis. CPU f32/f64 inputs take the blocked im2col + gemm kernels of
/// [`conv_cpu`](crate::ops::conv_cpu) (backward included), Winograd kernels for 3x3 layers, or
/// for at most 4 output channels and at least 9 taps (stride 1, one group: score layers) the
/// kn2row kernel ([`set_kn2row_enabled`]); others the reference gather.
///
/// # Shapes
/// `x`: `(B, C_in, H, W)`, `weight`: `(C_out, C_in / groups, K_h, K_w)`, `bias`: `(C_out,)` ->
/// `(B, C_out, H_out, W_out)`.
///
/// # Errors
/// Shape and configuration errors that name the expected shapes.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    conv2d_then(x, weight, bias, cfg, false)
}

/// `conv2d(x, weight) + bias`, then a ReLU when `relu` is set. On the CPU kernels of
/// [`conv2d`] (f32/f64) the bias and the ReLU are applied by the convolution as it stores its
/// outputs, right after each block's product (no pass of their own over the output, no
/// temporary); the backward pass masks the gradient by the ReLU and sums it per channel for the
/// bias. Elsewhere (and for the kn2row score layers) it is [`conv2d`] followed by
/// [`crate::ops::relu`]. Batch normalisation in evaluation folds into it: scale the weight per
/// output channel, shift the bias.
///
/// # Shapes
/// As [`conv2d`].
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
    relu: bool,
) -> Result<Tensor> {
    conv2d_then(x, weight, bias, cfg, relu)
}

/// [`conv2d`] with the bias and an optional ReLU.
fn conv2d_then(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
    relu: bool,
) -> Result<Tensor> {
    let act = |y: Tensor| if relu { crate::ops::relu(&y) } else { Ok(y) };
    let fast = x.device().is_cpu()
        && weight.dtype() == x.dtype()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !fast {
        return act(conv2d_reference(x, weight, bias, cfg)?);
    }
    let op = if relu { "conv2d_act" } else { "conv2d" };
    let Plan2d {
        b,
        c,
        h,
        w,
        c_out,
        kh,
        kw,
        ..
    } = plan2d(x, weight, cfg)?;
    let (ho, wo) = (cfg.h.out_len(op, h, kh)?, cfg.w.out_len(op, w, kw)?);
    let unit = |a: Axis1| a.stride == 1 && a.dilation == 1;
    if kn2row_enabled()
        && cfg.groups == 1
        && unit(cfg.h)
        && unit(cfg.w)
        && c_out <= kn2row::MAX_OUT
        && kh * kw >= kn2row::MIN_TAPS
    {
        let y = x.contiguous()?.apply_op2(
            &weight.contiguous()?,
            Kn2rowOp {
                ph: cfg.h.padding,
                pw: cfg.w.padding,
            },
        )?;
        return act(add_bias(y, bias, c_out, op)?);
    }
    let geom = Geometry {
        b,
        c,
        h,
        w,
        kh,
        kw,
        ah: cfg.h,
        aw: cfg.w,
        ho,
        wo,
    };
    let cv = ConvGeom {
        g: geom,
        c_out,
        groups: cfg.groups,
    };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    if bias.is_none() && !relu {
        let conv = Conv2dOp {
            cv,
            pass: Pass::Forward,
        };
        return Ok(x.apply_op2(&weight, conv)?); // (B, C_out, H_out, W_out)
    }
    let bias = bias_or_zeros(bias, c_out, &x, op)?;
    Ok(x.apply_op3(&weight, &bias, Conv2dActOp { cv, relu })?)
}

/// 2-D convolution, reference implementation (`index_select` gather; any device and dtype).
///
/// # Shapes
/// As [`conv2d`].
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    let op = "conv2d";
    let Plan2d {
        b,
        c,
        h,
        w,
        c_out,
        w_in,
        kh,
        kw,
    } = plan2d(x, weight, cfg)?;
    let (h_out, w_out) = (cfg.h.out_len(op, h, kh)?, cfg.w.out_len(op, w, kw)?);
    let mut xp = x.clone();
    if cfg.h.padding > 0 {
        xp = xp.pad_with_zeros(2, cfg.h.padding, cfg.h.padding)?;
    }
    if cfg.w.padding > 0 {
        xp = xp.pad_with_zeros(3, cfg.w.padding, cfg.w.padding)?;
    }
    let wp = w + 2 * cfg.w.padding;
    let hp = h + 2 * cfg.h.padding;
    let mut idx = Vec::with_capacity(h_out * w_out * kh * kw);
    for oh in 0..h_out {
        for ow in 0..w_out {
            for i in 0..kh {
                for j in 0..kw {
                    let r = oh * cfg.h.stride + i * cfg.h.dilation;
                    let col = ow * cfg.w.stride + j * cfg.w.dilation;
                    idx.push((r * wp + col) as u32);
                }
            }
        }
    }
    let flat = xp.reshape((b, c, hp * wp))?;
    let cols = flat
        .index_select(&index_tensor(idx, x.device())?, 2)?
        .reshape((b, c, h_out * w_out, kh * kw))?;
    let weight = weight.reshape((c_out, w_in, kh * kw))?;
    let y = grouped_matmul(&cols, &weight, cfg.groups)?.reshape((b, c_out, h_out, w_out))?;
    add_bias(y, bias, c_out, op)
}

/// Checked sizes of a 2-D convolution.
struct Plan2d {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    c_out: usize,
    w_in: usize,
    kh: usize,
    kw: usize,
}

fn plan2d(x: &Tensor, weight: &Tensor, cfg: Conv2dConfig) -> Result<Plan2d> {
    let op = "conv2d";
    let (b, c, h, w) = x
        .dims4()
        .map_err(|_| shape(op, "input (B, C, H, W)", x.dims()))?;
    let (c_out, w_in, kh, kw) = weight
        .dims4()
        .map_err(|_| shape(op, "weight (C_out, C_in/groups, K_h, K_w)", weight.dims()))?;
    check_groups(op, c, c_out, w_in, cfg.groups)?;
    Ok(Plan2d {
        b,
        c,
        h,
        w,
        c_out,
        w_in,
        kh,
        kw,
    })
}

/// `x` `(B, C, L)` and `weight` `(C_out, C_in/groups, K)` by rank, or a shape error.
fn check_ranks_1d(x: &Tensor, weight: &Tensor) -> Result<()> {
    let op = "conv1d";
    x.dims3()
        .map_err(|_| shape(op, "input (B, C, L)", x.dims()))?;
    weight
        .dims3()
        .map_err(|_| shape(op, "weight (C_out, C_in/groups, K)", weight.dims()))?;
    Ok(())
}

/// The `(C_out,)` bias in `x`'s dtype, contiguous, or zeros when there is none (the epilogue
/// ops always take one); a shape error naming `op` for any other length.
fn bias_or_zeros(
    bias: Option<&Tensor>,
    c_out: usize,
    x: &Tensor,
    op: &'static str,
) -> Result<Tensor> {
    Ok(match bias {
        Some(b) if b.dims() == [c_out] => b.to_dtype(x.dtype())?.contiguous()?,
        Some(b) => return Err(shape(op, format!("bias ({c_out},)"), b.dims())),
        None => Tensor::zeros(c_out, x.dtype(), x.device())?,
    })
}

/// Adds a `(C_out,)` bias to a `(B, C_out, H, W)` output.
fn add_bias(y: Tensor, bias: Option<&Tensor>, c_out: usize, op: &'static str) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(bias) if bias.dims() == [c_out] => crate::ops::add_channel_bias(&y, bias),
        Some(bias) => Err(shape(op, format!("bias ({c_out},)"), bias.dims())),
    }
}
