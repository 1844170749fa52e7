//! Regression corpus of the `decode` fuzz target (`fuzz/` at the repository root): every file
//! under `tests/fuzz_regressions/` once made the reader panic, hang or exhaust memory. Opening
//! and reading each (whole image in its own type, windows, band subsets, overviews) must now
//! succeed or return a typed error, without panicking, within a time bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use canopy_raster::{DataType, Error, GeoTiff, Limits, Window};

/// The fuzz target's limits.
const LIMITS: Limits = Limits {
    max_read_bytes: 64 << 20,
    max_chunk_bytes: 16 << 20,
    max_images: 64,
    max_tag_bytes: 16 << 20,
};

/// What the fuzz target does with one input, stopping at the first error.
fn exercise(path: &Path) -> Result<(), Error> {
    let tif = GeoTiff::open_with_limits(path, LIMITS)?;
    macro_rules! typed {
        ($t:ty) => {{
            let info = tif.info();
            let (w, h) = (info.width, info.height);
            let window = Window::new(w / 4, h / 4, (w / 2).max(1), (h / 2).max(1));
            let results = [
                tif.read::<$t>().map(drop),
                tif.read_window::<$t>(window).map(drop),
                tif.read_window::<$t>(Window::new(w - 1, h - 1, 1, 1))
                    .map(drop),
                tif.read_bands_window::<$t>(
                    &[info.bands - 1],
                    Window::new(0, 0, w.min(17), h.min(17)),
                )
                .map(drop),
                tif.read_bands_window::<$t>(&[0, 0], Window::new(0, h - 1, w, 1))
                    .map(drop),
            ];
            for level in 0..tif.overviews().len() {
                let _ = tif.read_overview::<$t>(level);
            }
            results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        }};
    }
    let any = tif.read_any().map(drop);
    match tif.info().dtype {
        DataType::U8 => typed!(u8),
        DataType::I8 => typed!(i8),
        DataType::U16 => typed!(u16),
        DataType::I16 => typed!(i16),
        DataType::U32 => typed!(u32),
        DataType::I32 => typed!(i32),
        DataType::F32 => typed!(f32),
        DataType::F64 => typed!(f64),
    }
    tif.read_window_as::<f32>(Window::new(0, 0, 1, 1))?;
    any
}

#[test]
fn fuzz_regressions_error_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression files in {}",
        dir.display()
    );
    let mut bad = Vec::new();
    for f in &files {
        let (tx, rx) = mpsc::channel();
        let path = f.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| exercise(&path));
            let _ = tx.send(r.map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        });
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(Ok(()))) => println!("{name}: read"),
            Ok(Ok(Err(e))) => {
                // The harness reads in the file's own type, inside the image: a caller-mistake
                // error here would be the reader blaming the caller for a bad file.
                assert!(
                    !matches!(e, Error::InvalidArgument(_) | Error::DataType { .. }),
                    "{name}: {e}"
                );
                println!("{name}: {e}");
            }
            Ok(Err(m)) => bad.push(format!("{name}: PANIC {m}")),
            Err(_) => bad.push(format!("{name}: still running after 20 s")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
