//! `canopy polygonize`: a georeferenced class map becomes GeoJSON polygons, in WGS 84 or the
//! native CRS, with the region values, pixel counts and holes; bad arguments fail clearly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use canopy_raster::{write_geotiff, GeoTransform, Georef, Raster, WriteOptions};
use ndarray::Array3;
use serde_json::Value;

fn canopy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
}

/// 40 x 30 class map in UTM 16N, 2 m pixels: a 10 x 8 building (class 1) with a 2 x 2
/// courtyard (class 0), a 3 x 3 shed (class 1), nodata 255 in the last column.
fn class_map(dir: &std::path::Path) -> std::path::PathBuf {
    let mut data = Array3::<u8>::zeros((1, 30, 40));
    for r in 5..13 {
        for c in 4..14 {
            data[[0, r, c]] = 1;
        }
    }
    for r in 8..10 {
        for c in 8..10 {
            data[[0, r, c]] = 0;
        }
    }
    for r in 20..23 {
        for c in 30..33 {
            data[[0, r, c]] = 1;
        }
    }
    for r in 0..30 {
        data[[0, r, 39]] = 255;
    }
    let georef = Georef::new(
        GeoTransform::north_up(740_000.0, 3_737_000.0, 2.0, 2.0),
        Some(32616),
    );
    let raster = Raster::new(data, georef).with_nodata(Some(255.0));
    let path = dir.join("classes.tif");
    write_geotiff(&path, &raster, &WriteOptions::default()).unwrap();
    path
}

fn run_ok(args: &[&str]) -> Value {
    let out = canopy().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = args[args.iter().position(|a| *a == "--out").unwrap() + 1];
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn buildings_become_native_and_wgs84_geojson() {
    let dir = tempfile::tempdir().unwrap();
    let input = class_map(dir.path());
    let native = dir.path().join("native.geojson");
    let v = run_ok(&[
        "polygonize",
        "--input",
        input.to_str().unwrap(),
        "--out",
        native.to_str().unwrap(),
        "--class",
        "1",
        "--crs",
        "native",
    ]);
    assert_eq!(
        v["crs"]["properties"]["name"],
        "urn:ogc:def:crs:EPSG::32616"
    );
    let feats = v["features"].as_array().unwrap();
    assert_eq!(feats.len(), 2);
    assert_eq!(feats[0]["properties"]["value"], 1);
    assert_eq!(feats[0]["properties"]["pixels"], 76);
    // 76 pixels of 4 m^2, with the courtyard as a hole.
    assert_eq!(feats[0]["properties"]["area"], 304);
    assert_eq!(feats[0]["geometry"]["type"], "Polygon");
    assert_eq!(
        feats[0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        feats[0]["geometry"]["coordinates"][0][0],
        serde_json::json!([740_008.0, 3_736_990.0])
    );
    assert_eq!(feats[1]["properties"]["pixels"], 9);

    let wgs = dir.path().join("wgs84.geojson");
    let v = run_ok(&[
        "polygonize",
        "--input",
        input.to_str().unwrap(),
        "--out",
        wgs.to_str().unwrap(),
        "--class",
        "1",
    ]);
    assert!(v.get("crs").is_none());
    let lon = v["features"][0]["geometry"]["coordinates"][0][0][0]
        .as_f64()
        .unwrap();
    let lat = v["features"][0]["geometry"]["coordinates"][0][0][1]
        .as_f64()
        .unwrap();
    assert!(
        (-84.5..-84.3).contains(&lon) && (33.7..33.8).contains(&lat),
        "{lon} {lat}"
    );

    // Every value (nodata excluded): background 0 outside, the courtyard 0, two buildings.
    let all = dir.path().join("all.geojson");
    let v = run_ok(&[
        "polygonize",
        "--input",
        input.to_str().unwrap(),
        "--out",
        all.to_str().unwrap(),
        "--crs",
        "native",
    ]);
    let pixels: i64 = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["pixels"].as_i64().unwrap())
        .sum();
    assert_eq!(pixels, 30 * 39);
    assert_eq!(v["features"].as_array().unwrap().len(), 4);
    // --min-area drops the 4-pixel courtyard.
    let v = run_ok(&[
        "polygonize",
        "--input",
        input.to_str().unwrap(),
        "--out",
        all.to_str().unwrap(),
        "--crs",
        "native",
        "--min-area",
        "5",
    ]);
    assert_eq!(v["features"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_arguments_fail_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let input = class_map(dir.path());
    let out = dir.path().join("x.geojson");
    let o = canopy()
        .args([
            "polygonize",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--band",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--band 2 is out of range"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = canopy()
        .args([
            "polygonize",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--class",
            "1.5",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--class 1.5"));
    assert!(!out.exists(), "no output on failure");
}
