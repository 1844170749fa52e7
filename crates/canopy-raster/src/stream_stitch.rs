//! Row-streaming stitching: the blending of [`Stitcher`](crate::Stitcher) with memory bounded by
//! the tile height instead of the raster height, for scenes whose predictions do not fit in
//! memory (write each finished block of rows to disk as it comes back).
//!
//! Windows arrive in the [`Tiler`]'s row-major order. Once the last window of a row of tiles is
//! in, no later window touches the rows above the next row of tiles, so those rows are final:
//! they are divided out and handed back, and the rows still in flight move to the top of the
//! buffer. The output is bitwise equal to [`Stitcher`](crate::Stitcher)'s for the same
//! predictions added in the same order (the same `f64` operations happen in the same order).

use ndarray::{Array3, ArrayView3};

use crate::blend::{check_prediction, locate, BlendWeights, Canvas};
use crate::{Blend, Error, Result, Tiler, Window};

/// A block of finished output rows.
///
/// # Shapes
/// `data` is `(C, rows, W)`, covering raster rows `row_off..row_off + rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// The raster row of `data`'s first row.
    pub row_off: usize,
    /// The stitched values, `(C, rows, W)`.
    pub data: Array3<f32>,
}

impl Rows {
    /// One past the last raster row.
    pub fn row_end(&self) -> usize {
        self.row_off + self.data.shape()[1]
    }
}

/// Stitches predictions added in row-major order, handing back rows as they are finished.
///
/// # Memory
/// The buffer holds `h x W x (C + 1)` `f64`s, with `h` the window height (the tile height
/// clipped to the raster): `8 (C + 1) h W` bytes. Each block handed back by [`RowStitcher::add`]
/// has at most `stride` rows (`tile - overlap`), and the block from [`RowStitcher::finish`] `h`
/// rows, as `f32`. So the peak is about `(h + stride) x W x C` values however tall the raster;
/// a [`Stitcher`](crate::Stitcher) holds `H x W x (C + 1)` `f64`s.
///
/// # Shapes
/// Predictions are `(C, h, w)` for a window of `w x h`; blocks are `(C, rows, W)`.
///
/// ```
/// use canopy_raster::{Blend, RowStitcher, Tiler};
/// use ndarray::{s, Array3};
/// # fn main() -> canopy_raster::Result<()> {
/// let image = Array3::from_shape_fn((1, 100, 40), |(_, y, x)| (y * 40 + x) as f32);
/// let tiler = Tiler::new(40, 100, 16, 4)?;
/// let mut stitcher = RowStitcher::new(&tiler, 1, Blend::Linear)?;
/// let mut next_row = 0;
/// for w in tiler.windows() {
///     let pred = image.slice(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()]);
///     if let Some(rows) = stitcher.add(w, pred)? {
///         assert_eq!(rows.row_off, next_row);
///         assert_eq!(rows.data, image.slice(s![.., rows.row_off..rows.row_end(), ..]));
///         next_row = rows.row_end();
///     }
/// }
/// let last = stitcher.finish()?;
/// assert_eq!((last.row_off, last.row_end()), (next_row, 100));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RowStitcher {
    tiler: Tiler,
    channels: usize,
    weights: BlendWeights,
    canvas: Canvas,
    /// Row-major index of the next window expected.
    next: usize,
}

