//! The dataset loaders on the real building data of `../shared/data/buildings` (RAMP XYZ
//! tiles and COCO files, Banepa GeoTIFFs + OSM GeoJSON, the CrowdAI sample, a SpaceNet chip
//! with its footprint mask). Every test skips with a message when the data is missing. Only a
//! few tiles are decoded per test, to stay fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use canopy_segment::data::{
    split_by_groups, split_groups_randomly, BandStats, CategoryMap, CocoFolder, GeoTiffPairs,
    GeoTiffPolygons, LabelledImage, MaskCoding, PatchConfig, PatchDataset, SampleSource, XyzArea,
    IGNORE,
};

/// `../shared/data/buildings/<sub>` (or under `$CANOPY_SHARED_DATA`), `None` with a message.
fn buildings(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = base.join("buildings").join(sub);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set CANOPY_SHARED_DATA to the shared data folder)",
            p.display()
        );
        None
    }
}

/// `k` indices spread evenly over `0..n`.
fn spread(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| i * n / k).collect()
}

fn building_fraction(samples: &[LabelledImage]) -> f64 {
    let (mut b, mut v) = (0usize, 0usize);
    for s in samples {
        b += s.mask().iter().filter(|&&m| m == 1).count();
        v += s.mask().iter().filter(|&&m| m != IGNORE).count();
    }
    b as f64 / v as f64
}

#[test]
fn ramp_xyz_area_2_loads_repairs_its_invalid_polygon_and_masks_alpha() {
    let Some(ramp) = buildings("openaerialmap-ramp") else {
        return;
    };
    let area = XyzArea::open(ramp.join("tiles/2"), "ramp-2").unwrap();
    assert_eq!(area.len(), 147);
    let r = area.report();
    println!("area 2 labels: {r:?}");
    assert_eq!(
        (r.features, r.kept, r.repaired, r.skipped),
        (206, 206, 1, 0)
    );
    assert!(r.warnings[0].contains("feature 107"), "{:?}", r.warnings);

    // The first tile (sorted) is RGBA with 1138 transparent pixels (counted with PIL).
    let first = area.load(0).unwrap();
    assert!(first.source().ends_with("OAM-1238424-1046544-21.png"));
    assert_eq!(
        (first.bands(), first.height(), first.width()),
        (3, 256, 256)
    );
    assert_eq!(first.mask().iter().filter(|&&m| m == IGNORE).count(), 1138);

    let samples: Vec<_> = spread(area.len(), 8)
        .into_iter()
        .map(|i| area.load(i).unwrap())
        .collect();
    for s in &samples {
        assert!(s.mask().iter().all(|&m| m <= 1 || m == IGNORE));
        assert!(s.image().iter().all(|&v| (0.0..=255.0).contains(&v)));
    }
    let f = building_fraction(&samples);
    println!("area 2: building fraction over 8 tiles {f:.3}");
    assert!((0.02..0.8).contains(&f), "{f}");
}

#[test]
fn ramp_png_geojson_masks_agree_with_the_coco_masks() {
    let Some(ramp) = buildings("openaerialmap-ramp") else {
        return;
    };
    let mut lines = Vec::new();
    for area_id in [2, 3, 5] {
        let xyz = XyzArea::open(ramp.join(format!("tiles/{area_id}")), "a").unwrap();
        let coco = CocoFolder::open(
            ramp.join(format!("coco/aoi{area_id}.json")),
            ramp.join("tiles"),
            "a",
            &CategoryMap::AllForeground,
        )
        .unwrap();
        assert_eq!(coco.len(), xyz.len());
        let (mut same, mut total, mut inter, mut union) = (0usize, 0usize, 0usize, 0usize);
        for i in spread(xyz.len(), 6) {
            let a = xyz.load(i).unwrap();
            let j = coco.position(a.source()).unwrap();
            let b = coco.load(j).unwrap();
            assert_eq!(a.image(), b.image());
            for (&x, &y) in a.mask().iter().zip(b.mask().iter()) {
                same += usize::from(x == y);
                total += 1;
                inter += usize::from(x == 1 && y == 1);
                union += usize::from(x == 1 || y == 1);
            }
        }
        let agree = same as f64 / total as f64;
        let iou = inter as f64 / union.max(1) as f64;
        lines.push(format!(
            "area {area_id}: 6 tiles, pixel agreement {agree:.5}, building IoU {iou:.4} ({union} px)"
        ));
        assert!(agree > 0.995, "{lines:?}");
        assert!(union == 0 || iou > 0.97, "{lines:?}");
    }
    println!(
        "PNG+labels.geojson vs coco/aoiN.json:\n{}",
        lines.join("\n")
    );
}

