//! Fuzzes the GeoTIFF reader: open, read the whole image in its own sample type, a window, a
//! band subset and every overview. Errors are expected; panics, hangs and OOMs are bugs.
//!
//! The reader opens files by path (positioned reads, a fallback decoder that reopens the file),
//! so each input is written to a file in tmpfs (`/dev/shm` when present), removed after the run.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use canopy_raster::{DataType, GeoTiff, Limits, Window};
use libfuzzer_sys::fuzz_target;

/// Tight limits: decoded results up to 64 MiB, chunks up to 16 MiB.
const LIMITS: Limits = Limits {
    max_read_bytes: 64 << 20,
    max_chunk_bytes: 16 << 20,
    max_images: 64,
    max_tag_bytes: 16 << 20,
};

fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // One worker: decode on this thread only, so the fuzzer uses one core.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        base.join(format!("canopy-fuzz-{}.tif", std::process::id()))
    })
}

/// Reads everything the public API offers, in the file's own sample type.
fn exercise(tif: &GeoTiff) {
    macro_rules! typed {
        ($t:ty) => {{
            let info = tif.info();
            let _ = tif.read::<$t>();
            // A window in the middle and the bottom-right pixel.
            let (w, h) = (info.width, info.height);
            let _ =
                tif.read_window::<$t>(Window::new(w / 4, h / 4, (w / 2).max(1), (h / 2).max(1)));
            let _ = tif.read_window::<$t>(Window::new(w - 1, h - 1, 1, 1));
            // The last band, then the first band twice.
            let _ = tif.read_bands_window::<$t>(
                &[info.bands - 1],
                Window::new(0, 0, w.min(17), h.min(17)),
            );
            let _ = tif.read_bands_window::<$t>(&[0, 0], Window::new(0, h - 1, w, 1));
            for level in 0..tif.overviews().len() {
                let _ = tif.read_overview::<$t>(level);
            }
        }};
    }
    let _ = tif.read_any();
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
    // A conversion read (the reader's `read_as` path).
    let _ = tif.read_window_as::<f32>(Window::new(0, 0, 1, 1));
}

fuzz_target!(|data: &[u8]| {
    let path = input_path();
    std::fs::write(path, data).expect("write the fuzz input");
    if let Ok(tif) = GeoTiff::open_with_limits(path, LIMITS) {
        exercise(&tif);
    }
    // Leave nothing behind in tmpfs when the run ends.
    let _ = std::fs::remove_file(path);
});
