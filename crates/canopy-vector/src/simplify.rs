//! Polygon simplification: Douglas–Peucker or Visvalingam–Whyatt, per polygon or
//! topology-preserving over a whole coverage (a multi-class map's polygons).
//!
//! Polygonized class maps have a vertex at every pixel corner of a "staircase"; simplification
//! removes most of them. Two entry points share one engine:
//!
//! * [`simplify_polygons`] simplifies each polygon on its own (in parallel). Two neighbours
//!   sharing a border may then end up with gaps or overlaps between them, exactly like
//!   shapely's `simplify(tolerance, preserve_topology=True)`, which preserves the topology of
//!   each geometry but knows nothing about its neighbours.
//! * [`simplify_coverage`] simplifies a set of polygons that share borders (a *coverage*: the
//!   polygons of a multi-class map) so that neighbours stay neighbours: every shared border is
//!   simplified once and used, reversed, by both polygons, so the result has no gaps and no
//!   overlaps. This is what shapely's `preserve_topology=True` does *not* do across polygons.
//!
//! # Algorithm
//! 1. **Arcs.** Every ring is read without its closing vertex and without repeated vertices.
//!    In [`simplify_coverage`] equal coordinates are the same *vertex*; a vertex with more than
//!    two distinct neighbouring vertices over all rings is a *node* (three or more faces meet
//!    there, or a shared border starts or ends there); so are the corners of the coverage's
//!    bounding box, which keeps a map's frame exact. Rings are cut at nodes into *arcs*; an
//!    arc and its reversed copy in the neighbouring polygon are stored once. A ring without a
//!    node (an island, or any ring in [`simplify_polygons`]) is one closed arc that starts at
//!    its lexicographically smallest vertex (a corner of its convex hull, kept in place).
//! 2. **Simplify** each arc once with its end points fixed: Douglas–Peucker (geo's
//!    [`SimplifyIdx`], tolerance = maximum distance in coordinate units) or Visvalingam–Whyatt
//!    (geo's [`SimplifyVwIdx`], tolerance = minimum effective triangle *area* in squared units).
//!    A closed arc that drops below a triangle keeps a triangle of its own vertices: its start,
//!    the vertex furthest from it, and the vertex furthest from the line between those two.
//! 3. **Rebuild and check** every polygon from its arcs and check it: every ring has at least
//!    three vertices, a non-zero area of the same sign as the input ring, no two segments of the
//!    polygon's rings cross, overlap or touch other than at a shared vertex, every hole keeps a
//!    vertex strictly inside the exterior and outside the other holes. An arc involved in a
//!    failed check goes back to its input vertices and the polygons using it are checked again,
//!    until every check passes (it terminates: arcs only ever go back to the input).
//!
//! Because a segment of a shared arc can only leave its two faces by crossing one of their
//! rings, checking each polygon's own rings is enough to keep the whole coverage free of
//! crossings; the checks match the validity rules of geo's [`Validation`](geo::Validation).
//!
//! Douglas–Peucker: D. Douglas, T. Peucker, "Algorithms for the reduction of the number of
//! points required to represent a digitized line or its caricature", *Cartographica* 10(2),
//! 1973. Visvalingam–Whyatt: M. Visvalingam, J. Whyatt, "Line generalisation by repeated
//! elimination of points", *The Cartographic Journal* 30(1), 1993. Arc-based coverage
//! simplification follows the approach of TopoJSON (`topojson-server` builds arcs cut at
//! junctions, `topojson-simplify` simplifies each arc once) and of JTS's
//! `TopologyPreservingSimplifier` (which reverts a simplified section that would intersect
//! another line).
//!
//! # Validity
//! * The output never has more vertices than the input, ring by ring. Rings may start at a
//!   different vertex than in the input.
//! * No ring and no polygon is dropped: a ring never collapses below a triangle, and a ring
//!   that cannot be simplified without breaking validity keeps its input vertices.
//! * A valid input gives a valid output (geo's [`Validation`](geo::Validation)). An invalid
//!   input is returned with as much simplification as passes the checks.
//! * [`simplify_coverage`] expects neighbours to share their border vertices, up to
//!   collinear ones. GDAL's polygonizer (and so rasterio's `shapes`) drops collinear
//!   vertices, so where three regions meet along a straight border one side lacks the
//!   meeting vertex (a T-junction). The two ends of such a straight piece have different
//!   neighbours on the two sides, so they are nodes and the piece is kept straight on both
//!   sides: the coverage still has no gaps or overlaps (the tests check this on grids with
//!   collinear vertices removed). Borders that differ in any other way (not noded,
//!   crossing) are outside what this function handles.
//!
//! # Performance
//! `O(n log n)` in the number of vertices `n` (Douglas–Peucker's expected case; the checks
//! sort each polygon's simplified segments). Arcs are simplified and polygons checked in
//! parallel with rayon. [`simplify_polygons`] does no vertex hashing; [`simplify_coverage`]
//! hashes every vertex once.
//!
//! Measured on the peers benchmark (`bench_polygonize.py`: GDAL polygonize of a 4096 x 4096
//! mask, 1,478 polygons, 80,254 vertices, tolerance 1, 2 busy cores, release build, one
//! session): [`simplify_polygons`] with Douglas–Peucker 27.6 ms (80,254 -> 18,608 vertices),
//! [`simplify_coverage`] 42.0 ms, shapely 2.2 `simplify(preserve_topology=True)` 152 ms
//! (-> 18,578 vertices). On the full coverage of that mask (background included, 1,505
//! polygons, 160,512 vertices) shapely's output has 1,932 px² of gaps (its union falls
//! short of 4096²) and 1,941 px² of overlaps (its areas sum to more than its union) between
//! neighbours; [`simplify_coverage`] keeps the areas summing to exactly 4096², in 90 ms.
//! Its output passes GEOS's checks: every polygon valid, union area = sum of areas = 4096²,
//! `shapely.coverage_is_valid` true (false for shapely's `simplify`); likewise on a 512 x 512
//! four-class GDAL map with T-junctions (247 polygons, 45,841 -> 10,879 vertices, 19.6 ms).
//! GEOS 3.12+ has its own coverage simplifier (`shapely.coverage_simplify`, Visvalingam–
//! Whyatt-based, tolerance 1): 322 ms and 67.6 ms on those two maps, where
//! [`simplify_coverage`] with Visvalingam–Whyatt (tolerance 1 px²) takes 116 ms and 29 ms.
//!
//! # Example
//! ```
//! use canopy_vector::simplify::{simplify_coverage, SimplifyMethod};
//! use geo_types::polygon;
//!
//! // Two pixel-staircase polygons sharing a stepped border.
//! let left = polygon![(x: 0., y: 0.), (x: 2., y: 0.), (x: 2., y: 1.), (x: 3., y: 1.),
//!                     (x: 3., y: 2.), (x: 4., y: 2.), (x: 4., y: 4.), (x: 0., y: 4.)];
//! let right = polygon![(x: 2., y: 0.), (x: 8., y: 0.), (x: 8., y: 4.), (x: 4., y: 4.),
//!                      (x: 4., y: 2.), (x: 3., y: 2.), (x: 3., y: 1.), (x: 2., y: 1.)];
//! let out = simplify_coverage(&[left, right], SimplifyMethod::DouglasPeucker, 1.0)?;
//! // The stepped border became one diagonal segment, the same in both polygons.
//! assert_eq!(out[0].exterior().0.len(), 5); // 4 corners + closing vertex
//! assert_eq!(out[1].exterior().0.len(), 5);
//! use geo::Area;
//! assert_eq!(out[0].unsigned_area() + out[1].unsigned_area(), 32.0);
//! # Ok::<(), canopy_vector::Error>(())
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use geo::line_intersection::{line_intersection, LineIntersection};
use geo::{SimplifyIdx, SimplifyVwIdx};
use geo_types::{Coord, Line, LineString, Polygon};
use rayon::prelude::*;

