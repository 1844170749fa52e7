//! polygonize against GDAL (fixtures from tools/golden/vector_polygonize.py) and invariants.
#![allow(clippy::unwrap_used)] // test helpers parse trusted fixtures

use std::path::PathBuf;

use canopy_raster::rasterize::{rasterize, BurnRule, Coords};
use canopy_raster::GeoTiff;
use canopy_vector::polygonize::{polygonize, Connectivity, PolygonizeOptions, Region};
use geo::{Area, Validation};
use ndarray::Array2;
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> anyhow::Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    dir.is_dir().then_some(dir)
}

fn conn(n: u64) -> Connectivity {
    if n == 8 {
        Connectivity::Eight
    } else {
        Connectivity::Four
    }
}

/// Corner vertices of a closed ring (closing vertex removed, collinear vertices dropped).
fn corners(ring: &[(f64, f64)]) -> Vec<(i64, i64)> {
    let pts: Vec<(i64, i64)> = ring[..ring.len() - 1]
        .iter()
        .map(|&(x, y)| (x as i64, y as i64))
        .collect();
    let n = pts.len();
    (0..n)
        .filter(|&i| {
            let (p, c, q) = (pts[(i + n - 1) % n], pts[i], pts[(i + 1) % n]);
            !((p.0 == c.0 && c.0 == q.0) || (p.1 == c.1 && c.1 == q.1))
        })
        .map(|i| pts[i])
        .collect()
}

/// Everything that identifies a region independent of ring order and start vertex: value,
/// area, and the sorted multiset of corner vertices over all its rings.
fn signature_gdal(shape: &Value) -> (i64, i64, Vec<(i64, i64)>, usize) {
    let rings = shape["coordinates"].as_array().cloned().unwrap_or_default();
    let mut verts = Vec::new();
    for ring in &rings {
        let pts: Vec<(f64, f64)> = ring
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        verts.extend(corners(&pts));
    }
    verts.sort_unstable();
    (
        shape["value"].as_i64().unwrap(),
        shape["area"].as_f64().unwrap() as i64,
        verts,
        rings.len(),
    )
}

fn signature_ours(r: &Region<u8>) -> (i64, i64, Vec<(i64, i64)>, usize) {
    let mut verts = Vec::new();
    let mut rings = 0;
    for p in &r.geometry.0 {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            let pts: Vec<(f64, f64)> = ring.0.iter().map(|c| (c.x, c.y)).collect();
            // Our rings already hold corners only.
            assert_eq!(
                corners(&pts).len(),
                pts.len() - 1,
                "collinear vertex kept in {pts:?}"
            );
            verts.extend(corners(&pts));
            rings += 1;
        }
    }
    verts.sort_unstable();
    (
        i64::from(r.value),
        r.geometry.unsigned_area() as i64,
        verts,
        rings,
    )
}

