//! Per-area building IoU and accuracy, the protocol of the Inria Aerial Image Labeling benchmark
//! (Maggiori et al., IGARSS 2017): for every area (city) the IoU of the building class and the
//! pixel accuracy, and overall scores computed from the counts summed over all areas (not the
//! mean of the per-area scores).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfusionMatrix;
use crate::error::invalid;
use crate::Result;

/// Confusion matrices keyed by area name, with one class singled out as "building".
///
/// ```
/// # fn main() -> canopy_train::Result<()> {
/// use canopy_train::metrics::AreaMetrics;
/// let mut m = AreaMetrics::new(2, 1)?;
/// m.update("austin", &[0, 1, 1, 0], &[0, 1, 0, 0])?;
/// m.update("vienna", &[1, 1, 0, 0], &[1, 1, 1, 0])?;
/// assert!((m.iou("austin").unwrap_or(f64::NAN) - 0.5).abs() < 1e-12);
/// // Overall: tp = 3, fp = 1, fn = 1 over both areas.
/// assert!((m.overall_iou() - 0.6).abs() < 1e-12);
/// assert!((m.overall_accuracy() - 0.75).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAreaMetrics")]
pub struct AreaMetrics {
    classes: usize,
    building: usize,
    ignore_label: Option<u32>,
    areas: BTreeMap<String, ConfusionMatrix>,
}

/// The serialised form, validated on the way in.
#[derive(Deserialize)]
struct RawAreaMetrics {
    classes: usize,
    building: usize,
    ignore_label: Option<u32>,
    areas: BTreeMap<String, ConfusionMatrix>,
}

impl TryFrom<RawAreaMetrics> for AreaMetrics {
    type Error = crate::Error;
    fn try_from(r: RawAreaMetrics) -> Result<Self> {
        let mut m = AreaMetrics::new(r.classes, r.building)?;
        m.ignore_label = r.ignore_label;
        for (name, cm) in &r.areas {
            if cm.classes() != r.classes || cm.ignore_label() != r.ignore_label {
                return Err(invalid(
                    "AreaMetrics",
                    format!(
                        "area {name:?} has {} classes (ignore {:?}), the metrics {} (ignore {:?})",
                        cm.classes(),
                        cm.ignore_label(),
                        r.classes,
                        r.ignore_label
                    ),
                ));
            }
        }
        m.areas = r.areas;
        Ok(m)
    }
}

impl AreaMetrics {
    /// Empty metrics for `classes` classes, `building` being the class whose IoU is reported
    /// (1 in the Inria benchmark's binary maps).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `classes` is 0 or `building >= classes`.
    pub fn new(classes: usize, building: usize) -> Result<Self> {
        ConfusionMatrix::new(classes)?;
        if building >= classes {
            return Err(invalid(
                "AreaMetrics::new",
                format!("building class {building} is not one of the {classes} classes"),
            ));
        }
        Ok(AreaMetrics {
            classes,
            building,
            ignore_label: None,
            areas: BTreeMap::new(),
        })
    }

    /// Skips pixels whose true label is `label` in every area.
    pub fn with_ignore_label(mut self, label: u32) -> Self {
        self.ignore_label = Some(label);
        for cm in self.areas.values_mut() {
            *cm = cm.clone().with_ignore_label(label);
        }
        self
    }

    fn empty_matrix(&self) -> Result<ConfusionMatrix> {
        let cm = ConfusionMatrix::new(self.classes)?;
        Ok(match self.ignore_label {
            Some(l) => cm.with_ignore_label(l),
            None => cm,
        })
    }

    /// The matrix of `area`, created empty on first use.
    ///
    /// # Errors
    /// When the class count is invalid (cannot happen for a constructed value).
    pub fn area_mut(&mut self, area: &str) -> Result<&mut ConfusionMatrix> {
        if !self.areas.contains_key(area) {
            let cm = self.empty_matrix()?;
            self.areas.insert(area.to_string(), cm);
        }
        self.areas
            .get_mut(area)
            .ok_or_else(|| invalid("AreaMetrics::area_mut", "area vanished"))
    }

