//! Sub-pixel contours of probability maps: marching squares at a threshold, returning closed
//! polygons with holes.
//!
//! Polygonizing a thresholded class map gives staircase outlines on pixel edges. Contouring the
//! probability map itself instead places every vertex where the bilinear-along-the-edge
//! interpolation of the map crosses the threshold, which follows the network's soft boundary
//! to a fraction of a pixel.
//!
//! # Coordinates
//! Pixel space as everywhere in the crate: `(x, y) = (column, row)`, `(0, 0)` the outer corner
//! of the top-left pixel, and sample `map[[r, c]]` located at the pixel centre
//! `(c + 0.5, r + 0.5)`. (scikit-image's `find_contours` returns `(row, column)` with the
//! centre of pixel `(r, c)` at `(r, c)`: add 0.5 and swap to compare.)
//!
//! # Algorithm
//! Marching squares (the 2-D case of Lorensen & Cline's marching cubes) on the grid of pixel
//! centres, padded with a frame of one *invalid* sample on every side:
//!
//! * A sample is **inside** when it is valid and `value >= threshold`. It is **invalid** when
//!   it lies outside the map, is NaN, or is `false` in the optional validity mask; invalid
//!   samples are outside. Because the frame is outside, every contour closes.
//! * On each cell edge whose two samples differ, one vertex: between two valid samples at the
//!   linear interpolation `inside + f (outside - inside)` with
//!   `f = (v_in - t) / (v_in - v_out)`; between a valid and an invalid sample at the midpoint,
//!   i.e. on the pixel boundary (so a contour reaching the map's border runs along the border,
//!   and a 0/1 mask at `t = 0.5` gives crossings on pixel edges). `f` is clamped to
//!   `[CROSSING_EPS, 1 - CROSSING_EPS]`: a sample exactly at the threshold is inside, and its
//!   crossings sit [`CROSSING_EPS`] pixel away from its centre rather than on it, so rings never
//!   touch each other or themselves.
//! * Saddle cells (two diagonal corners inside, two outside) are resolved by the mean of the four
//!   corners, the value of the bilinear interpolant at the cell centre (the "midpoint decider";
//!   Nielson & Hamann's asymptotic decider uses the saddle value instead): mean `>= t` joins the
//!   two inside corners, otherwise they stay separate. A saddle cell with an invalid corner
//!   cannot be averaged and is always separated.
//! * Each segment is oriented with the inside on its left (counter-clockwise in the y-up sense
//!   of the shoelace formula), so segments chain into rings without a search: every crossed edge
//!   starts exactly one segment and ends exactly one.
//! * Rings with positive signed area (`geo`'s `is_ccw`) are exteriors, the others holes; each
//!   hole goes to the smallest exterior that contains it.
//!
//! Output rings are closed, exteriors counter-clockwise and holes clockwise in `geo`'s terms
//! (positive / negative signed area; on screen, with y down, they appear the other way round),
//! and the polygons pass `geo`'s `Validation`. Polygons are ordered by the first cell of their
//! exterior in row-major order.
//!
//! # Compared with scikit-image
//! `skimage.measure.find_contours` (van der Walt et al. 2014, `skimage/measure/_find_contours.py`)
//! implements the same interpolation but returns `(row, col)` paths with no hole structure, leaves
//! contours that reach the border open (pad the map with a low value to close them), counts a
//! sample equal to the level as *outside* (`> level`), and resolves saddles by a fixed choice
//! (`fully_connected='low'|'high'`) instead of the cell mean. Away from the border and from
//! samples equal to the level the vertices are the same points up to the coordinate shift
//! (vertex positions do not depend on the saddle rule, only the way they are joined):
//! `tests/contour.rs` checks this against scikit-image 0.26 on a seeded map (104 vertices,
//! largest distance 2e-7 px, the f32 rounding of the level).
//!
//! # References
//! * W. E. Lorensen, H. E. Cline, "Marching cubes: a high resolution 3D surface construction
//!   algorithm", SIGGRAPH 1987.
//! * G. M. Nielson, B. Hamann, "The asymptotic decider: resolving the ambiguity in marching
//!   cubes", IEEE Visualization 1991.
//! * S. van der Walt et al., "scikit-image: image processing in Python", PeerJ 2014
//!   (`skimage.measure.find_contours`).
//!
//! # Example
//! ```
//! use canopy_vector::contour::contours;
//! use geo::Area;
//! use ndarray::Array2;
//!
//! // A 2 x 2 block of ones in a 4 x 4 map of zeros.
//! let mut map = Array2::<f32>::zeros((4, 4));
//! map.slice_mut(ndarray::s![1..3, 1..3]).fill(1.0);
//! let polys = contours(map.view(), 0.5, None)?;
//! assert_eq!(polys.len(), 1);
//! // Pixel edges with the four corners cut by 1/8 px^2 each: 4 - 0.5.
//! assert!((polys[0].unsigned_area() - 3.5).abs() < 1e-9);
//! # Ok::<(), canopy_vector::Error>(())
//! ```

