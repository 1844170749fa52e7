// Unit tests of the writer: this file is the `#[cfg(test)] mod tests;` declared in write/mod.rs.
//! Unit tests of the writer: options, nodata text, atomicity, block bookkeeping.

use super::*;
use crate::{GeoTransform, Georef};
use ndarray::Array3;

fn georef() -> Georef {
    Georef::new(GeoTransform::north_up(0.0, 10.0, 1.0, 1.0), Some(32633))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn nodata_text_matches_gdal_and_round_trips() {
    assert_eq!(format_nodata(0.0), "0");
    assert_eq!(format_nodata(-9999.0), "-9999");
    assert_eq!(format_nodata(255.0), "255");
    assert_eq!(format_nodata(f64::NAN), "nan");
    assert_eq!(format_nodata(f64::INFINITY), "inf");
    assert_eq!(format_nodata(f64::NEG_INFINITY), "-inf");
    // GDAL's own output for these values (rasterio 1.4.4 / GDAL 3.10.3, %.17g).
    assert_eq!(format_nodata(0.1), "0.10000000000000001");
    assert_eq!(format_nodata(1e-10), "1e-10");
    assert_eq!(format_nodata(1.5e300), "1.5000000000000001e+300");
    assert_eq!(
        format_nodata(-3.4028234663852886e38),
        "-3.4028234663852886e+38"
    );
    assert_eq!(format_nodata(-0.0), "-0");
    assert_eq!(format_nodata(4294967295.0), "4294967295");
    for v in [0.1, -3.4028234663852886e38, 1e-10, 1.5e300, 12345.678, -0.5] {
        let s = format_nodata(v);
        assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
    }
}

#[test]
fn bad_options_are_errors_naming_the_fix() {
    let p = Path::new("x.tif");
    let e = WriteOptions::default()
        .tiled(100, 256)
        .validate::<u8>(p)
        .unwrap_err();
    assert!(e.to_string().contains("multiples of 16"), "{e}");
    assert!(WriteOptions::default()
        .tiled(0, 0)
        .validate::<u8>(p)
        .is_err());
    assert!(WriteOptions::default()
        .striped(0)
        .validate::<u8>(p)
        .is_err());
    let e = WriteOptions::default()
        .with_compression(Compression::Zstd)
        .validate::<u8>(p)
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("none, lzw and deflate"), "{e}");
    assert!(WriteOptions::default()
        .with_predictor(Predictor::Horizontal)
        .validate::<f32>(p)
        .is_err());
    assert!(WriteOptions::default()
        .with_predictor(Predictor::FloatingPoint)
        .validate::<u16>(p)
        .is_err());
    assert!(WriteOptions::default()
        .with_deflate_level(13)
        .validate::<u16>(p)
        .is_err());
    assert!(WriteOptions::default()
        .with_predictor(Predictor::FloatingPoint)
        .validate::<f64>(p)
        .is_ok());
}

#[test]
fn dropped_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tif");
    {
        let mut w = GeoTiffWriter::<u16>::create(
            &path,
            40,
            40,
            2,
            &georef(),
            None,
            &WriteOptions::default().tiled(16, 16),
        )
        .unwrap();
        w.write_rows(Array3::<u16>::ones((2, 20, 40)).view())
            .unwrap();
        assert_eq!(
            files_in(dir.path()).len(),
            1,
            "the temporary file exists while writing"
        );
        assert!(!path.exists());
    }
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn missing_block_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tif");
    let mut w = GeoTiffWriter::<u8>::create(
        &path,
        40,
        20,
        1,
        &georef(),
        None,
        &WriteOptions::default().tiled(16, 16),
    )
    .unwrap();
    assert_eq!(w.block_grid(), (2, 3));
    assert_eq!(w.block_extent(1, 2), (4, 8));
    for (r, c) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)] {
        let (h, wd) = w.block_extent(r, c);
        w.write_block(r, c, Array3::<u8>::zeros((1, h, wd)).view())
            .unwrap();
    }
    let e = w.finish().unwrap_err().to_string();
    assert!(
        e.contains("1 of 6 blocks") && e.contains("(row 1, col 1)"),
        "{e}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn block_misuse_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tif");
    let mut w = GeoTiffWriter::<f32>::create(
        &path,
        40,
        20,
        3,
        &georef(),
        None,
        &WriteOptions::default().tiled(16, 16),
    )
    .unwrap();
    let ok = Array3::<f32>::zeros((3, 16, 16));
    w.write_block(0, 0, ok.view()).unwrap();
    assert!(w.write_block(0, 0, ok.view()).is_err(), "written twice");
    assert!(w.write_block(2, 0, ok.view()).is_err(), "outside the grid");
    let e = w.write_block(0, 2, ok.view()).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }),
        "edge block needs (3, 16, 8): {e}"
    );
    // Rows covering block row 0 collide with the block written above.
    assert!(w
        .write_rows(Array3::<f32>::zeros((3, 16, 40)).view())
        .is_err());
    let e = w
        .write_rows(Array3::<f32>::zeros((2, 4, 40)).view())
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn too_many_rows_and_empty_rasters_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tif");
    assert!(
        GeoTiffWriter::<u8>::create(&path, 0, 5, 1, &georef(), None, &WriteOptions::default())
            .is_err()
    );
    let mut w =
        GeoTiffWriter::<u8>::create(&path, 5, 5, 1, &georef(), None, &WriteOptions::default())
            .unwrap();
    w.write_rows(Array3::<u8>::zeros((1, 3, 5)).view()).unwrap();
    assert!(w.write_rows(Array3::<u8>::zeros((1, 3, 5)).view()).is_err());
    w.write_rows(Array3::<u8>::zeros((1, 2, 5)).view()).unwrap();
    w.finish().unwrap();
    assert_eq!(files_in(dir.path()), vec!["out.tif".to_string()]);
}

#[test]
fn scale_offset_needs_one_entry_per_band() {
    let dir = tempfile::tempdir().unwrap();
    let w = GeoTiffWriter::<u16>::create(
        dir.path().join("a.tif"),
        5,
        5,
        2,
        &georef(),
        None,
        &WriteOptions::default(),
    )
    .unwrap();
    let so = crate::ScaleOffset {
        scale: 0.5,
        offset: 1.0,
    };
    assert!(w.with_scale_offset(&[so]).is_err());
}
