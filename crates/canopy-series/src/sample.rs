//! Sample types: one pixel or parcel time series ([`Series`]), a labelled collection of them
//! ([`SeriesDataset`]) and an image time series patch ([`PatchSeries`]).

use std::collections::BTreeMap;

use ndarray::{Array2, Array3, Array4, Axis};

use crate::{bands::Band, Date, Error, Result};

fn shape_err(op: &'static str, message: String) -> Error {
    Error::InvalidArgument { op, message }
}

/// One time series: `T` acquisitions of `C` bands, with dates and a per-date validity mask.
///
/// Padding (see [`crate::transform::PadTruncate`]) appends `padding` steps at the end; they
/// are never valid. The mask and the padding are what a model may see; [`Series::truth`] is
/// what only an evaluation may see (for example which dates received synthetic clouds).
///
/// # Shapes
/// `values` is `(T, C)`; `dates` (when known), `mask` and `truth` (when present) have length `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Observations, `(T, C)`.
    pub values: Array2<f32>,
    /// Acquisition dates, chronological; `None` when the source has none (UCR archives).
    pub dates: Option<Vec<Date>>,
    /// Per-date validity as the data says it (`true` = clear and observed).
    pub mask: Vec<bool>,
    /// Number of trailing padding steps (`<= T`), not observations at all.
    pub padding: usize,
    /// Per-date ground truth validity hidden from models (`true` = really clear), when known.
    pub truth: Option<Vec<bool>>,
    /// Class index `0..K`, when labelled.
    pub label: Option<u32>,
    /// Identifier (parcel id, `row_col` of a pixel, line number), when known.
    pub id: Option<String>,
}

impl Series {
    /// A series with every date valid, no label and no id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `dates` does not have one entry per row of `values` or
    /// is not sorted.
    pub fn new(values: Array2<f32>, dates: Option<Vec<Date>>) -> Result<Series> {
        let t = values.nrows();
        let s = Series {
            values,
            dates,
            mask: vec![true; t],
            padding: 0,
            truth: None,
            label: None,
            id: None,
        };
        s.check()?;
        Ok(s)
    }

    /// The same series with a label.
    pub fn with_label(mut self, label: u32) -> Series {
        self.label = Some(label);
        self
    }

    /// The same series with an id.
    pub fn with_id(mut self, id: impl Into<String>) -> Series {
        self.id = Some(id.into());
        self
    }

    /// The same series with a validity mask.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the mask length is not `T`.
    pub fn with_mask(mut self, mask: Vec<bool>) -> Result<Series> {
        self.mask = mask;
        self.check()?;
        Ok(self)
    }

    /// Number of time steps `T` (padding included).
    pub fn len(&self) -> usize {
        self.values.nrows()
    }

    /// Whether there is no time step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of bands `C`.
    pub fn bands(&self) -> usize {
        self.values.ncols()
    }

    /// Number of real (non-padding) time steps.
    pub fn observed_len(&self) -> usize {
        self.len().saturating_sub(self.padding)
    }

    /// Day of year (1..=366) of every date, `None` without dates.
    pub fn days_of_year(&self) -> Option<Vec<u16>> {
        self.dates
            .as_ref()
            .map(|d| d.iter().map(|d| d.day_of_year()).collect())
    }

    /// The dates, or an error naming `op` when the series has none.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `dates` is `None`.
    pub fn require_dates(&self, op: &'static str) -> Result<&[Date]> {
        self.dates.as_deref().ok_or_else(|| {
            shape_err(
                op,
                format!(
                    "series {} has no acquisition dates; this block needs them (load with dates \
                     or attach them with Series::new)",
                    self.id.as_deref().unwrap_or("(no id)")
                ),
            )
        })
    }

