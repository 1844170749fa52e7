//! Layers shared by the models: `Conv2d`, `ConvTranspose2d` and `BatchNorm2d` with PyTorch's
//! variable names and default initialisation, padding to a multiple of the model's stride and
//! the input check.

use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;
use canopy_nn::batch_norm::BatchNorm;
use canopy_nn::ops::{
    conv2d, conv2d_act, conv_transpose2d, max_pool2d, Axis1, Conv2dConfig, PoolAxis, TransposeAxis,
};
use canopy_nn::pytorch_uniform;

use crate::{Error, Result};

/// PyTorch's `BatchNorm2d` defaults.
pub(crate) const BN_EPS: f64 = 1e-5;
pub(crate) const BN_MOMENTUM: f64 = 0.1;

/// Checks that `x` is an image batch `(B, C, H, W)` with `channels` bands and at least one
/// pixel; returns its dimensions.
pub(crate) fn check_image(
    context: &'static str,
    x: &Tensor,
    channels: usize,
) -> Result<(usize, usize, usize, usize)> {
    let dims = x.dims();
    let [b, c, h, w] = *dims else {
        return Err(Error::Shape {
            context,
            expected: format!(
                "an image batch (B, {channels}, H, W) (add a batch dimension with unsqueeze(0))"
            ),
            actual: format!("{dims:?}"),
        });
    };
    if c != channels {
        return Err(Error::Shape {
            context,
            expected: format!(
                "(B, {channels}, H, W): the model was built for {channels} input bands (select \
                 the bands it was trained on, in its band order)"
            ),
            actual: format!("{dims:?}"),
        });
    }
    if b == 0 || h == 0 || w == 0 {
        return Err(Error::Shape {
            context,
            expected: format!("(B, {channels}, H, W) with at least one image and one pixel"),
            actual: format!("{dims:?}"),
        });
    }
    Ok((b, c, h, w))
}

/// Zero-pads `x` `(B, C, H, W)` at the bottom and right to multiples of `multiple`; returns the
/// padded tensor and the original `(H, W)` for [`crop`].
pub(crate) fn pad_to_multiple(x: &Tensor, multiple: usize) -> Result<(Tensor, (usize, usize))> {
    let (_, _, h, w) = x.dims4()?;
    let ph = (multiple - h % multiple) % multiple;
    let pw = (multiple - w % multiple) % multiple;
    let mut y = x.clone();
    if ph > 0 {
        y = y.pad_with_zeros(2, 0, ph)?;
    }
    if pw > 0 {
        y = y.pad_with_zeros(3, 0, pw)?;
    }
    Ok((y, (h, w)))
}

/// The top-left `(h, w)` of `x` `(B, C, H, W)`.
pub(crate) fn crop(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (_, _, hh, ww) = x.dims4()?;
    let mut y = x.clone();
    if hh != h {
        y = y.narrow(2, 0, h)?;
    }
    if ww != w {
        y = y.narrow(3, 0, w)?;
    }
    Ok(y)
}

/// 2x2 max-pooling with stride 2 (`F.max_pool2d(x, 2)`).
pub(crate) fn max_pool2(x: &Tensor) -> Result<Tensor> {
    Ok(max_pool2d(x, PoolAxis::new(2), PoolAxis::new(2), false)?)
}

/// A `torch.nn.Conv2d` with square kernel, stride and padding (`weight (C_out, C_in, K, K)`,
/// optional `bias (C_out,)`), PyTorch's default initialisation, canopy-nn's convolution.
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = pytorch_uniform(c_in * kernel * kernel);
        Conv2d::with_init(
            (c_in, c_out, kernel),
            (stride, padding),
            init,
            bias.then_some(init),
            vb,
        )
    }

    /// A convolution with explicit initialisers for the weight and the bias (for the models
    /// whose reference re-initialises PyTorch's default, e.g. torchvision's ResNet).
    pub(crate) fn with_init(
        (c_in, c_out, kernel): (usize, usize, usize),
        (stride, padding): (usize, usize),
        weight_init: candle_nn::Init,
        bias_init: Option<candle_nn::Init>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", weight_init)?;
        let bias = match bias_init {
            Some(init) => Some(vb.get_with_hints(c_out, "bias", init)?),
            None => None,
        };
        let axis = Axis1 {
            stride,
            padding,
            dilation: 1,
        };
        Ok(Conv2d {
            weight,
            bias,
            cfg: Conv2dConfig {
                h: axis,
                w: axis,
                groups: 1,
            },
        })
    }

    /// A 3x3 convolution with padding 1 (same size).
    pub(crate) fn same3(c_in: usize, c_out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Conv2d::new(c_in, c_out, 3, 1, 1, bias, vb)
    }

    /// A 1x1 convolution with bias.
    pub(crate) fn pointwise(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Conv2d::new(c_in, c_out, 1, 1, 0, true, vb)
    }

    /// # Shapes
    /// `(B, C_in, H, W)` -> `(B, C_out, H_out, W_out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d(x, &self.weight, self.bias.as_ref(), self.cfg)?)
    }

    /// `relu(bn(forward(x)))`. In evaluation on the CPU (f32/f64) the norm folds into the
    /// convolution — weight scaled per output channel, bias `scale·b + shift`
    /// ([`BatchNorm::eval_scale_shift`]) — and the bias and ReLU are applied by the kernel as it
    /// stores its outputs: one pass instead of a convolution and a normalisation pass. Training
    /// (batch statistics) runs the convolution, then the fused batch-norm kernel.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub(crate) fn forward_bn_relu(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_bn(x, bn, train, true)
    }

    /// `bn(forward(x))`, then a ReLU when `relu`: [`forward_bn_relu`](Self::forward_bn_relu)
    /// with the activation optional.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub(crate) fn forward_bn(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
        relu: bool,
    ) -> Result<Tensor> {
        let dt = x.dtype();
        let foldable = !train
            && x.device().is_cpu()
            && matches!(dt, DType::F32 | DType::F64)
            && bn.channels() == self.weight.dim(0)?;
        if !foldable {
            return Ok(bn.forward_fused_t(&self.forward(x)?, train, relu)?);
        }
        let (scale, shift) = bn.eval_scale_shift(dt)?;
        let weight = self.weight.to_dtype(dt)?.broadcast_mul(&scale.reshape((
            scale.elem_count(),
            1,
            1,
            1,
        ))?)?;
        let bias = match &self.bias {
            Some(b) => (shift + (&scale * b.to_dtype(dt)?)?)?,
            None => shift,
        };
        Ok(conv2d_act(x, &weight, Some(&bias), self.cfg, relu)?)
    }

    /// `relu(forward(x))`, the bias and the ReLU applied by the convolution kernel as it
    /// stores its outputs ([`canopy_nn::ops::conv2d_act`]).
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub(crate) fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d_act(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.cfg,
            true,
        )?)
    }
}

