//! U-Net with a ResNet encoder, laid out as `segmentation_models_pytorch.Unet` (smp; P. Iakubovskii,
//! github.com/qubvel-org/segmentation_models.pytorch, `decoders/unet/decoder.py` and
//! `encoders/resnet.py`, version 0.6.0): the most used segmentation network in Earth observation
//! work today, and the "smp-style" model of `../shared/peers/bench_unet.py`
//! (`smp.Unet(encoder_name="resnet18")`).
//!
//! Encoder: torchvision's ResNet without its classifier (He et al., "Deep Residual Learning for
//! Image Recognition", CVPR 2016): a 7x7 stride-2 convolution, batch norm and ReLU (features at
//! 1/2), 3x3 stride-2 max-pooling, then four stages of basic blocks (two 3x3 convolutions with
//! batch norm, the identity or a 1x1 strided convolution + batch norm added before the last
//! ReLU) at 1/4, 1/8, 1/16 and 1/32. Decoder: five blocks; each upsamples by 2 (nearest),
//! concatenates the encoder features of that resolution (none for the last block, which returns
//! to full resolution), and applies two 3x3 convolution + batch norm + ReLU. Head: a 3x3
//! convolution with bias to the class logits.
//!
//! State-dict keys are smp's, so weights trained with smp (`smp.Unet("resnet18",
//! in_channels=C, classes=K)`) load unchanged: `encoder.conv1`, `encoder.bn1`,
//! `encoder.layer{1-4}.{j}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}`,
//! `decoder.blocks.{i}.conv{1,2}.{0,1}` (convolution, batch norm) and `segmentation_head.0`.
//! ImageNet pre-training is smp's `encoder_weights="imagenet"`: export that model's
//! `state_dict` as safetensors and load it.
//!
//! Differences from smp, all generalisations that leave the defaults identical:
//! - the encoder widths and the number of blocks per stage are parameters
//!   ([`ResNetUNetConfig::resnet18`] / [`ResNetUNetConfig::resnet34`] are torchvision's), so
//!   the golden test can compare a small network with PyTorch;
//! - inputs of any size are zero-padded at the bottom and right to a multiple of 32 and the
//!   logits cropped back (smp refuses other sizes);
//! - only smp's defaults are offered otherwise: depth 5, batch norm in the decoder, no
//!   attention, no centre block, nearest upsampling, no activation on the logits.
//!
//! Initialisation follows the references: encoder convolutions Kaiming-normal over fan-out
//! (torchvision), decoder convolutions Kaiming-uniform over fan-in, head Xavier-uniform with
//! zero bias (smp's `initialize_decoder` / `initialize_head`), batch norm weight 1 and bias 0.

use candle_core::Tensor;
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use canopy_nn::batch_norm::BatchNorm;
use canopy_nn::ops::{add_relu, cat_channels, max_pool2d, upsample_nearest2d, PoolAxis};
use serde::{Deserialize, Serialize};

use crate::layers::{check_image, crop, pad_to_multiple, Conv2d, BN_EPS, BN_MOMENTUM};
use crate::model::{positive, SegmentationModel};
use crate::Result;

/// Configuration of [`ResNetUNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetUNetConfig {
    /// Input bands.
    pub in_channels: usize,
    /// Output classes `K`.
    pub classes: usize,
    /// Width of the stem convolution and of the four encoder stages (ResNet-18/34: 64, 64,
    /// 128, 256, 512).
    pub encoder_widths: [usize; 5],
    /// Basic blocks per encoder stage (ResNet-18: 2, 2, 2, 2; ResNet-34: 3, 4, 6, 3).
    pub blocks: [usize; 4],
    /// Output widths of the five decoder blocks (smp's default: 256, 128, 64, 32, 16).
    pub decoder_channels: [usize; 5],
}

