//! GDAL reads what the writer writes: files in several variants are decoded by rasterio
//! through `tools/check_gdal_roundtrip.py` and compared with what was written.
//!
//! Ignored by default (needs the peers venv, see `../shared/peers/`):
//! `cargo test -p canopy-raster --test gdal -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use canopy_raster::write::{write_geotiff, BigTiff, Interleave, Predictor, WriteOptions};
use canopy_raster::{
    sha256_le, to_hex, AreaOrPoint, Compression, GeoTransform, Georef, Raster, Sample,
};
use ndarray::Array3;

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?).join(".cache/canopy-peers/venv/bin/python");
    p.exists().then_some(p)
}

fn data<T: Sample>(bands: usize, h: usize, w: usize) -> Array3<T> {
    Array3::from_shape_fn((bands, h, w), |(b, r, c)| {
        let noise = (((r * 31 + c * 17 + b * 7) * 2654435761usize) >> 7) % 13;
        T::from_f64(((b * 37 + r * 3 + c * 2) % 120 + noise) as f64)
    })
}

struct Case {
    path: PathBuf,
    sha: String,
    dtype: &'static str,
    shape: [usize; 3],
    georef: Georef,
    nodata: Option<f64>,
}

fn case<T: Sample>(
    dir: &std::path::Path,
    name: &str,
    bands: usize,
    georef: Georef,
    nodata: Option<f64>,
    opts: WriteOptions,
) -> Case {
    let (h, w) = (300, 270);
    let a = data::<T>(bands, h, w);
    let path = dir.join(format!("{name}.tif"));
    let r = Raster::new(a.clone(), georef.clone()).with_nodata(nodata);
    write_geotiff(&path, &r, &opts).unwrap();
    Case {
        path,
        sha: to_hex(&sha256_le(&a)),
        dtype: T::DTYPE.name(),
        shape: [bands, h, w],
        georef,
        nodata,
    }
}

#[test]
#[ignore = "needs the rasterio venv at ~/.cache/canopy-peers/venv"]
fn gdal_reads_written_files() {
    let Some(py) = python() else {
        eprintln!("skipping: no rasterio venv at ~/.cache/canopy-peers/venv");
        return;
    };
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/check_gdal_roundtrip.py");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let utm = Georef::new(
        GeoTransform::north_up(500_000.0, 4_600_000.0, 10.0, 10.0),
        Some(32633),
    );
    let wgs = Georef::new(
        GeoTransform::north_up(-10.5, 51.25, 0.001, 0.001),
        Some(4326),
    );
    let rotated = Georef::new(
        GeoTransform([1000.0, 2.0, 0.5, 5000.0, 0.25, -3.0]),
        Some(3857),
    );
    let mut point = utm.clone();
    point.area_or_point = AreaOrPoint::Point;
    let o = WriteOptions::default;
    let cases = [
        case::<u16>(
            d,
            "u16-4-tiled-deflate-pred",
            4,
            utm.clone(),
            Some(0.0),
            o().with_predictor(Predictor::Horizontal),
        ),
        case::<u8>(
            d,
            "u8-3-rgb-lzw-pred",
            3,
            wgs.clone(),
            Some(255.0),
            o().tiled(64, 32)
                .with_compression(Compression::Lzw)
                .with_predictor(Predictor::Horizontal),
        ),
        case::<i16>(
            d,
            "i16-5-band-striped-bigtiff",
            5,
            point,
            Some(-9999.0),
            o().striped(7)
                .with_interleave(Interleave::Band)
                .with_predictor(Predictor::Horizontal)
                .with_bigtiff(BigTiff::Always),
        ),
        case::<f32>(
            d,
            "f32-2-band-lzw-fp",
            2,
            utm.clone(),
            Some(f64::NAN),
            o().tiled(128, 128)
                .with_compression(Compression::Lzw)
                .with_interleave(Interleave::Band)
                .with_predictor(Predictor::FloatingPoint),
        ),
        case::<f64>(
            d,
            "f64-1-rotated-fp",
            1,
            rotated,
            Some(-3.4028234663852886e38),
            o().with_predictor(Predictor::FloatingPoint),
        ),
        case::<i8>(
            d,
            "i8-1-none-striped",
            1,
            wgs.clone(),
            None,
            o().striped(16).with_compression(Compression::None),
        ),
        case::<u32>(
            d,
            "u32-3-deflate-pred",
            3,
            utm.clone(),
            Some(4294967295.0),
            o().tiled(32, 48).with_predictor(Predictor::Horizontal),
        ),
        case::<i32>(
            d,
            "i32-5-lzw-band",
            5,
            wgs,
            Some(-1.0),
            o().with_compression(Compression::Lzw)
                .with_interleave(Interleave::Band)
                .with_predictor(Predictor::Horizontal),
        ),
    ];
    let out = Command::new(&py)
        .arg(&script)
        .args(cases.iter().map(|c| &c.path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len());
    for (c, line) in cases.iter().zip(lines) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = c.path.file_name().unwrap().to_string_lossy();
        println!("{name}: {line}");
        assert_eq!(v["sha256"], c.sha.as_str(), "{name}: samples");
        assert_eq!(v["dtype"], c.dtype, "{name}: dtype");
        assert_eq!(v["shape"], serde_json::json!(c.shape), "{name}: shape");
        let t: Vec<f64> = v["transform"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let expect = c.georef.transform.unwrap().0;
        for (a, b) in t.iter().zip(expect) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{name}: transform {t:?} vs {expect:?}"
            );
        }
        assert_eq!(
            v["crs_epsg"].as_u64(),
            c.georef.crs.epsg.map(u64::from),
            "{name}: EPSG"
        );
        match c.nodata {
            None => assert!(v["nodata"].is_null(), "{name}: nodata"),
            Some(nd) if nd.is_nan() => assert_eq!(v["nodata"], "nan", "{name}: nodata"),
            Some(nd) => assert_eq!(
                v["nodata"].as_str().map(|s| s.parse::<f64>().unwrap()),
                Some(nd),
                "{name}: nodata"
            ),
        }
    }
}
