//! Shape metrics between a predicted polygon and the truth polygon it was matched to.
//!
//! IoU says how much area two polygons share; these say how alike their outlines are. All work
//! on the boundary (every ring: exterior and holes) and take the polygons as given, valid or not.
//! "Vertices" of a polygon are the coordinates of its rings without each ring's closing repeat.
//!
//! # PoLiS ([`polis`])
//! Avbelj, Müller & Bamler (2015), eq. 2: with `q` vertices `a_j` of `A` and `r` vertices `b_k`
//! of `B`,
//!
//! `PoLiS(A, B) = 1/(2q) Σ_j d(a_j, ∂B) + 1/(2r) Σ_k d(b_k, ∂A)`,
//!
//! where `d(x, ∂P)` is the Euclidean distance from `x` to the closest point of the boundary of
//! `P` (anywhere on an edge, not only at a vertex). It is symmetric, 0 for identical outlines,
//! in the units of the coordinates (pixels here). The Python function copied between building
//! extraction repositories (the `polis` of CrowdAI's mapping challenge tooling, HiSup's
//! `tools/evaluation.py`) divides by `2 (q + 1)` because it counts the closing vertex, and uses
//! exteriors only; it is therefore slightly smaller than the paper's value computed here.
//!
//! # Maximum tangent angle error ([`max_tangent_angle_error`])
//! Girard et al. (2021), Sec. 4 "max tangent angle error", as computed by `compute_contour_measure`
//! in `lydorn_utils/polygon_utils.py`, which their evaluation scripts call with sampling spacing
//! 1 px (Inria shapefiles) or 2 px (CrowdAI) and maximum stretch 2:
//! 1. Every ring of the prediction is resampled: an edge of length `L` is cut into
//!    `max(1, round(L / spacing))` equal parts (`round` half to even, as Python's).
//! 2. Each sample is projected onto its closest point of the truth polygon's boundary.
//! 3. Each pair of consecutive samples gives a predicted edge `e` and a projected edge `e'`.
//!    Pairs where either has zero length are dropped, and so are pairs stretched by the
//!    projection: `|e| / |e'|` outside `(1 / max_stretch, max_stretch)`.
//! 4. The error is `arccos(min |e · e'| / (|e| |e'|))` over all remaining pairs of all rings, in
//!    radians, in `[0, π/2]`; `None` when no pair remains.
//!
//! Near a corner, a sample can be closer to the neighbouring truth edge than to the one it runs
//! along; its projected edge then cuts the corner, and that angle can dominate: a 20 px square
//! rotated by 5° scores about 30.4° (in the reference as here), one rotated by 10° or more
//! scores the rotation.
//!
//! Differences with the reference: it projects onto the contours of *all* truth polygons of the
//! image and only scores predictions whose area is more than half covered by truth; here the pair
//! is given (for example by [`spacenet_match`](super::spacenet_match), whose IoU > 0.5 implies
//! that coverage), and projection is onto the matched truth polygon only. Between boundary
//! points equally close to a sample, the first (in ring, then edge order) is taken.
//!
//! # Vertex count ratio ([`vertex_count_ratio`])
//! Predicted vertices divided by truth vertices (the "N ratio" of HiSup, Xu et al. 2023): above 1
//! the prediction is more complex than the truth, below 1 simpler. Vertices are counted as
//! stored, collinear and repeated ones included ([`vertex_count`]).
//!
//! # Vertex accuracy curve ([`vertex_accuracy`], [`vertex_accuracy_curve`])
//! For a threshold `τ`, the fraction of truth vertices whose closest *predicted vertex* is at a
//! distance `≤ τ`; [`vertex_accuracy_curve`] evaluates `τ = 0, 1, …, 16` px
//! ([`VERTEX_ACCURACY_TAUS`]). A vertex-to-vertex measure: a predicted edge passing through a
//! truth corner without a vertex there does not count.
//!
//! # Example
//! ```
//! use canopy_vector::metrics::{polis, vertex_accuracy_curve, vertex_count_ratio};
//! use geo::{polygon, Polygon};
//!
//! let truth: Polygon<f64> = polygon![(x: 0., y: 0.), (x: 10., y: 0.), (x: 10., y: 10.), (x: 0., y: 10.)];
//! let pred: Polygon<f64> = polygon![(x: 1., y: 0.), (x: 11., y: 0.), (x: 11., y: 10.), (x: 1., y: 10.)];
//! // Shifted by 1 px along x: two vertices of each square are 1 px from the other outline.
//! assert!((polis(&pred, &truth)? - 0.5).abs() < 1e-12);
//! assert_eq!(vertex_count_ratio(&pred, &truth)?, 1.0);
//! let curve = vertex_accuracy_curve(&pred, &truth)?;
//! assert_eq!((curve[0], curve[1]), (0.0, 1.0));
//! # Ok::<(), canopy_vector::Error>(())
//! ```
//!
//! # References
//! - J. Avbelj, R. Müller, R. Bamler, "A metric for polygon comparison and building extraction
//!   evaluation", IEEE Geoscience and Remote Sensing Letters 12(1):170–174, 2015.
//! - N. Girard, D. Smirnov, J. Solomon, Y. Tarabalka, "Polygonal building extraction by frame
//!   field learning", CVPR 2021; code: <https://github.com/Lydorn/Polygonization-by-Frame-Field-Learning>
//!   and `polygon_utils.py` of <https://github.com/Lydorn/lydorn_utils>.
//! - B. Xu, J. Xu, N. Xue, G.-S. Xia, "HiSup: Accurate polygonal mapping of buildings in
//!   satellite imagery with hierarchical supervision", ISPRS J. 198, 2023.

