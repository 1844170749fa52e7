//! The `canopy` binary: `info` describes a file (text and JSON, checksum of the decoded
//! samples), errors name the file, and `demo` runs end to end on a small scene, training step
//! included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use canopy_raster::{write_geotiff, GeoTransform, Georef, Raster, WriteOptions};
use ndarray::Array3;

fn canopy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
}

#[test]
fn info_json_and_checksum_describe_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.tif");
    let data = Array3::from_shape_fn((2, 30, 40), |(b, r, c)| (b * 1000 + r * 40 + c) as u16);
    let r = Raster::new(
        data,
        Georef::new(GeoTransform::north_up(100.0, 200.0, 2.0, 3.0), Some(32633)),
    )
    .with_nodata(Some(f64::NAN));
    write_geotiff(&path, &r, &WriteOptions::default()).unwrap();
    let out = canopy()
        .args(["info", "--json", "--checksum"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["width"], 40);
    assert_eq!(v["height"], 30);
    assert_eq!(v["bands"], 2);
    assert_eq!(v["dtype"], "uint16");
    assert_eq!(v["epsg"], 32633);
    assert_eq!(
        v["geotransform"],
        serde_json::json!([100.0, 2.0, 0.0, 200.0, 0.0, -3.0])
    );
    assert_eq!(v["nodata"], "nan");
    assert_eq!(v["compression"], "deflate");
    assert_eq!(v["tiled"], true);
    assert_eq!(v["block_size"], serde_json::json!([256, 256]));
    assert_eq!(v["sha256"], canopy_raster::to_hex(&r.sha256()));
    let text = canopy().arg("info").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("EPSG:32633"));
}

#[test]
fn info_on_a_missing_file_fails_naming_it() {
    let out = canopy()
        .args(["info", "/nonexistent/scene.tif"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/scene.tif"));
}

#[test]
fn demo_runs_end_to_end_on_a_small_scene() {
    let dir = tempfile::tempdir().unwrap();
    let out = canopy()
        .args(["demo", "--size", "300", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reproduced the scene exactly"), "{stdout}");
    assert!(stdout.contains("5. trained"), "{stdout}");
    assert!(stdout.contains("8. built-in building U-Net"), "{stdout}");
    assert!(
        stdout.contains("accuracy") && stdout.contains("kappa"),
        "{stdout}"
    );
    for f in [
        "scene.tif",
        "identity.tif",
        "ndvi.tif",
        "classes.tif",
        "train/epochs.csv",
        "train/best.safetensors",
        "train/last.safetensors",
        "train/loss.png",
        "train/confusion.png",
        "aerial.tif",
        "buildings.tif",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    // The epoch log carries the confusion matrix's summary, prefixed by phase.
    let csv = std::fs::read_to_string(dir.path().join("train/epochs.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for key in [
        "val_accuracy",
        "val_kappa",
        "val_miou",
        "val_macro_f1",
        "train_loss",
    ] {
        assert!(header.split(',').any(|k| k == key), "{key} not in {header}");
    }
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
}
