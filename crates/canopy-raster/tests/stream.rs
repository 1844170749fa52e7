//! Streaming whole-scene inference: correctness, errors, and the memory bound (a scene larger
//! than the memory the process is allowed to use goes through; the in-memory path does not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use canopy_raster::{
    predict_geotiff, Blend, Dims, Error, GeoTiff, GeoTiffWriter, GeoTransform, Georef, Raster,
    Stitcher, StreamOptions, Tiler, Window, WriteOptions,
};
use ndarray::Array3;

fn pattern(r: usize, c: usize, b: usize) -> u8 {
    ((r * 7 + c * 13 + b * 50) % 251) as u8
}

/// Writes a `bands x height x width` u8 scene row block by row block (never whole in memory).
fn write_scene(path: &Path, width: usize, height: usize, bands: usize) {
    let georef = Georef::new(GeoTransform::north_up(0.0, 0.0, 1.0, 1.0), Some(32631));
    let mut w = GeoTiffWriter::<u8>::create(
        path,
        width,
        height,
        bands,
        &georef,
        None,
        &WriteOptions::default(),
    )
    .unwrap();
    let step = 256;
    for r0 in (0..height).step_by(step) {
        let n = step.min(height - r0);
        let block = Array3::from_shape_fn((bands, n, width), |(b, r, c)| pattern(r0 + r, c, b));
        w.write_rows(block.view()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn identity_model_streams_the_scene_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tif");
    write_scene(&input, 300, 217, 2);
    let tif = GeoTiff::open(&input).unwrap();
    let want = tif.read::<u8>().unwrap().data.mapv(f32::from);
    for (tile, overlap, blend) in [
        (64, 16, Blend::Cosine),
        (100, 0, Blend::None),
        (48, 20, Blend::Linear),
        (512, 8, Blend::CenterCrop { margin: 2 }),
    ] {
        let out = dir.path().join(format!("out-{tile}-{overlap}.tif"));
        let opts = StreamOptions {
            tile: Dims::square(tile),
            overlap: Dims::square(overlap),
            blend,
            ..StreamOptions::default()
        };
        let mut calls = 0;
        let report = predict_geotiff(
            &tif,
            &out,
            2,
            &opts,
            |w: &Raster<u8>| Ok(w.data.mapv(f32::from)),
            |done, total| {
                calls += 1;
                assert!(done <= total);
            },
        )
        .unwrap();
        assert_eq!(calls, report.windows);
        let got = GeoTiff::open(&out).unwrap();
        assert_eq!(got.info().georef, tif.info().georef);
        assert_eq!(
            got.read::<f32>().unwrap().data,
            want,
            "tile {tile} overlap {overlap} {blend:?}"
        );
    }
}

#[test]
fn a_model_with_the_wrong_output_shape_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tif");
    write_scene(&input, 100, 90, 1);
    let tif = GeoTiff::open(&input).unwrap();
    let out = dir.path().join("out.tif");
    let err = predict_geotiff(
        &tif,
        &out,
        3,
        &StreamOptions {
            tile: Dims::square(32),
            overlap: Dims::square(4),
            ..Default::default()
        },
        |w: &Raster<u8>| Ok(Array3::zeros((2, w.height(), w.width()))),
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("expected [3,"), "{err}");
    assert!(!out.exists());
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files.len(), 1, "temporary files left behind: {files:?}");
}

// ---- memory bound -------------------------------------------------------------------------

const WIDTH: usize = 1024;
const HEIGHT: usize = 16384;
/// The child process may use this much heap/anonymous memory; the f32 output alone is 64 MiB.
const DATA_LIMIT: u64 = 40 << 20;

fn child_dir() -> Option<PathBuf> {
    std::env::var_os("CANOPY_STREAM_CHILD").map(PathBuf::from)
}

/// Run inside the memory-limited child: `mode` is "stream" or "in-memory".
fn child(dir: &Path, mode: &str) {
    let tif = GeoTiff::open(dir.join("in.tif")).unwrap();
    let opts = StreamOptions {
        tile: Dims::square(256),
        overlap: Dims::square(32),
        ..Default::default()
    };
    let out = dir.join(format!("{mode}.tif"));
    if mode == "stream" {
        let report = predict_geotiff(
            &tif,
            &out,
            1,
            &opts,
            |w: &Raster<u8>| Ok(w.data.mapv(f32::from)),
            |_, _| {},
        )
        .unwrap();
        assert!(
            (report.memory_bound as u64) < DATA_LIMIT / 2,
            "bound {}",
            report.memory_bound
        );
    } else {
        // The naive way: the whole scene and the whole prediction in memory.
        let scene = tif.read::<u8>().unwrap();
        let tiler = Tiler::new(WIDTH, HEIGHT, 256, 32).unwrap();
        let mut st = Stitcher::new(&tiler, 1, Blend::Cosine).unwrap();
        for w in tiler.windows() {
            st.add(w, scene.window(&w).unwrap().data.mapv(f32::from).view())
                .unwrap();
        }
        let pred = st.finish().unwrap();
        let r = Raster::new(pred, scene.georef.clone());
        canopy_raster::write_geotiff(&out, &r, &WriteOptions::default()).unwrap();
    }
}

fn run_child(dir: &Path, mode: &str) -> std::process::ExitStatus {
    Command::new("prlimit")
        .arg(format!("--data={DATA_LIMIT}"))
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "scene_larger_than_the_memory_limit_streams_through",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CANOPY_STREAM_CHILD", dir)
        .env("CANOPY_STREAM_MODE", mode)
        .env("RAYON_NUM_THREADS", "2")
        .status()
        .unwrap()
}

#[test]
fn scene_larger_than_the_memory_limit_streams_through() {
    if let Some(dir) = child_dir() {
        let mode = std::env::var("CANOPY_STREAM_MODE").unwrap();
        child(&dir, &mode);
        return;
    }
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `prlimit` (util-linux) not found; cannot limit the child's memory");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_scene(&dir.path().join("in.tif"), WIDTH, HEIGHT, 1);
    // Control: the in-memory path must fail under the limit, or the limit proves nothing.
    let naive = run_child(dir.path(), "in-memory");
    assert!(
        !naive.success(),
        "the in-memory path fit in {DATA_LIMIT} bytes: the limit is too loose to test anything"
    );
    let status = run_child(dir.path(), "stream");
    assert!(
        status.success(),
        "streaming failed under a {DATA_LIMIT}-byte data limit: {status}"
    );
    // Check the streamed output window by window (without loading it whole).
    let out = GeoTiff::open(dir.path().join("stream.tif")).unwrap();
    assert_eq!((out.info().width, out.info().height), (WIDTH, HEIGHT));
    for row in (0..HEIGHT).step_by(4096) {
        let w = Window::new(0, row, WIDTH, 64);
        let got = out.read_window::<f32>(w).unwrap();
        for ((_, r, c), v) in got.data.indexed_iter() {
            assert_eq!(*v, f32::from(pattern(row + r, c, 0)));
        }
    }
}