impl RowStitcher {
    /// A streaming stitcher for the windows of `tiler`, with predictions of `channels` channels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `channels` is 0, or a [`Blend::CenterCrop`] margin is more
    /// than half the overlap.
    pub fn new(tiler: &Tiler, channels: usize, blend: Blend) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid("a stitcher needs at least 1 channel"));
        }
        Ok(RowStitcher {
            tiler: *tiler,
            channels,
            weights: BlendWeights::new(tiler, blend)?,
            canvas: Canvas::new(channels, tiler.window_size().height, tiler.width()),
            next: 0,
        })
    }

    /// The window expected next, `None` once all have been added.
    pub fn next_window(&self) -> Option<Window> {
        let (_, cols) = self.tiler.grid_shape();
        self.tiler.window(self.next / cols, self.next % cols)
    }

    /// Adds the prediction for the next window; returns the rows it finished, if any.
    ///
    /// Rows come back in order, without gaps, when the last window of a row of tiles other than
    /// the last one is added; [`RowStitcher::finish`] returns the rest.
    ///
    /// # Shapes
    /// `prediction` is `(C, window.height, window.width)`; the returned block `(C, rows, W)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `window` is not the next window in the tiler's row-major
    /// order; [`Error::Shape`] for a prediction of the wrong shape.
    pub fn add(&mut self, window: Window, prediction: ArrayView3<f32>) -> Result<Option<Rows>> {
        let (i, j) = locate(&self.tiler, &window)?;
        let (grid_rows, cols) = self.tiler.grid_shape();
        if i * cols + j != self.next {
            let expected = match self.next_window() {
                Some(w) => format!("window ({}, {}) {w:?}", self.next / cols, self.next % cols),
                None => "no more windows".into(),
            };
            return Err(Error::invalid(format!(
                "windows must be added in the tiler's row-major order: got ({i}, {j}) {window:?}, expected {expected}; use `Stitcher` for any order"
            )));
        }
        check_prediction(&window, self.channels, &prediction)?;
        let (py, px) = (self.weights.rows.get(i), self.weights.cols.get(j));
        self.canvas.add(&window, prediction, py, px);
        self.next += 1;
        if j + 1 < cols || i + 1 >= grid_rows {
            return Ok(None);
        }
        // Rows above the next row of tiles are final.
        let row_off = self.canvas.row0;
        let n = self.tiler.row_layout().offset(i + 1) - row_off;
        let data = self.canvas.resolve(n)?;
        self.canvas.shift(n);
        Ok(Some(Rows { row_off, data }))
    }

    /// The remaining rows, down to the bottom of the raster.
    ///
    /// # Shapes
    /// `(C, rows, W)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when windows are missing, naming the next one expected.
    pub fn finish(self) -> Result<Rows> {
        if let Some(w) = self.next_window() {
            let (_, cols) = self.tiler.grid_shape();
            return Err(Error::invalid(format!(
                "{} of {} windows were never added, the first is ({}, {}) {w:?}",
                self.tiler.len() - self.next,
                self.tiler.len(),
                self.next / cols,
                self.next % cols
            )));
        }
        let row_off = self.canvas.row0;
        let data = self.canvas.resolve(self.tiler.height() - row_off)?;
        Ok(Rows { row_off, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stitcher;
    use ndarray::s;

    #[test]
    fn blocks_follow_tile_rows_and_match_the_stitcher() -> Result<()> {
        // Height 10, tile 4, overlap 1: tile rows at 0, 3, 6.
        let tiler = Tiler::new(5, 10, 4, 1)?;
        let image = Array3::from_shape_fn((2, 10, 5), |(c, y, x)| (c as f32) - (y * 5 + x) as f32);
        let mut rs = RowStitcher::new(&tiler, 2, Blend::Cosine)?;
        let mut st = Stitcher::new(&tiler, 2, Blend::Cosine)?;
        let mut blocks = Vec::new();
        for w in tiler.windows() {
            let p = image.slice(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()]);
            let p = p.mapv(|v| v * 0.5 + (w.col_off as f32)); // windows disagree
            st.add(w, p.view())?;
            if let Some(b) = rs.add(w, p.view())? {
                blocks.push((b.row_off, b.row_end()));
            }
        }
        assert_eq!(blocks, [(0, 3), (3, 6)]);
        let last = rs.finish()?;
        assert_eq!((last.row_off, last.row_end()), (6, 10));
        let full = st.finish()?;
        assert_eq!(last.data, full.slice(s![.., 6.., ..]));
        Ok(())
    }

    #[test]
    fn out_of_order_and_missing_windows_are_errors() -> Result<()> {
        let tiler = Tiler::new(10, 10, 4, 1)?;
        let mut rs = RowStitcher::new(&tiler, 1, Blend::None)?;
        let p = Array3::<f32>::zeros((1, 4, 4));
        let e = rs.add(Window::new(3, 0, 4, 4), p.view());
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("expected window (0, 0)"), "{msg}");
        rs.add(Window::new(0, 0, 4, 4), p.view())?;
        assert_eq!(rs.next_window(), Some(Window::new(3, 0, 4, 4)));
        let msg = rs.finish().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("8 of 9") && msg.contains("(0, 1)"), "{msg}");
        Ok(())
    }
}
