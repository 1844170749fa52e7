//! Integration tests of `canopy_vector::coco`: the RLE codec against pycocotools, real RAMP
//! and crowdAI files (skipped when the shared data is missing), round trips, hole handling and
//! errors for malformed files.

use std::path::PathBuf;

use canopy_raster::rasterize::{rasterize_mask, BurnRule, Coords};
use canopy_vector::coco::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoImage, HoleHandling, Rle, RleCounts,
    Segmentation,
};
use canopy_vector::Error;
use geo::{Area, BooleanOps, Validation};
use geo_types::{polygon, LineString, MultiPolygon, Polygon};
use ndarray::Array2;
use proptest::prelude::*;
use serde_json::Value;

fn shared_data() -> PathBuf {
    std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

/// Real files, or `None` (with a message) when the shared data is not there.
fn real_files() -> Option<Vec<PathBuf>> {
    let b = shared_data().join("buildings");
    let mut files: Vec<PathBuf> = (1..=9)
        .map(|k| b.join(format!("openaerialmap-ramp/coco/aoi{k}.json")))
        .filter(|p| p.exists())
        .collect();
    let crowdai = b.join("crowdai-sample/train/annotation.json");
    if crowdai.exists() {
        files.push(crowdai);
    }
    if files.is_empty() {
        println!(
            "SKIPPED: no COCO files under {} (set CANOPY_SHARED_DATA)",
            b.display()
        );
        return None;
    }
    Some(files)
}

// ---------------------------------------------------------------------------------------------
// RLE against pycocotools

#[test]
fn rle_matches_pycocotools() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/coco_rle_golden.json"
    );
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let rows: Vec<&str> = case["mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let (h, w) = (rows.len(), rows[0].len());
        let mask = Array2::from_shape_fn((h, w), |(r, c)| rows[r].as_bytes()[c] == b'1');
        let counts = case["counts"].as_str().unwrap();

        // Encoding gives pycocotools' string, decoding gives the mask back.
        let rle = Rle::from_mask(mask.view());
        assert_eq!(rle.size, [h as u32, w as u32]);
        assert_eq!(
            rle.counts,
            RleCounts::Compressed(counts.to_string()),
            "{h} x {w}"
        );
        assert_eq!(rle.to_mask().unwrap(), mask);
        let plain: Vec<u64> = serde_json::from_value(case["uncompressed"].clone()).unwrap();
        let uncompressed = Rle {
            size: rle.size,
            counts: RleCounts::Uncompressed(plain),
        };
        assert_eq!(uncompressed.to_mask().unwrap(), mask);

        // Area and bbox as pycocotools' area / toBbox.
        let ann = annotation(1, Segmentation::Rle(rle.clone()));
        let (area, bbox) = ann.computed_area_bbox().unwrap();
        assert_eq!(area, case["area"].as_f64().unwrap());
        let want: Vec<f64> = serde_json::from_value(case["bbox"].clone()).unwrap();
        assert_eq!(bbox.to_vec(), want);

        // As geometry: the exact pixel outline, which rasterizes back to the mask.
        let mp = rle.to_multi_polygon().unwrap();
        assert!(mp.is_valid(), "{:?}", mp.check_validation());
        assert!((mp.unsigned_area() - area).abs() < 1e-9);
        let back = rasterize_mask([&mp], w, h, Coords::Pixel, BurnRule::PixelCenter).unwrap();
        assert_eq!(back, mask);
    }
}

fn annotation(id: u64, segmentation: Segmentation) -> CocoAnnotation {
    CocoAnnotation {
        id,
        image_id: 1,
        category_id: 100,
        segmentation,
        area: 0.0,
        bbox: [0.0; 4],
        iscrowd: 0,
        extra: Default::default(),
    }
}

