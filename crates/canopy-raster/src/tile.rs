//! Tiling a raster into overlapping windows and stitching per-window predictions back into one
//! seam-free raster: whole-scene inference for models that only fit a tile in memory.
//!
//! A [`Tiler`] covers a `width x height` raster with windows of `tile` pixels that overlap by
//! `overlap` pixels (per axis). A model runs on each window; a [`Stitcher`] (whole raster in
//! memory) or a [`RowStitcher`](crate::RowStitcher) (bounded memory, rows handed back as they
//! are finished) blends the predictions.
//!
//! # Layout
//! Per axis, with raster size `n`, tile size `s`, overlap `o` and stride `t = s - o`, windows
//! start at `0, t, 2t, ...`; the last one is snapped inside the raster (offset `n - s`), so every
//! window has the full size and none reaches outside. When `n < s` the axis has one window
//! clipped to `n` pixels: pad the raster with [`pad`](crate::pad::pad) first if the model needs a fixed
//! size. Because of the snapping the last window can overlap its neighbour by more than `o`.
//!
//! # Blending
//! Every window `k` gets a weight `w_k(y, x) = w_k^row(y) * w_k^col(x)` (separable), and the
//! output is the weighted mean over the windows covering a pixel,
//!
//! ```text
//! out(c, y, x) = sum_k w_k(y, x) * p_k(c, y, x) / sum_k w_k(y, x)
//! ```
//!
//! accumulated in `f64` and rounded to `f32` once at the end. The relative error of the `f64`
//! mean is a few `f64` ulps, far below half an `f32` ulp, so when all windows predict the same
//! value for a pixel the output is exactly that value (bitwise): an identity model reproduces its
//! input and a constant prediction stitches to the constant, for every [`Blend`]. Pixels where a
//! window's weight is zero are skipped, so NaN or infinity in a discarded border never leaks.
//!
//! The 1-D profiles, for a window with overlap `L` with the previous window and `R` with the
//! next one (0 at the raster edge, so the raster border is never down-weighted), at pixel
//! centres `u = i + 0.5`:
//!
//! * [`Blend::None`]: 1 on the window's *ownership interval*, 0 elsewhere. Each overlap is split
//!   at its middle (`(end_prev + start_next) / 2`, rounded down), so every pixel comes from
//!   exactly one window.
//! * [`Blend::CenterCrop`]: 1 except on `margin` pixels along each edge shared with another
//!   window; pixels kept by several windows are averaged. `margin = 0` is plain averaging;
//!   `margin = o / 2` with an even `o` is [`Blend::None`] on regularly spaced windows.
//! * [`Blend::Linear`]: `min(u / L, (s - u) / R, 1)`: a triangular ramp over the overlap only.
//!   Two neighbours' ramps sum to 1 across their overlap (a partition of unity).
//! * [`Blend::Cosine`]: the same with `sin^2(pi/2 * r)` applied to each ramp value `r` (a Hann
//!   window edge); also sums to 1 across an overlap, with a smooth (C^1) transition.
//!
//! Ramped weights are at least `1e-6` and positive at every pixel of a window.
//!
//! # References
//! torchgeo's `GridGeoSampler` is the Python counterpart of [`Tiler`] (it has no stitcher);
//! the ramps are the usual "smooth tiled predictions" blending of segmentation tool kits.
//!
//! # Example
//! ```
//! use canopy_raster::{Blend, Stitcher, Tiler};
//! use ndarray::{s, Array3};
//!
//! # fn main() -> canopy_raster::Result<()> {
//! let image = Array3::from_shape_fn((2, 50, 70), |(c, y, x)| (c * 10000 + y * 100 + x) as f32);
//! let tiler = Tiler::new(70, 50, 32, 8)?; // width, height, tile, overlap
//! let mut stitcher = Stitcher::new(&tiler, 2, Blend::Cosine)?;
//! for w in tiler.windows() {
//!     let tile = image.slice(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()]);
//!     let prediction = tile.to_owned(); // the model goes here
//!     stitcher.add(w, prediction.view())?;
//! }
//! assert_eq!(stitcher.finish()?, image);
//! # Ok(())
//! # }
//! ```

use std::iter::FusedIterator;