#[test]
fn banepa_geotiffs_with_osm_polygons() {
    let Some(banepa) = buildings("openaerialmap-banepa") else {
        return;
    };
    let osm = std::fs::read_dir(banepa.join("train/osm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "geojson"))
        .collect::<Vec<_>>();
    let ds = GeoTiffPolygons::open(banepa.join("train/oam"), &osm, "nepal").unwrap();
    assert_eq!(ds.len(), 48);
    assert_eq!(ds.polygons(), 1466);
    assert_eq!(ds.report().repaired + ds.report().skipped, 0);
    let samples: Vec<_> = spread(ds.len(), 4)
        .into_iter()
        .map(|i| ds.load(i).unwrap())
        .collect();
    for s in &samples {
        assert_eq!((s.bands(), s.height(), s.width()), (3, 512, 512));
        assert_eq!(s.valid_fraction(), 1.0);
    }
    let f = building_fraction(&samples);
    println!("Banepa: building fraction over 4 tiles {f:.5}");
    // rasterio.features.rasterize of the same polygons on the same 4 tiles: 0.57338.
    assert!((f - 0.57338).abs() < 0.002, "{f}");
}

#[test]
fn crowdai_coco_with_jpegs() {
    let Some(crowd) = buildings("crowdai-sample/train") else {
        return;
    };
    let ds = CocoFolder::open(
        crowd.join("annotation.json"),
        crowd.join("images"),
        "crowdai",
        &CategoryMap::AllForeground,
    )
    .unwrap();
    println!("CrowdAI annotations: {:?}", ds.report());
    assert_eq!(ds.len(), 20);
    let r = ds.report();
    assert_eq!(r.features, 188);
    assert_eq!(ds.polygons() + r.skipped, 188);
    assert!(r.skipped <= 2, "{r:?}");
    let samples = ds.load_all().unwrap();
    for s in &samples {
        assert_eq!((s.bands(), s.height(), s.width()), (3, 300, 300));
    }
    let f = building_fraction(&samples);
    println!("CrowdAI: building fraction {f:.3}");
    assert!((0.05..0.6).contains(&f), "{f}");

    // Only category 100 exists: mapping another id alone leaves every mask empty.
    let none = CocoFolder::open(
        crowd.join("annotation.json"),
        crowd.join("images"),
        "crowdai",
        &CategoryMap::Explicit([(1, 1)].into()),
    )
    .unwrap();
    assert_eq!((none.polygons(), none.report().skipped), (0, 188));
}

#[test]
fn spacenet_image_and_mask_pair() {
    let Some(sn) = buildings("spacenet-atlanta") else {
        return;
    };
    let pairs = GeoTiffPairs::new(
        vec![(sn.join("sample_geotiff.tif"), sn.join("sample_fp_mask.tif"))],
        "atlanta",
        MaskCoding::Binary,
    );
    let s = pairs.load(0).unwrap();
    assert_eq!((s.bands(), s.height(), s.width()), (1, 900, 900));
    // rasterio: 117996 footprint pixels, 692004 background, no image pixel equal to nodata 0.
    assert_eq!(s.mask().iter().filter(|&&m| m == 1).count(), 117_996);
    assert_eq!(s.mask().iter().filter(|&&m| m == 0).count(), 692_004);

    // As class ids the 255s of this mask are IGNORE, not buildings.
    let ids = GeoTiffPairs::new(
        vec![(sn.join("sample_geotiff.tif"), sn.join("sample_fp_mask.tif"))],
        "atlanta",
        MaskCoding::ClassIds,
    );
    assert_eq!(ids.load(0).unwrap().valid_fraction(), 692_004.0 / 810_000.0);

    // A mask of another size is an error naming the mask.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small_mask.tif");
    let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(&small).unwrap()).unwrap();
    enc.write_image::<tiff::encoder::colortype::Gray8>(512, 500, &vec![0u8; 512 * 500])
        .unwrap();
    let bad = GeoTiffPairs::new(
        vec![(sn.join("sample_geotiff.tif"), small)],
        "x",
        MaskCoding::Binary,
    );
    let err = bad.load(0).unwrap_err().to_string();
    assert!(
        err.contains("small_mask.tif") && err.contains("500 x 512"),
        "{err}"
    );
}

#[test]
fn areas_split_as_groups_and_feed_patches() {
    let (Some(ramp), Some(banepa)) = (
        buildings("openaerialmap-ramp"),
        buildings("openaerialmap-banepa"),
    ) else {
        return;
    };
    let mut samples = Vec::new();
    for (area_id, group) in [(2, "ramp-2"), (3, "nepal"), (5, "ramp-5")] {
        let area = XyzArea::open(ramp.join(format!("tiles/{area_id}")), group).unwrap();
        for i in spread(area.len(), 3) {
            samples.push(area.load(i).unwrap());
        }
    }
    let osm = [banepa.join("train/osm/osm_features_ac7e343eb1faacd2.geojson")];
    let b = GeoTiffPolygons::open(banepa.join("train/oam"), &osm, "nepal").unwrap();
    samples.push(b.load(0).unwrap());
    samples.push(b.load(1).unwrap());

    for seed in 0..10 {
        let (train, val) = split_groups_randomly(samples.clone(), 0.3, seed).unwrap();
        let tg: BTreeSet<_> = train.iter().map(|s| s.group().to_string()).collect();
        let vg: BTreeSet<_> = val.iter().map(|s| s.group().to_string()).collect();
        assert!(tg.is_disjoint(&vg), "{tg:?} {vg:?}");
        // RAMP area 3 and Banepa travel together.
        let nepal = val.iter().filter(|s| s.group() == "nepal").count()
            + train.iter().filter(|s| s.group() == "nepal").count();
        assert_eq!(nepal, 5);
    }
    let (train, val) = split_by_groups(samples, &["nepal"]).unwrap();
    assert_eq!(val.len(), 5);
    let stats = BandStats::compute(&train).unwrap();
    println!("RGB statistics of 6 RAMP tiles: {stats:?}");
    assert!(stats.mean.iter().all(|m| (20.0..235.0).contains(m)));
    assert!(stats.std.iter().all(|s| (5.0..128.0).contains(s)));
    let ds = PatchDataset::new(
        train,
        PatchConfig {
            height: 128,
            width: 128,
            patches_per_epoch: 8,
            ..PatchConfig::default()
        },
    )
    .unwrap()
    .with_normalisation(stats)
    .unwrap();
    for i in 0..8 {
        let (img, mask) = ds.patch(0, i).unwrap();
        assert_eq!((img.dim(), mask.dim()), ((3, 128, 128), (128, 128)));
        assert!(img.iter().all(|v| v.is_finite() && v.abs() < 10.0));
    }
}
