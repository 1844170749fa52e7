//! U-Net (Ronneberger, Fischer & Brox, "U-Net: convolutional networks for biomedical image
//! segmentation", MICCAI 2015) with configurable depth and width.
//!
//! Each encoder level is two 3x3 convolutions (same padding) with ReLU, optionally with batch
//! normalisation after each convolution; levels are separated by 2x2 max-pooling and widths
//! double per level (`base, 2 base, 4 base, ...`). The decoder upsamples with 2x2 stride-2
//! transposed convolutions, concatenates the encoder's features of the same level (skip
//! connection) and applies the same double convolution; a 1x1 convolution gives the logits.
//! The layout and variable names are those of the plain U-Net that
//! `../shared/peers/bench_unet.py` times in PyTorch (`downs.{i}`, `ups.{i}`, `up_convs.{i}`,
//! `head`; inside a level `0`/`3` are the convolutions and `1`/`4` the batch norms, or `0`/`2`
//! the convolutions without batch norm), so weights move between the two unchanged.
//!
//! Presets: [`UNetConfig::original`] (base 64, five levels, no batch norm — the paper's widths
//! with same padding instead of the paper's valid convolutions), [`UNetConfig::half`] (base 32:
//! the "original U-Net with half as many filters" that Duke's AMLL entry used on the Inria
//! Aerial Image Labeling benchmark, Huang et al., IGARSS 2018) and [`UNetConfig::bench`] (base
//! 32 with batch norm, the peer benchmark's network).
//!
//! Inputs of any size are zero-padded at the bottom and right to a multiple of
//! `2^(depth - 1)` and the logits cropped back.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use canopy_nn::batch_norm::BatchNorm;
use canopy_nn::ops::TransposeAxis;
use serde::{Deserialize, Serialize};

use crate::layers::{
    check_image, crop, max_pool2, pad_to_multiple, Conv2d, ConvTranspose2d, BN_EPS, BN_MOMENTUM,
};
use crate::model::{positive, SegmentationModel};
use crate::{Error, Result};

/// Configuration of [`UNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Input bands.
    pub in_channels: usize,
    /// Output classes `K`.
    pub classes: usize,
    /// Filters of the first level (doubling per level).
    pub base_width: usize,
    /// Number of levels (resolutions), at least 1; the input size multiple is `2^(depth-1)`.
    pub depth: usize,
    /// Batch normalisation after every 3x3 convolution (the convolutions then have no bias).
    pub batch_norm: bool,
}

impl UNetConfig {
    /// Base 64, five levels, no batch norm.
    pub fn original(in_channels: usize, classes: usize) -> Self {
        UNetConfig {
            in_channels,
            classes,
            base_width: 64,
            depth: 5,
            batch_norm: false,
        }
    }

    /// Base 32 ("half filters"), five levels, no batch norm.
    pub fn half(in_channels: usize, classes: usize) -> Self {
        UNetConfig {
            base_width: 32,
            ..UNetConfig::original(in_channels, classes)
        }
    }

    /// Base 32, five levels, batch norm: `bench_unet.py`'s plain U-Net.
    pub fn bench(in_channels: usize, classes: usize) -> Self {
        UNetConfig {
            batch_norm: true,
            ..UNetConfig::half(in_channels, classes)
        }
    }

    /// The width of level `i`.
    pub fn width(&self, level: usize) -> usize {
        self.base_width << level
    }
}

