//! Write throughput of a 4096 x 4096 x 4 `u16` tiled (256) Deflate file, and, when the
//! rasterio venv exists, GDAL's time for the same samples and options in the same run.
//!
//! `cargo test --release -p canopy-raster --test write_speed -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use canopy_raster::write::{write_geotiff, Predictor, WriteOptions};
use canopy_raster::{GeoTransform, Georef, Raster};
use ndarray::Array3;

#[test]
#[ignore = "timing; run in release with --nocapture"]
fn write_speed_4096x4096x4_u16_tiled_deflate() {
    let (bands, h, w) = (4usize, 4096usize, 4096usize);
    // Smooth terrain plus a few bits of noise: compresses roughly like real imagery.
    let data = Array3::<u16>::from_shape_fn((bands, h, w), |(b, r, c)| {
        let noise = (((r * 31 + c * 17 + b * 7) * 2_654_435_761usize) >> 9) % 64;
        (((r / 3 + c / 5) % 2000 + b * 500 + noise) as u16) * 3
    });
    let mb = (bands * h * w * 2) as f64 / 1e6;
    let georef = Georef::new(GeoTransform::north_up(0.0, 0.0, 10.0, 10.0), Some(32633));
    let raster = Raster::new(data, georef);
    let dir = tempfile::tempdir().unwrap();
    for (name, opts) in [
        ("deflate 6", WriteOptions::default()),
        (
            "deflate 6 + predictor 2",
            WriteOptions::default().with_predictor(Predictor::Horizontal),
        ),
    ] {
        let path = dir.path().join("speed.tif");
        let t = Instant::now();
        write_geotiff(&path, &raster, &opts).unwrap();
        let s = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
        println!(
            "canopy {name}: {mb:.0} MB in {s:.3} s = {:.0} MB/s (file {size:.1} MB, {} threads)",
            mb / s,
            rayon::current_num_threads()
        );
    }

    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let py = PathBuf::from(home).join(".cache/canopy-peers/venv/bin/python");
    if !py.exists() {
        println!("no rasterio venv: skipping the GDAL comparison");
        return;
    }
    let raw = dir.path().join("samples.u16");
    let mut bytes = Vec::with_capacity(bands * h * w * 2);
    raster
        .data
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(&raw, bytes).unwrap();
    let script = r#"
import sys, time, numpy as np, rasterio
from rasterio.transform import from_origin
raw, out, pred = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = np.fromfile(raw, dtype="<u2").reshape(4, 4096, 4096)
t = time.perf_counter()
with rasterio.open(out, "w", driver="GTiff", width=4096, height=4096, count=4, dtype="uint16",
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate", zlevel=6,
                   predictor=pred, crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as ds:
    ds.write(a)
print(time.perf_counter() - t)
"#;
    for pred in [1, 2] {
        let out = Command::new(&py)
            .args(["-c", script])
            .arg(&raw)
            .arg(dir.path().join("gdal.tif"))
            .arg(pred.to_string())
            .output()
            .unwrap();
        let s: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        println!(
            "GDAL (rasterio) deflate 6, predictor {pred}: {s:.3} s = {:.0} MB/s",
            mb / s
        );
    }
}
