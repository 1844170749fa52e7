//! Integration tests of `canopy_vector::contour`: areas of known shapes, hole structure,
//! threshold ties, saddles, invalid samples, and proptest invariants (validity, pixel centres on
//! the right side, area of a 0/1 mask).

use std::f64::consts::PI;

use canopy_vector::contour::contours;
use geo::{Area, Contains, Validation, Winding};
use geo_types::{Coord, MultiPolygon, Polygon};
use ndarray::Array2;
use proptest::prelude::*;

/// Map of `f(x, y)` at the pixel centres `(c + 0.5, r + 0.5)`.
fn map_of(h: usize, w: usize, f: impl Fn(f64, f64) -> f32) -> Array2<f32> {
    Array2::from_shape_fn((h, w), |(r, c)| f(c as f64 + 0.5, r as f64 + 0.5))
}

fn area(polys: &[Polygon<f64>]) -> f64 {
    polys.iter().map(|p| p.unsigned_area()).sum()
}

fn assert_valid(polys: &[Polygon<f64>]) {
    for p in polys {
        assert!(
            p.is_valid(),
            "invalid polygon {p:?}: {:?}",
            p.check_validation()
        );
        assert!(
            p.exterior().is_ccw(),
            "exterior not counter-clockwise (y-up sense)"
        );
        for hole in p.interiors() {
            assert!(hole.is_cw(), "hole not clockwise (y-up sense)");
        }
    }
}

/// Vertex positions do not depend on the saddle rule: every skimage vertex is one of ours
/// (after the half-pixel shift and the (row, col) -> (x, y) swap) and vice versa.
#[test]
fn vertices_match_skimage() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/contour_skimage_golden.json"
    );
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shape: Vec<usize> = serde_json::from_value(g["shape"].clone()).unwrap();
    let vals: Vec<f32> = serde_json::from_value(g["map"].clone()).unwrap();
    let map = Array2::from_shape_vec((shape[0], shape[1]), vals).unwrap();
    let level = g["level"].as_f64().unwrap() as f32;
    let theirs: Vec<Vec<[f64; 2]>> = serde_json::from_value(g["contours"].clone()).unwrap();
    let theirs: Vec<Coord<f64>> = theirs
        .iter()
        .flatten()
        .map(|&[r, c]| Coord {
            x: c + 0.5,
            y: r + 0.5,
        })
        .collect();

    let polys = contours(map.view(), level, None).unwrap();
    assert_valid(&polys);
    let mut ours = Vec::new();
    for p in &polys {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            ours.extend_from_slice(&ring.0[..ring.0.len() - 1]);
        }
    }
    assert_eq!(ours.len(), theirs.len());
    let mut worst = 0.0f64;
    for t in &theirs {
        let d = ours
            .iter()
            .map(|o| (o.x - t.x).hypot(o.y - t.y))
            .fold(f64::MAX, f64::min);
        worst = worst.max(d);
    }
    // ~2e-7: the threshold is f32 (0.45f32 != 0.45), skimage used the f64 level.
    println!(
        "{} vertices, max distance to skimage {worst:.2e} px",
        theirs.len()
    );
    assert!(worst < 1e-6, "max distance {worst}");
}

/// A logistic "probability" of being within `r` of `(cx, cy)`, 0.5 exactly on the circle.
fn soft_disc(cx: f64, cy: f64, r: f64) -> impl Fn(f64, f64) -> f32 {
    move |x, y| {
        let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        (1.0 / (1.0 + (-(r - d)).exp())) as f32
    }
}

#[test]
fn soft_disc_area_is_pi_r_squared() {
    let r = 12.3;
    let map = map_of(40, 40, soft_disc(20.2, 19.7, r));
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_valid(&polys);
    let rel = (area(&polys) - PI * r * r) / (PI * r * r);
    println!("soft disc r {r}: relative area error {rel:.2e}");
    assert!(rel.abs() < 0.005, "relative area error {rel}");
    // Every vertex lies close to the circle (linear interpolation of a smooth field).
    for c in &polys[0].exterior().0 {
        let d = ((c.x - 20.2).powi(2) + (c.y - 19.7).powi(2)).sqrt();
        assert!((d - r).abs() < 0.05, "vertex {c:?} at distance {d}");
    }
}

