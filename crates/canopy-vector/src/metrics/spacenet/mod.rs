//! The SpaceNet building-detection score, computed as CosmiQ's solaris computes it.
//!
//! # Algorithm
//! For one image, with truth polygons `T` (in their given order) and predictions `P` (in their
//! given order; [`evaluate_spacenet`] sorts them by decreasing confidence first, as solaris does):
//!
//! 1. Truth polygons with area `< min_area` are set aside: they can be neither matched nor missed.
//!    Predictions with area `<= min_area` are ignored: neither true nor false positives.
//! 2. Each prediction `p`, in order, computes its IoU with every truth polygon still unmatched and
//!    takes the *first* one with the largest IoU (solaris's `idxmax`, so ties go to the truth
//!    polygon that comes first). That truth polygon's recorded IoU becomes `max(recorded, IoU)`
//!    — whether or not the pair matches — and if the IoU is **strictly greater** than the
//!    threshold, `p` is a true positive and the truth polygon leaves the pool.
//! 3. Predictions that did not match are false positives; truth polygons left in the pool with
//!    non-zero area are false negatives.
//! 4. `precision = TP / (TP + FP)`, `recall = TP / (TP + FN)`, each 0 when its denominator is 0;
//!    `F1 = 2 P R / (P + R)`, 0 when `P R = 0`. The same floating-point expressions as solaris,
//!    so scores agree to the last bit, not only to a tolerance.
//!
//! Summed scores (an AOI, a nadir bin, a whole data set) add the TP / FP / FN counts and apply
//! step 4 to the sums ([`MatchCounts`]), as solaris's `challenges.py` does.
//!
//! # Invalid geometry
//! solaris repairs an invalid *prediction* with shapely's `buffer(0)` and gives an invalid
//! *truth* polygon an IoU of 0 with everything. This module repairs invalid predictions with
//! `geo`'s `MakeValid` (see the [parent module](super#invalid-input)) and, like solaris, scores
//! invalid truth polygons 0 (so they end up as false negatives); [`MatchReport`] counts both.
//!
//! # CSV layout
//! A SpaceNet CSV has a header with `ImageId`, `BuildingId`, `PolygonWKT_Pix` and optionally
//! `PolygonWKT_Geo` (ignored) and `Confidence` (predictions). Geometries are pixel-space WKT
//! polygons, often with a Z of 0 (`POLYGON ((x y 0, ...))`); `POLYGON EMPTY` marks an image
//! without buildings, which still appears in the per-image results (with zero counts).
//!
//! # Example
//! ```
//! use canopy_vector::metrics::{evaluate_spacenet, parse_spacenet_csv, SpaceNetConfig};
//! use std::path::Path;
//!
//! let truth = "ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo\n\
//!     img_1,0,\"POLYGON ((0 0 0,10 0 0,10 10 0,0 10 0,0 0 0))\",POLYGON EMPTY\n\
//!     img_2,-1,POLYGON EMPTY,POLYGON EMPTY\n";
//! let preds = "ImageId,BuildingId,PolygonWKT_Pix,Confidence\n\
//!     img_1,0,\"POLYGON ((1 0,10 0,10 10,1 10,1 0))\",0.9\n";
//! let truth = parse_spacenet_csv(truth, Path::new("truth.csv"))?;
//! let preds = parse_spacenet_csv(preds, Path::new("preds.csv"))?;
//! let eval = evaluate_spacenet(&truth, &preds, &SpaceNetConfig::default())?;
//! assert_eq!(eval.images.len(), 2); // img_2 has no building but is scored
//! assert_eq!((eval.total.tp, eval.total.fp, eval.total.fn_), (1, 0, 0));
//! assert!((eval.per_truth_iou[0] - 0.9).abs() < 1e-12);
//! # Ok::<(), canopy_vector::Error>(())
//! ```
//!
//! # Reference
//! solaris 0.5, `solaris/eval/base.py` (`Evaluator.load_proposal`, `eval_iou_spacenet_csv`),
//! `solaris/eval/iou.py` (`calculate_iou`) and `solaris/eval/challenges.py`
//! (`spacenet_buildings_2`, `off_nadir_buildings`, `get_chip_id`),
//! <https://github.com/CosmiQ/solaris>. The conformance test `tests/metrics.rs` reproduces the
//! results solaris publishes for its sample data.

mod csv;

pub use csv::{
    evaluate_spacenet, parse_spacenet_csv, read_spacenet_csv, spacenet_aoi, ImageScore,
    SpaceNetEvaluation, SpaceNetRecord,
};

use super::{check_finite, Region};
use crate::{Error, Result};
use geo::{Area, Polygon, Validation};
use std::ops::{Add, AddAssign};

