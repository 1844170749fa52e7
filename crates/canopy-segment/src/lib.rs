#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod builtin;
pub mod data;
mod error;
pub mod fcn;
pub mod infer;
mod layers;
pub mod mlpnet;
pub mod model;
pub mod resnet_unet;
pub mod ternaus;
pub mod unet;
pub mod weights;

pub use error::{Error, Result};
pub use fcn::{Fcn, FcnConfig};
pub use mlpnet::{MlpActivation, MlpNet, MlpNetConfig};
pub use model::{ModelConfig, SegmentationModel};
pub use resnet_unet::{ResNetUNet, ResNetUNetConfig};
pub use ternaus::{TernausNet, TernausNetConfig};
pub use unet::{UNet, UNetConfig};