#[test]
fn binary_disc_area_is_pi_r_squared_within_two_percent() {
    let r = 15.0;
    let map = map_of(40, 40, |x, y| {
        f32::from(((x - 20.0).powi(2) + (y - 20.0).powi(2)).sqrt() <= r)
    });
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_valid(&polys);
    let rel = (area(&polys) - PI * r * r) / (PI * r * r);
    println!("binary disc r {r}: relative area error {rel:.2e}");
    assert!(rel.abs() < 0.02, "relative area error {rel}");
}

#[test]
fn annulus_is_one_polygon_with_one_hole() {
    let (r0, r1) = (6.0, 14.0);
    let map = map_of(40, 40, |x, y| {
        let d = ((x - 20.0).powi(2) + (y - 20.0).powi(2)).sqrt();
        // 0.5 at both radii, 1 halfway: a smooth ridge.
        (1.0 - (d - (r0 + r1) / 2.0).abs() / (r1 - r0)) as f32
    });
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_eq!(polys[0].interiors().len(), 1);
    assert_valid(&polys);
    let want = PI * (r1 * r1 - r0 * r0);
    let rel = (area(&polys) - want) / want;
    assert!(rel.abs() < 0.01, "relative area error {rel}");
}

#[test]
fn island_in_a_lake_is_a_separate_polygon() {
    // Ring of ones (a lake inside) with a single one-pixel island in the middle.
    let mut map = Array2::<f32>::zeros((9, 9));
    map.slice_mut(ndarray::s![1..8, 1..8]).fill(1.0);
    map.slice_mut(ndarray::s![2..7, 2..7]).fill(0.0);
    map[[4, 4]] = 1.0;
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_valid(&polys);
    assert_eq!(polys.len(), 2);
    let holes: Vec<usize> = polys.iter().map(|p| p.interiors().len()).collect();
    assert_eq!(holes, vec![1, 0]);
    assert!((polys[1].unsigned_area() - 0.5).abs() < 1e-12);
}

#[test]
fn two_blobs_give_two_polygons() {
    let a = soft_disc(10.0, 10.0, 5.0);
    let b = soft_disc(30.0, 12.0, 4.0);
    let map = map_of(24, 40, |x, y| a(x, y).max(b(x, y)));
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 2);
    assert_valid(&polys);
    // Ordered by first cell in row-major order: the disc reaching higher (smaller y) first.
    let c0 = polys[0].exterior().0[0];
    assert!(c0.x < 20.0, "first polygon should be the left disc: {c0:?}");
}

