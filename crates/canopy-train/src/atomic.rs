//! Atomic file writes: a file appears complete under its name or not at all.
//!
//! The bytes go to a hidden temporary file in the destination folder (same file system, so the
//! final step is a rename, not a copy). That file is flushed to disk (`fsync`), renamed over the
//! destination, and the folder entry is flushed where the platform allows it. A crash or a full
//! disk leaves the previous file (or none) in place, never half of one, and a failed write
//! removes its temporary file.
//!
//! The temporary name keeps the destination's extension last (`.history.tmp-812-0.png` for
//! `history.png`), so writers that pick a format from the extension — plotters' bitmap
//! backend, image encoders — can write to it directly.
//!
//! ```
//! # fn main() -> canopy_train::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| canopy_train::Error::Io {
//!     path: std::env::temp_dir(),
//!     source: e,
//! })?;
//! let path = dir.path().join("runs.json");
//! canopy_train::atomic::write_json(&path, &serde_json::json!({ "runs": [] }))?;
//! canopy_train::atomic::write_bytes(&path, b"{\"runs\": [1]}")?;
//! assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "{\"runs\": [1]}");
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::{Error, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hidden temporary sibling of `path` that [`write_with`] hands to its writer.
fn temporary_sibling(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            crate::error::invalid(
                "write",
                format!(
                    "{} is not a file path: give a file name, not a folder",
                    path.display()
                ),
            )
        })?;
    let unique = format!(
        "tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let name = match path.extension() {
        Some(ext) => format!(".{stem}.{unique}.{}", ext.to_string_lossy()),
        None => format!(".{stem}.{unique}"),
    };
    Ok((dir.join(name), dir))
}

/// Writes a file atomically through `write(tmp)`: `write` creates and fills the temporary file
/// it is given; this function then flushes it to disk and renames it over `path`.
///
/// # Errors
/// What `write` returns (the temporary file is removed and `path` is left untouched);
/// [`Error::InvalidArgument`] when `path` has no file name; [`Error::Io`] naming the file when
/// flushing or renaming fails (for example when the folder does not exist).
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (tmp, dir) = temporary_sibling(path)?;
    let result = write(&tmp).and_then(|()| {
        readable(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Persist the rename itself; directories cannot be opened for syncing on every platform.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be created, written, flushed or renamed;
/// [`Error::InvalidArgument`] when `path` has no file name.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Writes `value` to `path` as pretty-printed JSON, atomically.
///
/// # Errors
/// [`Error::File`] when `value` cannot be serialised; otherwise as [`write_bytes`].
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("serialising JSON: {e}"),
    })?;
    write_bytes(path, &bytes)
}

/// Writes named tensors to `path` as safetensors, atomically (the layout
/// `candle_core::safetensors::save` writes, which `safetensors.torch.load_file` opens).
///
/// # Errors
/// [`Error::File`] naming the file when a tensor cannot be serialised; otherwise as
/// [`write_bytes`].
pub fn write_safetensors<S: AsRef<str> + Ord + std::fmt::Display>(
    path: &Path,
    tensors: &std::collections::HashMap<S, candle_core::Tensor>,
) -> Result<()> {
    write_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("writing safetensors: {e}"),
        })
    })
}

/// Files made through a temporary file would otherwise keep whatever mode their writer chose
/// (the safetensors writer creates owner-only files); give them the mode `File::create` gives
/// under the usual umask.
#[cfg(unix)]
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn readable(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes(&path, b"old").unwrap();
        write_json(&path, &[1, 2, 3]).unwrap();
        let back: Vec<i32> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, [1, 2, 3]);
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.txt");
        write_bytes(&path, b"old").unwrap();
        let err = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(crate::error::invalid("test", "writer failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("writer failed"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["keep.txt"]);
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = candle_core::Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &candle_core::Device::Cpu)
            .unwrap();
        let map = std::collections::HashMap::from([("layer.weight".to_string(), t)]);
        write_safetensors(&path, &map).unwrap();
        let back = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = back["layer.weight"].to_vec2().unwrap();
        assert_eq!(v, [[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(names(dir.path()), ["w.safetensors"]);
    }

    #[test]
    fn the_temporary_keeps_the_extension_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.v2.png");
        let mut seen = PathBuf::new();
        write_with(&path, |tmp| {
            seen = tmp.to_path_buf();
            std::fs::write(tmp, b"x").map_err(io_err(tmp))
        })
        .unwrap();
        assert_eq!(seen.extension().unwrap(), "png");
        assert_eq!(seen.parent().unwrap(), dir.path());
        assert!(seen
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".plot.v2."));
    }

    #[test]
    fn a_missing_folder_and_a_folder_path_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("a.json");
        let err = write_bytes(&missing, b"x").unwrap_err().to_string();
        assert!(err.contains("no-such-dir"), "{err}");
        let err = write_bytes(Path::new("/"), b"x").unwrap_err().to_string();
        assert!(err.contains("not a file path"), "{err}");
    }
}