/// The mask the property test below found (2026-12-01): a pixel joined to its region only
/// through corners, between two holes that touch at corners. `geo`'s union of the runs merged
/// both holes and the pixel into one hole (area 25 for 23 pixels); the polygons must cover the
/// pixels exactly.
#[test]
fn rle_polygons_keep_a_pixel_between_corner_touching_holes() {
    let rows = [
        "........####.....",
        ".......##..#.....",
        ".......#.#.#.....",
        ".......#..#......",
        ".......#####.....",
        "........#..#.....",
        "........####.....",
    ];
    let mask = Array2::from_shape_fn((rows.len(), 17), |(r, c)| rows[r].as_bytes()[c] == b'#');
    let mp = Rle::from_mask(mask.view()).to_multi_polygon().unwrap();
    let pixels = mask.iter().filter(|&&b| b).count();
    assert_eq!(pixels, 23);
    assert!(
        (mp.unsigned_area() - pixels as f64).abs() < 1e-9,
        "{}",
        mp.unsigned_area()
    );
    // every pixel centre is inside the polygons exactly when the pixel is set
    use geo::Contains;
    for ((r, c), &set) in mask.indexed_iter() {
        let centre = geo_types::Point::new(c as f64 + 0.5, r as f64 + 0.5);
        assert_eq!(mp.contains(&centre), set, "pixel ({r}, {c})");
    }
}

proptest! {
    #[test]
    fn rle_mask_round_trip(
        (h, w, bits) in (1usize..20, 1usize..20)
            .prop_flat_map(|(h, w)| (Just(h), Just(w), proptest::collection::vec(any::<bool>(), h * w)))
    ) {
        let mask = Array2::from_shape_vec((h, w), bits).unwrap();
        let rle = Rle::from_mask(mask.view());
        prop_assert_eq!(rle.to_mask().unwrap(), mask.clone());
        let mp = rle.to_multi_polygon().unwrap();
        prop_assert!((mp.unsigned_area() - mask.iter().filter(|&&b| b).count() as f64).abs() < 1e-9);
    }
}

// ---------------------------------------------------------------------------------------------
// Real files

#[test]
fn real_files_read_convert_and_round_trip() {
    let Some(files) = real_files() else { return };
    let dir = tempfile::tempdir().unwrap();
    for path in files {
        let ds = CocoDataset::read(&path).unwrap();
        let name = path.display().to_string();
        let crowdai = name.contains("crowdai");
        if crowdai {
            assert_eq!(ds.images.len(), 20);
            assert_eq!(ds.annotations.len(), 188);
            assert_eq!(ds.categories.len(), 1);
            assert_eq!(ds.categories[0].id, 100);
            assert!(ds.extra.contains_key("info"));
            assert_eq!(ds.categories[0].extra["supercategory"], "building");
        } else if name.ends_with("aoi1.json") {
            assert_eq!((ds.images.len(), ds.annotations.len()), (966, 1124));
            assert_eq!(ds.images[0].extra["zoom"], 21);
            assert_eq!(ds.annotations[0].extra["touches_border"], true);
        }

        // Geometry, and how the file's area and bbox relate to it.
        let (mut worst_rel, mut worst_bbox, mut bbox_off, mut invalid) = (0.0f64, 0.0f64, 0, 0);
        for a in &ds.annotations {
            let mp = a.to_multi_polygon().unwrap();
            assert_eq!(
                mp.0.len(),
                1,
                "{name}: annotation {} has several parts",
                a.id
            );
            invalid += usize::from(!mp.is_valid());
            let (area, bbox) = a.computed_area_bbox().unwrap();
            if area > 50.0 {
                worst_rel = worst_rel.max((a.area - area).abs() / area);
            }
            let d = (0..4)
                .map(|k| (a.bbox[k] - bbox[k]).abs())
                .fold(0.0, f64::max);
            worst_bbox = worst_bbox.max(d);
            bbox_off += usize::from(d > 0.5);
        }
        println!(
            "{name}: {} annotations, area vs polygon: max rel {worst_rel:.4} (area > 50 px^2), \
             bbox max |diff| {worst_bbox:.3}, bboxes off by > 0.5 px: {bbox_off}, invalid: {invalid}",
            ds.annotations.len()
        );
        if crowdai {
            // crowdAI: area is a pixel count; its bboxes do not describe the polygons.
            assert!(worst_rel < 0.04, "{worst_rel}");
            assert!(bbox_off > 150, "{bbox_off}");
            assert_eq!(invalid, 5);
        } else {
            // RAMP: area and bbox computed from the polygons (rounded to 0.01).
            assert!(worst_rel < 0.005, "{worst_rel}");
            assert!(worst_bbox < 0.0101, "{worst_bbox}");
            assert_eq!(invalid, 0);
        }

        // read -> write -> read gives the same dataset, extra keys included.
        let out = dir.path().join("out.json");
        ds.write(&out).unwrap();
        let back = CocoDataset::read(&out).unwrap();
        for (a, b) in back.annotations.iter().zip(&ds.annotations) {
            assert_eq!(a, b, "{name}");
        }
        assert!(
            back == ds,
            "{name}: images, categories or extra keys differ"
        );
    }
}