use super::check_finite;
use crate::{Error, Result};
use geo::{Coord, LineString, Polygon};

/// The thresholds of [`vertex_accuracy_curve`]: 0, 1, …, 16 pixels.
pub const VERTEX_ACCURACY_TAUS: [f64; 17] = [
    0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15., 16.,
];

/// Parameters of [`max_tangent_angle_error`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TangentAngleConfig {
    /// Target distance between samples along the predicted outline, in pixels
    /// (`sampling_spacing` in the reference).
    pub sampling_spacing: f64,
    /// Edge pairs whose length ratio is outside `(1 / max_stretch, max_stretch)` are dropped
    /// (`max_stretch` in the reference).
    pub max_stretch: f64,
}

impl Default for TangentAngleConfig {
    /// Spacing 1 px, stretch 2: the reference's setting for the Inria data set.
    fn default() -> Self {
        TangentAngleConfig {
            sampling_spacing: 1.0,
            max_stretch: 2.0,
        }
    }
}

impl TangentAngleConfig {
    /// Spacing 2 px, stretch 2: the reference's setting for the CrowdAI data set.
    pub fn crowdai() -> Self {
        TangentAngleConfig {
            sampling_spacing: 2.0,
            max_stretch: 2.0,
        }
    }
}

/// All shape metrics of one matched pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMetrics {
    /// [`polis`], in pixels.
    pub polis: f64,
    /// [`max_tangent_angle_error`], in radians; `None` when undefined.
    pub max_tangent_angle: Option<f64>,
    /// [`vertex_count_ratio`]: predicted / truth vertices.
    pub vertex_count_ratio: f64,
    /// [`vertex_accuracy_curve`] at [`VERTEX_ACCURACY_TAUS`].
    pub vertex_accuracy: [f64; 17],
}

/// Computes every metric of this module for `pred` matched to `truth`.
///
/// # Errors
/// As the individual metrics.
pub fn shape_metrics(
    pred: &Polygon<f64>,
    truth: &Polygon<f64>,
    tangent: &TangentAngleConfig,
) -> Result<ShapeMetrics> {
    Ok(ShapeMetrics {
        polis: polis(pred, truth)?,
        max_tangent_angle: max_tangent_angle_error(pred, truth, tangent)?,
        vertex_count_ratio: vertex_count_ratio(pred, truth)?,
        vertex_accuracy: vertex_accuracy_curve(pred, truth)?,
    })
}

/// The PoLiS distance between two polygons (see the [module docs](self#polis-polis)).
///
/// # Errors
/// [`Error::InvalidArgument`] if a polygon has no vertex or a non-finite coordinate.
///
/// # Performance
/// `O(q · r)` point-to-segment distances.
pub fn polis(a: &Polygon<f64>, b: &Polygon<f64>) -> Result<f64> {
    const OP: &str = "polis";
    let (va, vb) = (
        checked_vertices(OP, "first", a)?,
        checked_vertices(OP, "second", b)?,
    );
    let (ra, rb) = (rings(a), rings(b));
    let side = |vertices: &[Coord<f64>], boundary: &[&LineString<f64>]| {
        let sum: f64 = vertices
            .iter()
            .map(|&v| closest_on_rings(v, boundary).map_or(0.0, |(_, d2)| d2.sqrt()))
            .sum();
        sum / (2.0 * vertices.len() as f64)
    };
    Ok(side(&va, &rb) + side(&vb, &ra))
}

