//! Robustness over every TIFF under `../shared/data/geotiff` (rasterio's test files, image-tiff's
//! format matrix and fuzz crashers, georust's GeoTIFFs): opening and reading each either
//! succeeds or returns a typed error, never panics, and finishes within a time bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use canopy_raster::{Error, GeoTiff, Limits};

fn tiffs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            tiffs(&p, out);
        } else if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
            if ["tif", "tiff", "ovr", "TIF", "TIFF"].contains(&ext) {
                out.push(p);
            }
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Read,
    TypedError(String),
    Panic(String),
}

fn try_file(p: &Path) -> Outcome {
    let limits = Limits {
        max_read_bytes: 1 << 30,
        ..Limits::default()
    };
    let r = std::panic::catch_unwind(|| -> Result<(), Error> {
        let tif = GeoTiff::open_with_limits(p, limits)?;
        tif.read_any()?;
        for level in 0..tif.overviews().len() {
            match tif.info().dtype {
                canopy_raster::DataType::U8 => drop(tif.read_overview::<u8>(level)?),
                canopy_raster::DataType::U16 => drop(tif.read_overview::<u16>(level)?),
                _ => {}
            }
        }
        Ok(())
    });
    match r {
        Ok(Ok(())) => Outcome::Read,
        Ok(Err(e)) => Outcome::TypedError(e.to_string()),
        Err(p) => Outcome::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

#[test]
fn every_tiff_in_the_corpus_reads_or_errors_cleanly() {
    let Some(root) = common::shared_data("geotiff") else {
        return;
    };
    let mut files = Vec::new();
    tiffs(&root, &mut files);
    assert!(files.len() > 100, "corpus has only {} files", files.len());
    let (mut read, mut errors, mut bad) = (0, Vec::new(), Vec::new());
    for f in &files {
        let (tx, rx) = mpsc::channel();
        let path = f.clone();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(try_file(&path));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Outcome::Read) => read += 1,
            Ok(Outcome::TypedError(e)) => errors.push(e),
            Ok(Outcome::Panic(m)) => bad.push(format!("{}: PANIC {m}", f.display())),
            Err(_) => bad.push(format!(
                "{}: still running after {:?}",
                f.display(),
                t0.elapsed()
            )),
        }
    }
    println!(
        "{} files: {read} read, {} clear errors, {} panics/hangs",
        files.len(),
        errors.len(),
        bad.len()
    );
    for e in &errors {
        println!("  error: {e}");
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
