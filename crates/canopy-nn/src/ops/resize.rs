//! Resizing as products with small interpolation matrices: bilinear and nearest upsampling to
//! any output size, and adaptive average pooling. `out = R_h · x · R_wᵀ` per channel, so the
//! backward pass is two matrix products — candle has no backward for
//! `upsample_bilinear2d` at all and none for nearest upsampling by non-integer factors.
//!
//! Source-index rules follow PyTorch (`aten/src/ATen/native/UpSample.h`) when an output *size*
//! is given: bilinear with `align_corners=False` samples `(dst + 0.5) * in/out - 0.5` clamped at
//! 0, with `align_corners=True` samples `dst * (in-1)/(out-1)`; nearest takes
//! `floor(dst * in/out)`; adaptive pooling averages `[floor(i*in/out), ceil((i+1)*in/out))`.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};

use crate::ops::cpu::{par_build, par_build_appended, slice, Float};

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
    let fast = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if fast && out_h % h == 0 && out_w % w == 0 {
        // integer factors: every value copied into its block, no interpolation matrices
        let op = NearestRepeat {
            fh: out_h / h,
            fw: out_w / w,
            backward: false,
        };
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    apply(
        x,
        nearest_weights(h, out_h),
        nearest_weights(w, out_w),
        out_h,
        out_w,
    )
}

/// Nearest upsampling by integer factors `(f_h, f_w)` on the CPU: forward copies each value
/// into its `f_h x f_w` block of the output, backward (`backward: true`, applied to the output
/// gradient) sums each block. The same values as the interpolation-matrix products of
/// [`upsample_nearest2d`]'s general path, with a copy instead of two dense products (a U-Net
/// decoder's x2 upsampling of a 128 x 128 map costs 384 multiply-adds per output value there).
#[derive(Debug, Clone, Copy)]
struct NearestRepeat {
    fh: usize,
    fw: usize,
    backward: bool,
}

/// Values per parallel task at least.
const REPEAT_TASK: usize = 1 << 15;

impl NearestRepeat {
    /// `(B, C, H, W)` input plane size and output plane size of the forward pass, from the
    /// operand's dims (the output gradient's when `backward`).
    fn planes(&self, dims: &[usize]) -> candle_core::Result<(usize, usize, usize, usize)> {
        let [_, _, a, b] = dims else {
            return Err(candle_core::Error::Msg(format!(
                "upsample_nearest2d: (B, C, H, W) expected, got {dims:?}"
            )));
        };
        Ok(if self.backward {
            (a / self.fh, b / self.fw, *a, *b)
        } else {
            (*a, *b, a * self.fh, b * self.fw)
        })
    }

    fn run<T: Float>(&self, x: &[T], (h, w, oh, ow): (usize, usize, usize, usize)) -> Vec<T> {
        let (fh, fw) = (self.fh, self.fw);
        let (src_plane, dst_plane) = if self.backward {
            (oh * ow, h * w)
        } else {
            (h * w, oh * ow)
        };
        let planes = x.len() / src_plane.max(1);
        let per = (REPEAT_TASK / dst_plane.max(1)).max(1);
        par_build(
            planes * dst_plane,
            per * dst_plane,
            |task, out: &mut [T]| {
                for (k, dst) in out.chunks_mut(dst_plane).enumerate() {
                    let p = task * per + k;
                    let src = &x[p * src_plane..(p + 1) * src_plane];
                    if self.backward {
                        // dst (h, w) = block sums of src (oh, ow)
                        for (r, row) in src.chunks_exact(ow).enumerate() {
                            let d = &mut dst[(r / fh) * w..(r / fh + 1) * w];
                            for (o, block) in d.iter_mut().zip(row.chunks_exact(fw)) {
                                for &v in block {
                                    *o += v;
                                }
                            }
                        }
                    } else {
                        for (r, row) in src.chunks_exact(w).enumerate() {
                            let rows = &mut dst[r * fh * ow..(r + 1) * fh * ow];
                            let (first, rest) = rows.split_at_mut(ow);
                            for (block, &v) in first.chunks_exact_mut(fw).zip(row) {
                                block.fill(v);
                            }
                            for copy in rest.chunks_exact_mut(ow) {
                                copy.copy_from_slice(first);
                            }
                        }
                    }
                }
            },
        )
    }
}

