//! Right-angle regularisation on pixel-staircase footprints and simple shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use canopy_vector::regularize::{regularize, RegularizeOptions, RegularizeStatus};
use geo::{Area, Validation};
use geo_types::{polygon, Coord, LineString, Polygon};
use proptest::prelude::*;

mod common;
use common::polygonize;

/// The staircase polygon of a `w x h` rectangle centred at `(cx, cy)` rotated by `deg`
/// degrees, rasterised at pixel centres on a `size x size` grid.
fn staircase_rectangle(size: usize, cx: f64, cy: f64, w: f64, h: f64, deg: f64) -> Polygon<f64> {
    let (s, c) = deg.to_radians().sin_cos();
    let labels: Vec<u32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64 + 0.5 - cx, (i / size) as f64 + 0.5 - cy);
            let (u, v) = (c * x + s * y, -s * x + c * y);
            u32::from(u.abs() <= w / 2.0 && v.abs() <= h / 2.0)
        })
        .collect();
    polygonize(&labels, size, size)
        .into_iter()
        .filter(|(l, _)| *l == 1)
        .map(|(_, p)| p)
        .max_by(|a, b| a.unsigned_area().total_cmp(&b.unsigned_area()))
        .unwrap()
}

/// Interior angles (degrees) of a closed ring.
fn corner_angles(ring: &LineString<f64>) -> Vec<f64> {
    let pts: Vec<Coord<f64>> = ring.0[..ring.0.len() - 1].to_vec();
    let n = pts.len();
    (0..n)
        .map(|i| {
            let (p, c, q) = (pts[(i + n - 1) % n], pts[i], pts[(i + 1) % n]);
            let (a, b) = ((p.x - c.x, p.y - c.y), (q.x - c.x, q.y - c.y));
            let cos = (a.0 * b.0 + a.1 * b.1) / (a.0.hypot(a.1) * b.0.hypot(b.1));
            cos.clamp(-1.0, 1.0).acos().to_degrees()
        })
        .collect()
}

fn axial_diff(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(90.0);
    d.min(90.0 - d)
}

#[test]
fn staircase_of_rotated_rectangles_becomes_a_rectangle() {
    for deg in (0..30).map(|k| f64::from(k) * 3.0 + 0.7) {
        let p = staircase_rectangle(96, 48.0, 48.0, 60.0, 30.0, deg);
        assert!(p.exterior().0.len() > 20);
        let out = regularize(&p, &RegularizeOptions::default()).unwrap();
        println!(
            "{deg:5.1}: orientation {:7.3}, area {:7.1}",
            out.orientation_deg,
            out.polygon.unsigned_area()
        );
        assert_eq!(out.status, RegularizeStatus::Regularized, "{deg}");
        assert_eq!(
            out.polygon.exterior().0.len(),
            5,
            "{deg}: {:?}",
            out.polygon
        );
        assert!(
            axial_diff(out.orientation_deg, deg) < 1.0,
            "{deg}: orientation {}",
            out.orientation_deg
        );
        for a in corner_angles(out.polygon.exterior()) {
            assert!((a - 90.0).abs() < 1e-6, "{deg}: corner {a}");
        }
        let rel = (out.polygon.unsigned_area() - 1800.0).abs() / 1800.0;
        assert!(rel < 0.05, "{deg}: area {}", out.polygon.unsigned_area());
    }
}

#[test]
fn l_shaped_building_keeps_six_right_angles() {
    // An L with slightly noisy corners, rotated by 25 degrees.
    let l = [
        (0.0, 0.0),
        (30.4, 0.2),
        (30.0, 12.3),
        (12.2, 11.8),
        (11.9, 25.0),
        (0.3, 24.6),
    ];
    let (s, c) = 25f64.to_radians().sin_cos();
    let ring: Vec<(f64, f64)> = l
        .iter()
        .map(|&(x, y)| (c * x - s * y, s * x + c * y))
        .collect();
    let p = Polygon::new(LineString::from(ring), vec![]);
    let out = regularize(&p, &RegularizeOptions::default()).unwrap();
    assert_eq!(out.status, RegularizeStatus::Regularized);
    assert_eq!(out.polygon.exterior().0.len(), 7, "{:?}", out.polygon);
    assert!(
        axial_diff(out.orientation_deg, 25.0) < 1.5,
        "{}",
        out.orientation_deg
    );
    let angles = corner_angles(out.polygon.exterior());
    assert!(angles.iter().all(|a| (a - 90.0).abs() < 1e-6), "{angles:?}");
    assert!(out.polygon.is_valid());
}

