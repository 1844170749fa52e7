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

use std::f64::consts::FRAC_PI_2;
use std::iter::FusedIterator;

use ndarray::{Array3, ArrayView3};

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
    n: usize,
    /// Window size, clipped to `n`.
    size: usize,
    /// Distance between window starts (except the snapped last one).
    stride: usize,
    /// Number of windows.
    count: usize,
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
    fn own_end(&self, k: usize) -> usize {
        if k + 1 >= self.count {
            self.n
        } else {
            (self.offset(k) + self.size + self.offset(k + 1)) / 2
        }
    }

    /// Start of window `k`'s ownership interval.
    fn own_start(&self, k: usize) -> usize {
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
    fn overlap_before(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            (self.offset(k - 1) + self.size).saturating_sub(self.offset(k))
        }
    }

    /// Overlap of window `k` with window `k + 1` (0 for the last).
    fn overlap_after(&self, k: usize) -> usize {
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

/// How overlapping predictions are combined. See the [module docs](self) for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blend {
    /// Every pixel comes from exactly one window, the one whose ownership region (overlaps
    /// split at their middle, see [`Tiler::ownership`]) contains it. Cheapest; can show seams
    /// where neighbouring predictions disagree.
    None,
    /// Discards `margin` pixels along every window edge shared with another window (where a
    /// model sees zero padding instead of context) and averages the remaining predictions with
    /// equal weights. `margin` may be at most half the overlap (otherwise pixels would be left
    /// uncovered). `margin: 0` is plain averaging; with an even overlap `o`, `margin: o / 2`
    /// equals [`Blend::None`] except where the snapped last window overlaps more.
    CenterCrop {
        /// Pixels discarded along each interior window edge.
        margin: usize,
    },
    /// Weights ramp linearly from the window edge over the overlap (triangular profile, product
    /// over both axes). Raster borders keep full weight.
    Linear,
    /// Weights ramp as a raised cosine (`sin^2`) over the overlap: smooth transitions, the
    /// default choice against seams. Raster borders keep full weight.
    Cosine,
}

/// Smallest weight a ramp gives.
const WEIGHT_FLOOR: f64 = 1e-6;

/// 1-D weight profiles of one axis: `profiles[profile_of[k]]` is window `k`'s profile.
#[derive(Debug, Clone)]
pub(crate) struct AxisWeights {
    profile_of: Vec<usize>,
    profiles: Vec<Vec<f64>>,
}

impl AxisWeights {
    fn new(axis: &AxisLayout, blend: Blend) -> Self {
        let mut profile_of = Vec::with_capacity(axis.count);
        let mut profiles: Vec<Vec<f64>> = Vec::new();
        for k in 0..axis.count {
            let p = profile(axis, k, blend);
            match profiles.iter().position(|q| *q == p) {
                Some(idx) => profile_of.push(idx),
                None => {
                    profile_of.push(profiles.len());
                    profiles.push(p);
                }
            }
        }
        AxisWeights {
            profile_of,
            profiles,
        }
    }

    pub(crate) fn get(&self, k: usize) -> &[f64] {
        self.profile_of
            .get(k)
            .and_then(|&p| self.profiles.get(p))
            .map_or(&[], Vec::as_slice)
    }
}

