//! Polygon metrics for building extraction: per-building IoU, the SpaceNet F1 score and shape
//! metrics between matched polygon pairs.
//!
//! # What is here
//! - [`iou`]: intersection over union of two polygons, on `geo`'s [`BooleanOps`].
//! - [`spacenet_f1`] / [`spacenet_match`]: the SpaceNet building-detection score (greedy one-to-one
//!   matching at IoU > 0.5, then precision, recall, F1), computed the way CosmiQ's solaris does;
//!   [`read_spacenet_csv`] and [`evaluate_spacenet`] run it over a SpaceNet CSV submission.
//!   Details and the reference in [`spacenet`].
//! - [`polis`], [`max_tangent_angle_error`], [`vertex_count_ratio`], [`vertex_accuracy_curve`]:
//!   shape metrics for a matched (prediction, truth) pair. Definitions and sources in [`shape`].
//!
//! # Invalid input
//! A polygon that is not valid in the OGC sense (self-crossing ring, hole outside its shell, ...)
//! is repaired before any area is computed, with `geo`'s [`MakeValid`] (Ledoux et al. 2014,
//! constrained triangulation with the *even-odd* rule: every lobe of a figure-of-eight survives,
//! a region covered twice is outside). Shapely's `buffer(0)`, which solaris applies to invalid
//! predictions, can keep fewer lobes of a self-crossing ring, so IoUs of such polygons may differ
//! from solaris's; valid polygons are unaffected. Non-finite coordinates are an error.
//!
//! # Example
//! ```
//! use canopy_vector::metrics::{iou, spacenet_f1};
//! use geo::{polygon, Polygon};
//!
//! let truth: Polygon<f64> = polygon![(x: 0., y: 0.), (x: 2., y: 0.), (x: 2., y: 2.), (x: 0., y: 2.)];
//! let shifted: Polygon<f64> = polygon![(x: 1., y: 0.), (x: 3., y: 0.), (x: 3., y: 2.), (x: 1., y: 2.)];
//! // Half of each square overlaps the other: 2 / (4 + 4 - 2).
//! assert!((iou(&truth, &shifted)? - 1.0 / 3.0).abs() < 1e-12);
//!
//! // One prediction equals the truth, one is elsewhere: 1 TP, 1 FP, 0 FN.
//! let far: Polygon<f64> = polygon![(x: 10., y: 10.), (x: 12., y: 10.), (x: 12., y: 12.)];
//! let report = spacenet_f1(&[truth.clone()], &[truth, far], 0.5)?;
//! assert_eq!((report.tp, report.fp, report.fn_), (1, 1, 0));
//! assert!((report.f1 - 2.0 / 3.0).abs() < 1e-12);
//! # Ok::<(), canopy_vector::Error>(())
//! ```
//!
//! # References
//! - CosmiQ Works, *solaris*, `solaris/eval/base.py` (`Evaluator.eval_iou_spacenet_csv`) and
//!   `solaris/eval/iou.py` (`calculate_iou`), <https://github.com/CosmiQ/solaris>.
//! - J. Avbelj, R. Müller, R. Bamler, "A metric for polygon comparison and building extraction
//!   evaluation", IEEE GRSL 12(1), 2015.
//! - N. Girard, D. Smirnov, J. Solomon, Y. Tarabalka, "Polygonal building extraction by frame
//!   field learning", CVPR 2021, code <https://github.com/Lydorn/Polygonization-by-Frame-Field-Learning>.
//! - H. Ledoux, K. Arroyo Ohori, M. Meijers, "A triangulation-based approach to automatically
//!   repair GIS polygons", Computers & Geosciences 66, 2014 (`geo`'s `MakeValid`).
//!
//! [`BooleanOps`]: geo::BooleanOps
//! [`MakeValid`]: geo::MakeValid

pub mod shape;
pub mod spacenet;

pub use shape::{
    max_tangent_angle_error, polis, shape_metrics, vertex_accuracy, vertex_accuracy_curve,
    vertex_count, vertex_count_ratio, ShapeMetrics, TangentAngleConfig, VERTEX_ACCURACY_TAUS,
};
pub use spacenet::{
    evaluate_spacenet, parse_spacenet_csv, read_spacenet_csv, spacenet_aoi, spacenet_f1,
    spacenet_match, ImageScore, Match, MatchCounts, MatchReport, SpaceNetConfig,
    SpaceNetEvaluation, SpaceNetRecord,
};

use crate::{Error, Result};
use geo::{
    Area, BooleanOps, BoundingRect, Coord, MakeValid, MultiPolygon, Polygon, Rect, Validation,
};

