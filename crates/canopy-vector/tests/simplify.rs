//! Simplification invariants on pixel-staircase polygons built from random label grids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};

use canopy_vector::simplify::{simplify_coverage, simplify_polygons, SimplifyMethod};
use geo::{Area, BooleanOps, BoundingRect, Validation};
use geo_types::{LineString, MultiPolygon, Polygon};
use proptest::prelude::*;

/// Polygons of the 4-connected regions of a `w x h` label grid (row-major), in pixel space
/// (`x` = column, `y` = row), with a vertex at every pixel corner of every boundary, so that
/// shared borders have the same vertices. At a pinch corner (two diagonal pixels of one
/// region) a ring that touches itself is split into two rings touching at a point.
fn polygonize(labels: &[u32], w: usize, h: usize) -> Vec<(u32, Polygon<f64>)> {
    let mut comp = vec![usize::MAX; w * h];
    let mut ncomp = 0;
    for start in 0..w * h {
        if comp[start] != usize::MAX {
            continue;
        }
        comp[start] = ncomp;
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            let (r, c) = (i / w, i % w);
            let mut nb = Vec::new();
            if r > 0 {
                nb.push(i - w);
            }
            if r + 1 < h {
                nb.push(i + w);
            }
            if c > 0 {
                nb.push(i - 1);
            }
            if c + 1 < w {
                nb.push(i + 1);
            }
            for j in nb {
                if comp[j] == usize::MAX && labels[j] == labels[start] {
                    comp[j] = ncomp;
                    queue.push_back(j);
                }
            }
        }
        ncomp += 1;
    }
    let at = |r: isize, c: isize| -> usize {
        if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
            usize::MAX - 1
        } else {
            comp[r as usize * w + c as usize]
        }
    };
    // Directed boundary edges per component: clockwise on screen around each pixel, so the
    // region is on the right-hand side (screen) and exteriors have positive shoelace area.
    type Outgoing = HashMap<(i64, i64), Vec<(i64, i64)>>;
    let mut out_edges: Vec<Outgoing> = vec![HashMap::new(); ncomp];
    for r in 0..h as isize {
        for c in 0..w as isize {
            let k = at(r, c);
            let (x, y) = (c as i64, r as i64);
            let mut add = |a: (i64, i64), b: (i64, i64)| out_edges[k].entry(a).or_default().push(b);
            if at(r - 1, c) != k {
                add((x, y), (x + 1, y));
            }
            if at(r, c + 1) != k {
                add((x + 1, y), (x + 1, y + 1));
            }
            if at(r + 1, c) != k {
                add((x + 1, y + 1), (x, y + 1));
            }
            if at(r, c - 1) != k {
                add((x, y + 1), (x, y));
            }
        }
    }
    let mut polys = Vec::new();
    for (k, mut edges) in out_edges.into_iter().enumerate() {
        let mut rings: Vec<Vec<(i64, i64)>> = Vec::new();
        while let Some((&start, _)) = edges.iter().find(|(_, v)| !v.is_empty()) {
            let mut ring = vec![start];
            let mut prev = start;
            let mut cur = edges.get_mut(&start).unwrap().pop().unwrap();
            while cur != start {
                ring.push(cur);
                let outs = edges.get_mut(&cur).unwrap();
                let idx = if outs.len() == 1 {
                    0
                } else {
                    // Turn right on screen (towards the region); a ring that then touches
                    // itself is split below.
                    let (dx, dy) = (cur.0 - prev.0, cur.1 - prev.1);
                    let want = (cur.0 - dy, cur.1 + dx);
                    outs.iter().position(|&o| o == want).unwrap_or(0)
                };
                let next = outs.remove(idx);
                prev = cur;
                cur = next;
            }
            // Split the ring where it touches itself: the loops are a ring and its holes.
            let mut stack: Vec<(i64, i64)> = Vec::new();
            let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
            for v in ring {
                if let Some(&i) = seen.get(&v) {
                    let lp: Vec<(i64, i64)> = stack.drain(i..).collect();
                    for u in &lp {
                        seen.remove(u);
                    }
                    rings.push(lp);
                }
                seen.insert(v, stack.len());
                stack.push(v);
            }
            rings.push(stack);
        }
        let to_ls = |r: &Vec<(i64, i64)>| {
            LineString::from(
                r.iter()
                    .map(|&(x, y)| (x as f64, y as f64))
                    .collect::<Vec<_>>(),
            )
        };
        let area = |r: &Vec<(i64, i64)>| {
            let n = r.len();
            (0..n)
                .map(|i| r[i].0 * r[(i + 1) % n].1 - r[(i + 1) % n].0 * r[i].1)
                .sum::<i64>()
        };
        let ext = rings.iter().position(|r| area(r) > 0).unwrap();
        let holes = rings
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != ext)
            .map(|(_, r)| to_ls(r));
        let label = labels[comp.iter().position(|&c| c == k).unwrap()];
        polys.push((label, Polygon::new(to_ls(&rings[ext]), holes.collect())));
    }
    polys
}

