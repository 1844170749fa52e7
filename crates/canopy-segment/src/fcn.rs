//! The fully convolutional network of Maggiori et al. for large-scale building labelling, and
//! its two-scale variant.
//!
//! E. Maggiori, Y. Tarabalka, G. Charpiat, P. Alliez, "Convolutional neural networks for
//! large-scale remote sensing image classification", IEEE TGRS 55(2), 2017 (and the IGARSS
//! 2016 paper "Fully convolutional neural networks for remote sensing image classification"):
//! four convolutions that downsample by 4 — 64 filters 12x12 with stride 4, 112 filters 4x4,
//! 80 filters 3x3, then a K-class score layer 9x9 — followed by a learned x4 "deconvolution"
//! (transposed convolution, kernel 8, stride 4) initialised to bilinear interpolation.
//!
//! The published network uses valid convolutions on fixed patches. Here the convolutions are
//! padded (4, 2, 1, 4 and 4 for the deconvolution) so that the output has the input's size for
//! any input that is a multiple of 4 and every output stays centred on its pixel; other sizes
//! are zero-padded at the bottom and right and cropped back. Tiles therefore stitch without
//! margins (use an overlap to hide border effects).
//!
//! **Two-scale variant.** The paper adds context by also processing the image at a coarser
//! scale. [`FcnConfig::two_scale`] builds it as two branches of conv1-conv3: one on the
//! image, one on the image average-pooled by 2; the coarse features are bilinearly resized onto
//! the fine grid and concatenated before the score layer (so the score layer sees `2 x 80`
//! channels). This is our rendition of the module from the paper's description; the
//! reference PyTorch implementation the golden tests check against is in
//! `tools/golden/segment_models.py`.
//!
//! Variable names (PyTorch `state_dict` keys): `conv1`, `conv2`, `conv3`, `score`, `deconv`
//! (two-scale: `fine.conv{1,2,3}`, `coarse.conv{1,2,3}`, `score`, `deconv`).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use canopy_nn::ops::{avg_pool2d, upsample_bilinear2d, AlignCorners, PoolAxis, TransposeAxis};
use serde::{Deserialize, Serialize};

use crate::layers::{check_image, crop, pad_to_multiple, Conv2d, ConvTranspose2d};
use crate::model::{positive, SegmentationModel};
use crate::Result;

/// Configuration of [`Fcn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FcnConfig {
    /// Input bands.
    pub in_channels: usize,
    /// Output classes `K`.
    pub classes: usize,
    /// Filters of conv1, conv2, conv3 (the paper: 64, 112, 80).
    pub widths: [usize; 3],
    /// Add the coarse-scale branch (see the module docs).
    pub two_scale: bool,
}

impl FcnConfig {
    /// The paper's network: widths 64, 112, 80, one scale.
    pub fn maggiori(in_channels: usize, classes: usize) -> Self {
        FcnConfig {
            in_channels,
            classes,
            widths: [64, 112, 80],
            two_scale: false,
        }
    }

    /// The paper's widths with the coarse-scale branch.
    pub fn two_scale(in_channels: usize, classes: usize) -> Self {
        FcnConfig {
            two_scale: true,
            ..FcnConfig::maggiori(in_channels, classes)
        }
    }
}

#[derive(Debug, Clone)]
struct Branch {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
}

impl Branch {
    fn new(c_in: usize, [a, b, c]: [usize; 3], vb: VarBuilder) -> Result<Self> {
        Ok(Branch {
            conv1: Conv2d::new(c_in, a, 12, 4, 4, true, vb.pp("conv1"))?,
            conv2: Conv2d::new(a, b, 4, 1, 2, true, vb.pp("conv2"))?,
            conv3: Conv2d::new(b, c, 3, 1, 1, true, vb.pp("conv3"))?,
        })
    }

    /// `(B, C, H, W)` -> `(B, widths[2], H/4 + 1, W/4 + 1)` for `H, W` multiples of 4.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward_relu(x)?;
        let x = self.conv2.forward_relu(&x)?;
        self.conv3.forward_relu(&x)
    }
}

/// Maggiori et al.'s FCN (see the module docs).
#[derive(Debug, Clone)]
pub struct Fcn {
    fine: Branch,
    coarse: Option<Branch>,
    score: Conv2d,
    deconv: ConvTranspose2d,
    cfg: FcnConfig,
}

impl Fcn {
    /// Builds the network; the deconvolution starts as bilinear interpolation.
    ///
    /// # Errors
    /// A zero band, class or width count; variable creation failures.
    pub fn new(cfg: &FcnConfig, vb: VarBuilder) -> Result<Self> {
        positive("Fcn", "in_channels", cfg.in_channels)?;
        positive("Fcn", "classes", cfg.classes)?;
        for w in cfg.widths {
            positive("Fcn", "widths", w)?;
        }
        let (fine, coarse) = if cfg.two_scale {
            (
                Branch::new(cfg.in_channels, cfg.widths, vb.pp("fine"))?,
                Some(Branch::new(cfg.in_channels, cfg.widths, vb.pp("coarse"))?),
            )
        } else {
            (Branch::new(cfg.in_channels, cfg.widths, vb.clone())?, None)
        };
        let score_in = cfg.widths[2] * if cfg.two_scale { 2 } else { 1 };
        let k = cfg.classes;
        let score = Conv2d::new(score_in, k, 9, 1, 4, true, vb.pp("score"))?;
        let deconv = ConvTranspose2d::new(
            k,
            k,
            8,
            TransposeAxis {
                stride: 4,
                padding: 4,
                output_padding: 0,
                dilation: 1,
            },
            vb.pp("deconv"),
        )?;
        deconv.init_bilinear()?;
        Ok(Fcn {
            fine,
            coarse,
            score,
            deconv,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FcnConfig {
        &self.cfg
    }
}

impl SegmentationModel for Fcn {
    /// # Shapes
    /// `(B, C, H, W)` -> `(B, K, H, W)`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_image("Fcn", x, self.cfg.in_channels)?;
        let (x, size) = pad_to_multiple(x, self.size_multiple())?;
        let fine = self.fine.forward(&x)?;
        let features = match &self.coarse {
            None => fine,
            Some(coarse) => {
                let p = PoolAxis::new(2);
                let c = coarse.forward(&avg_pool2d(&x, p, p, false)?)?;
                let (_, _, fh, fw) = fine.dims4()?;
                let c = upsample_bilinear2d(&c, fh, fw, AlignCorners::No)?;
                Tensor::cat(&[&fine, &c], 1)?
            }
        };
        let y = self.deconv.forward(&self.score.forward(&features)?)?;
        crop(&y, size)
    }

    fn in_channels(&self) -> usize {
        self.cfg.in_channels
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn size_multiple(&self) -> usize {
        if self.cfg.two_scale {
            8
        } else {
            4
        }
    }
}