    /// Checks the invariants: `mask`, `dates`, `truth` of length `T`, `padding <= T`, dates
    /// sorted over the observed part.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, its length and `T`.
    pub fn check(&self) -> Result<()> {
        let t = self.len();
        let id = self.id.as_deref().unwrap_or("(no id)");
        if self.mask.len() != t {
            return Err(shape_err(
                "Series",
                format!(
                    "series {id}: mask has {} entries for T = {t}",
                    self.mask.len()
                ),
            ));
        }
        if let Some(d) = &self.dates {
            if d.len() != t {
                return Err(shape_err(
                    "Series",
                    format!("series {id}: {} dates for T = {t}", d.len()),
                ));
            }
            let obs = &d[..self.observed_len().min(d.len())];
            if let Some(w) = obs.windows(2).find(|w| w[1] < w[0]) {
                return Err(shape_err(
                    "Series",
                    format!(
                        "series {id}: dates are not chronological ({} before {}); sort the \
                         acquisitions first",
                        w[0], w[1]
                    ),
                ));
            }
        }
        if let Some(tr) = &self.truth {
            if tr.len() != t {
                return Err(shape_err(
                    "Series",
                    format!("series {id}: truth has {} entries for T = {t}", tr.len()),
                ));
            }
        }
        if self.padding > t {
            return Err(shape_err(
                "Series",
                format!("series {id}: padding {} exceeds T = {t}", self.padding),
            ));
        }
        Ok(())
    }

    /// A series made of the time steps `idx` (in the given order, repeats allowed); padding is
    /// kept only for indices pointing into the padding.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index `>= T` or a series failing [`Series::check`].
    pub fn select_steps(&self, idx: &[usize]) -> Result<Series> {
        self.check()?;
        let t = self.len();
        if let Some(&bad) = idx.iter().find(|&&i| i >= t) {
            return Err(shape_err(
                "Series::select_steps",
                format!("time index {bad} out of range for T = {t}"),
            ));
        }
        let obs = self.observed_len();
        let padding = idx.iter().rev().take_while(|&&i| i >= obs).count();
        Ok(Series {
            values: self.values.select(Axis(0), idx),
            dates: self
                .dates
                .as_ref()
                .map(|d| idx.iter().map(|&i| d[i]).collect()),
            mask: idx.iter().map(|&i| self.mask[i]).collect(),
            padding,
            truth: self
                .truth
                .as_ref()
                .map(|tr| idx.iter().map(|&i| tr[i]).collect()),
            label: self.label,
            id: self.id.clone(),
        })
    }
}

/// A collection of [`Series`] with named classes and bands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesDataset {
    /// The samples.
    pub samples: Vec<Series>,
    /// Class names; `label = k` means `class_names[k]`.
    pub class_names: Vec<String>,
    /// Band names, one per column of every sample.
    pub band_names: Vec<String>,
}

