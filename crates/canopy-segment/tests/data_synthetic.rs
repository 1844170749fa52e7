//! The file loaders on small synthetic folders (no shared data needed): an XYZ PNG tile with
//! lon/lat labels, a COCO file with PNG images.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use canopy_raster::xyz_tile_georef;
use canopy_segment::data::{CategoryMap, CocoFolder, SampleSource, XyzArea, IGNORE};
use serde_json::json;

/// lon/lat degrees from spherical Web-Mercator metres.
fn inverse_mercator(x: f64, y: f64) -> (f64, f64) {
    let r = canopy_raster::geo::WEB_MERCATOR_HALF_WORLD / std::f64::consts::PI;
    let lat = 2.0 * (y / r).exp().atan() - std::f64::consts::FRAC_PI_2;
    ((x / r).to_degrees(), lat.to_degrees())
}

fn write_rgba_png(path: &Path, w: u32, h: u32, transparent: &[(u32, u32)]) {
    let mut img = image::RgbaImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let a = if transparent.contains(&(x, y)) {
            0
        } else {
            255
        };
        *p = image::Rgba([(x % 256) as u8, (y % 256) as u8, 50, a]);
    }
    img.save(path).unwrap();
}

#[test]
fn xyz_tile_with_lon_lat_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y, z) = (100_000u32, 120_000u32, 18u32);
    write_rgba_png(
        &dir.path().join(format!("OAM-{x}-{y}-{z}.png")),
        256,
        256,
        &[(200, 10)],
    );
    // A polygon over the left half of the tile, reaching past its other edges, in lon/lat.
    let gt = xyz_tile_georef(x, y, z, 256).unwrap().transform.unwrap();
    let (x0, y1, x1, y0) = {
        let (a, b, c, d) = gt.bounds(256, 256);
        (a, d, c, b)
    };
    let mid = (x0 + x1) / 2.0;
    let pad = (x1 - x0) * 0.1;
    let ring: Vec<[f64; 2]> = [
        (x0 - pad, y0 - pad),
        (mid, y0 - pad),
        (mid, y1 + pad),
        (x0 - pad, y1 + pad),
        (x0 - pad, y0 - pad),
    ]
    .iter()
    .map(|&(mx, my)| {
        let (lon, lat) = inverse_mercator(mx, my);
        [lon, lat]
    })
    .collect();
    let labels = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0.0, 0.0]}}
    ]});
    std::fs::write(dir.path().join("labels.geojson"), labels.to_string()).unwrap();

    let area = XyzArea::open(dir.path(), "synthetic").unwrap();
    assert_eq!(area.len(), 1);
    assert_eq!(area.tile_xyz(0), Some((x, y, z)));
    assert_eq!((area.polygons(), area.report().skipped), (1, 1));
    let s = area.load(0).unwrap();
    assert_eq!((s.bands(), s.height(), s.width()), (3, 256, 256));
    let m = s.mask();
    for r in 0..256 {
        for c in 0..256 {
            let expected = if (r, c) == (10, 200) {
                IGNORE
            } else {
                u8::from(c < 128)
            };
            assert_eq!(m[[r, c]], expected, "pixel ({r}, {c})");
        }
    }
    assert_eq!(s.image()[[0, 3, 7]], 7.0);
    assert_eq!(s.image()[[1, 3, 7]], 3.0);
}

#[test]
fn coco_folder_burns_pixel_polygons_and_checks_sizes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("img")).unwrap();
    write_rgba_png(&dir.path().join("img/a.png"), 8, 6, &[]);
    write_rgba_png(&dir.path().join("img/b.png"), 8, 6, &[(0, 0)]);
    write_rgba_png(&dir.path().join("img/c.png"), 7, 6, &[]);
    let coco = json!({
        "images": [
            {"id": 1, "file_name": "a.png", "width": 8, "height": 6},
            {"id": 2, "file_name": "b.png", "width": 8, "height": 6},
            {"id": 3, "file_name": "c.png", "width": 8, "height": 6}
        ],
        "categories": [{"id": 100, "name": "building"}, {"id": 7, "name": "tree"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 100, "iscrowd": 0, "area": 12.0,
             "bbox": [1.0, 1.0, 4.0, 3.0],
             "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]]},
            {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 2.0,
             "bbox": [6.0, 4.0, 2.0, 1.0],
             "segmentation": [[6.0, 4.0, 8.0, 4.0, 8.0, 5.0, 6.0, 5.0]]}
        ]
    });
    let file = dir.path().join("ann.json");
    std::fs::write(&file, coco.to_string()).unwrap();

    let all = CocoFolder::open(
        &file,
        dir.path().join("img"),
        "g",
        &CategoryMap::AllForeground,
    )
    .unwrap();
    assert_eq!((all.len(), all.polygons()), (3, 2));
    let a = all.load(0).unwrap();
    assert_eq!(a.mask().iter().filter(|&&v| v == 1).count(), 14);
    assert_eq!(a.mask()[[1, 1]], 1);
    assert_eq!(a.mask()[[4, 1]], 0);

    let map = CategoryMap::Explicit([(100, 1), (7, 2)].into());
    let classes = CocoFolder::open(&file, dir.path().join("img"), "g", &map).unwrap();
    let a = classes.load(0).unwrap();
    assert_eq!(a.mask().iter().filter(|&&v| v == 1).count(), 12);
    assert_eq!(a.mask().iter().filter(|&&v| v == 2).count(), 2);
    assert_eq!(a.mask()[[4, 7]], 2);

    // No annotation: all background, but the transparent pixel is ignored.
    let b = all.load(1).unwrap();
    assert_eq!(b.mask()[[0, 0]], IGNORE);
    assert_eq!(b.mask().iter().filter(|&&v| v == 0).count(), 47);

    // The file says 8 x 6, the PNG is 7 x 6.
    let err = all.load(2).unwrap_err().to_string();
    assert!(err.contains("c.png") && err.contains("7 x 6"), "{err}");
    assert!(all.load(3).is_err());
}
