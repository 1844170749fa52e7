//! 2-D convolution with few output channels and a large kernel (stride 1, dilation 1, one
//! group) as one wide product followed by shifted additions ("kn2row": Vasudevan, Anderson and
//! Gregg, "Parallel multi channel convolution using general matrix multiplication", ASAP 2017).
//!
//! For an image `X (C_in, H·W)` the product `Z = W_r X` with the weight rearranged as
//! `W_r (C_out·K_h·K_w, C_in)` gives, for every output channel and tap, the tap's contribution
//! at every input pixel; the output is the sum of the `K_h·K_w` planes of a channel, each shifted
//! by its tap offset:
//!
//! ```text
//! Y[o](y, x) = Σ_{i,j} Z[o, i, j](y + i - p_h, x + j - p_w)        (out-of-range terms are 0)
//! ```
//!
//! The im2col path computes the same with an input copy `K_h·K_w` times larger than the image and
//! a product with only `C_out` rows (two for a building / background score layer), which `gemm`
//! runs in its narrowest kernel; here the product has `C_out·K_h·K_w` rows and reads the image in
//! place. Backward: `dX = W_rᵀ dZ` and `dW_r = Σ_images dZ Xᵀ`, with `dZ[o, i, j]` the output
//! gradient shifted back (`dZ[o, i, j](y', x') = dY[o](y' - i + p_h, x' - j + p_w)`).
//!
//! Used by [`conv2d`](crate::ops::conv2d) on CPU f32/f64 for at most [`MAX_OUT`] output channels
//! and kernels of at least [`MIN_TAPS`] taps (the FCN's 9x9 score layer); per image one task,
//! weight-gradient partials per image summed in image order.

use candle_core::{Layout, Shape};
use rayon::prelude::*;

use crate::ops::cpu::{sum_in_order, zeros_par, Float, XwKernel};
use crate::ops::gemm::{matmul, Mat};

/// Most output channels this path takes.
pub(crate) const MAX_OUT: usize = 4;
/// Fewest kernel taps this path takes.
pub(crate) const MIN_TAPS: usize = 9;

/// `(x (B, C_in, H, W), w (C_out, C_in, K_h, K_w)) -> (B, C_out, H_o, W_o)`, stride 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kn2rowOp {
    pub ph: usize,
    pub pw: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn taps(&self) -> usize {
        self.co * self.kh * self.kw
    }
}

impl XwKernel for Kn2rowOp {
    const NAME: &'static str = "conv2d (kn2row)";
    type Dims = Dims;

    fn dims(&self, lx: &Layout, lw: &Layout) -> candle_core::Result<Dims> {
        let (b, c, h, w) = lx.shape().dims4()?;
        let (co, wc, kh, kw) = lw.shape().dims4()?;
        if wc != c || h + 2 * self.ph < kh || w + 2 * self.pw < kw || kh == 0 || kw == 0 {
            return Err(candle_core::Error::Msg(format!(
                "conv2d (kn2row): x (B, C, H, W) and w (C_out, C, K_h, K_w) with the padded \
                 image at least the kernel expected, got {:?} and {:?} (padding {}, {})",
                lx.shape(),
                lw.shape(),
                self.ph,
                self.pw
            )));
        }
        Ok(Dims {
            b,
            c,
            h,
            w,
            co,
            kh,
            kw,
            ho: h + 2 * self.ph - kh + 1,
            wo: w + 2 * self.pw - kw + 1,
        })
    }

    fn out_shape(d: &Dims) -> Shape {
        Shape::from((d.b, d.co, d.ho, d.wo))
    }