    /// Counts true and predicted labels of one tile of `area`.
    ///
    /// # Errors
    /// As [`ConfusionMatrix::update`].
    pub fn update(&mut self, area: &str, truth: &[u32], pred: &[u32]) -> Result<()> {
        self.area_mut(area)?.update(truth, pred)
    }

    /// Adds a confusion matrix computed elsewhere to `area`.
    ///
    /// # Errors
    /// As [`ConfusionMatrix::merge`].
    pub fn add(&mut self, area: &str, cm: &ConfusionMatrix) -> Result<()> {
        self.area_mut(area)?.merge(cm)
    }

    /// Adds every area of `other` (e.g. another worker's results).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the class counts, building classes or ignore
    /// labels differ.
    pub fn merge(&mut self, other: &AreaMetrics) -> Result<()> {
        if (other.classes, other.building, other.ignore_label)
            != (self.classes, self.building, self.ignore_label)
        {
            return Err(invalid(
                "AreaMetrics::merge",
                "the class count, building class and ignore label must agree",
            ));
        }
        for (name, cm) in &other.areas {
            self.add(name, cm)?;
        }
        Ok(())
    }

    /// The building class.
    pub fn building_class(&self) -> usize {
        self.building
    }

    /// Area names in sorted order.
    pub fn areas(&self) -> impl Iterator<Item = &str> {
        self.areas.keys().map(String::as_str)
    }

    /// The confusion matrix of `area`.
    pub fn area(&self, area: &str) -> Option<&ConfusionMatrix> {
        self.areas.get(area)
    }

    /// Building IoU of `area`, `None` for an unknown area.
    pub fn iou(&self, area: &str) -> Option<f64> {
        self.areas.get(area).map(|cm| cm.iou(self.building))
    }

    /// Pixel accuracy of `area`, `None` for an unknown area.
    pub fn accuracy(&self, area: &str) -> Option<f64> {
        self.areas.get(area).map(ConfusionMatrix::accuracy)
    }

    /// The counts summed over all areas.
    ///
    /// # Errors
    /// Cannot fail for a constructed value (every area shares the class count).
    pub fn overall(&self) -> Result<ConfusionMatrix> {
        let mut sum = self.empty_matrix()?;
        for cm in self.areas.values() {
            sum.merge(cm)?;
        }
        Ok(sum)
    }

    /// Building IoU from the counts summed over all areas (0 when empty).
    pub fn overall_iou(&self) -> f64 {
        self.overall().map_or(0.0, |cm| cm.iou(self.building))
    }

    /// Pixel accuracy from the counts summed over all areas (0 when empty).
    pub fn overall_accuracy(&self) -> f64 {
        self.overall().map_or(0.0, |cm| cm.accuracy())
    }

    /// A text table with one row per area and the overall row, as the benchmark reports it.
    pub fn to_table(&self) -> String {
        let width = self
            .areas
            .keys()
            .map(|a| a.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut out = format!(
            "{:<width$} {:>8} {:>9} {:>12}\n",
            "area", "IoU", "accuracy", "pixels"
        );
        for (name, cm) in &self.areas {
            out += &format!(
                "{:<width$} {:>8.2} {:>9.2} {:>12}\n",
                name,
                100.0 * cm.iou(self.building),
                100.0 * cm.accuracy(),
                cm.total()
            );
        }
        let total = self.overall().map_or(0, |cm| cm.total());
        out += &format!(
            "{:<width$} {:>8.2} {:>9.2} {:>12}\n",
            "overall",
            100.0 * self.overall_iou(),
            100.0 * self.overall_accuracy(),
            total
        );
        out
    }
}

impl fmt::Display for AreaMetrics {
    /// [`AreaMetrics::to_table`] (scores in percent, as the benchmark reports them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table())
    }
}