#[test]
fn staircase_l_shape_becomes_six_vertices() {
    #[rustfmt::skip]
    let mask = |x: usize, y: usize| (4..44).contains(&x) && (4..20).contains(&y)
        || (4..20).contains(&x) && (4..40).contains(&y);
    let labels: Vec<u32> = (0..48 * 48)
        .map(|i| u32::from(mask(i % 48, i / 48)))
        .collect();
    let p = polygonize(&labels, 48, 48)
        .into_iter()
        .find(|(l, _)| *l == 1)
        .unwrap()
        .1;
    let out = regularize(&p, &RegularizeOptions::default()).unwrap();
    assert_eq!(out.polygon.exterior().0.len(), 7, "{:?}", out.polygon);
    assert!(axial_diff(out.orientation_deg, 0.0) < 1e-6);
    assert!((out.polygon.unsigned_area() - p.unsigned_area()).abs() < 1e-6);
}

#[test]
fn holes_are_regularised_with_the_same_orientation() {
    let outer = [(0.0, 0.0), (40.0, 0.5), (39.6, 30.0), (0.2, 29.7)];
    let hole = [(10.0, 10.0), (10.3, 20.0), (30.0, 19.6), (29.8, 10.2)];
    let p = Polygon::new(
        LineString::from(outer.to_vec()),
        vec![LineString::from(hole.to_vec())],
    );
    let out = regularize(&p, &RegularizeOptions::default()).unwrap();
    assert_eq!(out.status, RegularizeStatus::Regularized);
    assert_eq!(out.polygon.interiors().len(), 1);
    assert_eq!(out.polygon.interiors()[0].0.len(), 5);
    for a in corner_angles(&out.polygon.interiors()[0])
        .into_iter()
        .chain(corner_angles(out.polygon.exterior()))
    {
        assert!((a - 90.0).abs() < 1e-6, "{a}");
    }
}

#[test]
fn irregular_shape_beyond_the_area_bound_is_returned_unchanged() {
    // A triangle cannot be made right-angled without a large area change.
    let p = polygon![(x: 0.0, y: 0.0), (x: 40.0, y: 0.0), (x: 20.0, y: 30.0)];
    let out = regularize(&p, &RegularizeOptions::default()).unwrap();
    if out.changed() {
        assert!(out.polygon.is_valid());
        let rel = (out.polygon.unsigned_area() - p.unsigned_area()).abs() / p.unsigned_area();
        assert!(rel <= 0.1);
    } else {
        assert_eq!(out.polygon, p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn regularised_polygons_are_valid_and_within_the_area_bound(
        cx in 30.0f64..34.0,
        cy in 30.0f64..34.0,
        w in 8.0f64..40.0,
        h in 8.0f64..40.0,
        deg in 0.0f64..90.0,
        max_change in 0.01f64..0.2,
        tol in 5.0f64..30.0,
    ) {
        let p = staircase_rectangle(64, cx, cy, w, h, deg);
        let opts = RegularizeOptions { angle_tolerance_deg: tol, max_area_change: max_change, ..Default::default() };
        let out = regularize(&p, &opts).unwrap();
        prop_assert!(out.polygon.is_valid());
        prop_assert!((0.0..90.0).contains(&out.orientation_deg));
        let rel = (out.polygon.unsigned_area() - p.unsigned_area()).abs() / p.unsigned_area();
        prop_assert!(rel <= max_change + 1e-12, "{}", rel);
        if !out.changed() {
            prop_assert_eq!(&out.polygon, &p);
        }
    }
}

#[test]
fn most_staircase_rectangles_regularise_to_four_corners() {
    // Every 7 degrees, four sizes: all should become 4-corner rectangles; the orientation is
    // within half a pixel over the short side (atan(0.5 / side)) of the truth.
    let (mut total, mut four) = (0, 0);
    let mut worst = [0.0f64; 4];
    let sizes = [(12.0, 10.0), (20.0, 14.0), (40.0, 16.0), (36.0, 30.0)];
    for (k, deg) in (0..13).map(|k| (k, f64::from(k) * 7.0 + 0.3)) {
        for (s, &(w, h)) in sizes.iter().enumerate() {
            let p = staircase_rectangle(64, 32.0 + 0.1 * f64::from(k), 32.0, w, h, deg);
            let out = regularize(&p, &RegularizeOptions::default()).unwrap();
            total += 1;
            if out.changed() && out.polygon.exterior().0.len() == 5 {
                four += 1;
                worst[s] = worst[s].max(axial_diff(out.orientation_deg, deg));
            }
        }
    }
    println!(
        "{four}/{total} rectangles with 4 corners, worst orientation error by size {worst:.2?}"
    );
    assert!(four * 10 >= total * 9, "{four}/{total}");
    for (&(w, h), &err) in sizes.iter().zip(&worst) {
        let bound = (0.5 / f64::min(w, h)).atan().to_degrees();
        assert!(err < bound, "{w} x {h}: {err} >= {bound}");
    }
}

/// The shared data directory (`../shared/data` next to the workspace, or
/// `CANOPY_SHARED_DATA`), `None` with a printed message when it is missing.
fn shared_data() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CANOPY_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into());
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "skipped: shared data not found at {} (set CANOPY_SHARED_DATA)",
            dir.display()
        );
        None
    }
}