#[test]
fn equals_gdal_on_random_label_rasters() -> anyhow::Result<()> {
    let doc = fixture("polygonize_gdal.json")?;
    for case in doc["cases"].as_array().unwrap() {
        let (h, w) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let labels: Vec<u8> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let labels = Array2::from_shape_vec((h, w), labels)?;
        let mask = labels.mapv(|v| v != 0);
        let masked = case["masked"].as_bool().unwrap();
        let connectivity = conn(case["connectivity"].as_u64().unwrap());
        let opts = PolygonizeOptions {
            connectivity,
            min_pixels: 0,
        };
        let ours = polygonize(labels.view(), masked.then(|| mask.view()), &opts)?;
        let name = format!("{} ({:?})", case["name"], connectivity);

        let mut theirs: Vec<_> = case["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(signature_gdal)
            .collect();
        let mut mine: Vec<_> = ours.iter().map(signature_ours).collect();
        assert_eq!(mine.len(), theirs.len(), "{name}: polygon count");
        for r in &ours {
            assert!(
                r.geometry.is_valid(),
                "{name}: invalid output {:?}",
                r.geometry
            );
            assert_eq!(
                r.geometry.unsigned_area(),
                r.pixels as f64,
                "{name}: area vs pixel count"
            );
        }
        if connectivity == Connectivity::Eight {
            // GDAL keeps a region that is joined through a corner as one self-touching ring
            // (invalid); ours splits it into valid rings, so ring counts may differ there.
            for s in mine.iter_mut().chain(theirs.iter_mut()) {
                s.3 = 0;
            }
        }
        mine.sort();
        theirs.sort();
        assert_eq!(mine, theirs, "{name}: regions differ from GDAL's");
    }
    Ok(())
}

#[test]
fn spacenet_masks_match_gdal_summary() -> anyhow::Result<()> {
    let Some(data) = shared_data() else {
        eprintln!("SKIP spacenet_masks_match_gdal_summary: ../shared/data not found (set CANOPY_SHARED_DATA)");
        return Ok(());
    };
    let doc = fixture("polygonize_spacenet.json")?;
    for f in doc["files"].as_array().unwrap() {
        let path = data
            .join("buildings/spacenet-atlanta")
            .join(f["file"].as_str().unwrap());
        let raster = GeoTiff::open(&path)?
            .read_as::<u8>()?
            .data
            .index_axis_move(ndarray::Axis(0), 0);
        let mask = raster.mapv(|v| v != 0);
        let connectivity = conn(f["connectivity"].as_u64().unwrap());
        let opts = PolygonizeOptions {
            connectivity,
            min_pixels: 0,
        };
        let regions = polygonize(raster.view(), Some(mask.view()), &opts)?;
        let name = format!("{} ({:?})", path.display(), connectivity);
        assert_eq!(
            regions.len() as u64,
            f["polygons"].as_u64().unwrap(),
            "{name}: polygon count"
        );
        let mut areas: Vec<f64> = regions.iter().map(|r| r.geometry.unsigned_area()).collect();
        areas.sort_by(f64::total_cmp);
        let want: Vec<f64> = f["areas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        assert_eq!(areas, want, "{name}: areas");
        let holes: usize = regions
            .iter()
            .flat_map(|r| &r.geometry.0)
            .map(|p| p.interiors().len())
            .sum();
        let vertices: usize = regions
            .iter()
            .flat_map(|r| &r.geometry.0)
            .map(|p| p.exterior().0.len() + p.interiors().iter().map(|i| i.0.len()).sum::<usize>())
            .sum();
        if connectivity == Connectivity::Four {
            assert_eq!(holes as u64, f["holes"].as_u64().unwrap(), "{name}: holes");
            assert_eq!(
                vertices as u64,
                f["vertices"].as_u64().unwrap(),
                "{name}: vertices"
            );
        }
        assert!(
            regions.iter().all(|r| r.geometry.is_valid()),
            "{name}: invalid polygon"
        );
    }
    Ok(())
}

fn labels_strategy() -> impl Strategy<Value = Array2<u8>> {
    (1usize..24, 1usize..24, 1u8..4).prop_flat_map(|(h, w, k)| {
        proptest::collection::vec(0..k, h * w)
            .prop_map(move |v| Array2::from_shape_vec((h, w), v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Polygonize then rasterize (pixel centres) gives the labels back exactly; areas add up;
    /// every polygon is valid.
    #[test]
    fn polygonize_rasterize_round_trip(labels in labels_strategy(), eight in any::<bool>(), masked in any::<bool>()) {
        let (h, w) = labels.dim();
        let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
        let mask = labels.mapv(|v| v != 0);
        let opts = PolygonizeOptions { connectivity, min_pixels: 0 };
        let regions = polygonize(labels.view(), masked.then(|| mask.view()), &opts).unwrap();
        let burned = rasterize(
            regions.iter().map(|r| (&r.geometry, r.value + 1)),
            w, h, Coords::Pixel, 0u8, BurnRule::PixelCenter,
        ).unwrap();
        let expected = labels.mapv(|v| if masked && v == 0 { 0 } else { v + 1 });
        prop_assert_eq!(burned, expected);
        let total: f64 = regions.iter().map(|r| r.geometry.unsigned_area()).sum();
        let valid = if masked { mask.iter().filter(|&&b| b).count() } else { h * w };
        prop_assert_eq!(total, valid as f64);
        for r in &regions {
            prop_assert!(r.geometry.is_valid(), "invalid {:?}", r.geometry);
            prop_assert_eq!(r.geometry.unsigned_area(), r.pixels as f64);
        }
    }
}

/// Value, pixel count and sorted rings of one region.
type Canonical = (u8, usize, Vec<Vec<(i64, i64)>>);

/// A canonical form of a set of regions: per region the value, pixel count and sorted ring
/// vertex lists, sorted.
fn canonical(regions: &[Region<u8>]) -> Vec<Canonical> {
    let mut out: Vec<_> = regions
        .iter()
        .map(|r| {
            let mut rings: Vec<Vec<(i64, i64)>> = r
                .geometry
                .0
                .iter()
                .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
                .map(|ring| {
                    // Without the closing vertex: the start of a ring is arbitrary.
                    let mut v: Vec<(i64, i64)> = ring.0[1..]
                        .iter()
                        .map(|c| (c.x as i64, c.y as i64))
                        .collect();
                    v.sort_unstable();
                    v
                })
                .collect();
            rings.sort();
            (r.value, r.pixels, rings)
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Streaming in strips of any height gives exactly the regions of the whole-raster pass.
    #[test]
    fn streaming_equals_whole_raster(labels in labels_strategy(), eight in any::<bool>(), masked in any::<bool>(), strip in 1usize..7, min in 0usize..3) {
        let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
        let mask = labels.mapv(|v| v != 0);
        let opts = PolygonizeOptions { connectivity, min_pixels: min };
        let whole = polygonize(labels.view(), masked.then(|| mask.view()), &opts).unwrap();
        let mut s = canopy_vector::stream::StreamingPolygonizer::new(labels.ncols(), opts).unwrap();
        let mut streamed = Vec::new();
        let mut r0 = 0;
        while r0 < labels.nrows() {
            let r1 = (r0 + strip).min(labels.nrows());
            let l = labels.slice(ndarray::s![r0..r1, ..]);
            let m = mask.slice(ndarray::s![r0..r1, ..]);
            streamed.extend(s.push_rows(l, masked.then_some(m)).unwrap());
            r0 = r1;
        }
        streamed.extend(s.finish().unwrap());
        prop_assert_eq!(canonical(&streamed), canonical(&whole));
    }
}

/// Two regions of one value that merge several rows below their tops, with a pinch in between
/// (the first case the streaming proptest found): one region, rings as the whole pass.
#[test]
fn streaming_merges_regions_below_their_tops() {
    let labels = ndarray::array![
        [1u8, 1, 0, 1, 0, 0],
        [1, 0, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0]
    ];
    let opts = PolygonizeOptions {
        connectivity: Connectivity::Four,
        min_pixels: 1,
    };
    let whole = polygonize(labels.view(), None, &opts).unwrap();
    for strip in 1..=4 {
        let mut s = canopy_vector::stream::StreamingPolygonizer::new(6, opts.clone()).unwrap();
        let mut got = Vec::new();
        for rows in labels.axis_chunks_iter(ndarray::Axis(0), strip) {
            got.extend(s.push_rows(rows, None).unwrap());
        }
        got.extend(s.finish().unwrap());
        assert_eq!(canonical(&got), canonical(&whole), "strips of {strip} rows");
    }
    assert_eq!(whole.iter().filter(|r| r.value == 1).count(), 1);
}

#[test]
fn polygonize_geotiff_streams_a_file_in_strips() -> anyhow::Result<()> {
    use canopy_raster::{write_geotiff, GeoTransform, Georef, Raster, WriteOptions};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("classes.tif");
    // Tall buildings crossing every strip border, nodata 9 on the diagonal.
    let data = ndarray::Array3::from_shape_fn((1, 200, 64), |(_, r, c)| {
        if r == c {
            9u8
        } else if (c / 8) % 2 == 1 && (r / 50) % 2 == 0 {
            1
        } else {
            0
        }
    });
    let raster = Raster::new(
        data.clone(),
        Georef::new(GeoTransform::north_up(0.0, 0.0, 1.0, 1.0), Some(32633)),
    )
    .with_nodata(Some(9.0));
    write_geotiff(&path, &raster, &WriteOptions::default())?;
    let tif = GeoTiff::open(&path)?;
    let mut got = Vec::new();
    let mut last = (0, 0);
    let summary = canopy_vector::stream::polygonize_geotiff::<u8>(
        &tif,
        0,
        Some(1),
        &PolygonizeOptions::default(),
        7,
        |r| {
            got.push(r);
            Ok(())
        },
        |done, total| last = (done, total),
    )?;
    assert_eq!(last, (200, 200));
    let whole =
        canopy_vector::polygonize_raster(&raster, 0, Some(1), &PolygonizeOptions::default())?;
    assert_eq!(canonical(&got), canonical(&whole));
    assert_eq!(summary.regions, whole.len());
    assert_eq!(summary.pixels, data.iter().filter(|&&v| v == 1).count());
    Ok(())
}

/// End to end on real data: the SpaceNet Atlanta footprints, rasterised by solaris into a mask,
/// polygonized and placed on the map with the chip's transform, match the original footprints
/// (read from their GeoJSON) one to one under the SpaceNet metric.
#[test]
fn spacenet_footprints_come_back_from_their_mask() -> anyhow::Result<()> {
    use canopy_vector::metrics::spacenet_f1;
    let Some(data) = shared_data() else {
        eprintln!("SKIP spacenet_footprints_come_back_from_their_mask: ../shared/data not found (set CANOPY_SHARED_DATA)");
        return Ok(());
    };
    let dir = data.join("buildings/spacenet-atlanta");
    let chip = GeoTiff::open(dir.join("sample_geotiff.tif"))?;
    let transform = chip.info().georef.transform.unwrap();
    let mask = GeoTiff::open(dir.join("sample_fp_mask_from_geojson.tif"))?.read_as::<u8>()?;
    let labels = mask.data.index_axis(ndarray::Axis(0), 0);
    let valid = labels.mapv(|v| v != 0);
    let regions = polygonize(labels, Some(valid.view()), &PolygonizeOptions::default())?;
    let preds: Vec<geo_types::Polygon<f64>> = regions
        .iter()
        .flat_map(|r| r.to_map(&transform).0)
        .collect();
    let truth_file = canopy_vector::read_geojson(dir.join("geotiff_labels.geojson"))?;
    assert_eq!(truth_file.epsg, Some(32616));
    let truth: Vec<geo_types::Polygon<f64>> = truth_file
        .features
        .iter()
        .flat_map(|f| match &f.geometry {
            geo_types::Geometry::Polygon(p) => vec![p.clone()],
            geo_types::Geometry::MultiPolygon(mp) => mp.0.clone(),
            _ => vec![],
        })
        .collect();
    let report = spacenet_f1(&truth, &preds, 0.5)?;
    eprintln!(
        "SpaceNet Atlanta: {} truth, {} polygonized, TP {} FP {} FN {}, F1 {:.4}, mean matched IoU {:.4}",
        truth.len(),
        preds.len(),
        report.tp,
        report.fp,
        report.fn_,
        report.f1,
        report.matches.iter().map(|m| m.iou).sum::<f64>() / report.matches.len().max(1) as f64
    );
    // Pixel outlines of 0.5 m footprints: every footprint comes back, with IoU well above 0.5.
    assert!(report.f1 > 0.95, "F1 {}", report.f1);
    assert!(
        report.matches.iter().all(|m| m.iou > 0.7),
        "{:?}",
        report.matches
    );
    Ok(())
}