/// The weight profile of window `k` along one axis.
fn profile(axis: &AxisLayout, k: usize, blend: Blend) -> Vec<f64> {
    let s = axis.size;
    let off = axis.offset(k);
    let last = k + 1 >= axis.count;
    let ramp = |u: f64, len: usize| -> f64 {
        if len == 0 || u >= len as f64 {
            1.0
        } else {
            let r = u / len as f64;
            let r = match blend {
                Blend::Cosine => (FRAC_PI_2 * r).sin().powi(2),
                _ => r,
            };
            r.max(WEIGHT_FLOOR)
        }
    };
    match blend {
        Blend::None => {
            let (lo, hi) = (axis.own_start(k) - off, axis.own_end(k) - off);
            (0..s)
                .map(|i| f64::from(u8::from(lo <= i && i < hi)))
                .collect()
        }
        Blend::CenterCrop { margin } => {
            let lo = if k == 0 { 0 } else { margin };
            let hi = if last { s } else { s.saturating_sub(margin) };
            (0..s)
                .map(|i| f64::from(u8::from(lo <= i && i < hi)))
                .collect()
        }
        Blend::Linear | Blend::Cosine => {
            let (l, r) = (axis.overlap_before(k), axis.overlap_after(k));
            (0..s)
                .map(|i| {
                    let u = i as f64 + 0.5;
                    ramp(u, l).min(ramp(s as f64 - u, r))
                })
                .collect()
        }
    }
}

/// Per-axis weights of every window of a tiler under one blend.
#[derive(Debug, Clone)]
pub(crate) struct BlendWeights {
    pub(crate) rows: AxisWeights,
    pub(crate) cols: AxisWeights,
}

impl BlendWeights {
    pub(crate) fn new(tiler: &Tiler, blend: Blend) -> Result<Self> {
        if let Blend::CenterCrop { margin } = blend {
            for (axis, name) in [(&tiler.rows, "height"), (&tiler.cols, "width")] {
                if axis.count > 1 && 2 * margin > axis.size - axis.stride {
                    return Err(Error::invalid(format!(
                        "CenterCrop margin {margin} is more than half the overlap {} along the {name}: pixels would be left uncovered; use a margin of at most {}",
                        axis.size - axis.stride,
                        (axis.size - axis.stride) / 2
                    )));
                }
            }
        }
        Ok(BlendWeights {
            rows: AxisWeights::new(&tiler.rows, blend),
            cols: AxisWeights::new(&tiler.cols, blend),
        })
    }
}

/// Weighted sums and weight sums for a band of `rows` raster rows starting at `row0`.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    channels: usize,
    rows: usize,
    width: usize,
    pub(crate) row0: usize,
    /// `(channels, rows, width)`, starts at -0.0 so that a single contribution `1 * v` is `v`
    /// bitwise, signed zeros included.
    acc: Vec<f64>,
    /// `(rows, width)`.
    wsum: Vec<f64>,
}

impl Canvas {
    pub(crate) fn new(channels: usize, rows: usize, width: usize) -> Self {
        Canvas {
            channels,
            rows,
            width,
            row0: 0,
            acc: vec![-0.0; channels * rows * width],
            wsum: vec![0.0; rows * width],
        }
    }

    /// Adds a prediction whose shape has been checked and whose rows lie in this canvas.
    pub(crate) fn add(&mut self, w: &Window, pred: ArrayView3<f32>, py: &[f64], px: &[f64]) {
        let (width, rows) = (self.width, self.rows);
        let r0 = w.row_off - self.row0;
        for (c, plane) in pred.outer_iter().enumerate() {
            for ((ly, prow), &wy) in plane.outer_iter().enumerate().zip(py) {
                if wy == 0.0 {
                    continue;
                }
                let base = (c * rows + r0 + ly) * width + w.col_off;
                let Some(arow) = self.acc.get_mut(base..base + w.width) else {
                    continue;
                };
                for ((a, &v), &wx) in arow.iter_mut().zip(prow.iter()).zip(px) {
                    let wt = wy * wx;
                    if wt != 0.0 {
                        *a += wt * f64::from(v);
                    }
                }
            }
        }
        for (ly, &wy) in py.iter().enumerate().take(w.height) {
            if wy == 0.0 {
                continue;
            }
            let base = (r0 + ly) * width + w.col_off;
            let Some(srow) = self.wsum.get_mut(base..base + w.width) else {
                continue;
            };
            for (s, &wx) in srow.iter_mut().zip(px) {
                let wt = wy * wx;
                if wt != 0.0 {
                    *s += wt;
                }
            }
        }
    }

