//! TernausNet: U-Net with a VGG11 encoder (V. Iglovikov, A. Shvets, "TernausNet: U-Net with
//! VGG11 encoder pre-trained on ImageNet for image segmentation", arXiv:1801.05746, 2018;
//! reference code github.com/ternaus/TernausNet, `ternausnet/models.py`, class `UNet11`), one
//! of the strongest entries of the Inria Aerial Image Labeling benchmark.
//!
//! Encoder: VGG11's convolutions (`encoder.{0,3,6,8,11,13,16,18}` — torchvision's
//! `vgg11().features` indices, widths 64, 128, 256, 256, 512, 512, 512, 512) with ReLU and
//! 2x2 max-pooling; decoder blocks of a 3x3 convolution + ReLU and a 3x3 stride-2 transposed
//! convolution (padding 1, output padding 1) + ReLU (`center`, `dec5` ... `dec2`, each
//! `block.0.conv` and `block.1`), `dec1` a 3x3 convolution + ReLU, `final` a 1x1 convolution.
//!
//! Differences from the reference, all generalisations that leave the default identical:
//! - `in_channels` and `classes` are parameters (the reference fixes 3 and 1);
//! - the encoder widths are a parameter and the decoder's input widths are computed from them
//!   (the reference writes them as multiples of `num_filters`, which is right only for
//!   `num_filters = 32` with VGG11's widths);
//! - the reference registers the encoder's convolutions twice (`encoder.0` and `conv1` are the
//!   same module), so its `state_dict` holds each under both names. Here each has one name,
//!   `encoder.N`; [`TernausNet::pytorch_aliases`] lists the second names, which
//!   [`crate::weights`] accepts when loading (checking the two copies are equal) and adds when
//!   exporting for PyTorch.
//!
//! ImageNet pre-training is the reference's `pretrained=True`: export torchvision's VGG11
//! `features` weights as safetensors and load them under the `encoder.N` names.
//! Inputs are padded to a multiple of 32.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use canopy_nn::ops::relu;
use canopy_nn::ops::TransposeAxis;
use serde::{Deserialize, Serialize};

use crate::layers::{check_image, crop, max_pool2, pad_to_multiple, Conv2d, ConvTranspose2d};
use crate::model::{positive, SegmentationModel};
use crate::Result;

/// torchvision `vgg11().features` indices of the eight convolutions.
const ENCODER_INDICES: [usize; 8] = [0, 3, 6, 8, 11, 13, 16, 18];
/// The reference's second names of those convolutions.
const ALIASES: [&str; 8] = [
    "conv1", "conv2", "conv3s", "conv3", "conv4s", "conv4", "conv5s", "conv5",
];

/// Configuration of [`TernausNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TernausNetConfig {
    /// Input bands.
    pub in_channels: usize,
    /// Output classes `K` (the reference: 1, a binary logit).
    pub classes: usize,
    /// Decoder width unit (`num_filters`, the reference: 32).
    pub num_filters: usize,
    /// Widths of the five encoder levels (VGG11: 64, 128, 256, 512, 512).
    pub encoder_widths: [usize; 5],
}

impl TernausNetConfig {
    /// The reference `UNet11` (num_filters 32, VGG11 widths) with the given bands and classes.
    pub fn unet11(in_channels: usize, classes: usize) -> Self {
        TernausNetConfig {
            in_channels,
            classes,
            num_filters: 32,
            encoder_widths: [64, 128, 256, 512, 512],
        }
    }
}

#[derive(Debug, Clone)]
struct DecoderBlock {
    conv: Conv2d,
    up: ConvTranspose2d,
}

