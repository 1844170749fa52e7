//! Checkpoints: model weights as safetensors under their variable names (PyTorch `state_dict`
//! keys, so a checkpoint opens in PyTorch with `safetensors.torch.load_file`), plus a JSON
//! sidecar ([`CheckpointMeta`]) holding the model configuration, class names, band order,
//! normalisation statistics, epoch, metrics and a reference to the optimizer state.
//!
//! Every file is written atomically: the bytes go to a temporary file in the destination folder,
//! which is flushed to disk (`fsync`) and then renamed over the destination, so a crash leaves
//! either the old or the new checkpoint, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_safetensors_atomic(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    crate::atomic::write_safetensors(path, tensors)
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::atomic::write_json(path, value)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("malformed JSON: {e}"),
    })
}