/// Two 3x3 convolutions with ReLU (and batch norm), PyTorch `nn.Sequential` indices.
#[derive(Debug, Clone)]
struct DoubleConv {
    conv_a: Conv2d,
    bn_a: Option<BatchNorm>,
    conv_b: Conv2d,
    bn_b: Option<BatchNorm>,
}

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, bn: bool, vb: VarBuilder) -> Result<Self> {
        let (ia, ib) = if bn { (0, 3) } else { (0, 2) };
        let norm = |i: usize| -> Result<Option<BatchNorm>> {
            Ok(if bn {
                Some(BatchNorm::new(
                    c_out,
                    BN_EPS,
                    BN_MOMENTUM,
                    vb.pp(i.to_string()),
                )?)
            } else {
                None
            })
        };
        Ok(DoubleConv {
            conv_a: Conv2d::same3(c_in, c_out, !bn, vb.pp(ia.to_string()))?,
            bn_a: norm(1)?,
            conv_b: Conv2d::same3(c_out, c_out, !bn, vb.pp(ib.to_string()))?,
            bn_b: norm(4)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let conv_bn_relu = |conv: &Conv2d, bn: &Option<BatchNorm>, x: &Tensor| -> Result<Tensor> {
            match bn {
                Some(bn) => conv.forward_bn_relu(x, bn, train),
                None => conv.forward_relu(x),
            }
        };
        let y = conv_bn_relu(&self.conv_a, &self.bn_a, x)?;
        conv_bn_relu(&self.conv_b, &self.bn_b, &y)
    }
}

/// U-Net (see the module docs).
#[derive(Debug, Clone)]
pub struct UNet {
    downs: Vec<DoubleConv>,
    ups: Vec<ConvTranspose2d>,
    up_convs: Vec<DoubleConv>,
    head: Conv2d,
    cfg: UNetConfig,
}

impl UNet {
    /// Builds the network.
    ///
    /// # Errors
    /// Zero sizes, a depth over 12; variable creation failures.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let ctx = "UNet";
        positive(ctx, "in_channels", cfg.in_channels)?;
        positive(ctx, "classes", cfg.classes)?;
        positive(ctx, "base_width", cfg.base_width)?;
        positive(ctx, "depth", cfg.depth)?;
        if cfg.depth > 12 {
            return Err(Error::Config {
                context: ctx,
                message: format!(
                    "depth {} is over 12 (inputs would need to be multiples of 2^{})",
                    cfg.depth,
                    cfg.depth - 1
                ),
            });
        }
        let mut downs = Vec::with_capacity(cfg.depth);
        let mut c = cfg.in_channels;
        for i in 0..cfg.depth {
            let w = cfg.width(i);
            downs.push(DoubleConv::new(
                c,
                w,
                cfg.batch_norm,
                vb.pp(format!("downs.{i}")),
            )?);
            c = w;
        }
        let mut ups = Vec::with_capacity(cfg.depth - 1);
        let mut up_convs = Vec::with_capacity(cfg.depth - 1);
        let two = TransposeAxis {
            stride: 2,
            padding: 0,
            output_padding: 0,
            dilation: 1,
        };
        for (j, level) in (0..cfg.depth - 1).rev().enumerate() {
            let w = cfg.width(level);
            ups.push(ConvTranspose2d::new(
                c,
                w,
                2,
                two,
                vb.pp(format!("ups.{j}")),
            )?);
            up_convs.push(DoubleConv::new(
                2 * w,
                w,
                cfg.batch_norm,
                vb.pp(format!("up_convs.{j}")),
            )?);
            c = w;
        }
        Ok(UNet {
            downs,
            ups,
            up_convs,
            head: Conv2d::pointwise(c, cfg.classes, vb.pp("head"))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }
}

impl SegmentationModel for UNet {
    /// # Shapes
    /// `(B, C, H, W)` -> `(B, K, H, W)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_image("UNet", x, self.cfg.in_channels)?;
        let (mut x, size) = pad_to_multiple(x, self.size_multiple())?;
        let mut skips = Vec::with_capacity(self.downs.len());
        for (i, down) in self.downs.iter().enumerate() {
            x = down.forward_t(&x, train)?;
            if i + 1 < self.downs.len() {
                skips.push(x.clone());
                x = max_pool2(&x)?;
            }
        }
        for ((up, conv), skip) in self.ups.iter().zip(&self.up_convs).zip(skips.iter().rev()) {
            let u = up.forward(&x)?;
            x = conv.forward_t(&canopy_nn::ops::cat_channels(&u, skip)?, train)?;
        }
        crop(&self.head.forward(&x)?, size)
    }

    fn in_channels(&self) -> usize {
        self.cfg.in_channels
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn size_multiple(&self) -> usize {
        1 << (self.cfg.depth - 1)
    }
}