/// The polygon without vertices on a straight line between their neighbours.
fn drop_collinear(p: &Polygon<f64>) -> Polygon<f64> {
    let ring = |r: &LineString<f64>| {
        let pts = &r.0[..r.0.len() - 1];
        let n = pts.len();
        let kept: Vec<_> = (0..n)
            .filter(|&i| {
                let (a, b, c) = (pts[(i + n - 1) % n], pts[i], pts[(i + 1) % n]);
                (b.x - a.x) * (c.y - b.y) - (b.y - a.y) * (c.x - b.x) != 0.0
            })
            .map(|i| pts[i])
            .collect();
        LineString::from(kept)
    };
    Polygon::new(ring(p.exterior()), p.interiors().iter().map(ring).collect())
}

fn vertex_count(p: &Polygon<f64>) -> usize {
    std::iter::once(p.exterior())
        .chain(p.interiors())
        .map(|r| r.0.len())
        .sum()
}

fn overlap(a: &Polygon<f64>, b: &Polygon<f64>) -> f64 {
    let (ra, rb) = (a.bounding_rect().unwrap(), b.bounding_rect().unwrap());
    if ra.max().x <= rb.min().x
        || rb.max().x <= ra.min().x
        || ra.max().y <= rb.min().y
        || rb.max().y <= ra.min().y
    {
        return 0.0;
    }
    a.intersection(b).unsigned_area()
}

fn grid(w: usize, h: usize, classes: u32) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0..classes, w * h)
}

/// Smooths a random grid a bit (majority of the 3x3 block) so regions have long staircases.
fn smooth(labels: &[u32], w: usize, h: usize) -> Vec<u32> {
    let mut out = labels.to_vec();
    for r in 0..h {
        for c in 0..w {
            let mut count: HashMap<u32, usize> = HashMap::new();
            for dr in -1i64..=1 {
                for dc in -1i64..=1 {
                    let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                    if rr >= 0 && cc >= 0 && rr < h as i64 && cc < w as i64 {
                        *count
                            .entry(labels[rr as usize * w + cc as usize])
                            .or_default() += 1;
                    }
                }
            }
            out[r * w + c] = count.into_iter().max_by_key(|&(l, n)| (n, l)).unwrap().0;
        }
    }
    out
}

#[test]
fn builder_gives_valid_polygons_that_tile_the_grid() {
    // A ring of label 1 around a label-0 island, plus a diagonal pinch of label 2.
    #[rustfmt::skip]
    let labels = [
        1, 1, 1, 1, 0,
        1, 0, 0, 1, 0,
        1, 1, 1, 1, 2,
        0, 0, 0, 2, 0,
    ];
    let polys = polygonize(&labels, 5, 4);
    let total: f64 = polys.iter().map(|(_, p)| p.unsigned_area()).sum();
    assert_eq!(total, 20.0);
    for (_, p) in &polys {
        assert!(p.is_valid(), "{p:?}: {:?}", p.validation_errors());
    }
}