impl CustomOp1 for NearestRepeat {
    fn name(&self) -> &'static str {
        if self.backward {
            "canopy-upsample-nearest-backward"
        } else {
            "canopy-upsample-nearest"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        let sizes = self.planes(dims)?;
        let (h, w, oh, ow) = sizes;
        let out_dims = if self.backward { (h, w) } else { (oh, ow) };
        let shape = Shape::from((dims[0], dims[1], out_dims.0, out_dims.1));
        let name = "upsample_nearest2d";
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(slice::<f32>(s, l, name)?, sizes)),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(slice::<f64>(s, l, name)?, sizes)),
            _ => return Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        if self.backward {
            return Err(candle_core::Error::Msg(
                "upsample_nearest2d: second derivatives are not supported".into(),
            ));
        }
        let op = NearestRepeat {
            backward: true,
            ..*self
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
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

/// Nearest-neighbour resampling along time of a time-major series into channels-first layout,
/// in one pass: `y[b, c, d] = x[b, floor(d · T / L), c]`, i.e. PyTorch's
/// `F.interpolate(x.transpose(1, 2), size=L)` (mode `"nearest"`), how MS-ResNet stretches its
/// input to 512 steps. Composed from candle ops the same takes an `index_select` over time, a
/// transposed view and candle's single-threaded strided copy of the whole stretched series
/// (about 6 % of an MS-ResNet inference batch); here each sequence is read once from cache and
/// its channel rows written whole, in parallel over the batch. The backward pass sums the
/// gradient of every output step into the input step it copies.
///
/// # Shapes
/// `x`: `(B, T, C)` -> `(B, C, L)`.
///
/// # Errors
/// Shape errors; `T` or `L` zero; dtypes other than f32/f64. On devices other than the CPU it
/// runs the composed candle ops instead.
pub fn nearest_resample_to_channels_first(x: &Tensor, out_len: usize) -> Result<Tensor> {
    let op = "nearest_resample_to_channels_first";
    let (_, t, _) = x
        .dims3()
        .map_err(|_| shape(op, "input (B, T, C)", x.dims()))?;
    if t == 0 || out_len == 0 {
        return Err(invalid(
            op,
            format!("T ({t}) and L ({out_len}) must be positive"),
        ));
    }
    if !x.device().is_cpu() {
        let idx: Vec<u32> = nearest_sources(t, out_len).map(|s| s as u32).collect();
        let idx = Tensor::from_vec(idx, out_len, x.device())?;
        return Ok(x.index_select(&idx, 1)?.transpose(1, 2)?.contiguous()?);
    }
    Ok(x.contiguous()?
        .apply_op1(NearestToChannelsFirst { out_len })?)
}

/// The input step of every output step of a nearest resampling from `t` to `l` steps
/// (PyTorch's `floor(d · t / l)` for a given output size).
fn nearest_sources(t: usize, l: usize) -> impl Iterator<Item = usize> {
    (0..l).map(move |d| d * t / l)
}

/// [`nearest_resample_to_channels_first`] as a candle op.
#[derive(Debug, Clone, Copy)]
struct NearestToChannelsFirst {
    out_len: usize,
}

/// `(B, T, C)` -> `(B, C, L)`, one task per block of sequences.
fn nearest_forward<T: Float>(x: &[T], (t, c): (usize, usize), l: usize) -> Vec<T> {
    let src: Vec<usize> = nearest_sources(t, l).collect();
    let per_seq = c * l;
    // every value is written: appended, not zero-filled first
    par_build_appended(x.len() / (t * c).max(1) * per_seq, per_seq, |b, yb| {
        let xb = &x[b * t * c..(b + 1) * t * c];
        for ch in 0..c {
            yb.extend(src.iter().map(|&s| xb[s * c + ch]));
        }
    })
}

/// The gradient of [`nearest_forward`]: `dx[b, s, c] = Σ_{d: src(d) = s} g[b, c, d]`, summed
/// in output order.
fn nearest_backward<T: Float>(g: &[T], (t, c): (usize, usize), l: usize) -> Vec<T> {
    let src: Vec<usize> = nearest_sources(t, l).collect();
    par_build(
        g.len() / (c * l).max(1) * t * c,
        t * c,
        |b, dxb: &mut [T]| {
            let gb = &g[b * c * l..(b + 1) * c * l];
            for (ch, row) in gb.chunks(l).enumerate() {
                for (&v, &s) in row.iter().zip(&src) {
                    dxb[s * c + ch] += v;
                }
            }
        },
    )
}

impl CustomOp1 for NearestToChannelsFirst {
    fn name(&self) -> &'static str {
        "canopy-nearest-to-channels-first"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = "nearest_resample_to_channels_first";
        let (b, t, c) = l.shape().dims3()?;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(nearest_forward(
                slice::<f32>(s, l, name)?,
                (t, c),
                self.out_len,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(nearest_forward(
                slice::<f64>(s, l, name)?,
                (t, c),
                self.out_len,
            )),
            _ => return Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
        };
        Ok((out, Shape::from((b, c, self.out_len))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let name = "nearest_resample_to_channels_first backward";
        if !x.track_op() {
            return Ok(None);
        }
        let (_, t, c) = x.dims3()?;
        let grad = grad.contiguous()?;
        let (sg, lg) = grad.storage_and_layout();
        let Storage::Cpu(sg) = &*sg else {
            return Err(candle_core::Error::Msg(format!("{name}: CPU tensors only")));
        };
        let dx = match sg {
            CpuStorage::F32(_) => Tensor::from_vec(
                nearest_backward(slice::<f32>(sg, lg, name)?, (t, c), self.out_len),
                x.shape(),
                x.device(),
            )?,
            CpuStorage::F64(_) => Tensor::from_vec(
                nearest_backward(slice::<f64>(sg, lg, name)?, (t, c), self.out_len),
                x.shape(),
                x.device(),
            )?,
            _ => return Err(candle_core::Error::Msg(format!("{name}: f32 or f64 only"))),
        };
        Ok(Some(dx))
    }
}
