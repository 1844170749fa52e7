//! Blending weights and the in-memory [`Stitcher`]; the maths is in the [`tile`](crate::tile)
//! module docs.

use std::f64::consts::FRAC_PI_2;

use ndarray::{Array3, ArrayView3};

use crate::tile::AxisLayout;
use crate::{Error, Result, Tiler, Window};

/// How overlapping predictions are combined. See the [`tile`](crate::tile) module docs for the formulas.
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
            for (axis, name) in [
                (tiler.row_layout(), "height"),
                (tiler.col_layout(), "width"),
            ] {
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
            rows: AxisWeights::new(tiler.row_layout(), blend),
            cols: AxisWeights::new(tiler.col_layout(), blend),
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
            tiler.width(),
            tiler.height(),
            tiler.col_layout().size,
            tiler.row_layout().size,
            tiler.col_layout().stride,
            tiler.row_layout().stride
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
///
/// # Performance
/// The 1-D weight profiles are computed once, at construction, per distinct window position
/// (first, interior, last, ...) and shared; [`Stitcher::add`] allocates nothing and does one
/// `f64` multiply-add per pixel and channel (pixels of zero weight are skipped), a small
/// fraction of what a model spends on the same window.
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
            canvas: Canvas::new(channels, tiler.height(), tiler.width()),
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
        let k = i * self.tiler.col_layout().count + j;
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
            let cols = self.tiler.col_layout().count;
            let (i, j) = (k / cols, k % cols);
            let window = self.tiler.window(i, j);
            let missing = self.added.iter().filter(|&&a| !a).count();
            let pixel = match self.canvas.first_uncovered(self.tiler.height()) {
                Some((row, col)) => format!("pixel (row {row}, column {col}) is not covered"),
                None => "every pixel is covered by neighbouring windows".into(),
            };
            return Err(Error::invalid(format!(
                "{missing} of {} windows were never added, the first is ({i}, {j}) {window:?}; {pixel}",
                self.added.len()
            )));
        }
        self.canvas.resolve(self.tiler.height())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

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