    /// The first pixel among the first `n` rows no window contributed to, as (row, col).
    pub(crate) fn first_uncovered(&self, n: usize) -> Option<(usize, usize)> {
        let n = n.min(self.rows);
        self.wsum[..n * self.width]
            .iter()
            .position(|&s| s == 0.0)
            .map(|i| (self.row0 + i / self.width, i % self.width))
    }

    /// The weighted mean over the first `n` rows, `(channels, n, width)`.
    pub(crate) fn resolve(&self, n: usize) -> Result<Array3<f32>> {
        let n = n.min(self.rows);
        if let Some((row, col)) = self.first_uncovered(n) {
            return Err(Error::invalid(format!(
                "pixel (row {row}, column {col}) is covered by no added window"
            )));
        }
        let w = self.width;
        let mut out = Vec::with_capacity(self.channels * n * w);
        for c in 0..self.channels {
            let base = c * self.rows * w;
            let acc = &self.acc[base..base + n * w];
            out.extend(
                acc.iter()
                    .zip(&self.wsum[..n * w])
                    .map(|(&a, &s)| (a / s) as f32),
            );
        }
        Array3::from_shape_vec((self.channels, n, w), out).map_err(|e| Error::Shape {
            context: "stitched output".into(),
            expected: format!("({}, {n}, {w})", self.channels),
            actual: e.to_string(),
        })
    }

    /// Drops the first `n` rows and moves the canvas down by `n` rows.
    pub(crate) fn shift(&mut self, n: usize) {
        let n = n.min(self.rows);
        let (w, rows) = (self.width, self.rows);
        for c in 0..self.channels {
            let plane = &mut self.acc[c * rows * w..(c + 1) * rows * w];
            plane.copy_within(n * w.., 0);
            plane[(rows - n) * w..].fill(-0.0);
        }
        self.wsum.copy_within(n * w.., 0);
        self.wsum[(rows - n) * w..].fill(0.0);
        self.row0 += n;
    }
}

/// Checks that `pred` is `(channels, window.height, window.width)`.
pub(crate) fn check_prediction(
    window: &Window,
    channels: usize,
    pred: &ArrayView3<f32>,
) -> Result<()> {
    let expected = [channels, window.height, window.width];
    if pred.shape() != expected {
        return Err(Error::Shape {
            context: format!("prediction for window {window:?}"),
            expected: format!("(channels, height, width) = {expected:?}"),
            actual: format!(
                "{:?}; predict on the window as read and keep (C, H, W) order",
                pred.shape()
            ),
        });
    }
    Ok(())
}

/// Looks a window up in a tiler, with an error naming what was expected.
pub(crate) fn locate(tiler: &Tiler, window: &Window) -> Result<(usize, usize)> {
    tiler.index_of(window).ok_or_else(|| {
        Error::invalid(format!(
            "{window:?} is not a window of this tiler ({}x{} raster, windows {}x{} every {}x{} pixels); add the windows `Tiler::windows` yields",
            tiler.width,
            tiler.height,
            tiler.cols.size,
            tiler.rows.size,
            tiler.cols.stride,
            tiler.rows.stride
        ))
    })
}

/// Stitches per-window predictions into one raster held in memory.
///
/// Holds `(channels + 1) x height x width` `f64`s; for rasters that do not fit, use
/// [`RowStitcher`](crate::RowStitcher). Windows may be added in any order, but each exactly once;
/// the result is bitwise reproducible for a given order (floating-point sums depend on order).
///
/// # Shapes
/// Predictions are `(C, h, w)` for a window of `w x h`; the output is `(C, H, W)`.
#[derive(Debug, Clone)]
pub struct Stitcher {
    tiler: Tiler,
    channels: usize,
    weights: BlendWeights,
    canvas: Canvas,
    added: Vec<bool>,
}