use std::collections::HashMap;

use geo::{Area, BoundingRect, Contains, Rect};
use geo_types::{Coord, LineString, Polygon};
use ndarray::ArrayView2;

use crate::{Error, Result};

/// How far (in units of the sample spacing) a crossing is kept from the samples at the ends of
/// its edge, so that a sample exactly at the threshold does not make rings touch.
pub const CROSSING_EPS: f64 = 1e-6;

/// Closed contours of `map` at `threshold`, as polygons with holes in pixel coordinates.
///
/// `valid`, when given, marks the samples to use (`false` = treat as outside, like NaN); it
/// must have the shape of `map`. See the [module documentation](self) for the rules.
///
/// # Errors
/// [`Error::InvalidArgument`] when `threshold` is NaN or `valid` has another shape than `map`.
///
/// # Performance
/// `O(H x W)` to classify the cells plus `O(vertices)` to chain the segments (one hash-map
/// entry per vertex); assigning holes costs a point-in-polygon test against each exterior whose
/// bounding box contains the hole, smallest first. A 1024 x 1024 map with 270 polygons and
/// 65 000 vertices takes about a second in an unoptimised debug build.
pub fn contours(
    map: ArrayView2<'_, f32>,
    threshold: f32,
    valid: Option<ArrayView2<'_, bool>>,
) -> Result<Vec<Polygon<f64>>> {
    if threshold.is_nan() {
        return Err(Error::invalid("contours", "threshold is NaN"));
    }
    if let Some(v) = &valid {
        if v.dim() != map.dim() {
            return Err(Error::invalid(
                "contours",
                format!(
                    "validity mask has shape {:?} but the map has shape {:?}; pass a mask of the \
                     map's shape",
                    v.dim(),
                    map.dim()
                ),
            ));
        }
    }
    let grid = Grid {
        map,
        valid,
        t: f64::from(threshold),
    };
    let (segments, next) = grid.segments();
    let rings = grid.rings(&segments, next);
    Ok(nest(rings))
}

/// The padded sample grid: padded index `(i, j)` is pixel `(i - 1, j - 1)`.
struct Grid<'a> {
    map: ArrayView2<'a, f32>,
    valid: Option<ArrayView2<'a, bool>>,
    t: f64,
}

/// A cell edge: `(i, j, vertical)`; horizontal joins `(i, j)`-`(i, j + 1)`, vertical joins
/// `(i, j)`-`(i + 1, j)`.
type Edge = (usize, usize, bool);