#[test]
fn threshold_equal_to_pixel_values() {
    let mut map = Array2::<f32>::zeros((7, 7));
    map.slice_mut(ndarray::s![2..5, 2..5]).fill(1.0);
    // t = 1: the ones are inside (>=), the contour runs through their centres.
    let polys = contours(map.view(), 1.0, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_valid(&polys);
    assert!((area(&polys) - 4.0).abs() < 1e-4, "{}", area(&polys));
    // t = 0: every sample is inside, the contour runs along the map border (corners cut).
    let polys = contours(map.view(), 0.0, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert!((area(&polys) - (49.0 - 0.5)).abs() < 1e-9);
    // A lone sample exactly at the threshold gives a tiny but valid polygon around its centre.
    let mut map = Array2::<f32>::zeros((3, 3));
    map[[1, 1]] = 0.5;
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_valid(&polys);
    assert!(polys[0].unsigned_area() < 1e-10);
    assert!(polys[0].contains(&Coord { x: 1.5, y: 1.5 }));
}

#[test]
fn saddles_follow_the_cell_mean() {
    let check = |vals: [f32; 4], n: usize| {
        let map = Array2::from_shape_vec((2, 2), vals.to_vec()).unwrap();
        let polys = contours(map.view(), 0.5, None).unwrap();
        assert_valid(&polys);
        assert_eq!(polys.len(), n, "{vals:?}: {polys:?}");
    };
    check([1.0, 0.0, 0.0, 1.0], 1); // mean 0.5 >= 0.5: joined
    check([0.0, 1.0, 1.0, 0.0], 1); // the other diagonal
    check([1.0, 0.0, 0.0, 0.9], 2); // mean 0.475: separate
    check([0.9, 0.3, 0.3, 0.9], 1); // mean 0.6: joined
    check([0.0, 0.6, 0.6, 0.0], 2); // mean 0.3: separate
    check([1.0, 0.0, f32::NAN, 1.0], 2); // an invalid corner: always separate
}

#[test]
fn nan_and_masked_samples_are_outside() {
    let mut map = Array2::<f32>::ones((5, 5));
    map[[2, 2]] = f32::NAN;
    let polys = contours(map.view(), 0.5, None).unwrap();
    assert_eq!(polys.len(), 1);
    assert_eq!(polys[0].interiors().len(), 1);
    assert_valid(&polys);
    // Crossings towards an invalid sample lie on the pixel boundary: a diamond hole of 0.5.
    assert!((area(&polys) - (25.0 - 0.5 - 0.5)).abs() < 1e-9);

    let map = Array2::<f32>::ones((5, 5));
    let mut valid = Array2::from_elem((5, 5), true);
    valid[[2, 2]] = false;
    let masked = contours(map.view(), 0.5, Some(valid.view())).unwrap();
    assert_eq!(masked, polys);
}

/// Number of 2 x 2 cells of the zero-padded mask that mix inside and outside samples.
fn mixed_cells(mask: &Array2<bool>) -> usize {
    let (h, w) = mask.dim();
    let at = |i: isize, j: isize| -> bool {
        i >= 0 && j >= 0 && (i as usize) < h && (j as usize) < w && mask[[i as usize, j as usize]]
    };
    let mut n = 0;
    for i in -1..h as isize {
        for j in -1..w as isize {
            let k = [at(i, j), at(i, j + 1), at(i + 1, j), at(i + 1, j + 1)]
                .iter()
                .filter(|&&b| b)
                .count();
            n += usize::from(k != 0 && k != 4);
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A 0/1 mask at t = 0.5: crossings on pixel edges, so each mixed cell changes the area by at
    /// most 1/4 (a cut corner is 1/8, a saddle 1/4) against the pixel count.
    #[test]
    fn binary_mask_area_is_pixel_count_within_corner_bound(
        (h, w, bits) in (1usize..12, 1usize..12)
            .prop_flat_map(|(h, w)| (Just(h), Just(w), proptest::collection::vec(any::<bool>(), h * w)))
    ) {
        let mask = Array2::from_shape_vec((h, w), bits).unwrap();
        let map = mask.mapv(f32::from);
        let polys = contours(map.view(), 0.5, None).unwrap();
        assert_valid(&polys);
        let count = mask.iter().filter(|&&b| b).count() as f64;
        let bound = mixed_cells(&mask) as f64 / 4.0;
        let a = area(&polys);
        prop_assert!((a - count).abs() <= bound + 1e-9, "area {a}, count {count}, bound {bound}");
    }

    /// Any map (with ties at t and NaN): polygons are valid and disjoint, and a pixel centre is
    /// inside them exactly when its sample is >= t.
    #[test]
    fn centres_are_classified_by_the_polygons(
        (h, w, vals) in (1usize..10, 1usize..10).prop_flat_map(|(h, w)| {
            let v = prop_oneof![Just(0.5f32), Just(f32::NAN), 0.0f32..1.0];
            (Just(h), Just(w), proptest::collection::vec(v, h * w))
        })
    ) {
        let map = Array2::from_shape_vec((h, w), vals).unwrap();
        let polys = contours(map.view(), 0.5, None).unwrap();
        assert_valid(&polys);
        let mp = MultiPolygon::new(polys.clone());
        prop_assert!(mp.is_valid(), "{:?}", mp.check_validation());
        for ((r, c), &v) in map.indexed_iter() {
            let centre = Coord { x: c as f64 + 0.5, y: r as f64 + 0.5 };
            prop_assert_eq!(mp.contains(&centre), v >= 0.5, "pixel ({}, {}) = {}", r, c, v);
        }
        prop_assert!(area(&polys) <= (h * w) as f64);
    }
}
