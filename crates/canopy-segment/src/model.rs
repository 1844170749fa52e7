//! What every segmentation model of this crate has in common, and building any of them from a
//! serialisable configuration (the form a checkpoint's sidecar stores).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::fcn::{Fcn, FcnConfig};
use crate::mlpnet::{MlpNet, MlpNetConfig};
use crate::resnet_unet::{ResNetUNet, ResNetUNetConfig};
use crate::ternaus::{TernausNet, TernausNetConfig};
use crate::unet::{UNet, UNetConfig};
use crate::{Error, Result};

/// A dense classifier: an image batch in, per-pixel class logits of the same size out.
///
/// The trait is object safe, so tools can hold any model as `Box<dyn SegmentationModel>`.
/// Every model accepts any image size: inputs are zero-padded at the bottom and right to a
/// multiple of [`size_multiple`](SegmentationModel::size_multiple) and the logits are cropped
/// back.
pub trait SegmentationModel: Send + Sync {
    /// Logits for a batch of images; `train` switches batch normalisation to batch statistics
    /// (and updates the running ones).
    ///
    /// # Shapes
    /// `x`: `(B, C, H, W)` -> `(B, K, H, W)`.
    ///
    /// # Errors
    /// When `x` is not `(B, C, H, W)` with the configured number of bands, or a tensor
    /// operation fails.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// The number of input bands `C`.
    fn in_channels(&self) -> usize;

    /// The number of classes `K`.
    fn classes(&self) -> usize;

    /// The input size multiple the network needs internally (its total stride).
    fn size_multiple(&self) -> usize;
}

/// The configuration of any model of the crate, tagged by `"model"` in JSON
/// (`{"model": "unet", "in_channels": 3, ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum ModelConfig {
    /// [`Fcn`] (Maggiori et al.'s FCN, one or two scales).
    Fcn(FcnConfig),
    /// [`MlpNet`] (the multi-scale MLP network).
    MlpNet(MlpNetConfig),
    /// [`UNet`].
    Unet(UNetConfig),
    /// [`TernausNet`] (U-Net with a VGG11 encoder).
    Ternaus(TernausNetConfig),
    /// [`ResNetUNet`] (U-Net with a ResNet encoder, `segmentation_models_pytorch` layout).
    ResnetUnet(ResNetUNetConfig),
}

impl ModelConfig {
    /// Builds the model with variables from `vb` (new variables are initialised as PyTorch
    /// does; a `VarBuilder` over loaded tensors gives a trained model).
    ///
    /// # Errors
    /// Invalid configurations; variable creation failures.
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn SegmentationModel>> {
        Ok(match self {
            ModelConfig::Fcn(c) => Box::new(Fcn::new(c, vb)?),
            ModelConfig::MlpNet(c) => Box::new(MlpNet::new(c, vb)?),
            ModelConfig::Unet(c) => Box::new(UNet::new(c, vb)?),
            ModelConfig::Ternaus(c) => Box::new(TernausNet::new(c, vb)?),
            ModelConfig::ResnetUnet(c) => Box::new(ResNetUNet::new(c, vb)?),
        })
    }

    /// The short name used on the command line (`fcn`, `mlp_net`, `unet`, `ternaus`,
    /// `resnet_unet`).
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Fcn(c) if c.two_scale => "fcn_two_scale",
            ModelConfig::Fcn(_) => "fcn",
            ModelConfig::MlpNet(_) => "mlp_net",
            ModelConfig::Unet(_) => "unet",
            ModelConfig::Ternaus(_) => "ternaus",
            ModelConfig::ResnetUnet(_) => "resnet_unet",
        }
    }

    /// Input bands.
    pub fn in_channels(&self) -> usize {
        match self {
            ModelConfig::Fcn(c) => c.in_channels,
            ModelConfig::MlpNet(c) => c.in_channels,
            ModelConfig::Unet(c) => c.in_channels,
            ModelConfig::Ternaus(c) => c.in_channels,
            ModelConfig::ResnetUnet(c) => c.in_channels,
        }
    }

    /// Output classes.
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Fcn(c) => c.classes,
            ModelConfig::MlpNet(c) => c.classes,
            ModelConfig::Unet(c) => c.classes,
            ModelConfig::Ternaus(c) => c.classes,
            ModelConfig::ResnetUnet(c) => c.classes,
        }
    }
}

/// `Err(Config)` unless `value > 0`.
pub(crate) fn positive(context: &'static str, what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::Config {
            context,
            message: format!("{what} must be positive, got 0"),
        });
    }
    Ok(())
}