    fn forward<T: Float>(&self, x: &[T], w: &[T], d: Dims) -> Result<Vec<T>, String> {
        let (hw, ohw) = (d.h * d.w, d.ho * d.wo);
        let mut y = zeros_par(d.b * d.co * ohw);
        if y.is_empty() {
            return Ok(y);
        }
        // W_r: row (o, i, j) holds w[o, :, i, j]
        let packed = rearranged(w, d);
        let wr = Mat::row_major(&packed, d.taps(), d.c);
        y.par_chunks_mut(d.co * ohw).enumerate().try_for_each_init(
            Vec::<T>::new,
            |z, (bi, yb)| -> Result<(), String> {
                z.resize(d.taps() * hw, T::ZERO);
                let xb = Mat::row_major(&x[bi * d.c * hw..(bi + 1) * d.c * hw], d.c, hw);
                matmul(z, hw, wr, xb, false, 1)?;
                for o in 0..d.co {
                    let yo = &mut yb[o * ohw..(o + 1) * ohw];
                    for i in 0..d.kh {
                        let (y0, y1) = valid(d.ho, d.h, i, self.ph);
                        for j in 0..d.kw {
                            let (x0, x1) = valid(d.wo, d.w, j, self.pw);
                            let zp = &z[((o * d.kh + i) * d.kw + j) * hw..][..hw];
                            for yy in y0..y1 {
                                let src = (yy + i - self.ph) * d.w + (x0 + j - self.pw);
                                let dst = &mut yo[yy * d.wo + x0..yy * d.wo + x1];
                                for (a, &b) in dst.iter_mut().zip(&zp[src..src + (x1 - x0)]) {
                                    *a += b;
                                }
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(y)
    }

    /// `(dx, dw)`.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        d: Dims,
        _need_dx: bool, // dX and dW share the shifted gradient planes: both are computed
    ) -> Result<(Option<Vec<T>>, Vec<T>), String> {
        let (hw, ohw, taps) = (d.h * d.w, d.ho * d.wo, d.kh * d.kw);
        let mut dx = zeros_par(d.b * d.c * hw);
        if d.b == 0 || d.c == 0 || d.co == 0 {
            return Ok((Some(dx), vec![T::ZERO; w.len()]));
        }
        let wr = rearranged(w, d);
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(d.c * hw)
            .enumerate()
            .map(|(bi, dxb)| -> Result<Vec<T>, String> {
                // dZ: every tap plane is dY shifted back to input coordinates
                let mut dz = vec![T::ZERO; d.taps() * hw];
                let dyb = &dy[bi * d.co * ohw..(bi + 1) * d.co * ohw];
                for o in 0..d.co {
                    for i in 0..d.kh {
                        let (y0, y1) = valid(d.ho, d.h, i, self.ph);
                        for j in 0..d.kw {
                            let (x0, x1) = valid(d.wo, d.w, j, self.pw);
                            let zp = &mut dz[((o * d.kh + i) * d.kw + j) * hw..][..hw];
                            for yy in y0..y1 {
                                let dst = (yy + i - self.ph) * d.w + (x0 + j - self.pw);
                                zp[dst..dst + (x1 - x0)]
                                    .copy_from_slice(&dyb[o * ohw + yy * d.wo + x0..][..x1 - x0]);
                            }
                        }
                    }
                }
                let dzm = Mat::row_major(&dz, d.taps(), hw);
                matmul(
                    dxb,
                    hw,
                    Mat::row_major(&wr, d.taps(), d.c).t(),
                    dzm,
                    false,
                    1,
                )?;
                let mut dwr = vec![T::ZERO; d.taps() * d.c];
                let xb = Mat::row_major(&x[bi * d.c * hw..(bi + 1) * d.c * hw], d.c, hw);
                matmul(&mut dwr, d.c, dzm, xb.t(), false, 1)?;
                Ok(dwr)
            })
            .collect::<Result<_, String>>()?;
        let dwr = sum_in_order(partials, d.taps() * d.c);
        let mut dw = vec![T::ZERO; w.len()];
        for o in 0..d.co {
            for c in 0..d.c {
                for t in 0..taps {
                    dw[(o * d.c + c) * taps + t] = dwr[(o * taps + t) * d.c + c];
                }
            }
        }
        Ok((Some(dx), dw))
    }
}

/// Output rows `y` whose input row `y + i - p` is inside `0..len`, as `(first, end)`, for output
/// length `out`.
fn valid(out: usize, len: usize, tap: usize, pad: usize) -> (usize, usize) {
    let first = pad.saturating_sub(tap).min(out);
    let end = (len + pad).saturating_sub(tap).min(out).max(first);
    (first, end)
}

/// The weight `(C_out, C, K_h, K_w)` as `W_r (C_out·K_h·K_w, C)`.
fn rearranged<T: Float>(w: &[T], d: Dims) -> Vec<T> {
    let taps = d.kh * d.kw;
    let mut out = vec![T::ZERO; w.len()];
    for o in 0..d.co {
        for c in 0..d.c {
            for t in 0..taps {
                out[(o * taps + t) * d.c + c] = w[(o * d.c + c) * taps + t];
            }
        }
    }
    out
}

crate::ops::cpu::xw_custom_op!(Kn2rowOp, "canopy-conv2d-kn2row");