/// The maximum tangent angle error of `pred` against `truth`, in radians (see the
/// [module docs](self#maximum-tangent-angle-error-max_tangent_angle_error)); `Ok(None)` when
/// every edge pair was dropped.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-positive or non-finite spacing, a stretch not above 1,
/// polygons without vertices or with non-finite coordinates.
///
/// # Performance
/// `O(s · r)` for `s` samples (perimeter / spacing) and `r` truth vertices.
pub fn max_tangent_angle_error(
    pred: &Polygon<f64>,
    truth: &Polygon<f64>,
    config: &TangentAngleConfig,
) -> Result<Option<f64>> {
    const OP: &str = "max_tangent_angle_error";
    if !(config.sampling_spacing.is_finite() && config.sampling_spacing > 0.0) {
        return Err(Error::invalid(
            OP,
            format!(
                "sampling_spacing must be finite and > 0, got {}",
                config.sampling_spacing
            ),
        ));
    }
    if config.max_stretch.is_nan() || config.max_stretch <= 1.0 {
        return Err(Error::invalid(
            OP,
            format!("max_stretch must be > 1, got {}", config.max_stretch),
        ));
    }
    checked_vertices(OP, "prediction", pred)?;
    checked_vertices(OP, "truth", truth)?;
    let target = rings(truth);
    let mut min_cos: Option<f64> = None;
    for ring in rings(pred) {
        let samples = sample_ring(ring, config.sampling_spacing);
        let projected: Vec<Coord<f64>> = samples
            .iter()
            .map(|&s| closest_on_rings(s, &target).map_or(s, |(c, _)| c))
            .collect();
        for (e, f) in samples.windows(2).zip(projected.windows(2)) {
            let (Some(&[p0, p1]), Some(&[q0, q1])) = (e.first_chunk(), f.first_chunk()) else {
                continue;
            };
            let (e, f) = (p1 - p0, q1 - q0);
            let (ne, nf) = (e.x.hypot(e.y), f.x.hypot(f.y));
            if ne * nf <= 0.0 {
                continue;
            }
            let stretch = ne / nf;
            if !(1.0 / config.max_stretch < stretch && stretch < config.max_stretch) {
                continue;
            }
            let cos = ((e.x * f.x + e.y * f.y) / (ne * nf)).abs().min(1.0);
            min_cos = Some(min_cos.map_or(cos, |m| m.min(cos)));
        }
    }
    Ok(min_cos.map(f64::acos))
}

/// The number of vertices of a polygon: coordinates of all rings, without each ring's closing
/// repeat.
pub fn vertex_count(polygon: &Polygon<f64>) -> usize {
    rings(polygon).iter().map(|r| ring_vertices(r).len()).sum()
}

/// Predicted vertices divided by truth vertices ([`vertex_count`] of each).
///
/// # Errors
/// [`Error::InvalidArgument`] if `truth` has no vertex.
pub fn vertex_count_ratio(pred: &Polygon<f64>, truth: &Polygon<f64>) -> Result<f64> {
    let n = vertex_count(truth);
    if n == 0 {
        return Err(Error::invalid(
            "vertex_count_ratio",
            "the truth polygon has no vertex",
        ));
    }
    Ok(vertex_count(pred) as f64 / n as f64)
}

