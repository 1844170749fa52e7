//! LERC-compressed GeoTIFFs (plain, and wrapped in Deflate or ZSTD as GDAL's `LERC_DEFLATE` /
//! `LERC_ZSTD` write them), strips and tiles, pixel- and band-interleaved, u8 and f32, and f32
//! with NaN samples (stored as invalid in the blob's mask, read back as NaN): the
//! decoded samples hash to what GDAL decoded (fixtures and hashes from
//! `tools/golden/raster_lerc.py`), windows equal slices of the full read, and damaged files give
//! errors, not panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use canopy_raster::{AnyRaster, GeoTiff, Window};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lerc")
}

fn expected() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, h)| (k.clone(), h.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn lerc_files_decode_to_gdals_samples_in_every_layout_and_wrapper() {
    let files = expected();
    assert_eq!(files.len(), 19, "fixture set changed");
    for (file, hash) in &files {
        let tif = GeoTiff::open(fixtures().join(file)).unwrap();
        let full = tif.read_any().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&canopy_raster::to_hex(&full.sha256()), hash, "{file}");
        // a window that crosses chunk borders equals the same slice of the full read
        let w = Window::new(5, 3, 30, 20);
        let same = match &full {
            AnyRaster::U8(r) => {
                tif.read_window::<u8>(w).unwrap().data == r.window(&w).unwrap().data
            }
            AnyRaster::F32(r) => {
                // bit patterns: NaN samples compare equal to themselves
                let bits = |a: &ndarray::Array3<f32>| a.mapv(f32::to_bits);
                bits(&tif.read_window::<f32>(w).unwrap().data) == bits(&r.window(&w).unwrap().data)
            }
            _ => panic!("{file}: unexpected sample type"),
        };
        assert!(same, "{file}: window differs from the full read");
    }
}

#[test]
fn damaged_lerc_chunks_are_errors_not_panics() {
    let (mut errors, files) = (0, expected());
    for (file, _) in &files {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // chunk data sits between the header and the IFD GDAL writes at the end: flip bytes
        // there, and truncate the file
        for (k, damaged) in [
            {
                let mut b = bytes.clone();
                for i in (200..b.len() * 3 / 4).step_by(97) {
                    b[i] ^= 0x5a;
                }
                b
            },
            bytes[..bytes.len() * 2 / 3].to_vec(),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{k}-{file}"));
            std::fs::write(&path, &damaged).unwrap();
            let result = std::panic::catch_unwind(|| {
                GeoTiff::open(&path).and_then(|t| t.read_any().map(|_| ()))
            });
            match result {
                Err(_) => panic!("{file} (damage {k}): the reader panicked"),
                Ok(Err(e)) => {
                    errors += 1;
                    assert!(!e.to_string().is_empty());
                }
                Ok(Ok(())) => {}
            }
        }
    }
    // LERC2 blobs carry a checksum: the flipped bytes must be caught, not decoded as garbage
    assert!(
        errors >= 18,
        "only {errors} of 36 damaged files were rejected"
    );
}