/// A `torch.nn.ConvTranspose2d` with square kernel (`weight (C_in, C_out, K, K)`, `bias
/// (C_out,)`), PyTorch's default initialisation (fan-in taken from `C_out * K * K`, as
/// PyTorch computes it from the weight's second dimension).
#[derive(Debug, Clone)]
pub(crate) struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    axis: TransposeAxis,
}

impl ConvTranspose2d {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        axis: TransposeAxis,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = pytorch_uniform(c_out * kernel * kernel);
        Ok(ConvTranspose2d {
            weight: vb.get_with_hints((c_in, c_out, kernel, kernel), "weight", init)?,
            bias: vb.get_with_hints(c_out, "bias", init)?,
            axis,
        })
    }

    /// Overwrites the weight with per-channel bilinear interpolation kernels (channel `i` to
    /// channel `i`, zero elsewhere) and the bias with zeros: the initialisation of FCN-style
    /// learned upsampling (Long et al. 2015). Needs `C_in == C_out`.
    pub(crate) fn init_bilinear(&self) -> Result<()> {
        let (c_in, c_out, k, _) = self.weight.dims4()?;
        if c_in != c_out {
            return Err(Error::Config {
                context: "ConvTranspose2d::init_bilinear",
                message: format!("needs as many input as output channels, got {c_in} -> {c_out}"),
            });
        }
        let kernel = bilinear_kernel(k);
        let mut w = vec![0f64; c_in * c_out * k * k];
        for c in 0..c_in {
            let base = (c * c_out + c) * k * k;
            w[base..base + k * k].copy_from_slice(&kernel);
        }
        let weight = Tensor::from_vec(w, self.weight.shape(), self.weight.device())?
            .to_dtype(self.weight.dtype())?;
        Var::from_tensor(&self.weight)?.set(&weight)?;
        Var::from_tensor(&self.bias)?.set(&self.bias.zeros_like()?)?;
        Ok(())
    }

    /// # Shapes
    /// `(B, C_in, H, W)` -> `(B, C_out, H_out, W_out)`,
    /// `H_out = (H - 1) s - 2p + K + output_padding`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv_transpose2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.axis,
            self.axis,
            1,
        )?)
    }
}

/// The `k x k` bilinear interpolation kernel, row-major: the outer product of
/// `1 - |i - c| / f` with `f = ceil(k / 2)` and `c` the kernel centre. With stride `f` the
/// overlapping copies sum to one, so a constant map stays constant away from the borders.
pub(crate) fn bilinear_kernel(k: usize) -> Vec<f64> {
    let f = k.div_ceil(2) as f64;
    let c = if k % 2 == 1 { f - 1.0 } else { f - 0.5 };
    let line: Vec<f64> = (0..k).map(|i| 1.0 - (i as f64 - c).abs() / f).collect();
    let mut out = Vec::with_capacity(k * k);
    for a in &line {
        for b in &line {
            out.push(a * b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_kernel_matches_fcn_upsampling_filter() {
        // k = 4 (factor 2): 1D weights 0.25, 0.75, 0.75, 0.25
        let k = bilinear_kernel(4);
        let line = [0.25, 0.75, 0.75, 0.25];
        for (i, a) in line.iter().enumerate() {
            for (j, b) in line.iter().enumerate() {
                assert!((k[i * 4 + j] - a * b).abs() < 1e-12);
            }
        }
        // k = 3 (factor 2, odd): 0.5, 1, 0.5
        let k3 = bilinear_kernel(3);
        assert!((k3[4] - 1.0).abs() < 1e-12 && (k3[0] - 0.25).abs() < 1e-12);
    }
}