impl SeriesDataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Samples per class (`counts[k]` for label `k`; unlabelled samples are not counted).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.class_names.len()];
        for s in &self.samples {
            if let Some(slot) = s.label.and_then(|l| c.get_mut(l as usize)) {
                *slot += 1;
            }
        }
        c
    }

    /// Checks every sample (see [`Series::check`]) and that its band count and label agree
    /// with the dataset.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first bad sample.
    pub fn check(&self) -> Result<()> {
        for (i, s) in self.samples.iter().enumerate() {
            s.check()?;
            if s.bands() != self.band_names.len() {
                return Err(shape_err(
                    "SeriesDataset",
                    format!(
                        "sample {i} has {} bands, the dataset names {}",
                        s.bands(),
                        self.band_names.len()
                    ),
                ));
            }
            if let Some(l) = s.label {
                if l as usize >= self.class_names.len() && !self.class_names.is_empty() {
                    return Err(shape_err(
                        "SeriesDataset",
                        format!(
                            "sample {i} has label {l}, the dataset has {} classes",
                            self.class_names.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A dataset of the samples at `idx` (cloned), same classes and bands.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index out of range.
    pub fn subset(&self, idx: &[usize]) -> Result<SeriesDataset> {
        let samples = idx
            .iter()
            .map(|&i| {
                self.samples.get(i).cloned().ok_or_else(|| {
                    shape_err(
                        "SeriesDataset::subset",
                        format!("index {i} out of range for {} samples", self.len()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeriesDataset {
            samples,
            class_names: self.class_names.clone(),
            band_names: self.band_names.clone(),
        })
    }

    /// Keeps and reorders the bands to `bands` (e.g. [`crate::BREIZHCROPS_L1C_BANDS`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a band is not in the dataset.
    pub fn select_bands(&self, bands: &[Band]) -> Result<SeriesDataset> {
        let idx = bands
            .iter()
            .map(|&b| crate::bands::band_index(&self.band_names, b))
            .collect::<Result<Vec<_>>>()?;
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.values = s.values.select(Axis(1), &idx);
                s
            })
            .collect();
        Ok(SeriesDataset {
            samples,
            class_names: self.class_names.clone(),
            band_names: crate::bands::band_names(bands),
        })
    }

    /// Applies `f` to every sample, keeping classes and bands (bands may change only if `f`
    /// keeps their count; check with [`SeriesDataset::check`]).
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn try_map(self, mut f: impl FnMut(Series) -> Result<Series>) -> Result<SeriesDataset> {
        let samples = self
            .samples
            .into_iter()
            .map(&mut f)
            .collect::<Result<Vec<_>>>()?;
        Ok(SeriesDataset { samples, ..self })
    }
}

/// Maps arbitrary label values to `0..K` in ascending order, returning the mapping and the
/// class names (the original values as text).
pub(crate) fn remap_labels<K: Ord + Clone + ToString>(
    labels: impl IntoIterator<Item = K>,
) -> (BTreeMap<K, u32>, Vec<String>) {
    let mut map = BTreeMap::new();
    for l in labels {
        map.entry(l).or_insert(0u32);
    }
    let mut names = Vec::with_capacity(map.len());
    for (k, (key, v)) in map.iter_mut().enumerate() {
        *v = k as u32;
        names.push(key.to_string());
    }
    (map, names)
}

/// An image time series patch: `T` acquisitions of `C` bands over `H x W` pixels.
///
/// # Shapes
/// `values` `(T, C, H, W)`; `mask` and `truth` `(T, H, W)` (`true` = valid); `labels` `(H, W)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchSeries {
    /// Observations, `(T, C, H, W)`.
    pub values: Array4<f32>,
    /// Acquisition dates, length `T`, when known.
    pub dates: Option<Vec<Date>>,
    /// Per-pixel per-date validity, `(T, H, W)`.
    pub mask: Array3<bool>,
    /// Per-pixel per-date ground-truth validity hidden from models, `(T, H, W)` (set by
    /// [`crate::transform::SyntheticClouds::apply_patch`]).
    pub truth: Option<Array3<bool>>,
    /// Per-pixel class labels, `(H, W)`, when known.
    pub labels: Option<Array2<u32>>,
    /// Band names, length `C`.
    pub band_names: Vec<String>,
    /// Class names; label `k` means `class_names[k]` (empty without labels).
    pub class_names: Vec<String>,
}

impl PatchSeries {
    /// Checks that mask, dates, labels and band names agree with `values`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with expected and actual shapes.
    pub fn check(&self) -> Result<()> {
        let (t, c, h, w) = self.values.dim();
        if self.mask.dim() != (t, h, w) {
            return Err(shape_err(
                "PatchSeries",
                format!("mask is {:?}, expected ({t}, {h}, {w})", self.mask.dim()),
            ));
        }
        if let Some(tr) = &self.truth {
            if tr.dim() != (t, h, w) {
                return Err(shape_err(
                    "PatchSeries",
                    format!("truth is {:?}, expected ({t}, {h}, {w})", tr.dim()),
                ));
            }
        }
        if let Some(d) = &self.dates {
            if d.len() != t {
                return Err(shape_err(
                    "PatchSeries",
                    format!("{} dates for T = {t}", d.len()),
                ));
            }
        }
        if let Some(l) = &self.labels {
            if l.dim() != (h, w) {
                return Err(shape_err(
                    "PatchSeries",
                    format!("labels are {:?}, expected ({h}, {w})", l.dim()),
                ));
            }
        }
        if self.band_names.len() != c {
            return Err(shape_err(
                "PatchSeries",
                format!("{} band names for C = {c}", self.band_names.len()),
            ));
        }
        Ok(())
    }

    /// The series of pixel (`row`, `col`) with its mask and label, id `"row_col"`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the pixel is outside the patch or the patch fails
    /// [`PatchSeries::check`].
    pub fn pixel(&self, row: usize, col: usize) -> Result<Series> {
        self.check()?;
        let (_, _, h, w) = self.values.dim();
        if row >= h || col >= w {
            return Err(shape_err(
                "PatchSeries::pixel",
                format!("pixel ({row}, {col}) outside the {h} x {w} patch"),
            ));
        }
        let values = self
            .values
            .index_axis(Axis(3), col)
            .index_axis(Axis(2), row)
            .to_owned();
        let mask = self
            .mask
            .index_axis(Axis(2), col)
            .index_axis(Axis(1), row)
            .to_vec();
        let truth = self.truth.as_ref().map(|tr| {
            tr.index_axis(Axis(2), col)
                .index_axis(Axis(1), row)
                .to_vec()
        });
        Ok(Series {
            values,
            dates: self.dates.clone(),
            mask,
            padding: 0,
            truth,
            label: self.labels.as_ref().map(|l| l[(row, col)]),
            id: Some(format!("{row}_{col}")),
        })
    }

    /// Every pixel as a [`Series`] (row-major order, ids `"row_col"`), labels from `labels`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the patch fails [`PatchSeries::check`].
    pub fn to_pixel_dataset(&self) -> Result<SeriesDataset> {
        let (_, _, h, w) = self.values.dim();
        let mut samples = Vec::with_capacity(h * w);
        for r in 0..h {
            for c in 0..w {
                samples.push(self.pixel(r, c)?);
            }
        }
        Ok(SeriesDataset {
            samples,
            class_names: self.class_names.clone(),
            band_names: self.band_names.clone(),
        })
    }

    /// The sub-patch of `h x w` pixels whose top-left pixel is (`row`, `col`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the window is empty or reaches outside the patch.
    pub fn crop(&self, row: usize, col: usize, h: usize, w: usize) -> Result<PatchSeries> {
        let (_, _, ph, pw) = self.values.dim();
        if h == 0 || w == 0 || row + h > ph || col + w > pw {
            return Err(shape_err(
                "PatchSeries::crop",
                format!("window {h} x {w} at ({row}, {col}) does not fit the {ph} x {pw} patch"),
            ));
        }
        let (r, c) = (row..row + h, col..col + w);
        Ok(PatchSeries {
            values: self
                .values
                .slice(ndarray::s![.., .., r.clone(), c.clone()])
                .to_owned(),
            dates: self.dates.clone(),
            mask: self
                .mask
                .slice(ndarray::s![.., r.clone(), c.clone()])
                .to_owned(),
            truth: self
                .truth
                .as_ref()
                .map(|tr| tr.slice(ndarray::s![.., r.clone(), c.clone()]).to_owned()),
            labels: self
                .labels
                .as_ref()
                .map(|l| l.slice(ndarray::s![r.clone(), c.clone()]).to_owned()),
            band_names: self.band_names.clone(),
            class_names: self.class_names.clone(),
        })
    }

    /// Every `size x size` sub-patch on a grid with step `stride` (row-major), dropping
    /// windows that would reach past the border.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `size` or `stride` is 0 or `size` exceeds the patch.
    pub fn tiles(&self, size: usize, stride: usize) -> Result<Vec<PatchSeries>> {
        let (_, _, h, w) = self.values.dim();
        if size == 0 || stride == 0 || size > h || size > w {
            return Err(shape_err(
                "PatchSeries::tiles",
                format!("size {size} / stride {stride} do not fit the {h} x {w} patch"),
            ));
        }
        let mut out = Vec::new();
        for r in (0..=h - size).step_by(stride) {
            for c in (0..=w - size).step_by(stride) {
                out.push(self.crop(r, c, size, size)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn check_catches_inconsistencies() -> Result<()> {
        let d = |m| Date::new(2020, m, 1);
        let s = Series::new(array![[1.0f32], [2.0]], Some(vec![d(1)?, d(2)?]))?;
        assert_eq!(s.observed_len(), 2);
        assert!(s.clone().with_mask(vec![true]).is_err());
        assert!(Series::new(array![[1.0f32], [2.0]], Some(vec![d(2)?, d(1)?])).is_err());
        let picked = s.select_steps(&[1, 1, 0])?;
        assert_eq!(picked.values.column(0).to_vec(), vec![2.0, 2.0, 1.0]);
        assert!(s.select_steps(&[2]).is_err());
        Ok(())
    }

    #[test]
    fn remap_is_sorted_and_dense() {
        let (map, names) = remap_labels([5, 3, 5, 9]);
        assert_eq!(names, vec!["3", "5", "9"]);
        assert_eq!(map[&9], 2);
    }
}
