//! Scores derived from a [`ConfusionMatrix`], with scikit-learn's definitions and its
//! `zero_division=0` behaviour: a ratio whose denominator is 0 is 0.

use std::fmt;

use super::ConfusionMatrix;

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The scores of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    /// `tp / (tp + fp)`: of the pixels predicted as the class, the share that is right.
    pub precision: f64,
    /// `tp / (tp + fn)`: of the pixels of the class, the share found.
    pub recall: f64,
    /// `2·tp / (2·tp + fp + fn)`, the harmonic mean of precision and recall.
    pub f1: f64,
    /// `tp / (tp + fp + fn)`, the intersection over union (Jaccard index).
    pub iou: f64,
    /// Number of pixels whose true class this is.
    pub support: u64,
}

impl ConfusionMatrix {
    /// Pixels of true class `c` (row sum).
    pub fn support(&self, c: usize) -> u64 {
        (0..self.classes()).map(|p| self.count(c, p)).sum()
    }

    /// Pixels predicted as class `c` (column sum).
    pub fn predicted(&self, c: usize) -> u64 {
        (0..self.classes()).map(|t| self.count(t, c)).sum()
    }

    /// Correctly classified pixels of class `c` (diagonal entry).
    pub fn true_positives(&self, c: usize) -> u64 {
        self.count(c, c)
    }

    /// Overall accuracy: the trace over the total (scikit-learn's `accuracy_score`); 0 when
    /// nothing was counted.
    pub fn accuracy(&self) -> f64 {
        let trace = (0..self.classes()).map(|c| self.count(c, c)).sum();
        ratio(trace, self.total())
    }

    /// Cohen's kappa, `(p_o - p_e) / (1 - p_e)`, computed as scikit-learn's
    /// `cohen_kappa_score` does: `1 - Σ_{i≠j} C_ij / Σ_{i≠j} E_ij` with the chance-agreement
    /// matrix `E_ij = (row sum i)·(column sum j) / total`.
    ///
    /// NaN when it is undefined (nothing counted, or truth and prediction both a single
    /// class), as scikit-learn's default `replace_undefined_by=np.nan`.
    pub fn kappa(&self) -> f64 {
        let k = self.classes();
        let n = self.total() as f64;
        if n == 0.0 {
            return f64::NAN;
        }
        let rows: Vec<f64> = (0..k).map(|c| self.support(c) as f64).collect();
        let cols: Vec<f64> = (0..k).map(|c| self.predicted(c) as f64).collect();
        let mut observed = 0.0;
        let mut expected = 0.0;
        for (i, ri) in rows.iter().enumerate() {
            for (j, cj) in cols.iter().enumerate() {
                if i != j {
                    observed += self.count(i, j) as f64;
                    expected += ri * cj / n;
                }
            }
        }
        if expected == 0.0 {
            return f64::NAN;
        }
        1.0 - observed / expected
    }

    /// Precision of class `c`: `tp / (tp + fp)`, 0 when nothing was predicted as `c`.
    pub fn precision(&self, c: usize) -> f64 {
        ratio(self.count(c, c), self.predicted(c))
    }

    /// Recall of class `c`: `tp / (tp + fn)`, 0 when the class never occurs.
    pub fn recall(&self, c: usize) -> f64 {
        ratio(self.count(c, c), self.support(c))
    }

    /// F1 of class `c`: `2·tp / (2·tp + fp + fn)`, 0 when the class neither occurs nor is
    /// predicted.
    pub fn f1(&self, c: usize) -> f64 {
        let tp = self.count(c, c);
        let den = self.support(c) + self.predicted(c);
        ratio(2 * tp, den)
    }

    /// IoU (Jaccard index) of class `c`: `tp / (tp + fp + fn)`, 0 when the class neither
    /// occurs nor is predicted.
    pub fn iou(&self, c: usize) -> f64 {
        let tp = self.count(c, c);
        ratio(tp, self.support(c) + self.predicted(c) - tp)
    }

    /// The scores of every class.
    pub fn class_scores(&self) -> Vec<ClassScores> {
        (0..self.classes())
            .map(|c| ClassScores {
                precision: self.precision(c),
                recall: self.recall(c),
                f1: self.f1(c),
                iou: self.iou(c),
                support: self.support(c),
            })
            .collect()
    }

    /// Unweighted mean of the per-class F1 over all `K` classes (scikit-learn's
    /// `f1_score(average="macro", labels=range(K), zero_division=0)`: a class absent from both
    /// truth and prediction counts as 0).
    pub fn macro_f1(&self) -> f64 {
        let k = self.classes();
        (0..k).map(|c| self.f1(c)).sum::<f64>() / k as f64
    }

    /// Mean of the per-class F1 weighted by support (`average="weighted"`); 0 when nothing was
    /// counted.
    pub fn weighted_f1(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let k = self.classes();
        let s: f64 = (0..k).map(|c| self.f1(c) * self.support(c) as f64).sum();
        s / total as f64
    }

    /// Mean IoU over all `K` classes (scikit-learn's `jaccard_score(average="macro",
    /// labels=range(K), zero_division=0)`); a class absent from both truth and prediction
    /// counts as 0.
    pub fn mean_iou(&self) -> f64 {
        let k = self.classes();
        (0..k).map(|c| self.iou(c)).sum::<f64>() / k as f64
    }

    /// A text table of the per-class scores and the overall ones, for logs and examples.
    /// Classes are named by `names` where given (missing names fall back to the index).
    ///
    /// ```
    /// # fn main() -> canopy_train::Result<()> {
    /// use canopy_train::metrics::ConfusionMatrix;
    /// let mut cm = ConfusionMatrix::new(2)?;
    /// cm.update(&[0, 0, 1, 1], &[0, 1, 1, 1])?;
    /// let table = cm.to_table(Some(&["background", "building"]));
    /// assert!(table.contains("building"));
    /// assert!(table.contains("accuracy"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn to_table(&self, names: Option<&[&str]>) -> String {
        let label = |c: usize| -> String {
            names
                .and_then(|n| n.get(c))
                .map_or_else(|| c.to_string(), |s| (*s).to_string())
        };
        let width = (0..self.classes())
            .map(|c| label(c).chars().count())
            .max()
            .unwrap_or(0)
            .max(12);
        let mut out = format!(
            "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
            "class", "precision", "recall", "f1", "iou", "support"
        );
        for (c, s) in self.class_scores().iter().enumerate() {
            out += &format!(
                "{:<width$} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>10}\n",
                label(c),
                s.precision,
                s.recall,
                s.f1,
                s.iou,
                s.support
            );
        }
        out += &format!(
            "{:<width$} {:>9} {:>9} {:>9.4} {:>9.4} {:>10}\n",
            "macro",
            "",
            "",
            self.macro_f1(),
            self.mean_iou(),
            self.total()
        );
        out += &format!(
            "{:<width$} {:>9} {:>9} {:>9.4}\n",
            "weighted",
            "",
            "",
            self.weighted_f1()
        );
        out += &format!(
            "accuracy {:.4}   kappa {:.4}   pixels {}\n",
            self.accuracy(),
            self.kappa(),
            self.total()
        );
        out
    }
}

impl fmt::Display for ConfusionMatrix {
    /// The table of [`ConfusionMatrix::to_table`] with class indices as names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table(None))
    }
}
