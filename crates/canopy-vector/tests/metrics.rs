//! Polygon metrics: hand-computed cases, invariants, and conformance with the results solaris
//! publishes for its SpaceNet sample data.
//!
//! The conformance tests read `buildings/spacenet-metrics/` under the shared data directory
//! (`$CANOPY_SHARED_DATA`, else `../shared/data` next to the workspace); that directory holds
//! the sample files of solaris's test suite (`solaris/data/`): `SN2_sample_truth.csv`,
//! `SN2_sample_preds.csv` and the expected `SN2_test_results.csv` (per AOI),
//! `SN2_test_results_full.csv` (per image), `SN2_sample_iou_by_building.csv` (per truth row);
//! and the off-nadir `sample_truth.csv`, `sample_preds.csv`, `test_results.csv` (per nadir bin),
//! `test_results_full.csv` (per image). They are skipped with a message when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use canopy_vector::metrics::{
    evaluate_spacenet, iou, max_tangent_angle_error, polis, read_spacenet_csv, shape_metrics,
    spacenet_aoi, spacenet_f1, vertex_accuracy_curve, vertex_count_ratio, MatchCounts,
    SpaceNetConfig, SpaceNetEvaluation, TangentAngleConfig,
};
use geo::{polygon, Coord, LineString, Polygon, Rotate, Translate};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn square(x0: f64, y0: f64, side: f64) -> Polygon<f64> {
    polygon![(x: x0, y: y0), (x: x0 + side, y: y0), (x: x0 + side, y: y0 + side), (x: x0, y: y0 + side)]
}

// ---------------------------------------------------------------- hand-computed cases