impl Grid<'_> {
    /// Value of padded sample `(i, j)`, `None` when invalid.
    fn sample(&self, i: usize, j: usize) -> Option<f64> {
        let (r, c) = (i.checked_sub(1)?, j.checked_sub(1)?);
        if let Some(valid) = &self.valid {
            if !valid.get((r, c)).copied().unwrap_or(false) {
                return None;
            }
        }
        let v = f64::from(*self.map.get((r, c))?);
        (!v.is_nan()).then_some(v)
    }

    fn inside(&self, v: Option<f64>) -> bool {
        v.is_some_and(|v| v >= self.t)
    }

    /// All oriented segments in row-major cell order, and the map from start to end edge.
    fn segments(&self) -> (Vec<Edge>, HashMap<Edge, Edge>) {
        let (h, w) = self.map.dim();
        let mut starts = Vec::new();
        let mut next = HashMap::new();
        if h == 0 || w == 0 {
            return (starts, next);
        }
        for i in 0..=h {
            for j in 0..=w {
                // Corners and edges in cyclic order tl, tr, br, bl (positive orientation in
                // pixel space); edge k runs from corner k to corner k + 1.
                let vals = [
                    self.sample(i, j),
                    self.sample(i, j + 1),
                    self.sample(i + 1, j + 1),
                    self.sample(i + 1, j),
                ];
                let ins = vals.map(|v| self.inside(v));
                let n_in = ins.iter().filter(|&&b| b).count();
                if n_in == 0 || n_in == 4 {
                    continue;
                }
                let edges: [Edge; 4] = [
                    (i, j, false),
                    (i, j + 1, true),
                    (i + 1, j, false),
                    (i, j, true),
                ];
                let in_out: Vec<usize> = (0..4).filter(|&k| ins[k] && !ins[(k + 1) % 4]).collect();
                let out_in: Vec<usize> = (0..4).filter(|&k| !ins[k] && ins[(k + 1) % 4]).collect();
                let mut push = |a: usize, b: usize| {
                    starts.push(edges[a]);
                    next.insert(edges[a], edges[b]);
                };
                match (in_out.as_slice(), out_in.as_slice()) {
                    ([a], [b]) => push(*a, *b),
                    ([a, b], _) => {
                        // Saddle: in-out edges are k and k + 2. Joined, each runs to the next
                        // edge (cutting off an outside corner); separated, to the previous one.
                        let mean = vals.iter().try_fold(0.0, |s, v| v.map(|v| s + v / 4.0));
                        let step = if mean.is_some_and(|m| m >= self.t) {
                            1
                        } else {
                            3
                        };
                        push(*a, (a + step) % 4);
                        push(*b, (b + step) % 4);
                    }
                    _ => {} // unreachable for 1..=3 inside corners
                }
            }
        }
        (starts, next)
    }

    /// The crossing on `edge`, interpolated from its inside sample towards its outside one.
    fn crossing(&self, (i, j, vertical): Edge) -> Coord<f64> {
        let (i2, j2) = if vertical { (i + 1, j) } else { (i, j + 1) };
        let (a, b) = (self.sample(i, j), self.sample(i2, j2));
        let pos = |i: usize, j: usize| (j as f64 - 0.5, i as f64 - 0.5);
        let (pa, pb) = (pos(i, j), pos(i2, j2));
        let ((pin, vin), (pout, vout)) = if self.inside(a) {
            ((pa, a), (pb, b))
        } else {
            ((pb, b), (pa, a))
        };
        let f = match (vin, vout) {
            (Some(vi), Some(vo)) => {
                let f = (vi - self.t) / (vi - vo);
                if f.is_finite() {
                    f.clamp(CROSSING_EPS, 1.0 - CROSSING_EPS)
                } else {
                    0.5
                }
            }
            _ => 0.5,
        };
        Coord {
            x: pin.0 + f * (pout.0 - pin.0),
            y: pin.1 + f * (pout.1 - pin.1),
        }
    }

    /// Chains the segments into closed rings, in the order of their first segment.
    fn rings(&self, starts: &[Edge], mut next: HashMap<Edge, Edge>) -> Vec<LineString<f64>> {
        let mut rings = Vec::new();
        for &start in starts {
            let Some(mut to) = next.remove(&start) else {
                continue;
            };
            let mut coords = vec![self.crossing(start)];
            while to != start {
                coords.push(self.crossing(to));
                match next.remove(&to) {
                    Some(n) => to = n,
                    None => break, // cannot happen: every crossed edge starts one segment
                }
            }
            coords.dedup();
            if coords.len() >= 3 {
                rings.push(LineString::new(coords)); // closed by Polygon::new
            }
        }
        rings
    }
}