use crate::{Error, Result};

/// The line simplification algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimplifyMethod {
    /// Ramer–Douglas–Peucker: removes vertices closer than `tolerance` (a distance) to the
    /// simplified line. shapely's and GEOS's `simplify`.
    #[default]
    DouglasPeucker,
    /// Visvalingam–Whyatt: repeatedly removes the vertex whose triangle with its two
    /// neighbours has the smallest area, while that area is below `tolerance` (an area).
    VisvalingamWhyatt,
}

/// Simplifies every polygon on its own, in parallel; see the [module docs](self).
///
/// Neighbouring polygons are not kept adjacent (use [`simplify_coverage`] for that). Holes and
/// exteriors of one polygon are checked against each other, so each output polygon is valid
/// when its input is.
///
/// # Errors
/// [`Error::InvalidArgument`] when `tolerance` is negative or not finite, or a polygon has a
/// non-finite coordinate.
pub fn simplify_polygons(
    polygons: &[Polygon<f64>],
    method: SimplifyMethod,
    tolerance: f64,
) -> Result<Vec<Polygon<f64>>> {
    check_input("simplify_polygons", polygons, tolerance)?;
    Ok(polygons
        .par_iter()
        .map(|p| {
            simplify_set(std::slice::from_ref(p), method, tolerance, Sharing::None)
                .into_iter()
                .next()
                .unwrap_or_else(|| p.clone())
        })
        .collect())
}