#[test]
fn iou_hand_computed() {
    let a = square(0.0, 0.0, 2.0);
    assert!((iou(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    // Half overlap: intersection 2, union 6.
    assert!((iou(&a, &square(1.0, 0.0, 2.0)).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // Quarter overlap: intersection 1, union 7.
    assert!((iou(&a, &square(1.0, 1.0, 2.0)).unwrap() - 1.0 / 7.0).abs() < 1e-12);
    // A square with a hole against the hole's filling: no overlap.
    let ring = Polygon::new(
        square(0.0, 0.0, 4.0).exterior().clone(),
        vec![square(1.0, 1.0, 2.0).exterior().clone()],
    );
    assert!(iou(&ring, &square(1.0, 1.0, 2.0)).unwrap().abs() < 1e-12);
    // ... and against the full square: 12 / 16.
    assert!((iou(&ring, &square(0.0, 0.0, 4.0)).unwrap() - 0.75).abs() < 1e-12);
}

#[test]
fn spacenet_f1_hand_computed() {
    let truth = [
        square(0.0, 0.0, 10.0),
        square(20.0, 0.0, 10.0),
        square(40.0, 0.0, 10.0),
    ];
    let preds = [
        square(1.0, 0.0, 10.0),   // IoU 90/110 with truth 0: TP
        square(20.0, 5.0, 10.0),  // IoU 50/150 with truth 1: FP
        square(100.0, 0.0, 10.0), // nothing: FP
    ];
    let r = spacenet_f1(&truth, &preds, 0.5).unwrap();
    assert_eq!((r.tp, r.fp, r.fn_), (1, 2, 2));
    assert!((r.precision - 1.0 / 3.0).abs() < 1e-15);
    assert!((r.recall - 1.0 / 3.0).abs() < 1e-15);
    assert!((r.f1 - 1.0 / 3.0).abs() < 1e-15);
    assert!((r.per_truth_iou[1] - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.per_truth_iou[2], 0.0);
}

#[test]
fn polis_of_shifted_square() {
    // Shift by (d, 0): each square has two vertices on the other's horizontal edges (distance 0)
    // and two at distance d from its vertical edge: each side sums 2d over 4 vertices, / 8.
    let a = square(0.0, 0.0, 10.0);
    for d in [0.5, 1.0, 3.0] {
        let b = a.translate(d, 0.0);
        let v = polis(&a, &b).unwrap();
        assert!((v - d / 2.0).abs() < 1e-12, "d = {d}: {v}");
    }
}

/// Values printed by `tools/metrics_reference.py` (a port of the reference `compute_contour_measure`
/// on shapely): (side, rotation in degrees, max tangent angle at spacing 1 and 2 px, PoLiS).
/// From 10° on, the error is the rotation; below, samples near the corners project onto the
/// other truth edge and the reference reports those larger angles, which we reproduce.
const ROTATED_SQUARES: [(f64, f64, f64, f64, f64); 4] = [
    (
        20.0,
        5.0,
        30.36312594674453,
        33.12841801586835,
        0.8335044083940368,
    ),
    (
        30.0,
        2.0,
        16.536380277435335,
        17.738592074152695,
        0.5143548558239502,
    ),
    (
        30.0,
        10.0,
        10.000000000000197,
        10.000000000000087,
        2.376838960187075,
    ),
    (
        30.0,
        20.0,
        20.000000000000252,
        20.000000000000032,
        4.225691461673657,
    ),
];

#[test]
fn rotated_squares_match_the_reference() {
    for (side, degrees, spacing1, spacing2, reference_polis) in ROTATED_SQUARES {
        let truth = square(0.0, 0.0, side);
        let pred = truth.rotate_around_centroid(degrees);
        for (config, expected) in [
            (TangentAngleConfig::default(), spacing1),
            (TangentAngleConfig::crowdai(), spacing2),
        ] {
            let v = max_tangent_angle_error(&pred, &truth, &config)
                .unwrap()
                .unwrap()
                .to_degrees();
            assert!(
                (v - expected).abs() < 1e-6,
                "{side} px, {degrees}°, {config:?}: {v}° vs {expected}°"
            );
        }
        let p = polis(&pred, &truth).unwrap();
        assert!(
            (p - reference_polis).abs() < 1e-9,
            "{side} px, {degrees}°: PoLiS {p} vs {reference_polis}"
        );
    }
}

#[test]
fn vertex_metrics_hand_computed() {
    let truth = square(0.0, 0.0, 10.0);
    // An octagon cutting the square's corners by 2 px: 8 / 4 vertices; every truth corner is
    // 2 px from two octagon vertices.
    let pred = polygon![
        (x: 2., y: 0.), (x: 8., y: 0.), (x: 10., y: 2.), (x: 10., y: 8.),
        (x: 8., y: 10.), (x: 2., y: 10.), (x: 0., y: 8.), (x: 0., y: 2.)
    ];
    assert_eq!(vertex_count_ratio(&pred, &truth).unwrap(), 2.0);
    let curve = vertex_accuracy_curve(&pred, &truth).unwrap();
    assert_eq!(&curve[..2], &[0.0, 0.0]);
    assert_eq!(&curve[2..], &[1.0; 15]);
    let m = shape_metrics(&pred, &truth, &TangentAngleConfig::default()).unwrap();
    assert_eq!(m.vertex_accuracy, curve);
    // The diagonal cuts make 45° with the truth edges they project onto.
    let angle = m.max_tangent_angle.unwrap().to_degrees();
    assert!((angle - 45.0).abs() < 1e-9, "{angle}"); // reference: 45.00000000000003
                                                     // Octagon vertices lie on the square; each square corner is sqrt(2) from a diagonal.
    assert!((m.polis - 0.5f64.sqrt()).abs() < 1e-12, "{}", m.polis);
}

// ---------------------------------------------------------------- invariants

/// A star-shaped (hence simple, valid) polygon around `(cx, cy)`.
fn star_polygon() -> impl Strategy<Value = Polygon<f64>> {
    (
        -20.0..20.0f64,
        -20.0..20.0f64,
        prop::collection::vec((0.0..1.0f64, 2.0..15.0f64), 3..12),
    )
        .prop_map(|(cx, cy, spokes)| {
            let n = spokes.len() as f64;
            let coords: Vec<Coord<f64>> = spokes
                .iter()
                .enumerate()
                .map(|(i, &(jitter, r))| {
                    let t = (i as f64 + 0.8 * jitter) / n * std::f64::consts::TAU;
                    Coord {
                        x: cx + r * t.cos(),
                        y: cy + r * t.sin(),
                    }
                })
                .collect();
            Polygon::new(LineString::new(coords), vec![])
        })
}

/// A convex polygon: the hull of 3 to 10 random points.
fn convex_polygon() -> impl Strategy<Value = Polygon<f64>> {
    prop::collection::vec((-10.0..10.0f64, -10.0..10.0f64), 3..10).prop_map(|points| {
        let cloud = geo::MultiPoint::from(points);
        geo::ConvexHull::convex_hull(&cloud)
    })
}

/// Independent oracle for convex polygons: Sutherland–Hodgman clipping of `subject` by each
/// edge of `clip` (counter-clockwise), then the shoelace area.
fn convex_intersection_area(subject: &Polygon<f64>, clip: &Polygon<f64>) -> f64 {
    use geo::Orient;
    let clip = clip.orient(geo::orient::Direction::Default);
    let mut out: Vec<Coord<f64>> = subject.exterior().0[1..].to_vec();
    for edge in clip.exterior().lines() {
        let (a, b) = (edge.start, edge.end);
        let side = |p: Coord<f64>| (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x);
        let input = std::mem::take(&mut out);
        for (k, &p) in input.iter().enumerate() {
            let q = input[(k + 1) % input.len()];
            let (sp, sq) = (side(p), side(q));
            if sp >= 0.0 {
                out.push(p);
            }
            if (sp >= 0.0) != (sq >= 0.0) {
                let t = sp / (sp - sq);
                out.push(Coord {
                    x: p.x + t * (q.x - p.x),
                    y: p.y + t * (q.y - p.y),
                });
            }
        }
        if out.is_empty() {
            return 0.0;
        }
    }
    let n = out.len();
    (0..n)
        .map(|k| out[k].x * out[(k + 1) % n].y - out[(k + 1) % n].x * out[k].y)
        .sum::<f64>()
        .abs()
        / 2.0
}

proptest! {
    #[test]
    fn iou_matches_convex_clipping_oracle(a in convex_polygon(), b in convex_polygon()) {
        use geo::Area;
        let (area_a, area_b) = (a.unsigned_area(), b.unsigned_area());
        prop_assume!(area_a > 1e-3 && area_b > 1e-3);
        let inter = convex_intersection_area(&a, &b);
        let expected = inter / (area_a + area_b - inter);
        let ours = iou(&a, &b).unwrap();
        // geo's boolean operations work on an integer grid: exact vertices are restored
        // afterwards, but for nearly parallel crossing edges the crossing point itself carries
        // the grid's ~1e-9 relative error (seen: 0.6677075215 vs 0.6677075206).
        prop_assert!((ours - expected).abs() < 1e-8, "{} vs oracle {}", ours, expected);
    }

    #[test]
    fn iou_is_symmetric_and_in_unit_interval(a in star_polygon(), b in star_polygon()) {
        let ab = iou(&a, &b).unwrap();
        let ba = iou(&b, &a).unwrap();
        prop_assert!((0.0..=1.0).contains(&ab), "{}", ab);
        prop_assert!((ab - ba).abs() < 1e-8, "{} vs {}", ab, ba);
        prop_assert!((iou(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn polis_is_symmetric_and_zero_on_identity(a in star_polygon(), b in star_polygon()) {
        let ab = polis(&a, &b).unwrap();
        prop_assert!(ab >= 0.0);
        prop_assert!((ab - polis(&b, &a).unwrap()).abs() < 1e-9);
        prop_assert_eq!(polis(&a, &a).unwrap(), 0.0);
    }

    #[test]
    fn identical_predictions_score_perfectly(polys in prop::collection::vec(star_polygon(), 1..6)) {
        // Star polygons may overlap each other; matching still pairs each with itself first.
        let r = spacenet_f1(&polys, &polys, 0.5).unwrap();
        prop_assert_eq!(r.tp + r.fp, polys.len());
        prop_assert_eq!(r.tp + r.fn_, polys.len());
        prop_assert!(r.matches.iter().all(|m| m.iou > 0.5));
    }

    #[test]
    fn tangent_angle_and_vertex_accuracy_are_bounded(a in star_polygon(), b in star_polygon()) {
        if let Some(v) = max_tangent_angle_error(&a, &b, &TangentAngleConfig::default()).unwrap() {
            prop_assert!((0.0..=std::f64::consts::FRAC_PI_2 + 1e-12).contains(&v));
        }
        let c = vertex_accuracy_curve(&a, &b).unwrap();
        prop_assert!(c.windows(2).all(|w| w[0] <= w[1]));
        prop_assert!(c.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}

// ---------------------------------------------------------------- solaris conformance

fn data_dir() -> Option<PathBuf> {
    let root = std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    let dir = root.join("buildings/spacenet-metrics");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set CANOPY_SHARED_DATA)",
            dir.display()
        );
        None
    }
}

/// A result table without quoted fields: header and rows of name -> value.
fn read_table(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, key: &str) -> f64 {
    row[key].parse().unwrap()
}

/// Asserts counts exactly and scores to 1e-12 (solaris's own tolerance is 1e-9 relative).
fn assert_row(what: &str, counts: MatchCounts, row: &BTreeMap<String, String>) {
    let expected = (
        num(row, "TruePos") as usize,
        num(row, "FalsePos") as usize,
        num(row, "FalseNeg") as usize,
    );
    assert_eq!(
        (counts.tp, counts.fp, counts.fn_),
        expected,
        "{what}: TP/FP/FN"
    );
    for (key, ours) in [
        ("Precision", counts.precision()),
        ("Recall", counts.recall()),
        ("F1Score", counts.f1()),
    ] {
        let theirs = num(row, key);
        assert!(
            (ours - theirs).abs() <= 1e-12,
            "{what}: {key} {ours} vs solaris {theirs}"
        );
    }
}

fn evaluate(
    dir: &std::path::Path,
    truth: &str,
    preds: &str,
) -> (
    Vec<canopy_vector::metrics::SpaceNetRecord>,
    SpaceNetEvaluation,
) {
    let truth = read_spacenet_csv(dir.join(truth)).unwrap();
    let preds = read_spacenet_csv(dir.join(preds)).unwrap();
    let eval = evaluate_spacenet(&truth, &preds, &SpaceNetConfig::default()).unwrap();
    (truth, eval)
}

#[test]
fn conformance_spacenet2_sample() {
    let Some(dir) = data_dir() else { return };
    let (truth, eval) = evaluate(&dir, "SN2_sample_truth.csv", "SN2_sample_preds.csv");

    // Per image (SN2_test_results_full.csv, keyed by imageID).
    let full = read_table(&dir.join("SN2_test_results_full.csv"));
    assert_eq!(eval.images.len(), full.len());
    for row in &full {
        let image = eval
            .images
            .iter()
            .find(|i| i.image_id == row["imageID"])
            .unwrap();
        assert_eq!(spacenet_aoi(&image.image_id), row["AOI"]);
        assert_eq!(image.report.repaired_preds + image.report.invalid_truths, 0);
        assert_row(&image.image_id, image.report.counts(), row);
    }

    // Per AOI (SN2_test_results.csv: rows in sorted AOI order, no AOI column).
    let summary = read_table(&dir.join("SN2_test_results.csv"));
    let groups = eval.group_counts(|id| spacenet_aoi(id).to_string());
    assert_eq!(groups.len(), summary.len());
    for ((aoi, counts), row) in groups.iter().zip(&summary) {
        assert_row(aoi, *counts, row);
    }

    // Per building (SN2_sample_iou_by_building.csv: the truth table, row for row, plus
    // `iou_score` as the last field).
    let text = std::fs::read_to_string(dir.join("SN2_sample_iou_by_building.csv")).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), truth.len());
    let mut max_diff = 0.0f64;
    for ((line, record), ours) in rows.iter().zip(&truth).zip(&eval.per_truth_iou) {
        let mut fields = line.splitn(4, ',');
        let (_, image, building) = (
            fields.next(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        assert_eq!(
            (image, building.parse::<i64>().unwrap()),
            (record.image_id.as_str(), record.building_id)
        );
        let theirs: f64 = line.rsplit(',').next().unwrap().parse().unwrap();
        max_diff = max_diff.max((ours - theirs).abs());
    }
    // Many predictions share a confidence; their order among equals (file order here, pandas'
    // unspecified quicksort order in solaris) does not change the result on this sample.
    let mut preds = read_spacenet_csv(dir.join("SN2_sample_preds.csv")).unwrap();
    preds.reverse();
    let reversed = evaluate_spacenet(&truth, &preds, &SpaceNetConfig::default()).unwrap();
    assert_eq!(reversed.total, eval.total);
    assert_eq!(reversed.per_truth_iou, eval.per_truth_iou);

    eprintln!(
        "SN2 per-building IoU: max |ours - solaris| = {max_diff:e} over {} buildings",
        truth.len()
    );
    assert!(
        max_diff < 1e-9,
        "max per-building IoU difference {max_diff:e}"
    );
}

/// solaris's off-nadir bins (`challenges.py`, `off_nadir_buildings`), for the collects in the
/// sample.
fn nadir_category(image_id: &str) -> String {
    let collect = image_id
        .find("_catid_")
        .and_then(|i| image_id.get(..i + "_catid_".len() + 16))
        .unwrap_or(image_id);
    let nadir: u32 = collect
        .trim_start_matches("Atlanta_nadir")
        .split('_')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    match nadir {
        0..=25 => "Nadir",
        26..=40 => "Off-Nadir",
        _ => "Very-Off-Nadir",
    }
    .to_string()
}

#[test]
fn conformance_off_nadir_sample() {
    let Some(dir) = data_dir() else { return };
    let (_, eval) = evaluate(&dir, "sample_truth.csv", "sample_preds.csv");
    let full = read_table(&dir.join("test_results_full.csv"));
    assert_eq!(eval.images.len(), full.len());
    for row in &full {
        let image = eval
            .images
            .iter()
            .find(|i| i.image_id == row["imageID"])
            .unwrap();
        assert_eq!(nadir_category(&image.image_id), row["nadir-category"]);
        assert_row(&image.image_id, image.report.counts(), row);
    }
    let summary = read_table(&dir.join("test_results.csv"));
    let groups = eval.group_counts(nadir_category);
    assert_eq!(groups.len(), summary.len());
    for ((bin, counts), row) in groups.iter().zip(&summary) {
        assert_eq!(bin, &row["nadir-category"]);
        assert_row(bin, *counts, row);
    }
}

// ------------------------------------------------- pixel polygons against pixel counting

/// The pixels (row, col) whose centres lie inside `p`.
fn pixels_inside(p: &Polygon<f64>, side: usize) -> std::collections::BTreeSet<(usize, usize)> {
    use geo::Contains;
    let mut set = std::collections::BTreeSet::new();
    for r in 0..side {
        for c in 0..side {
            if p.contains(&geo::Point::new(c as f64 + 0.5, r as f64 + 0.5)) {
                set.insert((r, c));
            }
        }
    }
    set
}

/// The single-polygon regions of a random binary mask (4-connected, so holes often touch
/// their shell or each other at pixel corners: the configurations integer-grid boolean
/// operations get wrong most easily).
fn mask_polygons(bits: &[bool], side: usize) -> Vec<Polygon<f64>> {
    use canopy_vector::polygonize::{polygonize, Connectivity, PolygonizeOptions};
    let labels = ndarray::Array2::from_shape_vec((side, side), bits.to_vec()).unwrap();
    let opts = PolygonizeOptions {
        connectivity: Connectivity::Four,
        min_pixels: 0,
    };
    polygonize(labels.view(), Some(labels.view()), &opts)
        .unwrap()
        .into_iter()
        .filter(|r| r.geometry.0.len() == 1)
        .map(|r| r.geometry.0[0].clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// IoU of two pixel-outline polygons (holes, corner contacts) equals the IoU of their pixel
    /// sets: geo's boolean intersection must neither merge nor drop pixels.
    #[test]
    fn iou_of_pixel_polygons_equals_pixel_counting(
        a in prop::collection::vec(prop::bool::weighted(0.6), 49),
        b in prop::collection::vec(prop::bool::weighted(0.6), 49),
    ) {
        let side = 7;
        for pa in mask_polygons(&a, side) {
            let sa = pixels_inside(&pa, side);
            for pb in mask_polygons(&b, side) {
                let sb = pixels_inside(&pb, side);
                let inter = sa.intersection(&sb).count() as f64;
                let union = sa.union(&sb).count() as f64;
                let got = iou(&pa, &pb).unwrap();
                prop_assert!(
                    (got - inter / union).abs() < 1e-9,
                    "iou {got} vs pixel count {inter}/{union} for {pa:?} and {pb:?}"
                );
            }
        }
    }
}