impl ResNetUNetConfig {
    /// `smp.Unet("resnet18", in_channels, classes)` (14.3 M parameters for 3 bands, 2 classes).
    pub fn resnet18(in_channels: usize, classes: usize) -> Self {
        ResNetUNetConfig {
            in_channels,
            classes,
            encoder_widths: [64, 64, 128, 256, 512],
            blocks: [2, 2, 2, 2],
            decoder_channels: [256, 128, 64, 32, 16],
        }
    }

    /// `smp.Unet("resnet34", in_channels, classes)`.
    pub fn resnet34(in_channels: usize, classes: usize) -> Self {
        ResNetUNetConfig {
            blocks: [3, 4, 6, 3],
            ..ResNetUNetConfig::resnet18(in_channels, classes)
        }
    }
}

/// torchvision's ResNet convolution initialisation (`kaiming_normal_`, fan-out, ReLU).
fn encoder_init() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanOut,
        non_linearity: NonLinearity::ReLU,
    }
}

/// smp's decoder convolution initialisation (`kaiming_uniform_`, fan-in, ReLU).
fn decoder_init() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Uniform,
        fan: FanInOut::FanIn,
        non_linearity: NonLinearity::ReLU,
    }
}

/// A convolution without bias and its batch norm (`conv`, `bn` under the given names).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        (c_in, c_out, k): (usize, usize, usize),
        stride: usize,
        init: Init,
        (vb_conv, vb_bn): (VarBuilder, VarBuilder),
    ) -> Result<Self> {
        Ok(ConvBn {
            conv: Conv2d::with_init((c_in, c_out, k), (stride, k / 2), init, None, vb_conv)?,
            bn: BatchNorm::new(c_out, BN_EPS, BN_MOMENTUM, vb_bn)?,
        })
    }

    /// `bn(conv(x))`, then a ReLU when `relu` (batch norm folded into the convolution in
    /// evaluation).
    fn forward_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        self.conv.forward_bn(x, &self.bn, train, relu)
    }
}

/// torchvision's `BasicBlock`.
#[derive(Debug, Clone)]
struct BasicBlock {
    a: ConvBn,
    b: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let pair = |conv: &str, bn: &str| (vb.pp(conv), vb.pp(bn));
        let downsample = if stride != 1 || c_in != c_out {
            Some(ConvBn::new(
                (c_in, c_out, 1),
                stride,
                encoder_init(),
                pair("downsample.0", "downsample.1"),
            )?)
        } else {
            None
        };
        Ok(BasicBlock {
            a: ConvBn::new(
                (c_in, c_out, 3),
                stride,
                encoder_init(),
                pair("conv1", "bn1"),
            )?,
            b: ConvBn::new((c_out, c_out, 3), 1, encoder_init(), pair("conv2", "bn2"))?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .b
            .forward_t(&self.a.forward_t(x, train, true)?, train, false)?;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train, false)?,
            None => x.clone(),
        };
        Ok(add_relu(&y, &identity)?)
    }
}

/// smp's `UnetDecoderBlock`: upsample x2, concatenate the skip, two conv + BN + ReLU.
#[derive(Debug, Clone)]
struct DecoderBlock {
    conv1: ConvBn,
    conv2: ConvBn,
}

impl DecoderBlock {
    fn new(c_in: usize, skip: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let pair = |i: usize| (vb.pp(format!("conv{i}.0")), vb.pp(format!("conv{i}.1")));
        Ok(DecoderBlock {
            conv1: ConvBn::new((c_in + skip, c_out, 3), 1, decoder_init(), pair(1))?,
            conv2: ConvBn::new((c_out, c_out, 3), 1, decoder_init(), pair(2))?,
        })
    }

    fn forward_t(&self, x: &Tensor, skip: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = upsample_nearest2d(x, 2 * h, 2 * w)?;
        let y = match skip {
            Some(s) => cat_channels(&up, s)?,
            None => up,
        };
        let y = self.conv1.forward_t(&y, train, true)?;
        self.conv2.forward_t(&y, train, true)
    }
}

