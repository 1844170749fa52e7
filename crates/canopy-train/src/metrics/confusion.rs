//! The streaming confusion matrix: counts accumulated over batches and merged across workers.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, shape};
use crate::trainer::EpochMetric;
use crate::{Error, Result};

/// A `K × K` confusion matrix of `u64` counts: row = true class, column = predicted class
/// (scikit-learn's `confusion_matrix` layout).
///
/// Updates validate the whole batch before counting anything, so a failed update leaves the
/// matrix unchanged. Pixels whose true label is the ignore label, or whose mask entry is false,
/// are skipped; any other label `>= K` is an error.
///
/// ```
/// # fn main() -> canopy_train::Result<()> {
/// use canopy_train::metrics::ConfusionMatrix;
/// let mut cm = ConfusionMatrix::new(3)?.with_ignore_label(255);
/// cm.update(&[0, 1, 2, 2, 255], &[0, 2, 2, 2, 1])?;
/// assert_eq!(cm.count(1, 2), 1);
/// assert_eq!(cm.total(), 4);
/// assert!((cm.accuracy() - 0.75).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfusion")]
pub struct ConfusionMatrix {
    classes: usize,
    ignore_label: Option<u32>,
    /// Row-major `classes × classes` counts.
    counts: Vec<u64>,
}

/// The serialised form, validated on the way in.
#[derive(Deserialize)]
struct RawConfusion {
    classes: usize,
    ignore_label: Option<u32>,
    counts: Vec<u64>,
}

impl TryFrom<RawConfusion> for ConfusionMatrix {
    type Error = Error;
    fn try_from(r: RawConfusion) -> Result<Self> {
        let mut cm = ConfusionMatrix::new(r.classes)?;
        if r.counts.len() != r.classes * r.classes {
            return Err(invalid(
                "ConfusionMatrix",
                format!(
                    "{} counts stored for {} classes (need {})",
                    r.counts.len(),
                    r.classes,
                    r.classes * r.classes
                ),
            ));
        }
        cm.counts = r.counts;
        cm.ignore_label = r.ignore_label;
        Ok(cm)
    }
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes (at least 1), with no ignore label.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `classes` is 0 or exceeds `u32::MAX`.
    pub fn new(classes: usize) -> Result<Self> {
        if classes == 0 || classes > u32::MAX as usize {
            return Err(invalid(
                "ConfusionMatrix::new",
                format!("the number of classes must be in 1..=u32::MAX, got {classes}"),
            ));
        }
        Ok(ConfusionMatrix {
            classes,
            ignore_label: None,
            counts: vec![0; classes * classes],
        })
    }

    /// Skips every pixel whose true label is `label` (e.g. 255 for "no data").
    pub fn with_ignore_label(mut self, label: u32) -> Self {
        self.ignore_label = Some(label);
        self
    }

    /// Number of classes `K`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The ignore label, if any.
    pub fn ignore_label(&self) -> Option<u32> {
        self.ignore_label
    }

    /// Number of pixels with true class `truth` predicted as `pred` (0 out of range).
    pub fn count(&self, truth: usize, pred: usize) -> u64 {
        if truth < self.classes && pred < self.classes {
            self.counts[truth * self.classes + pred]
        } else {
            0
        }
    }

    /// The counts, row-major (`[truth * K + pred]`).
    pub fn as_slice(&self) -> &[u64] {
        &self.counts
    }