/// For each threshold in `taus`, the fraction of `truth` vertices with a `pred` vertex at
/// distance `≤ τ` (see the [module docs](self#vertex-accuracy-curve-vertex_accuracy-vertex_accuracy_curve)).
///
/// # Errors
/// [`Error::InvalidArgument`] if `truth` has no vertex, a coordinate is not finite or a
/// threshold is negative or NaN.
///
/// # Performance
/// `O(n · m + n · |taus|)` for `n` truth and `m` predicted vertices.
pub fn vertex_accuracy(
    pred: &Polygon<f64>,
    truth: &Polygon<f64>,
    taus: &[f64],
) -> Result<Vec<f64>> {
    const OP: &str = "vertex_accuracy";
    if let Some(t) = taus.iter().find(|t| t.is_nan() || **t < 0.0) {
        return Err(Error::invalid(
            OP,
            format!("thresholds must be >= 0, got {t}"),
        ));
    }
    check_finite(OP, pred)?;
    let truth_vertices = checked_vertices(OP, "truth", truth)?;
    let pred_vertices: Vec<Coord<f64>> = rings(pred)
        .iter()
        .flat_map(|r| ring_vertices(r).iter().copied())
        .collect();
    let nearest: Vec<f64> = truth_vertices
        .iter()
        .map(|&t| {
            pred_vertices
                .iter()
                .map(|&p| (p - t).x.hypot((p - t).y))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let n = nearest.len() as f64;
    Ok(taus
        .iter()
        .map(|&tau| nearest.iter().filter(|&&d| d <= tau).count() as f64 / n)
        .collect())
}

/// [`vertex_accuracy`] at `τ = 0, 1, …, 16` px.
///
/// # Errors
/// As [`vertex_accuracy`].
pub fn vertex_accuracy_curve(pred: &Polygon<f64>, truth: &Polygon<f64>) -> Result<[f64; 17]> {
    let v = vertex_accuracy(pred, truth, &VERTEX_ACCURACY_TAUS)?;
    let mut out = [0.0; 17];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x;
    }
    Ok(out)
}

/// Exterior then interiors.
fn rings(polygon: &Polygon<f64>) -> Vec<&LineString<f64>> {
    std::iter::once(polygon.exterior())
        .chain(polygon.interiors())
        .collect()
}

/// A ring's coordinates without the closing repeat.
fn ring_vertices(ring: &LineString<f64>) -> &[Coord<f64>] {
    match ring.0.as_slice() {
        [rest @ .., last] if ring.0.len() > 1 && ring.0.first() == Some(last) => rest,
        all => all,
    }
}

/// All vertices, after checking the polygon has some and they are finite.
fn checked_vertices(op: &'static str, which: &str, p: &Polygon<f64>) -> Result<Vec<Coord<f64>>> {
    check_finite(op, p)?;
    let v: Vec<Coord<f64>> = rings(p)
        .iter()
        .flat_map(|r| ring_vertices(r).iter().copied())
        .collect();
    if v.is_empty() {
        return Err(Error::invalid(
            op,
            format!("the {which} polygon has no vertex"),
        ));
    }
    Ok(v)
}

/// The closest point to `p` on the segment `a`-`b` and its squared distance.
fn closest_on_segment(p: Coord<f64>, a: Coord<f64>, b: Coord<f64>) -> (Coord<f64>, f64) {
    let ab = b - a;
    let len2 = ab.x * ab.x + ab.y * ab.y;
    let t = if len2 > 0.0 {
        (((p - a).x * ab.x + (p - a).y * ab.y) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = a + ab * t;
    let d = p - c;
    (c, d.x * d.x + d.y * d.y)
}

/// The closest point to `p` on any ring (first one among equals) and its squared distance;
/// a single-coordinate ring counts as a point. `None` if all rings are empty.
fn closest_on_rings(p: Coord<f64>, rings: &[&LineString<f64>]) -> Option<(Coord<f64>, f64)> {
    let mut best: Option<(Coord<f64>, f64)> = None;
    let mut consider = |(c, d2): (Coord<f64>, f64)| {
        if best.is_none_or(|(_, b)| d2 < b) {
            best = Some((c, d2));
        }
    };
    for ring in rings {
        match ring.0.as_slice() {
            [] => {}
            [only] => consider(closest_on_segment(p, *only, *only)),
            coords => {
                for w in coords.windows(2) {
                    if let Some(&[a, b]) = w.first_chunk() {
                        consider(closest_on_segment(p, a, b));
                    }
                }
            }
        }
    }
    best
}

/// Resamples a closed ring as the reference's `_sample_linestring`: each edge becomes
/// `max(1, round_half_even(L / spacing))` equal parts; the closing point is kept.
fn sample_ring(ring: &LineString<f64>, spacing: f64) -> Vec<Coord<f64>> {
    let mut out = Vec::new();
    for (i, w) in ring.0.windows(2).enumerate() {
        let Some(&[a, b]) = w.first_chunk() else {
            continue;
        };
        let d = b - a;
        let parts = ((d.x.hypot(d.y) / spacing).round_ties_even() as usize).max(1);
        let step = d / parts as f64;
        let first = if i == 0 { 0 } else { 1 };
        for k in first..parts {
            out.push(a + step * k as f64);
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{polygon, Rotate};

    fn square(x0: f64, y0: f64, side: f64) -> Polygon<f64> {
        polygon![(x: x0, y: y0), (x: x0 + side, y: y0), (x: x0 + side, y: y0 + side), (x: x0, y: y0 + side)]
    }

    #[test]
    fn polis_of_identical_polygons_is_zero() {
        let a = square(2.0, 3.0, 7.0);
        assert_eq!(polis(&a, &a).unwrap(), 0.0);
    }

    #[test]
    fn polis_of_diagonally_shifted_square() {
        let a = square(0.0, 0.0, 10.0);
        let b = square(1.0, 1.0, 10.0);
        // Vertices of a against ∂b: (0,0)->corner (1,1): sqrt 2; (10,0)->edge y=1: 1;
        // (10,10)->inside b, 1 from x=11 and y=11: 1; (0,10)->edge x=1: 1.
        let side = (2f64.sqrt() + 3.0) / 8.0;
        let v = polis(&a, &b).unwrap();
        assert!((v - 2.0 * side).abs() < 1e-12, "{v}");
    }

    #[test]
    fn polis_uses_edges_not_only_vertices() {
        // A triangle vertex lying on the square's edge midpoint has distance 0.
        let sq = square(0.0, 0.0, 10.0);
        let tri = polygon![(x: 5., y: 0.), (x: 10., y: 5.), (x: 5., y: 10.)];
        let v = polis(&tri, &sq).unwrap();
        // tri vertices all on ∂sq; sq vertices: (0,0)->(5,0): 5, (10,0)->(7.5,2.5): 2.5√2,
        // (10,10)->(7.5,7.5): 2.5√2, (0,10)->(5,10): 5.
        let expect = (10.0 + 5.0 * 2f64.sqrt()) / 8.0;
        assert!((v - expect).abs() < 1e-12, "{v} vs {expect}");
    }

    #[test]
    fn tangent_angle_of_identical_squares_is_zero() {
        let a = square(0.0, 0.0, 20.0);
        let v = max_tangent_angle_error(&a, &a, &TangentAngleConfig::default()).unwrap();
        assert_eq!(v, Some(0.0));
    }

    #[test]
    fn tangent_angle_of_a_rotated_square_is_the_rotation() {
        // A 30 px square rotated by 10 degrees about its centre: samples project onto the
        // truth edge beside them, so e and e' make 10 degrees (smaller rotations let corner
        // samples jump to the other edge; see tests/metrics.rs for those reference values).
        let truth = square(0.0, 0.0, 30.0);
        let pred = truth.rotate_around_centroid(10.0);
        let v = max_tangent_angle_error(&pred, &truth, &TangentAngleConfig::default())
            .unwrap()
            .unwrap();
        assert!((v.to_degrees() - 10.0).abs() < 1e-9, "{}", v.to_degrees());
    }

    #[test]
    fn sampling_follows_python_rounding() {
        // Length 2.5 with spacing 1: round(2.5) = 2 parts (half to even), so 3 points.
        let ring = LineString::from(vec![(0.0, 0.0), (2.5, 0.0)]);
        assert_eq!(sample_ring(&ring, 1.0).len(), 3);
        let ring = LineString::from(vec![(0.0, 0.0), (3.5, 0.0), (3.5, 0.1)]);
        // 3.5 -> 4 parts (5 points), 0.1 -> max(1, 0) = 1 part (+1 point).
        assert_eq!(sample_ring(&ring, 1.0).len(), 6);
    }

    #[test]
    fn vertex_metrics_of_a_shifted_square() {
        let truth = square(0.0, 0.0, 10.0);
        let pred = square(3.0, 4.0, 10.0); // every vertex moved by 5
        let c = vertex_accuracy_curve(&pred, &truth).unwrap();
        assert_eq!(&c[..5], &[0.0; 5]);
        assert_eq!(&c[5..], &[1.0; 12]);
        // A truth polygon with 5 vertices (one collinear) against a 4-vertex square.
        let t5 = polygon![(x: 0., y: 0.), (x: 5., y: 0.), (x: 10., y: 0.), (x: 10., y: 10.), (x: 0., y: 10.)];
        assert_eq!(vertex_count(&t5), 5);
        assert!((vertex_count_ratio(&truth, &t5).unwrap() - 0.8).abs() < 1e-15);
        let c = vertex_accuracy(&truth, &t5, &[0.0, 4.9, 5.0]).unwrap();
        assert_eq!(c, vec![0.8, 0.8, 1.0]);
    }

    #[test]
    fn metrics_reject_empty_and_bad_arguments() {
        let empty = Polygon::new(LineString::new(vec![]), vec![]);
        let sq = square(0.0, 0.0, 1.0);
        assert!(polis(&empty, &sq).is_err());
        assert!(vertex_count_ratio(&sq, &empty).is_err());
        assert!(vertex_accuracy(&sq, &sq, &[-1.0]).is_err());
        let bad = TangentAngleConfig {
            sampling_spacing: 0.0,
            max_stretch: 2.0,
        };
        assert!(max_tangent_angle_error(&sq, &sq, &bad).is_err());
    }
}
