//! Block-wise im2col gather and its adjoint (col2im scatter), the data movement behind the CPU
//! convolution kernels of [`conv_cpu`](crate::ops::conv_cpu).
//!
//! A block is a range of flattened output positions `n0 .. n0 + len` (over `H_out · W_out`) and a
//! range of input channels. Gathering it gives a `(channels · K_h · K_w, len)` row-major matrix,
//! small enough to stay in cache while the matrix product consumes it; the whole-image column
//! matrix (`C · K_h · K_w` times `H_out · W_out`, 150 MB for one 64-channel 256² image with a
//! 3x3 kernel) is never materialised.

use std::ops::AddAssign;

use crate::ops::conv::Axis1;

/// Sizes of one convolution as the kernels see it (zero padding, stride and dilation per axis).
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

/// Input index for output index `o` and kernel tap `t` along one axis, if inside.
#[inline]
fn src(o: usize, t: usize, a: Axis1, len: usize) -> Option<usize> {
    let p = (o * a.stride + t * a.dilation) as isize - a.padding as isize;
    (p >= 0 && (p as usize) < len).then_some(p as usize)
}

/// For tap `t` of an axis: the output range `[lo, hi)` that reads inside the input (output `o`
/// reads input `o·stride + t·dilation - padding`), and the input index of output `lo`.
#[inline]
fn tap_span(t: usize, a: Axis1, len_in: usize, len_out: usize) -> (usize, usize, usize) {
    let s = a.stride.max(1) as isize;
    let start = (t * a.dilation) as isize - a.padding as isize;
    // first o with start + o·s >= 0, and one past the last with start + o·s < len_in
    let lo = if start >= 0 { 0 } else { (-start + s - 1) / s };
    let last = len_in as isize - 1 - start;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let hi = hi.min(len_out as isize).max(0) as usize;
    let lo = (lo as usize).min(hi);
    (lo, hi, (start + lo as isize * s).max(0) as usize)
}

/// `dst[k] = src[k · step]` for every `k` of `dst` (`src` must reach that far). Stride 1 is a
/// copy; strides 2 (the down-sampling convolutions of a ResNet) and 4 (the FCN's first layer)
/// take the first entry of each group, which vectorises where a `step_by` loop stays scalar;
/// other strides one value at a time, without a bounds test per value.
#[inline]
pub(crate) fn copy_strided<T: Copy>(dst: &mut [T], src: &[T], step: usize) {
    match step {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => copy_every::<T, 2>(dst, src),
        4 => copy_every::<T, 4>(dst, src),
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(step)) {
                *d = v;
            }
        }
    }
}

/// [`copy_strided`] for a stride known at compile time: the first entry of each group of `S`
/// (the last value on its own, as its group may end past `src`).
#[inline]
fn copy_every<T: Copy, const S: usize>(dst: &mut [T], src: &[T]) {
    let Some((last, head)) = dst.split_last_mut() else {
        return;
    };
    for (d, group) in head.iter_mut().zip(src.chunks_exact(S)) {
        *d = group[0];
    }
    *last = src[S * head.len()];
}

/// `dst[k · step] += vals[k]` for every `k` of `vals`: the adjoint of [`copy_strided`].
#[inline]
fn add_strided<T: Copy + AddAssign>(dst: &mut [T], vals: &[T], step: usize) {
    match step {
        1 => {
            for (d, &v) in dst.iter_mut().zip(vals) {
                *d += v;
            }
        }
        2 => {
            let (last, head) = match vals.split_last() {
                Some(split) => split,
                None => return,
            };
            for (pair, &v) in dst.chunks_exact_mut(2).zip(head) {
                pair[0] += v;
            }
            dst[2 * head.len()] += *last;
        }
        _ => {
            for (d, &v) in dst.iter_mut().step_by(step).zip(vals) {
                *d += v;
            }
        }
    }
}

impl Geometry {
    /// Kernel taps per channel.
    pub fn kk(&self) -> usize {
        self.kh * self.kw
    }

    /// Output positions per image.
    pub fn n(&self) -> usize {
        self.ho * self.wo
    }

    /// Walks the output positions `n0 .. n0 + len` as runs within one output row:
    /// `f(oy, ox0, run_len, offset_in_block)`.
    #[inline]
    fn runs(&self, n0: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let mut done = 0;
        while done < len {
            let n = n0 + done;
            let (oy, ox) = (n / self.wo, n % self.wo);
            let run = (self.wo - ox).min(len - done);
            f(oy, ox, run, done);
            done += run;
        }
    }