/// Simplifies a set of polygons that share borders, keeping them adjacent: no gaps and no
/// overlaps appear between neighbours; see the [module docs](self).
///
/// # Errors
/// [`Error::InvalidArgument`] when `tolerance` is negative or not finite, or a polygon has a
/// non-finite coordinate.
pub fn simplify_coverage(
    polygons: &[Polygon<f64>],
    method: SimplifyMethod,
    tolerance: f64,
) -> Result<Vec<Polygon<f64>>> {
    check_input("simplify_coverage", polygons, tolerance)?;
    Ok(simplify_set(polygons, method, tolerance, Sharing::Shared))
}

fn check_input(op: &'static str, polygons: &[Polygon<f64>], tolerance: f64) -> Result<()> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(Error::invalid(
            op,
            format!("tolerance must be finite and >= 0, got {tolerance}"),
        ));
    }
    for (i, p) in polygons.iter().enumerate() {
        let finite = std::iter::once(p.exterior())
            .chain(p.interiors())
            .all(|r| r.0.iter().all(|c| c.x.is_finite() && c.y.is_finite()));
        if !finite {
            return Err(Error::invalid(
                op,
                format!("polygon {i} has a non-finite coordinate"),
            ));
        }
    }
    Ok(())
}

/// Whether rings of different polygons share arcs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// Every ring is its own closed arc.
    None,
    /// Equal coordinates are one vertex; rings are cut at nodes.
    Shared,
}

/// A piece of ring boundary simplified once.
struct Arc {
    /// Input vertices, first and last included (equal for a closed arc).
    input: Vec<Coord<f64>>,
    /// Current vertices: simplified, or `input` again after a failed check.
    output: Vec<Coord<f64>>,
}

impl Arc {
    fn changed(&self) -> bool {
        self.output.len() != self.input.len()
    }
}

/// One ring as a sequence of arcs, each used forwards or reversed.
struct Ring {
    arcs: Vec<(u32, bool)>,
    /// Sign of the input ring's signed area (+1, -1, or 0 for a degenerate ring).
    sign: f64,
}

/// Rings of one polygon: `rings[0]` is the exterior.
struct Face {
    rings: Vec<Ring>,
}

/// Fast multiplicative hasher for vertex keys (std's SipHash dominates the run time otherwise).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn finish(&self) -> u64 {
        // splitmix64's finaliser: integer-valued f64 keys have all-zero low bits, which the
        // multiply alone would leave in the bucket index.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A ring's vertices without the closing vertex and without consecutive repeats.
pub(crate) fn open_ring(ring: &LineString<f64>) -> Vec<Coord<f64>> {
    let mut out: Vec<Coord<f64>> = Vec::with_capacity(ring.0.len());
    for &c in &ring.0 {
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    while out.len() > 1 && out.first() == out.last() {
        out.pop();
    }
    out
}

fn signed_area(ring: &[Coord<f64>]) -> f64 {
    let n = ring.len();
    (0..n)
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % n]);
            a.x * b.y - b.x * a.y
        })
        .sum::<f64>()
        * 0.5
}

