//! The multi-scale MLP network of Maggiori et al. for high-resolution labelling.
//!
//! E. Maggiori, Y. Tarabalka, G. Charpiat, P. Alliez, "High-resolution aerial image labeling
//! with convolutional neural networks", IEEE TGRS 55(12), 2017. Subsampling enlarges the
//! receptive field (recognition) but coarsens the output (localisation). The MLP network
//! resolves the trade-off by (1) running a base FCN, (2) taking the features of several of its
//! levels, at resolutions 1, 1/2, 1/4, ..., bilinearly upsampled (fixed, not learned) to the
//! full resolution and concatenated into a pool of features, and (3) letting a multi-layer
//! perceptron with one hidden layer — 1x1 convolutions — learn per pixel how to combine them.
//!
//! The base FCN here is `L` levels of convolution + ReLU with a 2x2 max-pooling before every
//! level but the first; the default widths 32, 64, 96, 128 with kernels 5, 5, 3, 3 and 100
//! hidden neurons are our choice for a network of that shape (the seed slides do not give the
//! published sizes; every one is a [`MlpNetConfig`] field).
//!
//! **ReLU in the MLP.** The paper describes an MLP with a non-linear hidden layer
//! ([`MlpActivation::Relu`]). The prototxt files released with the paper connect the two 1x1
//! convolutions directly, which makes the "MLP" one linear layer with a low-rank factorisation
//! ([`MlpActivation::Linear`]). Both are offered; `Relu` is the default.
//!
//! Variable names: `convs.{i}` (base FCN), `mlp_hidden`, `mlp_out`. The reference PyTorch
//! implementation the golden tests check against is in `tools/golden/segment_models.py`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use canopy_nn::ops::{upsample_bilinear2d, AlignCorners};
use serde::{Deserialize, Serialize};

use crate::layers::{check_image, crop, max_pool2, pad_to_multiple, Conv2d};
use crate::model::{positive, SegmentationModel};
use crate::{Error, Result};

/// The MLP's activation between its two layers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpActivation {
    /// ReLU between the hidden and output layers, as the paper describes.
    #[default]
    Relu,
    /// No activation, as in the released prototxt files.
    Linear,
}

/// Configuration of [`MlpNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpNetConfig {
    /// Input bands.
    pub in_channels: usize,
    /// Output classes `K`.
    pub classes: usize,
    /// Filters of each base-FCN level (level `i` runs at resolution `1 / 2^i`).
    pub widths: Vec<usize>,
    /// Odd kernel size of each level's convolution (same padding).
    pub kernels: Vec<usize>,
    /// Hidden neurons of the MLP.
    pub hidden: usize,
    /// Activation between the MLP's layers.
    pub activation: MlpActivation,
}

impl MlpNetConfig {
    /// Four levels of 32, 64, 96, 128 filters (kernels 5, 5, 3, 3), 100 hidden neurons, ReLU.
    pub fn maggiori(in_channels: usize, classes: usize) -> Self {
        MlpNetConfig {
            in_channels,
            classes,
            widths: vec![32, 64, 96, 128],
            kernels: vec![5, 5, 3, 3],
            hidden: 100,
            activation: MlpActivation::Relu,
        }
    }
}

/// The multi-scale MLP network (see the module docs).
#[derive(Debug, Clone)]
pub struct MlpNet {
    convs: Vec<Conv2d>,
    mlp_hidden: Conv2d,
    mlp_out: Conv2d,
    cfg: MlpNetConfig,
}

impl MlpNet {
    /// Builds the network.
    ///
    /// # Errors
    /// Zero sizes, even kernels, widths and kernels of different lengths; variable failures.
    pub fn new(cfg: &MlpNetConfig, vb: VarBuilder) -> Result<Self> {
        let ctx = "MlpNet";
        positive(ctx, "in_channels", cfg.in_channels)?;
        positive(ctx, "classes", cfg.classes)?;
        positive(ctx, "hidden", cfg.hidden)?;
        positive(ctx, "the number of levels", cfg.widths.len())?;
        if cfg.widths.len() != cfg.kernels.len() {
            return Err(Error::Config {
                context: ctx,
                message: format!(
                    "{} widths but {} kernels: give one kernel size per level",
                    cfg.widths.len(),
                    cfg.kernels.len()
                ),
            });
        }
        if let Some(k) = cfg.kernels.iter().find(|&&k| k % 2 == 0) {
            return Err(Error::Config {
                context: ctx,
                message: format!("kernel size {k} is even: same padding needs odd kernels"),
            });
        }
        let mut convs = Vec::with_capacity(cfg.widths.len());
        let mut c = cfg.in_channels;
        for (i, (&w, &k)) in cfg.widths.iter().zip(&cfg.kernels).enumerate() {
            positive(ctx, "widths", w)?;
            convs.push(Conv2d::new(
                c,
                w,
                k,
                1,
                k / 2,
                true,
                vb.pp(format!("convs.{i}")),
            )?);
            c = w;
        }
        let pooled: usize = cfg.widths.iter().sum();
        Ok(MlpNet {
            convs,
            mlp_hidden: Conv2d::pointwise(pooled, cfg.hidden, vb.pp("mlp_hidden"))?,
            mlp_out: Conv2d::pointwise(cfg.hidden, cfg.classes, vb.pp("mlp_out"))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MlpNetConfig {
        &self.cfg
    }

    /// The pool of features: every level's output resized to the (padded) input size and
    /// concatenated, `(B, sum(widths), H', W')`.
    fn feature_pool(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut feats = Vec::with_capacity(self.convs.len());
        let mut x = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            if i > 0 {
                x = max_pool2(&x)?;
            }
            x = conv.forward_relu(&x)?;
            feats.push(if i == 0 {
                x.clone()
            } else {
                upsample_bilinear2d(&x, h, w, AlignCorners::No)?
            });
        }
        Ok(Tensor::cat(&feats, 1)?)
    }
}

impl SegmentationModel for MlpNet {
    /// # Shapes
    /// `(B, C, H, W)` -> `(B, K, H, W)`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_image("MlpNet", x, self.cfg.in_channels)?;
        let (x, size) = pad_to_multiple(x, self.size_multiple())?;
        let features = self.feature_pool(&x)?;
        let z = if self.cfg.activation == MlpActivation::Relu {
            self.mlp_hidden.forward_relu(&features)?
        } else {
            self.mlp_hidden.forward(&features)?
        };
        crop(&self.mlp_out.forward(&z)?, size)
    }

    fn in_channels(&self) -> usize {
        self.cfg.in_channels
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn size_multiple(&self) -> usize {
        1 << (self.cfg.widths.len() - 1)
    }
}