#[test]
fn coverage_beats_independent_simplification_on_shared_borders() {
    // Two regions split by a staircase diagonal: the coverage result must tile the square
    // exactly, with one simplified border shared by both.
    let (w, h) = (16, 16);
    let labels: Vec<u32> = (0..w * h)
        .map(|i| u32::from((i % w) + (i / w) / 2 > 10))
        .collect();
    let polys: Vec<Polygon<f64>> = polygonize(&labels, w, h)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let cov = simplify_coverage(&polys, SimplifyMethod::DouglasPeucker, 1.5).unwrap();
    let total: f64 = cov.iter().map(|p| p.unsigned_area()).sum();
    assert!((total - 256.0).abs() < 1e-9, "{total}");
    assert!(overlap(&cov[0], &cov[1]) < 1e-9);
    assert!(cov
        .iter()
        .zip(&polys)
        .all(|(a, b)| vertex_count(a) < vertex_count(b)));
    // Each polygon on its own (what shapely's simplify does) leaves gaps or overlaps.
    let ind = simplify_polygons(&polys, SimplifyMethod::DouglasPeucker, 1.5).unwrap();
    let union = ind[0].union(&ind[1]).unsigned_area();
    let mismatch = (union - 256.0).abs() + overlap(&ind[0], &ind[1]);
    println!(
        "independent: union {union}, overlap {}",
        overlap(&ind[0], &ind[1])
    );
    assert!(mismatch > 0.5, "{mismatch}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn simplify_never_adds_vertices_and_stays_valid(
        labels in grid(14, 12, 3),
        tol in 0.0f64..4.0,
        vw in any::<bool>(),
        smooth_it in any::<bool>(),
    ) {
        let labels = if smooth_it { smooth(&labels, 14, 12) } else { labels };
        let polys: Vec<Polygon<f64>> =
            polygonize(&labels, 14, 12).into_iter().map(|(_, p)| p).collect();
        let method = if vw { SimplifyMethod::VisvalingamWhyatt } else { SimplifyMethod::DouglasPeucker };
        let out = simplify_polygons(&polys, method, tol).unwrap();
        prop_assert_eq!(out.len(), polys.len());
        for (a, b) in out.iter().zip(&polys) {
            prop_assert!(vertex_count(a) <= vertex_count(b));
            prop_assert_eq!(a.interiors().len(), b.interiors().len());
            prop_assert!(a.is_valid(), "{:?}: {:?}", a, a.validation_errors());
        }
    }

    #[test]
    fn coverage_simplification_tiles_the_grid(
        labels in grid(14, 12, 3),
        tol in 0.0f64..4.0,
        vw in any::<bool>(),
        smooth_it in any::<bool>(),
        gdal_like in any::<bool>(),
    ) {
        let (w, h) = (14usize, 12usize);
        let labels = if smooth_it { smooth(&labels, w, h) } else { labels };
        let mut polys: Vec<Polygon<f64>> =
            polygonize(&labels, w, h).into_iter().map(|(_, p)| p).collect();
        if gdal_like {
            // GDAL drops collinear vertices, leaving T-junctions where three regions meet.
            polys = polys.iter().map(drop_collinear).collect();
        }
        for p in &polys {
            prop_assert!(p.is_valid(), "builder: {:?}", p);
        }
        let method = if vw { SimplifyMethod::VisvalingamWhyatt } else { SimplifyMethod::DouglasPeucker };
        let out = simplify_coverage(&polys, method, tol).unwrap();
        let total: f64 = out.iter().map(|p| p.unsigned_area()).sum();
        prop_assert!((total - (w * h) as f64).abs() < 1e-6, "total area {}", total);
        for (a, b) in out.iter().zip(&polys) {
            prop_assert!(vertex_count(a) <= vertex_count(b));
            prop_assert!(a.is_valid(), "{:?}: {:?}", a, a.validation_errors());
        }
        for i in 0..out.len() {
            for j in i + 1..out.len() {
                let o = overlap(&out[i], &out[j]);
                prop_assert!(o < 1e-6, "polygons {} and {} overlap by {}", i, j, o);
            }
        }
        // The union covers the grid: no gaps (areas add up and nothing overlaps).
        let union = out.iter().fold(MultiPolygon::new(vec![]), |acc, p| acc.union(p));
        prop_assert!((union.unsigned_area() - (w * h) as f64).abs() < 1e-6);
    }
}