/// Parameters of the SpaceNet score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpaceNetConfig {
    /// A pair matches when its IoU is strictly greater than this (solaris `miniou`).
    pub iou_threshold: f64,
    /// Truth polygons smaller than this and predictions not larger than this are left out
    /// (solaris `min_area`, in squared pixels).
    pub min_area: f64,
}

impl Default for SpaceNetConfig {
    /// The SpaceNet 2 / off-nadir challenge setting: IoU 0.5, minimum area 20 px².
    fn default() -> Self {
        SpaceNetConfig {
            iou_threshold: 0.5,
            min_area: 20.0,
        }
    }
}

impl SpaceNetConfig {
    fn validate(&self, op: &'static str) -> Result<()> {
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "iou_threshold must be in (0, 1], got {}",
                    self.iou_threshold
                ),
            ));
        }
        if !(self.min_area.is_finite() && self.min_area >= 0.0) {
            return Err(Error::invalid(
                op,
                format!("min_area must be finite and >= 0, got {}", self.min_area),
            ));
        }
        Ok(())
    }
}

/// True-positive, false-positive and false-negative counts, and the scores derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchCounts {
    /// Matched predictions.
    pub tp: usize,
    /// Unmatched predictions.
    pub fp: usize,
    /// Unmatched truth polygons.
    pub fn_: usize,
}

impl MatchCounts {
    /// `TP / (TP + FP)`, or 0 when there are no predictions.
    pub fn precision(&self) -> f64 {
        let d = (self.tp + self.fp) as f64;
        if d > 0.0 {
            self.tp as f64 / d
        } else {
            0.0
        }
    }

    /// `TP / (TP + FN)`, or 0 when there is no truth.
    pub fn recall(&self) -> f64 {
        let d = (self.tp + self.fn_) as f64;
        if d > 0.0 {
            self.tp as f64 / d
        } else {
            0.0
        }
    }

    /// `2 P R / (P + R)`, or 0 when `P R = 0` (solaris's expression, evaluated in that order).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if r * p > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
}

impl Add for MatchCounts {
    type Output = MatchCounts;
    fn add(self, o: MatchCounts) -> MatchCounts {
        MatchCounts {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
        }
    }
}

impl AddAssign for MatchCounts {
    fn add_assign(&mut self, o: MatchCounts) {
        *self = *self + o;
    }
}

impl std::iter::Sum for MatchCounts {
    fn sum<I: Iterator<Item = MatchCounts>>(iter: I) -> MatchCounts {
        iter.fold(MatchCounts::default(), Add::add)
    }
}

/// One matched (truth, prediction) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Index into the truth slice.
    pub truth: usize,
    /// Index into the prediction slice.
    pub pred: usize,
    /// Their IoU (greater than the threshold).
    pub iou: f64,
}

/// The outcome of matching the predictions of one image against its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchReport {
    /// True positives: matched predictions.
    pub tp: usize,
    /// False positives: considered predictions without a match.
    pub fp: usize,
    /// False negatives: unmatched truth polygons of non-zero area (and at least `min_area`).
    pub fn_: usize,
    /// `TP / (TP + FP)`, 0 without predictions.
    pub precision: f64,
    /// `TP / (TP + FN)`, 0 without truth.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when either is 0.
    pub f1: f64,
    /// The matched pairs, in the order the predictions were processed.
    pub matches: Vec<Match>,
    /// Per truth polygon: the largest IoU of a prediction that picked it as its best remaining
    /// candidate, matched or not (solaris's `iou_score` column of `get_iou_by_building`); 0 for
    /// polygons set aside by `min_area`.
    pub per_truth_iou: Vec<f64>,
    /// Per prediction: its best IoU against the truth polygons still unmatched when it was
    /// processed, matched or not; 0 for ignored predictions.
    pub per_pred_iou: Vec<f64>,
    /// Predictions left out because their area is not above `min_area`.
    pub ignored_preds: usize,
    /// Truth polygons left out because their area is below `min_area`.
    pub ignored_truths: usize,
    /// Invalid predictions repaired before scoring.
    pub repaired_preds: usize,
    /// Invalid truth polygons (scored IoU 0 with every prediction, as in solaris).
    pub invalid_truths: usize,
}

impl MatchReport {
    /// The TP / FP / FN counts, for summing over images.
    pub fn counts(&self) -> MatchCounts {
        MatchCounts {
            tp: self.tp,
            fp: self.fp,
            fn_: self.fn_,
        }
    }
}

