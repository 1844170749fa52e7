//! Checkpoints: model weights as safetensors under their variable names (PyTorch `state_dict`
//! keys, so a checkpoint opens in PyTorch with `safetensors.torch.load_file`), plus a JSON
//! sidecar ([`CheckpointMeta`]) holding the model configuration, class names, band order,
//! normalisation statistics, epoch, metrics and a reference to the optimizer state.
//!
//! Every file is written atomically: the bytes go to a temporary file in the destination folder,
//! which is flushed to disk (`fsync`) and then renamed over the destination, so a crash leaves
//! either the old or the new checkpoint, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Per-band normalisation statistics (`(x - mean) / std`), in band order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Per-band means.
    pub mean: Vec<f64>,
    /// Per-band standard deviations.
    pub std: Vec<f64>,
}

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointMeta {
    /// The model configuration (e.g. a serialised `XConfig`).
    pub config: serde_json::Value,
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// Input band names in the order the model expects them.
    pub band_order: Vec<String>,
    /// Input normalisation statistics.
    pub normalisation: Option<Normalisation>,
    /// Epochs completed when the checkpoint was written.
    pub epoch: usize,
    /// Optimizer steps taken when the checkpoint was written.
    pub step: u64,
    /// Metrics of that epoch (`train_loss`, `val_loss`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// File name (in the checkpoint's folder) of the optimizer state, if saved.
    pub optimizer_state: Option<String>,
    /// Anything else (the trainer keeps its resume state here).
    pub extra: serde_json::Value,
}

/// The sidecar path of the checkpoint `path`: same name, extension `json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Writes the variables `vars` to `path` (safetensors, keys = the names) and `meta` to its
/// sidecar, both atomically.
///
/// # Errors
/// When a name is repeated or a file cannot be written (the error names the file).
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    vars: &[(String, Var)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let path = path.as_ref();
    let mut tensors = HashMap::with_capacity(vars.len());
    for (name, var) in vars {
        if tensors
            .insert(name.clone(), var.as_tensor().clone())
            .is_some()
        {
            return Err(crate::error::invalid(
                "save_checkpoint",
                format!("variable name {name:?} appears twice"),
            ));
        }
    }
    write_safetensors_atomic(path, &tensors)?;
    write_json_atomic(&sidecar_path(path), meta)
}

/// Reads the tensors of checkpoint `path` onto `device` and its sidecar.
///
/// # Errors
/// When a file is missing or malformed (the error names it).
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let path = path.as_ref();
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let meta = read_json(&sidecar_path(path))?;
    Ok((tensors, meta))
}

/// Loads checkpoint `path` into `vars` strictly (canopy-nn's [`canopy_nn::state_dict::assign`]):
/// every variable must be in the file with its shape, and every tensor of the file must belong
/// to a variable. Values are converted to each variable's dtype and device. Returns the
/// sidecar.
///
/// # Errors
/// Names the missing or unused keys, or the variable whose shape differs.
pub fn load_checkpoint_into(
    path: impl AsRef<Path>,
    vars: &[(String, Var)],
) -> Result<CheckpointMeta> {
    let path = path.as_ref();
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let (tensors, meta) = load_checkpoint(path, &device)?;
    canopy_nn::state_dict::assign(&tensors, vars, &[]).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: canopy_nn::state_dict::message(e),
    })?;
    Ok(meta)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file through `write(tmp)` into a temporary file next to `path`, flushes it to disk and
/// renames it over `path`, then flushes the folder entry where the platform allows it.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            crate::error::invalid("write", format!("{} is not a file path", path.display()))
        })?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
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

/// The safetensors writer creates owner-only files; give them the permissions of a file made by
/// `File::create` under the usual umask, like the JSON sidecars.
#[cfg(unix)]
fn readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn readable(_path: &Path) -> Result<()> {
    Ok(())
}

pub(crate) fn write_safetensors_atomic(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    write_atomic(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("writing safetensors: {e}"),
        })
    })
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("serialising JSON: {e}"),
    })?;
    write_bytes_atomic(path, &bytes)
}

pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut f = File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("malformed JSON: {e}"),
    })
}