#[test]
fn refresh_fixes_crowdai_bboxes() {
    let Some(files) = real_files() else { return };
    let Some(path) = files
        .iter()
        .find(|p| p.display().to_string().contains("crowdai"))
    else {
        println!("SKIPPED: no crowdAI sample");
        return;
    };
    let mut ds = CocoDataset::read(path).unwrap();
    let a = &mut ds.annotations[0];
    assert_eq!(a.id, 2144765);
    assert_eq!(a.bbox, [181.0, 181.0, 94.0, 51.0]); // as shipped: not the polygon's box
    a.refresh_area_bbox().unwrap();
    assert_eq!(a.bbox, [181.0, 238.0, 51.0, 62.0]);
    assert_eq!(a.area, 1823.5); // the file says 1827 (pixel count)
}

// ---------------------------------------------------------------------------------------------
// Writing geometry

fn image() -> CocoImage {
    CocoImage::new(1, "tile.png", 64, 48)
}

fn dataset(annotations: Vec<CocoAnnotation>) -> CocoDataset {
    CocoDataset {
        images: vec![image()],
        categories: vec![CocoCategory::new(100, "building")],
        annotations,
        ..Default::default()
    }
}

#[test]
fn geometry_round_trip_through_a_file() {
    let a = polygon![(x: 1.5, y: 2.25), (x: 10.0, y: 2.0), (x: 9.0, y: 8.75), (x: 2.0, y: 7.0)];
    let b = polygon![(x: 20.0, y: 20.0), (x: 30.0, y: 20.0), (x: 25.0, y: 30.0)];
    let mp = MultiPolygon::new(vec![a.clone(), b.clone()]);
    let ann =
        CocoAnnotation::from_multi_polygon(3, &image(), 100, &mp, HoleHandling::Reject).unwrap();
    assert_eq!(ann.area, a.unsigned_area() + b.unsigned_area());
    assert_eq!(ann.bbox, [1.5, 2.0, 28.5, 28.0]);
    let Segmentation::Polygons(rings) = &ann.segmentation else {
        panic!("polygons expected")
    };
    assert_eq!(rings[1], vec![20.0, 20.0, 30.0, 20.0, 25.0, 30.0]); // no closing point
    let ds = dataset(vec![ann]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    ds.write(&path).unwrap();
    let back = CocoDataset::read(&path).unwrap();
    assert_eq!(back, ds);
    assert_eq!(back.annotations[0].to_multi_polygon().unwrap(), mp);
}

fn square_with_holes() -> Polygon<f64> {
    let ring = |x0: f64, y0: f64, x1: f64, y1: f64| {
        LineString::from(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
    };
    Polygon::new(
        ring(4.0, 4.0, 40.0, 30.0),
        vec![ring(8.0, 8.0, 14.0, 12.0), ring(20.0, 10.0, 30.0, 25.0)],
    )
}

#[test]
fn holes_split_into_parts_cover_the_polygon() {
    let poly = square_with_holes();
    let mp = MultiPolygon::new(vec![poly.clone()]);
    let ann =
        CocoAnnotation::from_multi_polygon(1, &image(), 100, &mp, HoleHandling::SplitIntoParts)
            .unwrap();
    let parts = ann.to_multi_polygon().unwrap();
    assert!(parts.0.len() >= 3, "{} parts", parts.0.len());
    for p in &parts.0 {
        assert!(p.interiors().is_empty());
        assert!(p.is_valid());
    }
    assert!(
        (ann.area - poly.unsigned_area()).abs() < 1e-9 * ann.area,
        "{} vs {}",
        ann.area,
        poly.unsigned_area()
    );
    // The parts' union is the polygon: symmetric difference of zero area.
    let union = geo::unary_union(&parts.0);
    assert!(union.xor(&mp).unsigned_area() < 1e-9);
    // And they burn the same pixels.
    let want = rasterize_mask([&mp], 64, 48, Coords::Pixel, BurnRule::PixelCenter).unwrap();
    let got = rasterize_mask([&parts], 64, 48, Coords::Pixel, BurnRule::PixelCenter).unwrap();
    assert_eq!(got, want);
}

#[test]
fn holes_as_rle_and_rejected() {
    let mp = MultiPolygon::new(vec![square_with_holes()]);
    let ann = CocoAnnotation::from_multi_polygon(1, &image(), 100, &mp, HoleHandling::Rle).unwrap();
    let Segmentation::Rle(rle) = &ann.segmentation else {
        panic!("RLE expected")
    };
    assert_eq!(rle.size, [48, 64]);
    let want = rasterize_mask([&mp], 64, 48, Coords::Pixel, BurnRule::PixelCenter).unwrap();
    assert_eq!(rle.to_mask().unwrap(), want);
    assert_eq!(ann.area, want.iter().filter(|&&b| b).count() as f64);
    assert_eq!(ann.bbox, [4.0, 4.0, 36.0, 26.0]);
    // The RLE survives a file round trip.
    let ds = dataset(vec![ann]);
    let back = CocoDataset::from_slice(ds.to_json().unwrap().as_bytes(), "mem").unwrap();
    assert_eq!(back, ds);

    let e = CocoAnnotation::from_multi_polygon(9, &image(), 100, &mp, HoleHandling::Reject)
        .unwrap_err()
        .to_string();
    assert!(e.contains("annotation 9") && e.contains("holes"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rectangles with random disjoint rectangular holes: the parts have no holes, are valid and
    /// add up to the polygon's area.
    #[test]
    fn split_parts_add_up(holes in proptest::collection::vec((0usize..4, 0usize..4, 0.1f64..0.4, 0.1f64..0.4), 1..6)) {
        let cell = 10.0;
        let mut seen = std::collections::HashSet::new();
        let mut interiors = Vec::new();
        for (i, j, m0, m1) in holes {
            if seen.insert((i, j)) {
                let (x0, y0) = (i as f64 * cell, j as f64 * cell);
                interiors.push(LineString::from(vec![
                    (x0 + m0 * cell, y0 + m1 * cell), (x0 + (1.0 - m1) * cell, y0 + m1 * cell),
                    (x0 + (1.0 - m1) * cell, y0 + (1.0 - m0) * cell), (x0 + m0 * cell, y0 + (1.0 - m0) * cell),
                ]));
            }
        }
        let outer = LineString::from(vec![(0.0, 0.0), (40.0, 0.0), (40.0, 40.0), (0.0, 40.0)]);
        let poly = Polygon::new(outer, interiors);
        let mp = MultiPolygon::new(vec![poly.clone()]);
        let ann = CocoAnnotation::from_multi_polygon(1, &CocoImage::new(1, "t", 40, 40), 1, &mp,
                                                     HoleHandling::SplitIntoParts).unwrap();
        let parts = ann.to_multi_polygon().unwrap();
        for p in &parts.0 {
            prop_assert!(p.interiors().is_empty());
            prop_assert!(p.is_valid());
        }
        // geo's boolean ops snap to a fixed-point grid: vertices move by ~1e-9 of the extent.
        let (a, want) = (parts.unsigned_area(), poly.unsigned_area());
        prop_assert!((a - want).abs() < 1e-9 * want, "{} vs {}", a, want);
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input

/// Parses `json` and returns the error message, which must name the source.
fn error_of(json: &str) -> String {
    let r = CocoDataset::from_slice(json.as_bytes(), "bad.json");
    assert!(
        matches!(r, Err(Error::Format { .. })),
        "expected a format error for {json}: {r:?}"
    );
    let m = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(m.starts_with("bad.json: "), "{m}");
    m
}

const HEAD: &str = r#"{"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
  "categories": [{"id": 100, "name": "building"}], "annotations": ["#;

fn with_annotation(ann: &str) -> String {
    format!("{HEAD}{ann}]}}")
}

#[test]
fn malformed_files_name_file_and_annotation() {
    let ok = r#"{"id": 5, "image_id": 1, "category_id": 100, "segmentation": [[0, 0, 4, 0, 4, 4]],
                 "area": 8, "bbox": [0, 0, 4, 4], "iscrowd": 0}"#;
    assert!(CocoDataset::from_slice(with_annotation(ok).as_bytes(), "ok.json").is_ok());

    let cases = [
        (
            ok.replace("\"image_id\": 1", "\"image_id\": 2"),
            "annotation 5: image_id 2 is not in images",
        ),
        (
            ok.replace("\"category_id\": 100", "\"category_id\": 1"),
            "annotation 5: category_id 1",
        ),
        (
            ok.replace("4, 0, 4, 4]]", "4, 0, 4]]"),
            "annotation 5: segmentation[0]: odd number of coordinates (5)",
        ),
        (
            ok.replace("[[0, 0, 4, 0, 4, 4]]", "[[0, 0, 4, 0, 0, 0]]"),
            "annotation 5: segmentation[0]: ring has 2 points",
        ),
        (
            ok.replace("[[0, 0, 4, 0, 4, 4]]", "[]"),
            "annotation 5: segmentation has no polygon",
        ),
        (
            ok.replace("\"bbox\": [0, 0, 4, 4], ", ""),
            "annotation 5 (annotations[0]): missing field `bbox`",
        ),
        (
            ok.replace(
                "[[0, 0, 4, 0, 4, 4]]",
                r#"{"size": [10, 10], "counts": [5, 5]}"#,
            ),
            "annotation 5: RLE counts add up to 10 pixels but size [10, 10] has 100",
        ),
        (
            ok.replace("[[0, 0, 4, 0, 4, 4]]", r#""oops""#),
            "annotation 5 (annotations[0])",
        ),
        (format!("{ok}, {ok}"), "annotation 5: id appears twice"),
    ];
    for (ann, want) in cases {
        let m = error_of(&with_annotation(&ann));
        assert!(m.contains(want), "expected {want:?} in {m:?}");
    }
    let m = error_of("{\"images\": []}");
    assert!(
        m.contains("not a COCO annotation file") && m.contains("categories"),
        "{m}"
    );
    let m = error_of(r#"{"images": [{"id": 1}], "categories": [], "annotations": []}"#);
    assert!(
        m.contains("image 1 (images[0])") && m.contains("file_name"),
        "{m}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let e = CocoDataset::read("/nonexistent/annotations.json").unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/annotations.json"));
}

#[test]
fn writing_checks_the_dataset() {
    let mut ds = dataset(vec![annotation(
        1,
        Segmentation::Polygons(vec![vec![0.0, 0.0, 1.0]]),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let e = ds.write(dir.path().join("x.json")).unwrap_err().to_string();
    assert!(e.contains("annotation 1") && e.contains("odd"), "{e}");
    ds.annotations[0].segmentation =
        Segmentation::Polygons(vec![vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]);
    ds.annotations[0].image_id = 77;
    assert!(ds
        .validate()
        .unwrap_err()
        .to_string()
        .contains("image_id 77"));
}

#[test]
fn crowd_rle_annotations_are_read_in_both_spellings() {
    // 2 x 3 mask, column-major runs 1 zero, 2 ones, 3 zeros: pixels (1, 0) and (0, 1).
    for counts in ["[1, 2, 3]", r#""123""#] {
        let ann = format!(
            r#"{{"id": 8, "image_id": 1, "category_id": 100, "iscrowd": 1, "area": 2,
                "bbox": [0, 0, 2, 2], "segmentation": {{"size": [2, 3], "counts": {counts}}}}}"#
        );
        let ds = CocoDataset::from_slice(with_annotation(&ann).as_bytes(), "crowd.json").unwrap();
        let a = &ds.annotations[0];
        assert_eq!(a.iscrowd, 1);
        let Segmentation::Rle(rle) = &a.segmentation else {
            panic!("RLE expected")
        };
        assert_eq!(
            rle.to_mask().unwrap(),
            ndarray::array![[false, true, false], [true, false, false]]
        );
        let mp = a.to_multi_polygon().unwrap();
        assert_eq!(mp.0.len(), 2, "two diagonal pixels are two parts: {mp:?}");
        assert_eq!(mp.unsigned_area(), 2.0);
        assert_eq!(a.computed_area_bbox().unwrap(), (2.0, [0.0, 0.0, 2.0, 2.0]));
        // Written back in the spelling it was read in.
        let back = CocoDataset::from_slice(ds.to_json().unwrap().as_bytes(), "mem").unwrap();
        assert_eq!(back, ds);
    }
}

#[test]
fn malformed_category_is_named() {
    let m = error_of(r#"{"images": [], "categories": [{"id": 3}], "annotations": []}"#);
    assert!(
        m.contains("category 3 (categories[0])") && m.contains("name"),
        "{m}"
    );
}
