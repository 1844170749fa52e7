//! Read every real GeoTIFF we can, write it back, read it again: samples, georeferencing (the
//! whole GeoKey directory, including user-defined CRSs), nodata and scale/offset survive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use canopy_raster::{write_geotiff, AnyRaster, GeoTiff, Interleave, Layout, WriteOptions};

fn files() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in [
        "geotiff/variants",
        "geotiff/rasterio",
        "geotiff/georust-geotiff",
        "buildings/spacenet-atlanta",
    ] {
        let Some(dir) = common::shared_data(sub) else {
            continue;
        };
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tif"))
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

#[test]
fn real_files_survive_a_write_read_round_trip() {
    let files = files();
    if files.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut done, mut user_defined, mut skipped) = (0, 0, 0);
    for (i, path) in files.iter().enumerate() {
        let Ok(tif) = GeoTiff::open(path) else {
            skipped += 1;
            continue;
        };
        let Ok(data) = tif.read_any() else {
            skipped += 1;
            continue;
        };
        let info = tif.info().clone();
        let out = dir.path().join(format!("{i}.tif"));
        let opts = WriteOptions {
            layout: if i % 2 == 0 {
                Layout::Tiled {
                    width: 64,
                    height: 32,
                }
            } else {
                Layout::Striped { rows_per_strip: 7 }
            },
            interleave: if i % 3 == 0 {
                Interleave::Band
            } else {
                Interleave::Pixel
            },
            ..WriteOptions::default()
        };
        macro_rules! write {
            ($r:expr) => {
                write_geotiff(&out, $r, &opts)
            };
        }
        match &data {
            AnyRaster::U8(r) => write!(r),
            AnyRaster::I8(r) => write!(r),
            AnyRaster::U16(r) => write!(r),
            AnyRaster::I16(r) => write!(r),
            AnyRaster::U32(r) => write!(r),
            AnyRaster::I32(r) => write!(r),
            AnyRaster::F32(r) => write!(r),
            AnyRaster::F64(r) => write!(r),
        }
        .unwrap_or_else(|e| panic!("{}: write: {e}", path.display()));
        let back = GeoTiff::open(&out).unwrap();
        let b = back.info();
        let name = path.display();
        assert_eq!(
            back.read_any().unwrap().sha256(),
            data.sha256(),
            "{name}: samples"
        );
        assert_eq!(
            b.georef.transform, info.georef.transform,
            "{name}: transform"
        );
        assert_eq!(b.georef.crs, info.georef.crs, "{name}: CRS / GeoKeys");
        assert_eq!(b.georef.area_or_point, info.georef.area_or_point, "{name}");
        assert_eq!(b.georef.gcps, info.georef.gcps, "{name}: GCPs");
        assert_eq!(
            b.nodata.map(f64::to_bits),
            info.nodata.map(f64::to_bits),
            "{name}: nodata"
        );
        assert_eq!(b.scale_offset, info.scale_offset, "{name}: scale/offset");
        if info.georef.crs.epsg.is_none() && info.georef.crs.geokeys.is_some() {
            user_defined += 1;
        }
        done += 1;
    }
    println!("{done} files round-tripped ({user_defined} with user-defined CRSs), {skipped} unreadable skipped");
    assert!(done > 60, "only {done} files round-tripped");
}