/// -1, 0 or +1 (`f64::signum` gives +1 for 0).
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn lex_less(a: Coord<f64>, b: Coord<f64>) -> bool {
    (a.x, a.y) < (b.x, b.y)
}

/// The ring rotated to start at its lexicographically smallest vertex, closed.
fn closed_from_min(ring: &[Coord<f64>]) -> Vec<Coord<f64>> {
    let start = (0..ring.len()).fold(0, |m, i| if lex_less(ring[i], ring[m]) { i } else { m });
    let mut out: Vec<Coord<f64>> = ring[start..]
        .iter()
        .chain(&ring[..start])
        .copied()
        .collect();
    out.extend(out.first().copied());
    out
}

fn key(c: Coord<f64>) -> (u64, u64) {
    // +0.0 turns -0.0 into 0.0 so both spell the same vertex.
    ((c.x + 0.0).to_bits(), (c.y + 0.0).to_bits())
}

/// Builds the arcs and faces of `polygons`.
fn build_arcs(polygons: &[Polygon<f64>], sharing: Sharing) -> (Vec<Arc>, Vec<Face>) {
    let rings: Vec<Vec<Vec<Coord<f64>>>> = polygons
        .iter()
        .map(|p| {
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .map(open_ring)
                .collect()
        })
        .collect();
    let mut arcs: Vec<Arc> = Vec::new();
    let new_arc = |arcs: &mut Vec<Arc>, input: Vec<Coord<f64>>| {
        arcs.push(Arc {
            output: input.clone(),
            input,
        });
        (arcs.len() - 1) as u32
    };
    if sharing == Sharing::None {
        let faces = rings
            .into_iter()
            .map(|rs| Face {
                rings: rs
                    .into_iter()
                    .map(|r| Ring {
                        sign: sign(signed_area(&r)),
                        arcs: vec![(new_arc(&mut arcs, closed_from_min(&r)), false)],
                    })
                    .collect(),
            })
            .collect();
        return (arcs, faces);
    }

    // Vertex ids, and the (up to two) distinct neighbours of each vertex.
    let total: usize = rings.iter().flatten().map(Vec::len).sum();
    let mut ids: FastMap<(u64, u64), u32> = FastMap::default();
    ids.reserve(total);
    let vids: Vec<Vec<Vec<u32>>> = rings
        .iter()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    r.iter()
                        .map(|&c| {
                            let next = ids.len() as u32;
                            *ids.entry(key(c)).or_insert(next)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let nv = ids.len();
    drop(ids);
    let mut nbrs = vec![[u32::MAX; 2]; nv];
    let mut node = vec![false; nv];
    for r in vids.iter().flatten() {
        let n = r.len();
        for i in 0..n {
            let v = r[i] as usize;
            for w in [r[(i + n - 1) % n], r[(i + 1) % n]] {
                let slot = &mut nbrs[v];
                if slot[0] == w || slot[1] == w {
                    continue;
                }
                if slot[0] == u32::MAX {
                    slot[0] = w;
                } else if slot[1] == u32::MAX {
                    slot[1] = w;
                } else {
                    node[v] = true;
                }
            }
        }
    }

    // The corners of the coverage's bounding box are nodes too: a map's frame stays exact.
    let corners = rings
        .iter()
        .flatten()
        .flatten()
        .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, c| {
            [b[0].min(c.x), b[1].min(c.y), b[2].max(c.x), b[3].max(c.y)]
        });
    for (r, v) in rings.iter().flatten().zip(vids.iter().flatten()) {
        for (c, &id) in r.iter().zip(v) {
            if (c.x == corners[0] || c.x == corners[2]) && (c.y == corners[1] || c.y == corners[3])
            {
                if let Some(flag) = node.get_mut(id as usize) {
                    *flag = true;
                }
            }
        }
    }

    let mut arc_ids: FastMap<(u32, u32), u32> = FastMap::default();
    let mut faces = Vec::with_capacity(polygons.len());
    for (rs, vs) in rings.iter().zip(&vids) {
        let mut face = Face {
            rings: Vec::with_capacity(rs.len()),
        };
        for (r, v) in rs.iter().zip(vs) {
            let n = r.len();
            let sign = sign(signed_area(r));
            if n < 3 {
                // Degenerate ring: kept as it is, shared with nobody.
                let id = new_arc(&mut arcs, closed_from_min(r));
                face.rings.push(Ring {
                    arcs: vec![(id, false)],
                    sign,
                });
                continue;
            }
            let Some(first_node) = (0..n).find(|&i| node[v[i] as usize]) else {
                // A closed arc starting at its smallest vertex, stored in the direction whose
                // second vertex has the smaller id, so both copies of a shared ring agree.
                let c = closed_from_min(r);
                let start = (0..n).fold(0, |m, i| if lex_less(r[i], r[m]) { i } else { m });
                let (a, b) = (v[(start + 1) % n], v[(start + n - 1) % n]);
                let reversed = b < a;
                let k = (v[start], a.min(b));
                let id = match arc_ids.get(&k) {
                    Some(&id) => id,
                    None => {
                        let input = if reversed {
                            c.into_iter().rev().collect()
                        } else {
                            c
                        };
                        let id = new_arc(&mut arcs, input);
                        arc_ids.insert(k, id);
                        id
                    }
                };
                face.rings.push(Ring {
                    arcs: vec![(id, reversed)],
                    sign,
                });
                continue;
            };
            let mut ring = Ring {
                arcs: Vec::new(),
                sign,
            };
            let mut i = first_node;
            loop {
                // The arc from node i to the next node.
                let mut j = (i + 1) % n;
                let mut idx = vec![i];
                while !node[v[j] as usize] {
                    idx.push(j);
                    j = (j + 1) % n;
                }
                idx.push(j);
                let len = idx.len();
                let fwd = (v[idx[0]], v[idx[1]]);
                let bwd = (v[idx[len - 1]], v[idx[len - 2]]);
                let reversed = bwd < fwd;
                let k = if reversed { bwd } else { fwd };
                let id = match arc_ids.get(&k) {
                    Some(&id) => id,
                    None => {
                        let mut input: Vec<Coord<f64>> = idx.iter().map(|&t| r[t]).collect();
                        if reversed {
                            input.reverse();
                        }
                        let id = new_arc(&mut arcs, input);
                        arc_ids.insert(k, id);
                        id
                    }
                };
                ring.arcs.push((id, reversed));
                i = j;
                if i == first_node {
                    break;
                }
            }
            face.rings.push(ring);
        }
        faces.push(face);
    }
    (arcs, faces)
}

/// Simplifies one arc's vertices with its end points fixed.
fn simplify_arc(input: &[Coord<f64>], method: SimplifyMethod, tolerance: f64) -> Vec<Coord<f64>> {
    if input.len() < 3 || tolerance <= 0.0 {
        return input.to_vec();
    }
    let line = LineString::from(input.to_vec());
    let keep = match method {
        SimplifyMethod::DouglasPeucker => line.simplify_idx(tolerance),
        SimplifyMethod::VisvalingamWhyatt => line.simplify_vw_idx(tolerance),
    };
    let closed = input.first() == input.last();
    if closed && keep.len() < 4 {
        return triangle(input);
    }
    keep.iter().filter_map(|&i| input.get(i).copied()).collect()
}

/// A closed arc's triangle of its own vertices (start, furthest from start, furthest from the
/// line between them), in ring order; the input itself when it has no such triangle.
fn triangle(input: &[Coord<f64>]) -> Vec<Coord<f64>> {
    let Some(&a) = input.first() else {
        return input.to_vec();
    };
    let d2 = |c: Coord<f64>| (c.x - a.x).powi(2) + (c.y - a.y).powi(2);
    let far = (0..input.len()).fold(0, |m, i| if d2(input[i]) > d2(input[m]) { i } else { m });
    let b = input[far];
    let dist = |c: Coord<f64>| ((b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x)).abs();
    let third = (0..input.len()).fold(0, |m, i| {
        if dist(input[i]) > dist(input[m]) {
            i
        } else {
            m
        }
    });
    if input.len() < 5 || dist(input[third]) == 0.0 {
        return input.to_vec();
    }
    let mut idx = [0, far, third];
    idx.sort_unstable();
    vec![input[idx[0]], input[idx[1]], input[idx[2]], a]
}

/// A ring's current closed coordinates and the arc owning each segment.
fn ring_coords(ring: &Ring, arcs: &[Arc]) -> (Vec<Coord<f64>>, Vec<u32>) {
    let mut coords: Vec<Coord<f64>> = Vec::new();
    let mut owner = Vec::new();
    for &(id, reversed) in &ring.arcs {
        let Some(arc) = arcs.get(id as usize) else {
            continue;
        };
        let pts: Box<dyn Iterator<Item = &Coord<f64>>> = if reversed {
            Box::new(arc.output.iter().rev())
        } else {
            Box::new(arc.output.iter())
        };
        for (k, &c) in pts.enumerate() {
            if k == 0 && !coords.is_empty() {
                continue;
            }
            if !coords.is_empty() {
                owner.push(id);
            }
            coords.push(c);
        }
    }
    (coords, owner)
}

#[derive(PartialEq)]
enum Position {
    Inside,
    Outside,
    Boundary,
}

/// Position of `p` relative to the closed ring `ring` (even-odd rule).
fn position(p: Coord<f64>, ring: &[Coord<f64>]) -> Position {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        let cross = (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x);
        if cross == 0.0
            && p.x >= a.x.min(b.x)
            && p.x <= a.x.max(b.x)
            && p.y >= a.y.min(b.y)
            && p.y <= a.y.max(b.y)
        {
            return Position::Boundary;
        }
        if (a.y > p.y) != (b.y > p.y) {
            let x = a.x + (p.y - a.y) / (b.y - a.y) * (b.x - a.x);
            if x > p.x {
                inside = !inside;
            }
        }
    }
    if inside {
        Position::Inside
    } else {
        Position::Outside
    }
}