#[test]
fn spacenet_footprint_mask_regularises_validly() {
    // solaris' SpaceNet Atlanta sample footprint mask (900 x 900, 0.5 m): every building
    // traced as a pixel staircase, then regularised with the defaults.
    let Some(dir) = shared_data() else { return };
    let path = dir.join("buildings/spacenet-atlanta/sample_fp_mask.tif");
    let raster = canopy_raster::GeoTiff::open(&path)
        .unwrap()
        .read_as::<u8>()
        .unwrap();
    let (h, w) = (raster.data.shape()[1], raster.data.shape()[2]);
    let labels: Vec<u32> = raster.data.iter().map(|&v| u32::from(v > 0)).collect();
    let buildings: Vec<Polygon<f64>> = polygonize(&labels, w, h)
        .into_iter()
        .filter(|(l, p)| *l == 1 && p.unsigned_area() >= 50.0)
        .map(|(_, p)| p)
        .collect();
    assert!(buildings.len() >= 20, "{} buildings", buildings.len());
    let opts = RegularizeOptions::default();
    let (mut changed, mut iou_sum, mut before, mut after) = (0, 0.0, 0, 0);
    let (mut corners, mut right) = (0, 0);
    for p in &buildings {
        let out = regularize(p, &opts).unwrap();
        assert!(out.polygon.is_valid(), "{:?}", out.polygon);
        let rel = (out.polygon.unsigned_area() - p.unsigned_area()).abs() / p.unsigned_area();
        assert!(rel <= opts.max_area_change);
        use geo::BooleanOps;
        let inter = out.polygon.intersection(p).unsigned_area();
        let iou = inter / (out.polygon.unsigned_area() + p.unsigned_area() - inter);
        iou_sum += iou;
        before += p.exterior().0.len() - 1;
        after += out.polygon.exterior().0.len() - 1;
        if out.changed() {
            changed += 1;
            for a in corner_angles(out.polygon.exterior()) {
                corners += 1;
                right += usize::from((a - 90.0).abs() < 1e-6);
            }
        }
    }
    let n = buildings.len();
    let mean_iou = iou_sum / n as f64;
    println!(
        "{n} buildings, {changed} regularised, exterior vertices {before} -> {after}, \
         mean IoU with the staircase {mean_iou:.3}, {right}/{corners} corners right angles"
    );
    assert!(right * 4 >= corners * 3, "{right}/{corners} right angles");
    assert!(changed * 10 >= n * 8, "{changed}/{n} regularised");
    assert!(mean_iou > 0.9, "{mean_iou}");
}