/// Intersection over union of two polygons: `area(a ∩ b) / area(a ∪ b)`, in `[0, 1]`.
///
/// The intersection comes from `geo`'s [`BooleanOps`], whose vertices are then
/// moved from the overlay's integer grid back to the exact input vertices and edge crossings
/// they stand for (agreement with shapely/GEOS to ~1e-15 instead of ~1e-9); the union area is
/// `area(a) + area(b) - area(a ∩ b)`, which equals the area of the union polygon but needs no
/// second boolean operation. Polygons whose bounding boxes do not overlap score 0 without any
/// boolean operation. Two polygons of zero area score 0.
///
/// Invalid polygons are repaired first (see the [module docs](self#invalid-input)).
///
/// # Errors
/// [`Error::InvalidArgument`] if a coordinate is not finite or the repair of an invalid polygon
/// fails.
///
/// # Performance
/// One boolean operation, `O((n + m) log(n + m))` for `n` and `m` vertices, plus a validity check
/// of each polygon.
pub fn iou(a: &Polygon<f64>, b: &Polygon<f64>) -> Result<f64> {
    let a = Region::new("iou", a)?;
    let b = Region::new("iou", b)?;
    Ok(a.iou(&b))
}

/// A polygon prepared for repeated IoU computations: repaired if needed, with its area and
/// bounding box cached.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    shape: MultiPolygon<f64>,
    area: f64,
    bbox: Option<Rect<f64>>,
    /// Whether the input was already valid (no repair applied).
    pub(crate) was_valid: bool,
}

impl Region {
    /// Checks finiteness, repairs an invalid polygon, caches area and bounding box.
    pub(crate) fn new(op: &'static str, polygon: &Polygon<f64>) -> Result<Self> {
        check_finite(op, polygon)?;
        let was_valid = polygon.is_valid();
        let shape = if was_valid {
            MultiPolygon(vec![polygon.clone()])
        } else {
            polygon.make_valid().map_err(|e| {
                Error::invalid(op, format!("could not repair an invalid polygon: {e}"))
            })?
        };
        let area = shape.unsigned_area();
        let bbox = shape.bounding_rect();
        Ok(Region {
            shape,
            area,
            bbox,
            was_valid,
        })
    }

    /// IoU with another region (see [`iou`]).
    pub(crate) fn iou(&self, other: &Region) -> f64 {
        if self.area <= 0.0 || other.area <= 0.0 {
            return 0.0;
        }
        let (Some(p), Some(q)) = (self.bbox, other.bbox) else {
            return 0.0;
        };
        if p.max().x < q.min().x
            || q.max().x < p.min().x
            || p.max().y < q.min().y
            || q.max().y < p.min().y
        {
            return 0.0;
        }
        let mut overlap = self.shape.intersection(&other.shape);
        let extent = p.width().max(p.height()).max(q.width()).max(q.height());
        snap_to_exact(
            &mut overlap,
            &self.shape,
            &other.shape,
            extent * SNAP_RELATIVE,
        );
        let intersection = overlap.unsigned_area();
        let union = self.area + other.area - intersection;
        if union <= 0.0 {
            return 0.0;
        }
        (intersection / union).clamp(0.0, 1.0)
    }
}

/// How far, relative to the larger bounding-box side, a vertex of a boolean-operation result may
/// lie from the exact point it stands for. `geo`'s `BooleanOps` runs i_overlay on an integer grid
/// whose step is at most `extent · 2⁻²⁹`; this allows 16 steps.
const SNAP_RELATIVE: f64 = 1.0 / (1u64 << 25) as f64;

/// Moves each vertex of `result`, the overlay of `a` and `b`, back to the exact point it
/// approximates: an input vertex within `eps`, or else the intersection of the `a` edge and the
/// `b` edge that both pass within `eps`. The overlay snaps coordinates to its integer grid, which
/// costs about `1e-9` relative accuracy in areas; this restores shapely/GEOS-level agreement
/// (`~1e-15`) without changing the topology the overlay found. Vertices with no such
/// candidates keep their overlay coordinates.
fn snap_to_exact(
    result: &mut MultiPolygon<f64>,
    a: &MultiPolygon<f64>,
    b: &MultiPolygon<f64>,
    eps: f64,
) {
    if eps.is_nan() || eps <= 0.0 {
        return;
    }
    let edges = |m: &MultiPolygon<f64>| -> Vec<geo::Line<f64>> {
        m.0.iter()
            .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
            .flat_map(|r| r.lines())
            .collect()
    };
    let (ea, eb) = (edges(a), edges(b));
    let eps2 = eps * eps;
    let dist2 = |p: Coord<f64>, q: Coord<f64>| (p.x - q.x).powi(2) + (p.y - q.y).powi(2);
    let seg_dist2 = |c: Coord<f64>, l: &geo::Line<f64>| {
        let d = l.delta();
        let len2 = d.x * d.x + d.y * d.y;
        let t = if len2 > 0.0 {
            (((c.x - l.start.x) * d.x + (c.y - l.start.y) * d.y) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        dist2(c, l.start + d * t)
    };
    let nearest = |c: Coord<f64>, lines: &[geo::Line<f64>]| {
        lines
            .iter()
            .map(|l| (seg_dist2(c, l), l))
            .filter(|(d, _)| *d <= eps2)
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, l)| *l)
    };
    let exact = |c: Coord<f64>| -> Coord<f64> {
        // An input vertex (edge start points cover every ring vertex).
        let vertex = ea
            .iter()
            .chain(&eb)
            .map(|l| (dist2(c, l.start), l.start))
            .filter(|(d, _)| *d <= eps2)
            .min_by(|x, y| x.0.total_cmp(&y.0));
        if let Some((_, v)) = vertex {
            return v;
        }
        // A crossing of an `a` edge with a `b` edge.
        let (Some(la), Some(lb)) = (nearest(c, &ea), nearest(c, &eb)) else {
            return c;
        };
        let (da, db) = (la.delta(), lb.delta());
        let denom = da.x * db.y - da.y * db.x;
        if denom == 0.0 {
            return c;
        }
        let w = lb.start - la.start;
        let t = (w.x * db.y - w.y * db.x) / denom;
        let p = la.start + da * t;
        if dist2(p, c) <= 4.0 * eps2 {
            p
        } else {
            c
        }
    };
    for polygon in result.0.iter_mut() {
        polygon.exterior_mut(|ring| ring.0.iter_mut().for_each(|c| *c = exact(*c)));
        polygon.interiors_mut(|rings| {
            for ring in rings {
                ring.0.iter_mut().for_each(|c| *c = exact(*c));
            }
        });
    }
}