    /// The counts as rows (`rows[truth][pred]`).
    pub fn to_rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.classes)
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Number of counted pixels.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sets every count to zero (keeps the classes and ignore label).
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }

    /// Counts pairs of true and predicted labels.
    ///
    /// # Errors
    /// [`Error::Shape`] when the slices differ in length; [`Error::TargetOutOfRange`] when a
    /// true label (other than the ignore label) or a predicted label of a counted pixel is
    /// `>= K`. Nothing is counted on error.
    pub fn update(&mut self, truth: &[u32], pred: &[u32]) -> Result<()> {
        self.update_impl("ConfusionMatrix::update", truth, pred, None)
    }

    /// Counts pairs of labels where `valid` is true.
    ///
    /// # Errors
    /// As [`ConfusionMatrix::update`], and [`Error::Shape`] when the mask's length differs.
    pub fn update_masked(&mut self, truth: &[u32], pred: &[u32], valid: &[bool]) -> Result<()> {
        self.update_impl("ConfusionMatrix::update_masked", truth, pred, Some(valid))
    }

    /// Counts the arg-max of `logits` over dimension 1 against `truth`.
    ///
    /// # Shapes
    /// - `logits`: `(N, K)` or `(N, K, d1, ..)`, any float dtype.
    /// - `truth`: `(N)` or `(N, d1, ..)`, `u32`.
    /// - `valid`: optional, the truth's shape, any dtype; nonzero = counted.
    ///
    /// # Errors
    /// [`Error::Shape`] when shapes, dtypes or `K` disagree; as [`ConfusionMatrix::update`].
    pub fn update_from_logits(
        &mut self,
        logits: &Tensor,
        truth: &Tensor,
        valid: Option<&Tensor>,
    ) -> Result<()> {
        const OP: &str = "ConfusionMatrix::update_from_logits";
        let dims = logits.dims();
        if dims.len() < 2 || dims[1] != self.classes {
            return Err(shape(
                OP,
                format!(
                    "logits (N, {}, ..) with the classes on dimension 1",
                    self.classes
                ),
                dims,
            ));
        }
        let pred = logits.argmax(1)?; // (N, K, d..) -> (N, d..)
        self.update_from_labels(&pred, truth, valid)
    }

    /// Counts predicted labels against true labels.
    ///
    /// # Shapes
    /// `pred`, `truth`: the same shape, `u32`; `valid`: optional, that shape, any dtype
    /// (nonzero = counted).
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes or dtypes differ; as [`ConfusionMatrix::update`].
    pub fn update_from_labels(
        &mut self,
        pred: &Tensor,
        truth: &Tensor,
        valid: Option<&Tensor>,
    ) -> Result<()> {
        const OP: &str = "ConfusionMatrix::update_from_labels";
        if pred.dims() != truth.dims() {
            return Err(shape(
                OP,
                format!("predictions of the truth's shape {:?}", truth.dims()),
                pred.dims(),
            ));
        }
        for (what, t) in [("predictions", pred), ("truth", truth)] {
            if t.dtype() != DType::U32 {
                return Err(shape(
                    OP,
                    format!("u32 {what} (convert with `to_dtype(DType::U32)`)"),
                    t.dtype(),
                ));
            }
        }
        let p: Vec<u32> = pred.flatten_all()?.to_vec1()?;
        let t: Vec<u32> = truth.flatten_all()?.to_vec1()?;
        match valid {
            None => self.update_impl(OP, &t, &p, None),
            Some(m) => {
                if m.dims() != truth.dims() {
                    return Err(shape(
                        OP,
                        format!("a mask of the truth's shape {:?}", truth.dims()),
                        m.dims(),
                    ));
                }
                let m: Vec<f64> = m.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                let m: Vec<bool> = m.into_iter().map(|v| v != 0.0).collect();
                self.update_impl(OP, &t, &p, Some(&m))
            }
        }
    }

    fn update_impl(
        &mut self,
        op: &'static str,
        truth: &[u32],
        pred: &[u32],
        valid: Option<&[bool]>,
    ) -> Result<()> {
        if truth.len() != pred.len() {
            return Err(shape(
                op,
                format!("as many predictions as true labels ({})", truth.len()),
                pred.len(),
            ));
        }
        if let Some(v) = valid {
            if v.len() != truth.len() {
                return Err(shape(
                    op,
                    format!("a mask with one entry per label ({})", truth.len()),
                    v.len(),
                ));
            }
        }
        let k = self.classes;
        let counted = |i: usize| -> bool {
            valid.is_none_or(|v| v.get(i).copied().unwrap_or(false))
                && Some(truth[i]) != self.ignore_label
        };
        for i in 0..truth.len() {
            if !counted(i) {
                continue;
            }
            for value in [truth[i], pred[i]] {
                if value as usize >= k {
                    return Err(Error::TargetOutOfRange {
                        op,
                        value,
                        classes: k,
                    });
                }
            }
        }
        for i in 0..truth.len() {
            if counted(i) {
                self.counts[truth[i] as usize * k + pred[i] as usize] += 1;
            }
        }
        Ok(())
    }

    /// Adds the counts of `other` (e.g. from another worker or another batch).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the numbers of classes or the ignore labels differ.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.classes != self.classes || other.ignore_label != self.ignore_label {
            return Err(invalid(
                "ConfusionMatrix::merge",
                format!(
                    "cannot merge a matrix of {} classes (ignore {:?}) into one of {} classes \
                     (ignore {:?})",
                    other.classes, other.ignore_label, self.classes, self.ignore_label
                ),
            ));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }
}

/// The trainer's epoch metric: cleared before every phase, fed by the step closure (e.g. with
/// [`ConfusionMatrix::update_from_logits`]), summarised as `accuracy`, `kappa`, `miou` (mean
/// IoU over all classes) and `macro_f1`. The trainer logs them as `train_accuracy`,
/// `val_accuracy`, `val_miou`, ..., which is also what [`crate::trainer::Monitor`] names.
impl EpochMetric for ConfusionMatrix {
    fn reset(&mut self) {
        self.counts.fill(0);
    }

    fn summary(&self) -> Vec<(String, f64)> {
        vec![
            ("accuracy".into(), self.accuracy()),
            ("kappa".into(), self.kappa()),
            ("miou".into(), self.mean_iou()),
            ("macro_f1".into(), self.macro_f1()),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn epoch_metric_summarises_and_resets() {
        let mut cm = ConfusionMatrix::new(3).unwrap().with_ignore_label(9);
        // truth 0 0 1 1 2 2 (9 ignored), prediction 0 1 1 1 2 0
        cm.update(&[0, 0, 1, 1, 2, 2, 9], &[0, 1, 1, 1, 2, 0, 2])
            .unwrap();
        let summary = EpochMetric::summary(&cm);
        let keys: Vec<&str> = summary.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["accuracy", "kappa", "miou", "macro_f1"]);
        // Values by hand: 4 of 6 right; chance agreement (2*2 + 2*3 + 2*1) / 36 = 1/3;
        // IoU 1/3, 2/3, 1/2; F1 1/2, 4/5, 2/3.
        let expected = [
            4.0 / 6.0,
            (4.0 / 6.0 - 1.0 / 3.0) / (1.0 - 1.0 / 3.0),
            (1.0 / 3.0 + 2.0 / 3.0 + 0.5) / 3.0,
            (0.5 + 0.8 + 2.0 / 3.0) / 3.0,
        ];
        for ((k, v), e) in summary.iter().zip(expected) {
            assert!((v - e).abs() < 1e-12, "{k}: {v} != {e}");
        }
        EpochMetric::reset(&mut cm);
        assert_eq!(cm.total(), 0);
        assert_eq!(cm.classes(), 3);
        assert_eq!(cm.ignore_label(), Some(9));
        // Empty: the ratios are 0 (zero_division = 0), kappa is undefined.
        for (k, v) in EpochMetric::summary(&cm) {
            assert!(if k == "kappa" { v.is_nan() } else { v == 0.0 }, "{k}: {v}");
        }
    }
}