/// Splits rings into exteriors (positive area) and holes, and gives each hole to the smallest
/// exterior containing it.
fn nest(rings: Vec<LineString<f64>>) -> Vec<Polygon<f64>> {
    let mut exteriors: Vec<(Polygon<f64>, f64, Option<Rect<f64>>)> = Vec::new();
    let mut holes = Vec::new();
    for ring in rings {
        let poly = Polygon::new(ring, vec![]);
        let area = poly.signed_area();
        if area > 0.0 {
            let bbox = poly.bounding_rect();
            exteriors.push((poly, area, bbox));
        } else if area < 0.0 {
            holes.push(poly.into_inner().0);
        }
    }
    // Smallest first, remembering the output order.
    let mut by_area: Vec<usize> = (0..exteriors.len()).collect();
    by_area.sort_by(|&a, &b| exteriors[a].1.total_cmp(&exteriors[b].1));
    let mut interiors: Vec<Vec<LineString<f64>>> = vec![Vec::new(); exteriors.len()];
    for hole in holes {
        let Some(&probe) = hole.0.first() else {
            continue;
        };
        let parent = by_area.iter().copied().find(|&k| {
            let (poly, _, bbox) = &exteriors[k];
            bbox.is_some_and(|b| {
                b.min().x <= probe.x
                    && probe.x <= b.max().x
                    && b.min().y <= probe.y
                    && probe.y <= b.max().y
            }) && poly.contains(&probe)
        });
        // A hole always lies inside some exterior (the frame is outside); drop it otherwise.
        if let Some(k) = parent {
            interiors[k].push(hole);
        }
    }
    exteriors
        .into_iter()
        .zip(interiors)
        .map(|((poly, _, _), holes)| Polygon::new(poly.into_inner().0, holes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Validation;
    use ndarray::Array2;

    #[test]
    fn single_pixel_is_a_diamond_through_its_edge_midpoints() {
        let mut m = Array2::<f32>::zeros((3, 3));
        m[[1, 1]] = 1.0;
        let p = contours(m.view(), 0.5, None).unwrap();
        assert_eq!(p.len(), 1);
        assert!((p[0].signed_area() - 0.5).abs() < 1e-12, "{:?}", p[0]);
        let mut xs: Vec<(f64, f64)> = p[0].exterior().0.iter().map(|c| (c.x, c.y)).collect();
        xs.pop();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(xs, vec![(1.0, 1.5), (1.5, 1.0), (1.5, 2.0), (2.0, 1.5)]);
    }

    #[test]
    fn interpolation_is_linear_along_the_edge() {
        // Pixel centres x = 0.5 (0.8) and x = 1.5 (0.2): 0.5 crossed halfway, 0.35 at 3/4.
        let m = Array2::from_shape_vec((1, 2), vec![0.8f32, 0.2]).unwrap();
        for (t, x) in [(0.5, 1.0), (0.35, 1.25)] {
            let p = contours(m.view(), t, None).unwrap();
            let max_x = p[0]
                .exterior()
                .0
                .iter()
                .map(|c| c.x)
                .fold(f64::MIN, f64::max);
            assert!((max_x - x).abs() < 1e-6, "t {t}: {max_x} vs {x}");
        }
    }

    #[test]
    fn nan_threshold_and_mask_shape_are_errors() {
        let m = Array2::<f32>::zeros((2, 2));
        assert!(contours(m.view(), f32::NAN, None).is_err());
        let mask = Array2::from_elem((2, 3), true);
        let e = contours(m.view(), 0.5, Some(mask.view()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("(2, 3)") && e.contains("(2, 2)"), "{e}");
    }

    #[test]
    fn empty_and_all_inside_maps() {
        let m = Array2::<f32>::zeros((0, 5));
        assert!(contours(m.view(), 0.5, None).unwrap().is_empty());
        let m = Array2::<f32>::ones((3, 4));
        let p = contours(m.view(), 0.5, None).unwrap();
        assert_eq!(p.len(), 1);
        // Along the map border, with the four corners cut by 1/8.
        assert!((p[0].unsigned_area() - (12.0 - 0.5)).abs() < 1e-12);
        assert!(p[0].is_valid());
    }
}