    /// Gathers channels `c0 .. c0 + cn` of one image `img` (`C x H x W`) at output positions
    /// `n0 .. n0 + len` into `dst` (`cn · K_h · K_w` rows of `len`, row-major). Every element of
    /// `dst[.. cn·kk·len]` is written (zeros where the kernel reads padding).
    pub fn gather<T: Copy + Default>(
        &self,
        img: &[T],
        c0: usize,
        cn: usize,
        n0: usize,
        len: usize,
        dst: &mut [T],
    ) {
        let plane_len = self.h * self.w;
        let step = self.aw.stride;
        for ci in 0..cn {
            let plane = &img[(c0 + ci) * plane_len..(c0 + ci + 1) * plane_len];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row0 = (ci * self.kk() + i * self.kw + j) * len;
                    let row = &mut dst[row0..row0 + len];
                    let span = tap_span(j, self.aw, self.w, self.wo);
                    self.runs(n0, len, |oy, ox0, run, off| {
                        let out = &mut row[off..off + run];
                        let Some(y) = src(oy, i, self.ah, self.h) else {
                            out.fill(T::default());
                            return;
                        };
                        let src_row = &plane[y * self.w..(y + 1) * self.w];
                        let (lo, hi, s0) = span;
                        // clip the valid span [lo, hi) to this run [ox0, ox0 + run)
                        let a = lo.max(ox0).min(ox0 + run);
                        let b = hi.min(ox0 + run).max(a);
                        out[..a - ox0].fill(T::default());
                        if b > a {
                            let first = s0 + (a - lo) * step;
                            copy_strided(&mut out[a - ox0..b - ox0], &src_row[first..], step);
                        }
                        out[b - ox0..].fill(T::default());
                    });
                }
            }
        }
    }

    /// The adjoint of [`gather`](Self::gather): adds `cols` (`cn · K_h · K_w` rows of `len`)
    /// back into channels `c0 .. c0 + cn` of `img`, summing overlapping taps.
    pub fn scatter_add<T: Copy + AddAssign>(
        &self,
        cols: &[T],
        c0: usize,
        cn: usize,
        n0: usize,
        len: usize,
        img: &mut [T],
    ) {
        let plane_len = self.h * self.w;
        let step = self.aw.stride;
        for ci in 0..cn {
            let plane = &mut img[(c0 + ci) * plane_len..(c0 + ci + 1) * plane_len];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row0 = (ci * self.kk() + i * self.kw + j) * len;
                    let row = &cols[row0..row0 + len];
                    let (lo, hi, s0) = tap_span(j, self.aw, self.w, self.wo);
                    self.runs(n0, len, |oy, ox0, run, off| {
                        let Some(y) = src(oy, i, self.ah, self.h) else {
                            return;
                        };
                        let dst_row = &mut plane[y * self.w..(y + 1) * self.w];
                        // only the outputs of the valid span read the input
                        let a = lo.max(ox0).min(ox0 + run);
                        let b = hi.min(ox0 + run).max(a);
                        if b > a {
                            let first = s0 + (a - lo) * step;
                            let vals = &row[off + a - ox0..off + b - ox0];
                            add_strided(&mut dst_row[first..], vals, step);
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(h: usize, w: usize, k: usize, ah: Axis1, aw: Axis1) -> Geometry {
        let ho = (h + 2 * ah.padding - ah.dilation * (k - 1) - 1) / ah.stride + 1;
        let wo = (w + 2 * aw.padding - aw.dilation * (k - 1) - 1) / aw.stride + 1;
        Geometry {
            b: 1,
            c: 2,
            h,
            w,
            kh: k,
            kw: k,
            ah,
            aw,
            ho,
            wo,
        }
    }

    /// Direct definition: column (c, i, j) at output n reads x[c, oy*s + i*d - p, ...].
    fn naive(g: &Geometry, img: &[f64]) -> Vec<f64> {
        let n = g.n();
        let mut out = vec![0.0; g.c * g.kk() * n];
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    for p in 0..n {
                        let (oy, ox) = (p / g.wo, p % g.wo);
                        if let (Some(y), Some(x)) = (src(oy, i, g.ah, g.h), src(ox, j, g.aw, g.w)) {
                            out[((c * g.kh + i) * g.kw + j) * n + p] = img[(c * g.h + y) * g.w + x];
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocks_gather_like_the_definition_and_scatter_is_the_adjoint() {
        let axes = [
            Axis1 {
                stride: 1,
                padding: 1,
                dilation: 1,
            },
            Axis1 {
                stride: 2,
                padding: 2,
                dilation: 1,
            },
            Axis1 {
                stride: 1,
                padding: 3,
                dilation: 2,
            },
            Axis1 {
                stride: 1,
                padding: 0,
                dilation: 1,
            },
            // a ResNet's down-sampling convolution, and the FCN's stride 4
            Axis1 {
                stride: 2,
                padding: 1,
                dilation: 1,
            },
            Axis1 {
                stride: 4,
                padding: 1,
                dilation: 1,
            },
        ];
        for (ah, aw, (h, w)) in axes
            .iter()
            .flat_map(|&ah| axes.iter().map(move |&aw| (ah, aw)))
            .flat_map(|(ah, aw)| [(7, 9), (8, 10)].map(|hw| (ah, aw, hw)))
        {
            {
                let g = geom(h, w, 3, ah, aw);
                let img: Vec<f64> = (0..g.c * g.h * g.w).map(|v| v as f64 + 1.0).collect();
                let want = naive(&g, &img);
                let n = g.n();
                // odd block length so blocks straddle output rows
                let blk = 5;
                let mut got = vec![f64::NAN; g.c * g.kk() * n];
                let mut buf = vec![f64::NAN; g.c * g.kk() * blk];
                let mut n0 = 0;
                while n0 < n {
                    let len = blk.min(n - n0);
                    g.gather(&img, 0, g.c, n0, len, &mut buf);
                    for r in 0..g.c * g.kk() {
                        got[r * n + n0..r * n + n0 + len]
                            .copy_from_slice(&buf[r * len..(r + 1) * len]);
                    }
                    n0 += len;
                }
                assert_eq!(got, want, "{ah:?} {aw:?}");
                // adjoint: <gather(x), c> == <x, scatter(c)>
                let cols: Vec<f64> = (0..want.len()).map(|v| (v as f64 * 0.3).sin()).collect();
                let mut back = vec![0.0; img.len()];
                g.scatter_add(&cols, 0, g.c, 0, n, &mut back);
                let lhs: f64 = want.iter().zip(&cols).map(|(a, b)| a * b).sum();
                let rhs: f64 = img.iter().zip(&back).map(|(a, b)| a * b).sum();
                assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{lhs} {rhs}");
            }
        }
    }
}
