//! GeoTIFF read and write throughput of canopy-raster on synthetic 4-band `u16` imagery
//! (smooth field + ~6 bits of noise, see `synth.rs`), 2048 x 2048 by default so that
//! `cargo bench` stays quick. Set `CANOPY_BENCH_SIZE=8192` for the size of the rasterio
//! peer benchmark; `tools/bench_raster_vs_rasterio.py` compares against rasterio side by side.
//!
//! `cargo bench -p canopy-raster --bench geotiff`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "synth.rs"]
mod synth;

use std::path::Path;

use canopy_raster::write::{write_geotiff, WriteOptions};
use canopy_raster::{Compression, GeoTiff, GeoTransform, Georef, Raster, Window};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BANDS: usize = 4;
const WIN: usize = 512;

fn size() -> usize {
    std::env::var("CANOPY_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048)
}

fn tiled_deflate() -> WriteOptions {
    WriteOptions::default().tiled(256, 256)
}

fn striped_raw() -> WriteOptions {
    // GDAL's default for an uncompressed pixel-interleaved u16 x4 image of this width:
    // one row per strip (as the rasterio peer file has).
    WriteOptions::default()
        .striped(1)
        .with_compression(Compression::None)
}

/// Distinct 512 x 512 windows: every tile-aligned cell in a fixed shuffled order, or
/// random offsets (deterministic).
fn windows(n: usize, aligned: bool) -> Vec<Window> {
    let mut state = 1u64;
    let mut rnd = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    if aligned {
        let mut cells: Vec<Window> = (0..n / WIN)
            .flat_map(|r| (0..n / WIN).map(move |c| Window::new(c * WIN, r * WIN, WIN, WIN)))
            .collect();
        for i in (1..cells.len()).rev() {
            cells.swap(i, rnd(i + 1));
        }
        cells
    } else {
        (0..64)
            .map(|_| Window::new(rnd(n - WIN), rnd(n - WIN), WIN, WIN))
            .collect()
    }
}

fn bench_geotiff(c: &mut Criterion) {
    let n = size();
    let data = synth::sensor_like_u16(BANDS, n, n, 0);
    let georef = Georef::new(
        GeoTransform::north_up(300_000.0, 5_400_000.0, 10.0, 10.0),
        Some(32630),
    );
    let raster = Raster::new(data, georef);
    let dir = tempfile::tempdir().unwrap();
    let bytes = (BANDS * n * n * 2) as u64;
    let variants = [
        ("tiled256_deflate", tiled_deflate()),
        ("striped_raw", striped_raw()),
    ];

    let mut g = c.benchmark_group("write");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    for (name, opts) in &variants {
        let path = dir.path().join(format!("w_{name}.tif"));
        g.bench_function(
            BenchmarkId::from_parameter(format!("u16_{BANDS}x{n}x{n}_{name}")),
            |b| b.iter(|| write_geotiff(&path, &raster, opts).unwrap()),
        );
    }
    g.finish();

    let files: Vec<(&str, std::path::PathBuf)> = variants
        .iter()
        .map(|(name, opts)| {
            let path = dir.path().join(format!("{name}.tif"));
            write_geotiff(&path, &raster, opts).unwrap();
            (*name, path)
        })
        .collect();

    let mut g = c.benchmark_group("read_full");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    for (name, path) in &files {
        g.bench_function(
            BenchmarkId::from_parameter(format!("u16_{BANDS}x{n}x{n}_{name}")),
            |b| b.iter(|| read_full(path)),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("read_window");
    g.throughput(Throughput::Bytes((BANDS * WIN * WIN * 2) as u64));
    for (name, path) in &files {
        let tif = GeoTiff::open(path).unwrap();
        for (mode, aligned) in [("aligned", true), ("random", false)] {
            let wins = windows(n, aligned);
            let mut i = 0usize;
            g.bench_function(
                BenchmarkId::from_parameter(format!(
                    "u16_{BANDS}x{WIN}x{WIN}_of_{n}_{name}_{mode}"
                )),
                |b| {
                    b.iter(|| {
                        let w = wins[i % wins.len()];
                        i += 1;
                        tif.read_window::<u16>(w).unwrap()
                    })
                },
            );
        }
    }
    g.finish();
}

/// Opens the file each time (as the rasterio peer re-opens its dataset) and reads all bands.
fn read_full(path: &Path) -> Raster<u16> {
    GeoTiff::open(path).unwrap().read::<u16>().unwrap()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_geotiff
}
criterion_main!(benches);