pub use crate::blend::{Blend, Stitcher};
use crate::{Error, Result, Window};

/// A `height x width` pair: a tile size or an overlap.
///
/// `From<usize>` gives a square, `From<(usize, usize)>` reads `(height, width)` like shapes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Dims {
    /// Rows (y).
    pub height: usize,
    /// Columns (x).
    pub width: usize,
}

impl Dims {
    /// `height x width`.
    pub fn new(height: usize, width: usize) -> Self {
        Dims { height, width }
    }

    /// `n x n`.
    pub fn square(n: usize) -> Self {
        Dims::new(n, n)
    }
}

impl From<usize> for Dims {
    fn from(n: usize) -> Self {
        Dims::square(n)
    }
}

impl From<(usize, usize)> for Dims {
    /// `(height, width)`.
    fn from((height, width): (usize, usize)) -> Self {
        Dims::new(height, width)
    }
}

/// The window layout along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AxisLayout {
    /// Raster size.
    pub(crate) n: usize,
    /// Window size, clipped to `n`.
    pub(crate) size: usize,
    /// Distance between window starts (except the snapped last one).
    pub(crate) stride: usize,
    /// Number of windows.
    pub(crate) count: usize,
}

impl AxisLayout {
    fn new(n: usize, size: usize, overlap: usize, axis: &str) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid(format!(
                "cannot tile a raster with {axis} 0"
            )));
        }
        if size == 0 {
            return Err(Error::invalid(format!("tile {axis} must be at least 1")));
        }
        if overlap >= size {
            return Err(Error::invalid(format!(
                "overlap {axis} {overlap} must be smaller than the tile {axis} {size}; use at most {}",
                size - 1
            )));
        }
        let stride = size - overlap;
        Ok(if n <= size {
            AxisLayout {
                n,
                size: n,
                stride,
                count: 1,
            }
        } else {
            AxisLayout {
                n,
                size,
                stride,
                count: (n - size).div_ceil(stride) + 1,
            }
        })
    }

    /// Start of window `k` (`k < count`).
    pub(crate) fn offset(&self, k: usize) -> usize {
        if k + 1 >= self.count {
            self.n - self.size
        } else {
            k * self.stride
        }
    }

    /// The index of the window starting at `off`, if one does.
    fn index_of(&self, off: usize) -> Option<usize> {
        if off == self.n - self.size {
            Some(self.count - 1)
        } else if off % self.stride == 0 && off / self.stride + 1 < self.count {
            Some(off / self.stride)
        } else {
            None
        }
    }

    /// End of window `k`'s ownership interval (middle of the overlap with `k + 1`).
    pub(crate) fn own_end(&self, k: usize) -> usize {
        if k + 1 >= self.count {
            self.n
        } else {
            (self.offset(k) + self.size + self.offset(k + 1)) / 2
        }
    }

    /// Start of window `k`'s ownership interval.
    pub(crate) fn own_start(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            self.own_end(k - 1)
        }
    }

    /// The window owning pixel `p < n` (ownership intervals partition the axis).
    fn owner(&self, p: usize) -> usize {
        // Largest k with own_start(k) <= p; own_start is increasing.
        let (mut lo, mut hi) = (0, self.count);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.own_start(mid) <= p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Overlap of window `k` with window `k - 1` (0 for the first).
    pub(crate) fn overlap_before(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            (self.offset(k - 1) + self.size).saturating_sub(self.offset(k))
        }
    }

    /// Overlap of window `k` with window `k + 1` (0 for the last).
    pub(crate) fn overlap_after(&self, k: usize) -> usize {
        if k + 1 >= self.count {
            0
        } else {
            (self.offset(k) + self.size).saturating_sub(self.offset(k + 1))
        }
    }
}

