//! The built-in building model: a small U-Net compiled into the crate, so whole-scene building
//! segmentation works with nothing downloaded (`canopy segment --input rgb.tif --out
//! classes.tif`).
//!
//! # What it is
//! [`UNetConfig`](crate::UNetConfig) with base width 16, depth 4 and batch norm (484,176
//! parameters and buffers, stored as f16: under 1 MB), trained by `examples/buildings.rs` on
//! OpenAerialMap drone/aerial RGB tiles (Zanzibar, Kampala, Banepa; 0.075-0.3 m ground
//! resolution) with OpenStreetMap building outlines as labels; Nairobi (RAMP area 5) was held
//! out for validation. Output class 1 = building, 0 = background.
//!
//! # Inputs it expects
//! Three bands red, green, blue with 8-bit values (0-255), at roughly 0.07-0.3 m per pixel.
//! Other resolutions, other sensors (e.g. 10 m Sentinel-2) or 16-bit radiometry are outside what
//! it has seen: train your own with `examples/buildings.rs` and pass `--weights`.
//!
//! # Provenance and licences
//! The weights are derived from OpenAerialMap imagery (CC BY 4.0, attribute "OpenAerialMap
//! contributors") and OpenStreetMap labels (ODbL 1.0, attribute "© OpenStreetMap
//! contributors"). Maps made with the model should carry both attributions; [`BuiltinInfo`]
//! holds them, with the recipe and the per-area scores measured with these exact (f16)
//! weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use canopy_train::checkpoint::CheckpointMeta;
use serde::{Deserialize, Serialize};

use crate::infer::Segmenter;
use crate::{Error, Result};

/// The weights file of the built-in building model (safetensors, f16).
pub const BUILDINGS_WEIGHTS: &[u8] = include_bytes!("../weights/buildings-unet16.safetensors");

/// Its sidecar: model configuration, normalisation, class names and [`BuiltinInfo`] under
/// `extra`.
pub const BUILDINGS_SIDECAR: &str = include_str!("../weights/buildings-unet16.json");

/// The name the built-in model goes by in messages and errors.
pub const BUILDINGS_NAME: &str = "canopy built-in buildings-unet16";

/// Score of the built-in model on one area (Inria protocol: pixels pooled over the area's
/// tiles, ignored pixels left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AreaScore {
    /// Area name (`area1` Zanzibar, `area2` Kampala, `area3` Banepa, `area5` Nairobi).
    pub area: String,
    /// `train` or `val` (held out).
    pub role: String,
    /// Building IoU.
    pub iou: f64,
    /// Pixel accuracy.
    pub accuracy: f64,
}

/// What the built-in model is, what it was trained on, under which licences, and how well it
/// does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinInfo {
    /// Short name.
    pub name: String,
    /// What it segments.
    pub task: String,
    /// The input it expects (bands, value range).
    pub input: String,
    /// Ground resolution range of the training imagery, metres per pixel.
    pub ground_resolution_m: [f64; 2],
    /// The training data.
    pub training_data: String,
    /// Attribution lines that maps made with the model should carry.
    pub attribution: Vec<String>,
    /// The command that trained it.
    pub recipe: String,
    /// Per-area scores of these weights.
    pub scores: Vec<AreaScore>,
}

fn sidecar() -> Result<CheckpointMeta> {
    serde_json::from_str(BUILDINGS_SIDECAR).map_err(|e| Error::File {
        path: Path::new(BUILDINGS_NAME).to_path_buf(),
        message: format!("the embedded sidecar is not a checkpoint sidecar: {e}"),
    })
}

/// Provenance, licences and scores of the built-in building model.
///
/// # Errors
/// [`Error::File`] if the embedded sidecar is malformed (a build problem, not a user one).
pub fn buildings_info() -> Result<BuiltinInfo> {
    serde_json::from_value(sidecar()?.extra).map_err(|e| Error::File {
        path: Path::new(BUILDINGS_NAME).to_path_buf(),
        message: format!("the embedded sidecar has no model description: {e}"),
    })
}

/// The built-in building model, ready for [`segment_geotiff`](crate::infer::segment_geotiff)
/// or [`predict_image`](crate::infer::predict_image). Weights are converted to f32.
///
/// # Errors
/// [`Error::File`] if the embedded weights or sidecar are malformed (a build problem).
pub fn buildings() -> Result<Segmenter> {
    let origin = Path::new(BUILDINGS_NAME);
    let tensors: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load_buffer(BUILDINGS_WEIGHTS, &Device::Cpu).map_err(|e| {
            Error::File {
                path: origin.to_path_buf(),
                message: format!("the embedded weights are not readable: {e}"),
            }
        })?;
    Segmenter::from_tensors(origin, &tensors, &sidecar()?)
}