/// Rejects polygons with NaN or infinite coordinates.
pub(crate) fn check_finite(op: &'static str, polygon: &Polygon<f64>) -> Result<()> {
    let rings = std::iter::once(polygon.exterior()).chain(polygon.interiors());
    for (r, ring) in rings.enumerate() {
        if let Some(c) = ring
            .0
            .iter()
            .find(|c| !(c.x.is_finite() && c.y.is_finite()))
        {
            return Err(Error::invalid(
                op,
                format!(
                    "ring {r} has a non-finite coordinate ({}, {}); remove NaN/infinite vertices first",
                    c.x, c.y
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    fn square(x0: f64, y0: f64, side: f64) -> Polygon<f64> {
        polygon![(x: x0, y: y0), (x: x0 + side, y: y0), (x: x0 + side, y: y0 + side), (x: x0, y: y0 + side)]
    }

    #[test]
    fn identical_squares_have_iou_one() {
        let a = square(3.0, 4.0, 10.0);
        assert!((iou(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn disjoint_and_touching_squares_have_iou_zero() {
        assert_eq!(
            iou(&square(0.0, 0.0, 1.0), &square(5.0, 0.0, 1.0)).unwrap(),
            0.0
        );
        assert_eq!(
            iou(&square(0.0, 0.0, 1.0), &square(1.0, 0.0, 1.0)).unwrap(),
            0.0
        );
    }

    #[test]
    fn nested_square_iou_is_area_ratio() {
        let v = iou(&square(0.0, 0.0, 4.0), &square(1.0, 1.0, 2.0)).unwrap();
        assert!((v - 4.0 / 16.0).abs() < 1e-12, "{v}");
    }

    #[test]
    fn crossing_edges_are_exact_not_grid_snapped() {
        // A unit square and the same square turned 45° about its centre: the overlap is an
        // octagon with vertices at edge crossings; each tip of the turned square beyond the
        // unit square is a right isosceles triangle of height h = (√2 − 1) / 2.
        let a = square(0.0, 0.0, 1.0);
        let c = std::f64::consts::FRAC_1_SQRT_2;
        let b = polygon![(x: 0.5, y: 0.5 - c), (x: 0.5 + c, y: 0.5), (x: 0.5, y: 0.5 + c), (x: 0.5 - c, y: 0.5)];
        let h = (2f64.sqrt() - 1.0) / 2.0;
        let expected = (1.0 - 4.0 * h * h) / (1.0 + 4.0 * h * h);
        let v = iou(&a, &b).unwrap();
        assert!(
            (v - expected).abs() < 1e-14,
            "{v} vs {expected}: {:e}",
            v - expected
        );
    }

    #[test]
    fn bowtie_is_repaired_not_rejected() {
        // Figure-of-eight with lobes of area 25 each; even-odd repair keeps both.
        let bowtie = polygon![(x: 0., y: 0.), (x: 10., y: 10.), (x: 10., y: 0.), (x: 0., y: 10.)];
        let left = polygon![(x: 0., y: 0.), (x: 5., y: 5.), (x: 0., y: 10.)];
        let v = iou(&bowtie, &left).unwrap();
        assert!((v - 0.5).abs() < 1e-9, "{v}");
    }

    #[test]
    fn nan_coordinate_is_an_error() {
        let bad = polygon![(x: 0., y: 0.), (x: f64::NAN, y: 0.), (x: 1., y: 1.)];
        let err = iou(&bad, &square(0.0, 0.0, 1.0)).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
    }
}