/// The SpaceNet F1 of one image at IoU threshold `iou_threshold`, with no minimum area (only
/// predictions of zero area are ignored). Predictions are matched in the order given.
///
/// See [`spacenet_match`] for the challenge setting with a minimum area.
///
/// # Errors
/// [`Error::InvalidArgument`] for a threshold outside `(0, 1]`, non-finite coordinates or an
/// invalid prediction that cannot be repaired.
pub fn spacenet_f1(
    truth: &[Polygon<f64>],
    preds: &[Polygon<f64>],
    iou_threshold: f64,
) -> Result<MatchReport> {
    spacenet_match(
        truth,
        preds,
        &SpaceNetConfig {
            iou_threshold,
            min_area: 0.0,
        },
    )
}

/// Matches the predictions of one image to its truth polygons, as described in the
/// [module docs](self). Predictions are processed in the order given.
///
/// # Errors
/// As [`spacenet_f1`], plus a negative or non-finite `min_area`.
///
/// # Performance
/// `O(|truth| · |preds|)` IoU evaluations, each rejected in `O(1)` when the bounding boxes are
/// disjoint.
pub fn spacenet_match(
    truth: &[Polygon<f64>],
    preds: &[Polygon<f64>],
    config: &SpaceNetConfig,
) -> Result<MatchReport> {
    const OP: &str = "spacenet_match";
    config.validate(OP)?;
    // Invalid truth polygons are not repaired: they score 0 (`None`).
    let truth_regions = truth
        .iter()
        .map(|t| {
            check_finite(OP, t)?;
            Ok(if t.is_valid() {
                Some(Region::new(OP, t)?)
            } else {
                None
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Areas of the polygons as given (shapely's `.area`), used by the filters.
    let truth_area: Vec<f64> = truth.iter().map(|t| t.unsigned_area()).collect();
    let mut remaining: Vec<usize> = (0..truth.len())
        .filter(|&j| truth_area[j] >= config.min_area)
        .collect();
    let ignored_truths = truth.len() - remaining.len();
    let invalid_truths = truth_regions.iter().filter(|r| r.is_none()).count();

    let mut per_truth_iou = vec![0.0; truth.len()];
    let mut per_pred_iou = vec![0.0; preds.len()];
    let mut matches = Vec::new();
    let (mut considered, mut repaired_preds) = (0usize, 0usize);
    for (i, pred) in preds.iter().enumerate() {
        // NaN areas (non-finite coordinates) go on to fail in `Region::new`.
        if pred.unsigned_area() <= config.min_area {
            continue;
        }
        considered += 1;
        let region = Region::new(OP, pred)?;
        if !region.was_valid {
            repaired_preds += 1;
        }
        // First truth polygon with the largest IoU (pandas `idxmax`).
        let mut best: Option<(usize, f64)> = None;
        for (k, &j) in remaining.iter().enumerate() {
            let v = match truth_regions.get(j) {
                Some(Some(t)) => region.iou(t),
                _ => 0.0,
            };
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((k, v));
            }
        }
        let Some((k, v)) = best else { continue };
        let Some(&j) = remaining.get(k) else { continue };
        if let Some(slot) = per_truth_iou.get_mut(j) {
            if v > *slot {
                *slot = v;
            }
        }
        if let Some(slot) = per_pred_iou.get_mut(i) {
            *slot = v;
        }
        if v > config.iou_threshold {
            matches.push(Match {
                truth: j,
                pred: i,
                iou: v,
            });
            remaining.remove(k);
        }
    }
    let counts = MatchCounts {
        tp: matches.len(),
        fp: considered - matches.len(),
        fn_: remaining
            .iter()
            .filter(|&&j| truth_area.get(j).is_some_and(|&a| a > 0.0))
            .count(),
    };
    Ok(MatchReport {
        tp: counts.tp,
        fp: counts.fp,
        fn_: counts.fn_,
        precision: counts.precision(),
        recall: counts.recall(),
        f1: counts.f1(),
        matches,
        per_truth_iou,
        per_pred_iou,
        ignored_preds: preds.len() - considered,
        ignored_truths,
        repaired_preds,
        invalid_truths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    fn rect(x0: f64, y0: f64, w: f64, h: f64) -> Polygon<f64> {
        polygon![(x: x0, y: y0), (x: x0 + w, y: y0), (x: x0 + w, y: y0 + h), (x: x0, y: y0 + h)]
    }

    #[test]
    fn each_truth_matches_at_most_one_prediction() {
        let truth = [rect(0.0, 0.0, 10.0, 10.0)];
        let preds = [rect(0.0, 0.0, 10.0, 10.0), rect(0.5, 0.0, 10.0, 10.0)];
        let r = spacenet_f1(&truth, &preds, 0.5).unwrap();
        assert_eq!((r.tp, r.fp, r.fn_), (1, 1, 0));
        assert_eq!(
            r.matches,
            vec![Match {
                truth: 0,
                pred: 0,
                iou: 1.0
            }]
        );
        // The second prediction found no remaining truth.
        assert_eq!(r.per_pred_iou[1], 0.0);
    }

    #[test]
    fn order_decides_which_prediction_matches() {
        let truth = [rect(0.0, 0.0, 10.0, 10.0)];
        let worse = rect(2.0, 0.0, 10.0, 10.0); // IoU 80/120
        let better = rect(1.0, 0.0, 10.0, 10.0); // IoU 90/110
        let r = spacenet_f1(&truth, &[worse.clone(), better.clone()], 0.5).unwrap();
        assert_eq!(r.matches[0].pred, 0);
        assert!((r.per_truth_iou[0] - 80.0 / 120.0).abs() < 1e-12);
        let r = spacenet_f1(&truth, &[better, worse], 0.5).unwrap();
        assert_eq!(r.matches[0].pred, 0);
        assert!((r.per_truth_iou[0] - 90.0 / 110.0).abs() < 1e-12);
    }

    #[test]
    fn ties_go_to_the_first_truth() {
        // The prediction straddles two truth squares equally.
        let truth = [rect(0.0, 0.0, 10.0, 10.0), rect(10.0, 0.0, 10.0, 10.0)];
        let pred = [rect(5.0, 0.0, 10.0, 10.0)];
        let r = spacenet_f1(&truth, &pred, 0.3).unwrap();
        assert_eq!(r.matches[0].truth, 0);
        assert_eq!(r.per_truth_iou[1], 0.0);
    }

    #[test]
    fn threshold_is_strict() {
        // IoU exactly 0.5: 10x10 truth, 10x5 prediction inside.
        let r = spacenet_f1(
            &[rect(0.0, 0.0, 10.0, 10.0)],
            &[rect(0.0, 0.0, 10.0, 5.0)],
            0.5,
        )
        .unwrap();
        assert_eq!((r.tp, r.fp, r.fn_), (0, 1, 1));
        assert_eq!(r.per_truth_iou[0], 0.5);
    }

    #[test]
    fn min_area_filters_truth_and_predictions() {
        let cfg = SpaceNetConfig {
            iou_threshold: 0.5,
            min_area: 20.0,
        };
        let truth = [rect(0.0, 0.0, 4.0, 4.0), rect(50.0, 0.0, 10.0, 10.0)];
        let preds = [rect(0.0, 0.0, 4.0, 4.0), rect(50.0, 0.0, 10.0, 2.0)]; // areas 16, 20
        let r = spacenet_match(&truth, &preds, &cfg).unwrap();
        assert_eq!((r.tp, r.fp, r.fn_), (0, 0, 1));
        assert_eq!((r.ignored_preds, r.ignored_truths), (2, 1));
    }

    #[test]
    fn invalid_truth_scores_zero_and_repeated_vertices_are_valid() {
        // Figure-of-eight with unequal lobes (66.7 and 16.7): shapely-style area 50.
        let bowtie = polygon![(x: 0., y: 0.), (x: 10., y: 10.), (x: 10., y: 0.), (x: 0., y: 20.)];
        let r = spacenet_f1(
            std::slice::from_ref(&bowtie),
            std::slice::from_ref(&bowtie),
            0.5,
        )
        .unwrap();
        assert_eq!(
            (r.tp, r.fp, r.fn_, r.invalid_truths, r.repaired_preds),
            (0, 1, 1, 1, 1)
        );
        // A repeated vertex is valid for geo as for GEOS: the pair still matches.
        let repeated = polygon![(x: 0., y: 0.), (x: 10., y: 0.), (x: 10., y: 0.), (x: 10., y: 10.), (x: 0., y: 10.)];
        let r = spacenet_f1(
            std::slice::from_ref(&repeated),
            std::slice::from_ref(&repeated),
            0.5,
        )
        .unwrap();
        assert_eq!((r.tp, r.invalid_truths, r.repaired_preds), (1, 0, 0));
    }

    #[test]
    fn empty_inputs_score_zero() {
        let r = spacenet_f1(&[], &[], 0.5).unwrap();
        assert_eq!((r.tp, r.fp, r.fn_, r.f1), (0, 0, 0, 0.0));
    }

    #[test]
    fn bad_threshold_is_rejected() {
        assert!(spacenet_f1(&[], &[], 0.0).is_err());
        assert!(spacenet_f1(&[], &[], f64::NAN).is_err());
    }

    #[test]
    fn counts_reproduce_solaris_float_expressions() {
        let c = MatchCounts {
            tp: 28,
            fp: 2,
            fn_: 6,
        };
        assert_eq!(c.f1(), 0.8749999999999999); // solaris SN2_test_results_full.csv
        assert_eq!(c.precision(), 0.9333333333333333);
    }
}