impl DecoderBlock {
    fn new(c_in: usize, mid: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let up = TransposeAxis {
            stride: 2,
            padding: 1,
            output_padding: 1,
            dilation: 1,
        };
        Ok(DecoderBlock {
            conv: Conv2d::same3(c_in, mid, true, vb.pp("block.0.conv"))?,
            up: ConvTranspose2d::new(mid, c_out, 3, up, vb.pp("block.1"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(relu(&self.up.forward(&self.conv.forward_relu(x)?)?)?)
    }
}

/// TernausNet `UNet11` (see the module docs).
#[derive(Debug, Clone)]
pub struct TernausNet {
    encoder: Vec<Conv2d>,
    center: DecoderBlock,
    decoders: [DecoderBlock; 4],
    dec1: Conv2d,
    last: Conv2d,
    cfg: TernausNetConfig,
}

impl TernausNet {
    /// Builds the network.
    ///
    /// # Errors
    /// Zero sizes; variable creation failures.
    pub fn new(cfg: &TernausNetConfig, vb: VarBuilder) -> Result<Self> {
        let ctx = "TernausNet";
        positive(ctx, "in_channels", cfg.in_channels)?;
        positive(ctx, "classes", cfg.classes)?;
        positive(ctx, "num_filters", cfg.num_filters)?;
        let [a, b, c, d, e] = cfg.encoder_widths;
        for w in cfg.encoder_widths {
            positive(ctx, "encoder_widths", w)?;
        }
        let io = [
            (cfg.in_channels, a),
            (a, b),
            (b, c),
            (c, c),
            (c, d),
            (d, d),
            (d, e),
            (e, e),
        ];
        let encoder = io
            .iter()
            .zip(ENCODER_INDICES)
            .map(|(&(i, o), idx)| Conv2d::same3(i, o, true, vb.pp(format!("encoder.{idx}"))))
            .collect::<Result<Vec<_>>>()?;
        let nf = cfg.num_filters;
        Ok(TernausNet {
            encoder,
            center: DecoderBlock::new(e, nf * 16, nf * 8, vb.pp("center"))?,
            decoders: [
                DecoderBlock::new(nf * 8 + e, nf * 16, nf * 8, vb.pp("dec5"))?,
                DecoderBlock::new(nf * 8 + d, nf * 16, nf * 4, vb.pp("dec4"))?,
                DecoderBlock::new(nf * 4 + c, nf * 8, nf * 2, vb.pp("dec3"))?,
                DecoderBlock::new(nf * 2 + b, nf * 4, nf, vb.pp("dec2"))?,
            ],
            dec1: Conv2d::same3(nf + a, nf, true, vb.pp("dec1.conv"))?,
            last: Conv2d::pointwise(nf, cfg.classes, vb.pp("final"))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TernausNetConfig {
        &self.cfg
    }

    /// `(alias prefix, canonical prefix)` pairs: the reference's `state_dict` holds
    /// `conv1.weight` as well as `encoder.0.weight` (the same tensor), and so on.
    pub fn pytorch_aliases() -> Vec<(String, String)> {
        ALIASES
            .iter()
            .zip(ENCODER_INDICES)
            .map(|(a, i)| (a.to_string(), format!("encoder.{i}")))
            .collect()
    }
}

impl SegmentationModel for TernausNet {
    /// # Shapes
    /// `(B, C, H, W)` -> `(B, K, H, W)`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_image("TernausNet", x, self.cfg.in_channels)?;
        let (x, size) = pad_to_multiple(x, self.size_multiple())?;
        let e = &self.encoder;
        let conv = |i: usize, t: &Tensor| -> Result<Tensor> { e[i].forward_relu(t) };
        let c1 = conv(0, &x)?;
        let c2 = conv(1, &max_pool2(&c1)?)?;
        let c3 = conv(3, &conv(2, &max_pool2(&c2)?)?)?;
        let c4 = conv(5, &conv(4, &max_pool2(&c3)?)?)?;
        let c5 = conv(7, &conv(6, &max_pool2(&c4)?)?)?;
        let mut y = self.center.forward(&max_pool2(&c5)?)?;
        for (dec, skip) in self.decoders.iter().zip([&c5, &c4, &c3, &c2]) {
            y = dec.forward(&canopy_nn::ops::cat_channels(&y, skip)?)?;
        }
        let y = self
            .dec1
            .forward_relu(&canopy_nn::ops::cat_channels(&y, &c1)?)?;
        crop(&self.last.forward(&y)?, size)
    }

    fn in_channels(&self) -> usize {
        self.cfg.in_channels
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn size_multiple(&self) -> usize {
        32
    }
}