#[test]
fn coverage_on_a_larger_smooth_map_simplifies_a_lot() {
    let (w, h) = (96usize, 80usize);
    let mut state = 12345u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut labels: Vec<u32> = (0..w * h).map(|_| rnd() % 4).collect();
    for _ in 0..4 {
        labels = smooth(&labels, w, h);
    }
    let polys: Vec<Polygon<f64>> = polygonize(&labels, w, h)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let out = simplify_coverage(&polys, SimplifyMethod::DouglasPeucker, 1.0).unwrap();
    let before: usize = polys.iter().map(vertex_count).sum();
    let after: usize = out.iter().map(vertex_count).sum();
    println!("{} polygons, {before} -> {after} vertices", polys.len());
    assert!(after * 2 < before, "{before} -> {after}");
    let total: f64 = out.iter().map(|p| p.unsigned_area()).sum();
    assert!((total - (w * h) as f64).abs() < 1e-6);
    assert!(out.iter().all(|p| p.is_valid()));
    let union = out
        .iter()
        .fold(MultiPolygon::new(vec![]), |acc, p| acc.union(p));
    assert!((union.unsigned_area() - (w * h) as f64).abs() < 1e-6);
}

/// Timing on the peers benchmark's polygons (`../shared/peers/bench_polygonize.py`: GDAL
/// polygonize of a 4096 x 4096 mask), one WKT polygon per line in the file named by
/// `CANOPY_SIMPLIFY_WKT`; with `CANOPY_SIMPLIFY_OUT` (a directory) the coverage results are
/// written there as WKT for an outside check. Run with
/// `cargo test --release -p canopy-vector --test simplify -- --ignored --nocapture`.
#[test]
#[ignore = "needs CANOPY_SIMPLIFY_WKT (a WKT file of polygons); timing only"]
fn timing_on_polygonized_mask() {
    use wkt::TryFromWkt;
    let Ok(path) = std::env::var("CANOPY_SIMPLIFY_WKT") else {
        println!("CANOPY_SIMPLIFY_WKT not set: skipped");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let polys: Vec<Polygon<f64>> = text
        .lines()
        .map(|l| Polygon::try_from_wkt_str(l).unwrap())
        .collect();
    let before: usize = polys.iter().map(vertex_count).sum();
    for (name, f) in [
        (
            "simplify_polygons",
            simplify_polygons as fn(&[Polygon<f64>], SimplifyMethod, f64) -> _,
        ),
        ("simplify_coverage", simplify_coverage),
    ] {
        for method in [
            SimplifyMethod::DouglasPeucker,
            SimplifyMethod::VisvalingamWhyatt,
        ] {
            let mut times = Vec::new();
            let mut out = Vec::new();
            for _ in 0..7 {
                let t = std::time::Instant::now();
                out = f(&polys, method, 1.0).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            if let (Ok(dir), "simplify_coverage") = (std::env::var("CANOPY_SIMPLIFY_OUT"), name) {
                use wkt::ToWkt;
                let text: String = out.iter().map(|p| p.wkt_string() + "\n").collect();
                let file = format!("{dir}/coverage_{method:?}.wkt");
                std::fs::write(&file, text).unwrap();
            }
            let after: usize = out.iter().map(vertex_count).sum();
            let valid = out.iter().filter(|p| p.is_valid()).count();
            let area: f64 = out.iter().map(|p| p.unsigned_area()).sum();
            println!(
                "{name} {method:?} tol 1: {} polygons, {before} -> {after} vertices, {valid} valid, \
                 area {area:.1}, median {:.2} ms (min {:.2})",
                polys.len(),
                times[3],
                times[0]
            );
        }
    }
}