impl Stitcher {
    /// A stitcher for the windows of `tiler`, with predictions of `channels` channels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `channels` is 0, or a [`Blend::CenterCrop`] margin is more
    /// than half the overlap.
    pub fn new(tiler: &Tiler, channels: usize, blend: Blend) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid("a stitcher needs at least 1 channel"));
        }
        Ok(Stitcher {
            tiler: *tiler,
            channels,
            weights: BlendWeights::new(tiler, blend)?,
            canvas: Canvas::new(channels, tiler.height, tiler.width),
            added: vec![false; tiler.len()],
        })
    }

    /// Adds the prediction for one of the tiler's windows.
    ///
    /// # Shapes
    /// `prediction` is `(C, window.height, window.width)`.
    ///
    /// # Errors
    /// [`Error::Shape`] for a prediction of the wrong shape; [`Error::InvalidArgument`] when the
    /// window is not one of the tiler's or was already added.
    pub fn add(&mut self, window: Window, prediction: ArrayView3<f32>) -> Result<()> {
        let (i, j) = locate(&self.tiler, &window)?;
        check_prediction(&window, self.channels, &prediction)?;
        let k = i * self.tiler.cols.count + j;
        match self.added.get_mut(k) {
            Some(seen) if !*seen => *seen = true,
            _ => {
                return Err(Error::invalid(format!(
                    "window ({i}, {j}) {window:?} was added twice"
                )))
            }
        }
        let (py, px) = (self.weights.rows.get(i), self.weights.cols.get(j));
        self.canvas.add(&window, prediction, py, px);
        Ok(())
    }

    /// Number of windows added so far.
    pub fn added(&self) -> usize {
        self.added.iter().filter(|&&a| a).count()
    }

    /// The stitched raster.
    ///
    /// # Shapes
    /// `(C, H, W)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a window was never added, naming it and the first pixel no
    /// added window covers.
    pub fn finish(self) -> Result<Array3<f32>> {
        if let Some(k) = self.added.iter().position(|&a| !a) {
            let cols = self.tiler.cols.count;
            let (i, j) = (k / cols, k % cols);
            let window = self.tiler.window(i, j);
            let missing = self.added.iter().filter(|&&a| !a).count();
            let pixel = match self.canvas.first_uncovered(self.tiler.height) {
                Some((row, col)) => format!("pixel (row {row}, column {col}) is not covered"),
                None => "every pixel is covered by neighbouring windows".into(),
            };
            return Err(Error::invalid(format!(
                "{missing} of {} windows were never added, the first is ({i}, {j}) {window:?}; {pixel}",
                self.added.len()
            )));
        }
        self.canvas.resolve(self.tiler.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

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

    #[test]
    fn linear_and_cosine_weights_by_hand() -> Result<()> {
        // Width 10, tile 4, overlap 2: windows at 0, 2, 4, 6.
        let t = Tiler::new(10, 1, (1, 4), (0, 2))?;
        let w = BlendWeights::new(&t, Blend::Linear)?;
        // First window: raster edge on the left keeps weight 1, ramp over the 2 overlap pixels.
        assert_eq!(w.cols.get(0), [1.0, 1.0, 0.75, 0.25]);
        assert_eq!(w.cols.get(1), [0.25, 0.75, 0.75, 0.25]);
        assert_eq!(w.cols.get(3), [0.25, 0.75, 1.0, 1.0]);
        // Rows: a single window, full weight.
        assert_eq!(w.rows.get(0), [1.0]);
        let c = BlendWeights::new(&t, Blend::Cosine)?;
        let (a, b) = (c.cols.get(0), c.cols.get(1));
        let s = |x: f64| (FRAC_PI_2 * x).sin().powi(2);
        assert!((b[0] - s(0.25)).abs() < 1e-15 && (b[1] - s(0.75)).abs() < 1e-15);
        // Partition of unity across the overlap of windows 0 and 1 (pixels 2, 3).
        assert!((a[2] + b[0] - 1.0).abs() < 1e-15 && (a[3] + b[1] - 1.0).abs() < 1e-15);
        assert!(a.iter().chain(b).all(|&x| x > 0.0));
        let n = BlendWeights::new(&t, Blend::None)?;
        // Ownership: [0,3), [3,5), [5,7), [7,10).
        assert_eq!(n.cols.get(0), [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(n.cols.get(1), [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(n.cols.get(3), [0.0, 1.0, 1.0, 1.0]);
        let cc = BlendWeights::new(&t, Blend::CenterCrop { margin: 1 })?;
        assert_eq!(cc.cols.get(0), [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(cc.cols.get(1), [0.0, 1.0, 1.0, 0.0]);
        assert!(BlendWeights::new(&t, Blend::CenterCrop { margin: 2 }).is_err());
        Ok(())
    }

    #[test]
    fn center_crop_averages_what_it_keeps() -> Result<()> {
        // Width 6, tile 4, overlap 2: windows at 0 and 2; margin 0 averages pixels 2 and 3.
        let t = Tiler::new(6, 1, (1, 4), (0, 2))?;
        let mut st = Stitcher::new(&t, 1, Blend::CenterCrop { margin: 0 })?;
        st.add(
            Window::new(0, 0, 4, 1),
            Array3::from_elem((1, 1, 4), 1.0).view(),
        )?;
        st.add(
            Window::new(2, 0, 4, 1),
            Array3::from_elem((1, 1, 4), 3.0).view(),
        )?;
        let out = st.finish()?;
        assert_eq!(out.as_slice(), Some(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0][..]));
        // Linear: pixel 2 = (0.75 * 1 + 0.25 * 3) / 1 = 1.5, pixel 3 = 2.5.
        let mut st = Stitcher::new(&t, 1, Blend::Linear)?;
        st.add(
            Window::new(0, 0, 4, 1),
            Array3::from_elem((1, 1, 4), 1.0).view(),
        )?;
        st.add(
            Window::new(2, 0, 4, 1),
            Array3::from_elem((1, 1, 4), 3.0).view(),
        )?;
        let out = st.finish()?;
        assert_eq!(out.as_slice(), Some(&[1.0, 1.0, 1.5, 2.5, 3.0, 3.0][..]));
        Ok(())
    }

    #[test]
    fn stitcher_errors() -> Result<()> {
        let t = Tiler::new(10, 10, 4, 1)?;
        let mut st = Stitcher::new(&t, 2, Blend::Linear)?;
        let w = Window::new(0, 0, 4, 4);
        let e = st.add(w, Array3::<f32>::zeros((2, 4, 3)).view());
        assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
        let e = st.add(
            Window::new(1, 0, 4, 4),
            Array3::<f32>::zeros((2, 4, 4)).view(),
        );
        assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
        st.add(w, Array3::<f32>::zeros((2, 4, 4)).view())?;
        assert!(st.add(w, Array3::<f32>::zeros((2, 4, 4)).view()).is_err());
        assert_eq!(st.added(), 1);
        let msg = st.finish().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("8 of 9 windows") && msg.contains("(0, 1)"),
            "{msg}"
        );
        assert!(msg.contains("pixel (row 0, column 4)"), "{msg}");
        assert!(Stitcher::new(&t, 0, Blend::None).is_err());
        Ok(())
    }

    #[test]
    fn nan_in_discarded_border_does_not_leak() -> Result<()> {
        let t = Tiler::new(6, 1, (1, 4), (0, 2))?;
        let mut st = Stitcher::new(&t, 1, Blend::None)?;
        let mut a = Array3::from_elem((1, 1, 4), 1.0f32);
        a[[0, 0, 3]] = f32::NAN; // pixel 3 belongs to the second window
        st.add(Window::new(0, 0, 4, 1), a.view())?;
        st.add(
            Window::new(2, 0, 4, 1),
            Array3::from_elem((1, 1, 4), 2.0).view(),
        )?;
        let out = st.finish()?;
        assert_eq!(
            out.slice(s![0, 0, ..]).to_vec(),
            [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        Ok(())
    }
}
