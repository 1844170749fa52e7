//! Simplification invariants on pixel-staircase polygons built from random label grids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use canopy_vector::simplify::{simplify_coverage, simplify_polygons, SimplifyMethod};
use geo::{Area, BooleanOps, BoundingRect, Validation};
use geo_types::{LineString, MultiPolygon, Polygon};
use proptest::prelude::*;

mod common;
use common::polygonize;

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