/// Covers a `width x height` raster with overlapping windows of one size.
///
/// Windows are produced lazily in row-major order (all windows of the first row of tiles, left
/// to right, then the next row). Per axis the windows start every `tile - overlap` pixels and the
/// last one is snapped inside the raster, so every window has the full tile size when the raster
/// is at least that large; along an axis shorter than the tile there is one window, clipped to
/// the raster (pad with [`pad`](crate::pad::pad) for models that need a fixed input size).
///
/// ```
/// use canopy_raster::{Tiler, Window};
/// # fn main() -> canopy_raster::Result<()> {
/// let tiler = Tiler::new(10, 4, 4, 1)?;
/// let cols: Vec<usize> = tiler.windows().map(|w| w.col_off).collect();
/// assert_eq!(cols, [0, 3, 6]); // the last window is snapped to 10 - 4 = 6
/// assert_eq!(tiler.grid_shape(), (1, 3));
/// assert_eq!(tiler.window(0, 2), Some(Window::new(6, 0, 4, 4)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiler {
    width: usize,
    height: usize,
    tile: Dims,
    overlap: Dims,
    rows: AxisLayout,
    cols: AxisLayout,
}

impl Tiler {
    /// Windows of `tile` pixels overlapping by `overlap` pixels over a `width x height` raster.
    ///
    /// `tile` and `overlap` are [`Dims`] or anything converting into it: a `usize` for a square,
    /// a `(height, width)` pair otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the raster is empty, a tile side is 0, or an overlap is
    /// not smaller than the tile side.
    pub fn new(
        width: usize,
        height: usize,
        tile: impl Into<Dims>,
        overlap: impl Into<Dims>,
    ) -> Result<Self> {
        let (tile, overlap) = (tile.into(), overlap.into());
        Ok(Tiler {
            width,
            height,
            tile,
            overlap,
            rows: AxisLayout::new(height, tile.height, overlap.height, "height")?,
            cols: AxisLayout::new(width, tile.width, overlap.width, "width")?,
        })
    }

    /// Raster width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Raster height.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The requested tile size.
    pub fn tile(&self) -> Dims {
        self.tile
    }

    /// The size of every window: the tile size clipped to the raster.
    pub fn window_size(&self) -> Dims {
        Dims::new(self.rows.size, self.cols.size)
    }

    /// The requested overlap.
    pub fn overlap(&self) -> Dims {
        self.overlap
    }

    /// Distance between the starts of neighbouring windows (`tile - overlap`), except for the
    /// snapped last row and column.
    pub fn stride(&self) -> Dims {
        Dims::new(self.rows.stride, self.cols.stride)
    }

    /// Number of window rows and columns.
    pub fn grid_shape(&self) -> (usize, usize) {
        (self.rows.count, self.cols.count)
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.rows.count * self.cols.count
    }

    /// Always `false`: a tiler covers a non-empty raster with at least one window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Window `(i, j)`: row `i`, column `j` of the grid; `None` outside the grid.
    pub fn window(&self, i: usize, j: usize) -> Option<Window> {
        (i < self.rows.count && j < self.cols.count).then(|| {
            Window::new(
                self.cols.offset(j),
                self.rows.offset(i),
                self.cols.size,
                self.rows.size,
            )
        })
    }

    /// The grid position `(i, j)` of a window, `None` when it is not one of this tiler's.
    pub fn index_of(&self, window: &Window) -> Option<(usize, usize)> {
        if window.width != self.cols.size || window.height != self.rows.size {
            return None;
        }
        Some((
            self.rows.index_of(window.row_off)?,
            self.cols.index_of(window.col_off)?,
        ))
    }

    /// The part of window `(i, j)` it alone provides under [`Blend::None`]: overlaps are split at
    /// their middle. These regions partition the raster.
    pub fn ownership(&self, i: usize, j: usize) -> Option<Window> {
        (i < self.rows.count && j < self.cols.count).then(|| {
            let (r0, c0) = (self.rows.own_start(i), self.cols.own_start(j));
            Window::new(c0, r0, self.cols.own_end(j) - c0, self.rows.own_end(i) - r0)
        })
    }

    /// The grid position of the window owning pixel (`row`, `col`) (see [`Tiler::ownership`]),
    /// `None` outside the raster.
    pub fn owner(&self, row: usize, col: usize) -> Option<(usize, usize)> {
        (row < self.height && col < self.width)
            .then(|| (self.rows.owner(row), self.cols.owner(col)))
    }

    /// All windows, lazily, in row-major order.
    pub fn windows(&self) -> Windows {
        Windows {
            tiler: *self,
            next: 0,
            end: self.len(),
        }
    }

    pub(crate) fn row_layout(&self) -> &AxisLayout {
        &self.rows
    }