fn bbox(ring: &[Coord<f64>]) -> [f64; 4] {
    ring.iter()
        .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, c| {
            [b[0].min(c.x), b[1].min(c.y), b[2].max(c.x), b[3].max(c.y)]
        })
}

/// Checks one polygon built from the current arcs; returns the arcs to send back to their
/// input (empty when the polygon passes).
fn check_face(face: &Face, arcs: &[Arc]) -> Vec<u32> {
    let built: Vec<(Vec<Coord<f64>>, Vec<u32>)> =
        face.rings.iter().map(|r| ring_coords(r, arcs)).collect();
    let mut bad: Vec<u32> = Vec::new();
    let all_arcs = |r: &Ring, bad: &mut Vec<u32>| bad.extend(r.arcs.iter().map(|a| a.0));
    for (ring, (coords, _)) in face.rings.iter().zip(&built) {
        let area = if coords.len() >= 4 {
            signed_area(&coords[..coords.len() - 1])
        } else {
            0.0
        };
        if ring.sign != 0.0 && sign(area) != ring.sign {
            all_arcs(ring, &mut bad);
        }
    }
    // Segments of all rings, sorted by their smallest x.
    let mut segs: Vec<(Line<f64>, u32)> = built
        .iter()
        .flat_map(|(c, o)| {
            c.windows(2)
                .zip(o)
                .map(|(w, &id)| (Line::new(w[0], w[1]), id))
        })
        .collect();
    segs.sort_unstable_by(|a, b| {
        a.0.start
            .x
            .min(a.0.end.x)
            .total_cmp(&b.0.start.x.min(b.0.end.x))
    });
    for (i, (s, sid)) in segs.iter().enumerate() {
        let xmax = s.start.x.max(s.end.x);
        for (t, tid) in &segs[i + 1..] {
            if t.start.x.min(t.end.x) > xmax {
                break;
            }
            if crosses(*s, *t) {
                bad.push(*sid);
                bad.push(*tid);
            }
        }
    }
    if bad.is_empty() && built.len() > 1 {
        let boxes: Vec<[f64; 4]> = built.iter().map(|(c, _)| bbox(c)).collect();
        let rep = |i: usize, j: usize| -> Option<Position> {
            let (hole, other) = (&built[i].0, &built[j].0);
            hole.iter()
                .map(|&p| position(p, other))
                .find(|p| *p != Position::Boundary)
        };
        for i in 1..built.len() {
            if rep(i, 0) == Some(Position::Outside) {
                all_arcs(&face.rings[0], &mut bad);
                all_arcs(&face.rings[i], &mut bad);
            }
            for j in 1..built.len() {
                let (a, b) = (boxes[i], boxes[j]);
                let overlap = a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3];
                if i != j && overlap && rep(i, j) == Some(Position::Inside) {
                    all_arcs(&face.rings[i], &mut bad);
                    all_arcs(&face.rings[j], &mut bad);
                }
            }
        }
    }
    bad.retain(|&id| arcs.get(id as usize).is_some_and(Arc::changed));
    bad.sort_unstable();
    bad.dedup();
    bad
}