/// U-Net with a ResNet encoder, smp layout (see the module docs).
///
/// # Shapes
/// `(B, C, H, W)` -> `(B, K, H, W)`, any `H` and `W` (padded to a multiple of 32 inside).
#[derive(Debug, Clone)]
pub struct ResNetUNet {
    stem: ConvBn,
    stages: Vec<Vec<BasicBlock>>,
    decoder: Vec<DecoderBlock>,
    head: Conv2d,
    cfg: ResNetUNetConfig,
}

impl ResNetUNet {
    /// Builds the network.
    ///
    /// # Errors
    /// Zero sizes; variable creation failures.
    pub fn new(cfg: &ResNetUNetConfig, vb: VarBuilder) -> Result<Self> {
        let ctx = "ResNetUNet";
        positive(ctx, "in_channels", cfg.in_channels)?;
        positive(ctx, "classes", cfg.classes)?;
        for w in cfg.encoder_widths.iter().chain(&cfg.decoder_channels) {
            positive(ctx, "encoder_widths and decoder_channels", *w)?;
        }
        for n in cfg.blocks {
            positive(ctx, "blocks", n)?;
        }
        let enc = vb.pp("encoder");
        let w = cfg.encoder_widths;
        let stem = ConvBn::new(
            (cfg.in_channels, w[0], 7),
            2,
            encoder_init(),
            (enc.pp("conv1"), enc.pp("bn1")),
        )?;
        let mut stages = Vec::with_capacity(4);
        for s in 0..4 {
            let layer = enc.pp(format!("layer{}", s + 1));
            let stride = if s == 0 { 1 } else { 2 };
            let blocks = (0..cfg.blocks[s])
                .map(|j| {
                    let (c_in, st) = if j == 0 {
                        (w[s], stride)
                    } else {
                        (w[s + 1], 1)
                    };
                    BasicBlock::new(c_in, w[s + 1], st, layer.pp(j.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(blocks);
        }
        // smp: inputs = [head] + decoder widths, skips = the encoder features from 1/16 up
        let d = cfg.decoder_channels;
        let inputs = [w[4], d[0], d[1], d[2], d[3]];
        let skips = [w[3], w[2], w[1], w[0], 0];
        let dec = vb.pp("decoder.blocks");
        let decoder = (0..5)
            .map(|i| DecoderBlock::new(inputs[i], skips[i], d[i], dec.pp(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let (fan_in, fan_out) = (d[4] * 9, cfg.classes * 9);
        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
        let head = Conv2d::with_init(
            (d[4], cfg.classes, 3),
            (1, 1),
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
            Some(Init::Const(0.0)),
            vb.pp("segmentation_head.0"),
        )?;
        Ok(ResNetUNet {
            stem,
            stages,
            decoder,
            head,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetUNetConfig {
        &self.cfg
    }
}

impl SegmentationModel for ResNetUNet {
    /// # Shapes
    /// `(B, C, H, W)` -> `(B, K, H, W)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_image("ResNetUNet", x, self.cfg.in_channels)?;
        let (x, size) = pad_to_multiple(x, self.size_multiple())?;
        // encoder features at 1/2, 1/4, 1/8, 1/16, 1/32
        let mut features = Vec::with_capacity(5);
        let f = self.stem.forward_t(&x, train, true)?;
        let pool = PoolAxis {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let mut y = max_pool2d(&f, pool, pool, false)?;
        features.push(f);
        for stage in &self.stages {
            for block in stage {
                y = block.forward_t(&y, train)?;
            }
            features.push(y.clone());
        }
        // decoder from the 1/32 features, with the skips from 1/16 to 1/2, the last block none
        let mut y = features[4].clone();
        for (i, block) in self.decoder.iter().enumerate() {
            let skip = (i < 4).then(|| &features[3 - i]);
            y = block.forward_t(&y, skip, train)?;
        }
        crop(&self.head.forward(&y)?, size)
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
