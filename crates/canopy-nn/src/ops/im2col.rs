//! The im2col / col2im kernels behind the fast convolution path, as candle custom ops whose
//! backward passes are each other (col2im is the adjoint of im2col).
//!
//! `im2col` turns `(B, C, H, W)` into `(B, C·K_h·K_w, H_out·W_out)` (zero padding, stride,
//! dilation per axis); a convolution is then one matrix product per group with candle's
//! (gemm-backed) matmul, and its input gradient is `col2im` of `Wᵀ · dY`. Both kernels run on
//! the rayon pool, one `(image, channel)` plane per task, and write disjoint memory.
//! CPU only, f32 and f64: callers fall back to the reference gather on other devices and types.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::conv::Axis1;

/// Geometry shared by the two kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub ah: Axis1,
    pub aw: Axis1,
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    fn rows_per_channel(&self) -> usize {
        self.kh * self.kw
    }

    fn n(&self) -> usize {
        self.ho * self.wo
    }

    /// Input position for output index `o` and kernel tap `t` along an axis, if inside.
    #[inline]
    fn src(o: usize, t: usize, a: Axis1, len: usize) -> Option<usize> {
        let p = (o * a.stride + t * a.dilation) as isize - a.padding as isize;
        (p >= 0 && (p as usize) < len).then_some(p as usize)
    }

    fn im2col<T: Copy + Default + Send + Sync>(&self, x: &[T]) -> Vec<T> {
        let (n, kk) = (self.n(), self.rows_per_channel());
        let mut out = vec![T::default(); self.b * self.c * kk * n];
        out.par_chunks_mut(kk * n)
            .enumerate()
            .for_each(|(bc, dst)| {
                let plane = &x[bc * self.h * self.w..(bc + 1) * self.h * self.w];
                for i in 0..self.kh {
                    for j in 0..self.kw {
                        let row = &mut dst[(i * self.kw + j) * n..(i * self.kw + j + 1) * n];
                        for oy in 0..self.ho {
                            let dst_row = &mut row[oy * self.wo..(oy + 1) * self.wo];
                            let Some(y) = Self::src(oy, i, self.ah, self.h) else {
                                continue;
                            };
                            let src_row = &plane[y * self.w..(y + 1) * self.w];
                            if self.aw.stride == 1 && self.aw.dilation == 1 {
                                // contiguous run: copy the valid span in one go
                                let start = j as isize - self.aw.padding as isize;
                                let lo = (-start).max(0) as usize;
                                let hi = ((self.w as isize - start).min(self.wo as isize)).max(0)
                                    as usize;
                                if lo < hi {
                                    let s0 = (start + lo as isize) as usize;
                                    dst_row[lo..hi].copy_from_slice(&src_row[s0..s0 + (hi - lo)]);
                                }
                            } else {
                                for (ox, d) in dst_row.iter_mut().enumerate() {
                                    if let Some(xx) = Self::src(ox, j, self.aw, self.w) {
                                        *d = src_row[xx];
                                    }
                                }
                            }
                        }
                    }
                }
            });
        out
    }

    fn col2im<T: Copy + Default + Send + Sync + std::ops::AddAssign>(&self, cols: &[T]) -> Vec<T> {
        let (n, kk) = (self.n(), self.rows_per_channel());
        let mut out = vec![T::default(); self.b * self.c * self.h * self.w];
        out.par_chunks_mut(self.h * self.w)
            .enumerate()
            .for_each(|(bc, plane)| {
                let src = &cols[bc * kk * n..(bc + 1) * kk * n];
                for i in 0..self.kh {
                    for j in 0..self.kw {
                        let row = &src[(i * self.kw + j) * n..(i * self.kw + j + 1) * n];
                        for oy in 0..self.ho {
                            let Some(y) = Self::src(oy, i, self.ah, self.h) else {
                                continue;
                            };
                            let dst_row = &mut plane[y * self.w..(y + 1) * self.w];
                            let src_row = &row[oy * self.wo..(oy + 1) * self.wo];
                            for (ox, &v) in src_row.iter().enumerate() {
                                if let Some(xx) = Self::src(ox, j, self.aw, self.w) {
                                    dst_row[xx] += v;
                                }
                            }
                        }
                    }
                }
            });
        out
    }
}

fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

/// `(B, C, H, W)` -> `(B, C·K_h·K_w, H_out·W_out)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Im2Col(pub Geometry);

/// `(B, C·K_h·K_w, H_out·W_out)` -> `(B, C, H, W)`, summing overlapping taps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col2Im(pub Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "canopy-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let shape = Shape::from((g.b, g.c * g.rows_per_channel(), g.n()));
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(g.im2col(contiguous::<f32>(s, l, "im2col")?)),
            CpuStorage::F64(_) => CpuStorage::F64(g.im2col(contiguous::<f64>(s, l, "im2col")?)),
            _ => return Err(candle_core::Error::Msg("im2col: only f32 and f64".into())),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "canopy-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let shape = Shape::from((g.b, g.c, g.h, g.w));
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(g.col2im(contiguous::<f32>(s, l, "col2im")?)),
            CpuStorage::F64(_) => CpuStorage::F64(g.col2im(contiguous::<f64>(s, l, "col2im")?)),
            _ => return Err(candle_core::Error::Msg("col2im: only f32 and f64".into())),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0))?))
    }
}