/// True when two segments meet anywhere but at an end point of both.
fn crosses(s: Line<f64>, t: Line<f64>) -> bool {
    match line_intersection(s, t) {
        None => false,
        Some(LineIntersection::Collinear { intersection }) => {
            intersection.start != intersection.end
        }
        Some(LineIntersection::SinglePoint {
            intersection: p,
            is_proper,
        }) => is_proper || !((p == s.start || p == s.end) && (p == t.start || p == t.end)),
    }
}

/// The shared engine; returns one polygon per input polygon.
fn simplify_set(
    polygons: &[Polygon<f64>],
    method: SimplifyMethod,
    tolerance: f64,
    sharing: Sharing,
) -> Vec<Polygon<f64>> {
    let (mut arcs, faces) = build_arcs(polygons, sharing);
    arcs.par_iter_mut()
        .for_each(|a| a.output = simplify_arc(&a.input, method, tolerance));
    // Faces using each arc, to re-check both sides of a reverted arc.
    let mut arc_faces: Vec<[u32; 2]> = vec![[u32::MAX; 2]; arcs.len()];
    for (f, face) in faces.iter().enumerate() {
        for &(id, _) in face.rings.iter().flat_map(|r| &r.arcs) {
            if let Some(slot) = arc_faces.get_mut(id as usize) {
                if slot[0] == u32::MAX {
                    slot[0] = f as u32;
                } else if slot[0] != f as u32 {
                    slot[1] = f as u32;
                }
            }
        }
    }
    let mut dirty: Vec<usize> = (0..faces.len()).collect();
    while !dirty.is_empty() {
        let mut revert: Vec<u32> = dirty
            .par_iter()
            .flat_map_iter(|&f| {
                faces
                    .get(f)
                    .map(|face| check_face(face, &arcs))
                    .unwrap_or_default()
            })
            .collect();
        revert.sort_unstable();
        revert.dedup();
        dirty.clear();
        for id in revert {
            if let Some(arc) = arcs.get_mut(id as usize) {
                arc.output = arc.input.clone();
            }
            if let Some(fs) = arc_faces.get(id as usize) {
                dirty.extend(fs.iter().filter(|&&f| f != u32::MAX).map(|&f| f as usize));
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
    }
    faces
        .par_iter()
        .zip(polygons)
        .map(|(face, input)| {
            if input.exterior().0.is_empty() {
                return input.clone();
            }
            let mut rings = face
                .rings
                .iter()
                .map(|r| LineString::from(ring_coords(r, &arcs).0));
            let exterior = rings.next().unwrap_or_else(|| LineString::new(vec![]));
            Polygon::new(exterior, rings.collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Area, Validation};
    use geo_types::polygon;

    fn staircase() -> Polygon<f64> {
        // A 10-step staircase under the diagonal of a 10 x 10 square.
        let mut pts = vec![Coord { x: 0.0, y: 0.0 }, Coord { x: 10.0, y: 0.0 }];
        for k in (0..10).rev() {
            let k = k as f64;
            pts.push(Coord {
                x: k + 1.0,
                y: 10.0 - k,
            });
            pts.push(Coord { x: k, y: 10.0 - k });
        }
        Polygon::new(LineString::from(pts), vec![])
    }

    #[test]
    fn douglas_peucker_flattens_a_staircase() {
        let out = simplify_polygons(&[staircase()], SimplifyMethod::DouglasPeucker, 1.0).unwrap();
        assert_eq!(out[0].exterior().0.len(), 4, "{:?}", out[0]);
        assert!(out[0].is_valid());
        assert!((out[0].unsigned_area() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn visvalingam_uses_an_area_tolerance() {
        let p = staircase();
        let small = simplify_polygons(
            std::slice::from_ref(&p),
            SimplifyMethod::VisvalingamWhyatt,
            0.1,
        )
        .unwrap();
        assert_eq!(small[0].exterior().0.len(), p.exterior().0.len());
        let big = simplify_polygons(
            std::slice::from_ref(&p),
            SimplifyMethod::VisvalingamWhyatt,
            0.6,
        )
        .unwrap();
        assert!(big[0].exterior().0.len() < p.exterior().0.len());
        assert!(big[0].is_valid());
    }

    #[test]
    fn a_ring_keeps_a_triangle() {
        let square = polygon![(x: 0., y: 0.), (x: 1., y: 0.), (x: 1., y: 1.), (x: 0., y: 1.)];
        let out = simplify_polygons(&[square], SimplifyMethod::DouglasPeucker, 100.0).unwrap();
        assert_eq!(out[0].exterior().0.len(), 4);
        assert!(out[0].is_valid());
    }

    #[test]
    fn hole_that_would_leave_the_exterior_is_kept_inside() {
        // A shallow exterior pocket around a hole: flattening the bump would put the hole outside.
        let p = Polygon::new(
            LineString::from(vec![
                (0., 0.),
                (4., 0.),
                (4., -0.5),
                (8., -0.5),
                (8., 0.),
                (12., 0.),
                (12., 3.),
                (0., 3.),
            ]),
            vec![LineString::from(vec![
                (5., -0.4),
                (7., -0.4),
                (7., -0.2),
                (5., -0.2),
            ])],
        );
        assert!(p.is_valid());
        let out = simplify_polygons(
            std::slice::from_ref(&p),
            SimplifyMethod::DouglasPeucker,
            1.0,
        )
        .unwrap();
        assert!(out[0].is_valid(), "{:?}", out[0]);
        assert_eq!(out[0].interiors().len(), 1);
    }

    #[test]
    fn rejects_bad_tolerance() {
        assert!(simplify_polygons(&[staircase()], SimplifyMethod::DouglasPeucker, -1.0).is_err());
        assert!(
            simplify_coverage(&[staircase()], SimplifyMethod::DouglasPeucker, f64::NAN).is_err()
        );
    }

    #[test]
    fn shared_island_is_simplified_identically_in_both_polygons() {
        let outer = Polygon::new(
            LineString::from(vec![(0., 0.), (10., 0.), (10., 10.), (0., 10.)]),
            vec![LineString::from(vec![
                (3., 3.),
                (3., 4.),
                (4., 4.),
                (4., 5.),
                (6., 5.),
                (6., 3.),
            ])],
        );
        let island = polygon![(x: 3., y: 3.), (x: 6., y: 3.), (x: 6., y: 5.), (x: 4., y: 5.),
                              (x: 4., y: 4.), (x: 3., y: 4.)];
        let out = simplify_coverage(&[outer, island], SimplifyMethod::DouglasPeucker, 1.0).unwrap();
        let mut hole: Vec<_> = out[0].interiors()[0].0.clone();
        let mut ext: Vec<_> = out[1].exterior().0.clone();
        hole.reverse();
        hole.sort_by(|a, b| (a.x, a.y).partial_cmp(&(b.x, b.y)).unwrap());
        ext.sort_by(|a, b| (a.x, a.y).partial_cmp(&(b.x, b.y)).unwrap());
        assert_eq!(hole, ext);
        let total = out[0].unsigned_area() + out[1].unsigned_area();
        assert!((total - 100.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn empty_and_degenerate_polygons_pass_through() {
        let empty = Polygon::new(LineString::new(vec![]), vec![]);
        let line = polygon![(x: 0., y: 0.), (x: 1., y: 0.)];
        for f in [simplify_polygons, simplify_coverage] {
            let out = f(
                &[empty.clone(), line.clone()],
                SimplifyMethod::DouglasPeucker,
                1.0,
            )
            .unwrap();
            assert_eq!(out.len(), 2);
            assert!(out[0].exterior().0.is_empty());
            assert!(out[1].exterior().0.len() <= line.exterior().0.len());
        }
    }
}
