//! Layers shared by the models: `Conv2d`, `ConvTranspose2d` and `BatchNorm2d` with PyTorch's
//! variable names and default initialisation, padding to a multiple of the model's stride and
//! the input check.

use candle_core::{Tensor, Var};
use candle_nn::{Init, VarBuilder};
use canopy_nn::ops::{
    conv2d, conv_transpose2d, max_pool2d, scale_shift, Axis1, Conv2dConfig, PoolAxis, TransposeAxis,
};
use canopy_nn::pytorch_uniform;

use crate::{Error, Result};

/// PyTorch's `BatchNorm2d` defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

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
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(c_out, "bias", init)?)
        } else {
            None
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

/// `torch.nn.BatchNorm2d(channels)` (eps 1e-5, momentum 0.1), variables `weight`, `bias`,
/// `running_mean`, `running_var`, `num_batches_tracked`. The statistics are per-channel
/// reductions over the batch and both spatial axes (no transposed copy of the input); training
/// normalises with the biased batch variance and updates the running variance with the
/// unbiased one, as PyTorch does.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    channels: usize,
}

impl BatchNorm2d {
    pub(crate) fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        // `Var::from_tensor` of a variable shares it, so updates land in the caller's store
        let var = |t: Tensor| -> Result<Var> { Ok(Var::from_tensor(&t)?) };
        Ok(BatchNorm2d {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: var(vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?,
            running_var: var(vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?,
            num_batches_tracked: var(vb.get_with_hints(
                (),
                "num_batches_tracked",
                Init::Const(0.0),
            )?)?,
            channels,
        })
    }

    /// Normalises `x` and, with `relu`, applies a ReLU in the same pass (canopy-nn's fused
    /// [`scale_shift`]: the batch or running statistics are folded into a per-channel scale and
    /// shift).
    ///
    /// # Shapes
    /// `(B, C, H, W)`, unchanged.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.channels {
            return Err(Error::Shape {
                context: "BatchNorm2d",
                expected: format!("(B, {}, H, W)", self.channels),
                actual: format!("{:?}", x.dims()),
            });
        }
        let dt = x.dtype();
        let weight = self.weight.to_dtype(dt)?;
        let bias = self.bias.to_dtype(dt)?;
        let (mean, var) = if train {
            let n = b * h * w;
            if n < 2 {
                return Err(Error::Shape {
                    context: "BatchNorm2d",
                    expected: "more than one value per channel in training (B * H * W > 1)".into(),
                    actual: format!("{:?}", x.dims()),
                });
            }
            let channel_sum = |t: &Tensor| -> Result<Tensor> {
                Ok(t.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)?)
            };
            let mean = (channel_sum(x)? / n as f64)?;
            let var = (channel_sum(&x.broadcast_sub(&mean)?.sqr()?)? / n as f64)?;
            let (mean, var) = (mean.flatten_all()?, var.flatten_all()?);
            // running statistics, outside the graph
            let m = BN_MOMENTUM;
            let st = self.running_mean.dtype();
            let batch_mean = mean.detach().to_dtype(st)?;
            let unbiased = (var.detach() * (n as f64 / (n as f64 - 1.0)))?.to_dtype(st)?;
            self.running_mean
                .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (batch_mean * m)?)?)?;
            self.running_var
                .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            self.num_batches_tracked
                .set(&(self.num_batches_tracked.as_tensor() + 1.0)?)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().to_dtype(dt)?,
                self.running_var.as_tensor().to_dtype(dt)?,
            )
        };
        let scale = (weight / (var + BN_EPS)?.sqrt()?)?;
        let shift = (bias - (mean * &scale)?)?;
        Ok(scale_shift(x, &scale, &shift, relu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};

    #[test]
    fn training_batch_norm_is_the_batch_formula_with_exact_gradients() {
        let vm = canopy_nn::SeededVarMap::new(3);
        let bn = BatchNorm2d::new(3, vm.var_builder(DType::F64, &Device::Cpu)).unwrap();
        let x = random_f64(&[2, 3, 4, 5], 7, &Device::Cpu).unwrap();
        for relu in [false, true] {
            let y = bn.forward_t(&x, true, relu).unwrap();
            let mean = x
                .mean_keepdim(3)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(0)
                .unwrap();
            let c = x.broadcast_sub(&mean).unwrap();
            let var = c
                .sqr()
                .unwrap()
                .mean_keepdim(3)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(0)
                .unwrap();
            let mut want = c
                .broadcast_div(&(var + BN_EPS).unwrap().sqrt().unwrap())
                .unwrap();
            if relu {
                want = want.relu().unwrap();
            }
            let d = (y - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
            check_gradients(
                |t| {
                    bn.forward_t(&t[0], true, relu)
                        .map_err(|e| canopy_nn::Error::InvalidArgument {
                            op: "bn",
                            message: e.to_string(),
                        })
                },
                std::slice::from_ref(&x),
                GradCheckConfig::default(),
            )
            .unwrap();
        }
        // running statistics moved towards the batch's
        let rm: Vec<f64> = bn.running_mean.as_tensor().to_vec1().unwrap();
        assert!(rm.iter().any(|v| v.abs() > 1e-6));
    }

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