    pub(crate) fn col_layout(&self) -> &AxisLayout {
        &self.cols
    }

    fn window_at(&self, linear: usize) -> Option<Window> {
        let cols = self.cols.count;
        self.window(linear / cols, linear % cols)
    }
}

impl IntoIterator for &Tiler {
    type Item = Window;
    type IntoIter = Windows;
    fn into_iter(self) -> Windows {
        self.windows()
    }
}

/// Iterator over a [`Tiler`]'s windows, row-major.
#[derive(Debug, Clone)]
pub struct Windows {
    tiler: Tiler,
    next: usize,
    end: usize,
}

impl Iterator for Windows {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        if self.next >= self.end {
            return None;
        }
        let w = self.tiler.window_at(self.next);
        self.next += 1;
        w
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Windows {
    fn next_back(&mut self) -> Option<Window> {
        if self.next >= self.end {
            return None;
        }
        self.end -= 1;
        self.tiler.window_at(self.end)
    }
}

impl ExactSizeIterator for Windows {}
impl FusedIterator for Windows {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_width_10_tile_4_overlap_1() -> Result<()> {
        let t = Tiler::new(10, 1, (1, 4), (0, 1))?;
        let w: Vec<Window> = t.windows().collect();
        assert_eq!(
            w,
            [
                Window::new(0, 0, 4, 1),
                Window::new(3, 0, 4, 1),
                Window::new(6, 0, 4, 1)
            ]
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.windows().len(), 3);
        // Ownership: overlap [3, 4) splits at (4 + 3) / 2 = 3, [6, 7) at 6.
        let own: Vec<(usize, usize)> = (0..3)
            .filter_map(|j| t.ownership(0, j))
            .map(|o| (o.col_off, o.col_end()))
            .collect();
        assert_eq!(own, [(0, 3), (3, 6), (6, 10)]);
        assert_eq!(t.owner(0, 5), Some((0, 1)));
        assert_eq!(t.owner(0, 10), None);
        Ok(())
    }

    #[test]
    fn snapped_last_window_and_grid() -> Result<()> {
        let t = Tiler::new(11, 7, (4, 5), 2)?; // stride (2, 3)
        assert_eq!(t.grid_shape(), (3, 3));
        let cols: Vec<usize> = (0..3)
            .filter_map(|j| t.window(0, j))
            .map(|w| w.col_off)
            .collect();
        assert_eq!(cols, [0, 3, 6]);
        let rows: Vec<usize> = (0..3)
            .filter_map(|i| t.window(i, 0))
            .map(|w| w.row_off)
            .collect();
        assert_eq!(rows, [0, 2, 3]);
        assert_eq!(t.window(3, 0), None);
        for w in t.windows() {
            assert_eq!((w.width, w.height), (5, 4));
            assert!(w.check_inside(11, 7).is_ok());
            assert_eq!(
                t.windows()
                    .nth(t.index_of(&w).map_or(99, |(i, j)| i * 3 + j)),
                Some(w)
            );
        }
        assert_eq!(t.index_of(&Window::new(1, 0, 5, 4)), None);
        assert_eq!(t.windows().next_back(), t.window(2, 2));
        Ok(())
    }

    #[test]
    fn small_raster_gives_one_clipped_window() -> Result<()> {
        let t = Tiler::new(1, 1, 256, 32)?;
        assert_eq!(t.windows().collect::<Vec<_>>(), [Window::new(0, 0, 1, 1)]);
        assert_eq!(t.window_size(), Dims::new(1, 1));
        let t = Tiler::new(300, 20, 128, 0)?;
        assert_eq!(t.grid_shape(), (1, 3));
        assert_eq!(t.window(0, 2), Some(Window::new(172, 0, 128, 20)));
        Ok(())
    }

    #[test]
    fn invalid_layouts_are_errors() {
        assert!(Tiler::new(10, 10, 0, 0).is_err());
        assert!(Tiler::new(10, 10, 4, 4).is_err());
        assert!(Tiler::new(10, 10, (4, 3), (1, 3)).is_err());
        assert!(Tiler::new(0, 10, 4, 1).is_err());
        let msg = Tiler::new(10, 10, 4, 5)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("use at most 3"), "{msg}");
    }
}
