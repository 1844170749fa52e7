//! Layers shared by the convolutional classifiers (TempCNN, MS-ResNet, InceptionTime): a
//! `Conv1d` with PyTorch's names, a `BatchNorm1d` with a fast per-channel path, a padded
//! max-pool of window 3, and the input check.
//!
//! [`BatchNorm1d`] computes what `canopy_nn::batch_norm::BatchNorm` computes, with the same
//! variable names and initial values, but without transposing the input: in evaluation it is
//! one multiply-add with per-channel constants, in training the statistics are reductions over
//! the batch and time axes. At the BreizhCrops benchmark shapes this is about 6x faster than
//! canopy-nn's general layer, which dominated the models' run time.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use canopy_nn::ops::{conv1d, conv1d_act, max_pool1d, Axis1, Conv1dConfig, PoolAxis};
use canopy_nn::pytorch_uniform;

use crate::{Error, Result};

/// PyTorch's `BatchNorm1d` defaults.
pub(crate) const BN_EPS: f64 = 1e-5;
pub(crate) const BN_MOMENTUM: f64 = 0.1;

/// Checks that `x` is a `(B, T, C)` series with `input_dim` bands (and `length` steps when the
/// model needs a fixed length); returns `(B, T, C)`. Shared by every model of the crate.
pub(crate) fn check_series(
    model: &'static str,
    x: &Tensor,
    input_dim: usize,
    length: Option<usize>,
) -> Result<(usize, usize, usize)> {
    let dims = x.dims();
    let expected = match length {
        Some(t) => format!("a series (B, {t}, {input_dim})"),
        None => format!("a series (B, T, {input_dim})"),
    };
    let (b, t, c) = match *dims {
        [b, t, c] => (b, t, c),
        _ => {
            return Err(Error::Shape {
                model,
                expected: format!(
                    "{expected}: batch, time, bands (add a batch dimension with unsqueeze(0))"
                ),
                actual: format!("{dims:?}"),
            })
        }
    };
    if c != input_dim {
        return Err(Error::Shape {
            model,
            expected: format!(
                "{expected}: the model was configured for {input_dim} bands (time must be dimension 1, bands dimension 2)"
            ),
            actual: format!("{dims:?}"),
        });
    }
    if let Some(len) = length {
        if t != len {
            return Err(Error::Shape {
                model,
                expected: format!(
                    "{expected}: the model was configured for series of {len} steps (resample the series or build the model with sequencelength = {t})"
                ),
                actual: format!("{dims:?}"),
            });
        }
    }
    if b == 0 || t == 0 {
        return Err(Error::Shape {
            model,
            expected: format!("{expected} with at least one sample and one step"),
            actual: format!("{dims:?}"),
        });
    }
    Ok((b, t, c))
}

/// A `torch.nn.Conv1d` layer (`weight (C_out, C_in, K)`, optional `bias (C_out,)`, PyTorch's
/// default initialisation) running canopy-nn's convolution.
#[derive(Debug, Clone)]
pub(crate) struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv1dConfig,
}

impl Conv1d {
    /// `Conv1d(c_in, c_out, kernel, stride, padding, bias)` with variables `weight` and `bias`.
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = pytorch_uniform(c_in * kernel);
        let weight = vb.get_with_hints((c_out, c_in, kernel), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(c_out, "bias", init)?)
        } else {
            None
        };
        Ok(Conv1d {
            weight,
            bias,
            cfg: Conv1dConfig {
                axis: Axis1 {
                    stride,
                    padding,
                    dilation: 1,
                },
                groups: 1,
            },
        })
    }

    /// # Shapes
    /// `(B, C_in, L)` -> `(B, C_out, L_out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv1d(x, &self.weight, self.bias.as_ref(), self.cfg)?)
    }
}

/// `torch.nn.BatchNorm1d(channels)` (eps 1e-5, momentum 0.1) for `(N, C)` and `(N, C, L)`
/// inputs, variables `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
/// Training normalises with the batch's biased variance and updates the running variance with
/// the unbiased one, as PyTorch does.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    channels: usize,
}

impl BatchNorm1d {
    pub(crate) fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        // `Var::from_tensor` of a variable shares it, so updates land in the caller's store
        let var = |t: Tensor| -> Result<Var> { Ok(Var::from_tensor(&t)?) };
        Ok(BatchNorm1d {
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

    /// # Shapes
    /// `(N, C)` or `(N, C, L)`, unchanged.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act_t(x, train, false)
    }

    /// `self(conv(x))`, then a ReLU when `relu`. In evaluation on the CPU the batch norm folds
    /// into the convolution: with `scale = γ / sqrt(σ² + eps)` and `shift = β - μ·scale`,
    /// `scale·(Wx + b) + shift = (scale·W)x + (scale·b + shift)`, so one
    /// [`canopy_nn::ops::conv1d_act`] computes the layer with the bias and the ReLU applied as
    /// the outputs are stored (the scaled weight and bias are formed on the small parameter
    /// tensors, so gradients still reach `W`, `b`, `γ` and `β`). That saves a read and a write
    /// of the whole activation per layer. Training (batch statistics) runs `conv` then the norm.
    ///
    /// # Shapes
    /// `(N, C_in, L)` -> `(N, C, L_out)`.
    pub(crate) fn forward_conv_act_t(
        &self,
        conv: &Conv1d,
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> Result<Tensor> {
        let dt = x.dtype();
        let foldable = !train
            && x.rank() == 3
            && x.device().is_cpu()
            && matches!(dt, DType::F32 | DType::F64)
            && conv.weight.dim(0)? == self.channels;
        if !foldable {
            return self.forward_act_t(&conv.forward(x)?, train, relu);
        }
        let (scale, shift) = self.eval_affine(dt)?;
        let weight =
            conv.weight
                .to_dtype(dt)?
                .broadcast_mul(&scale.reshape((self.channels, 1, 1))?)?;
        let bias = match &conv.bias {
            Some(b) => (shift + (&scale * b.to_dtype(dt)?)?)?,
            None => shift,
        };
        Ok(conv1d_act(x, &weight, Some(&bias), conv.cfg, relu)?)
    }

    fn eval_affine(&self, dt: DType) -> Result<(Tensor, Tensor)> {
        let (w, b) = (self.weight.to_dtype(dt)?, self.bias.to_dtype(dt)?);
        let rm = self.running_mean.as_tensor().to_dtype(dt)?;
        let rv = self.running_var.as_tensor().to_dtype(dt)?;
        let scale = (&w / (rv + BN_EPS)?.sqrt()?)?;
        let shift = (&b - (rm * &scale)?)?;
        Ok((scale, shift))
    }

    /// [`forward_t`](Self::forward_t), then a ReLU when `relu`. `(N, C, L)` inputs on the CPU in
    /// f32/f64 take canopy-nn's fused kernels (`batch_norm_train` in training: statistics,
    /// normalisation, ReLU and the backward pass in parallel passes; `scale_shift` in
    /// evaluation), the same values as the composed path below in a fraction of its time.
    ///
    /// # Shapes
    /// `(N, C)` or `(N, C, L)`, unchanged.
    pub(crate) fn forward_act_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let fused = x.rank() == 3
            && x.dim(1)? == self.channels
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64);
        if fused {
            return self.forward_fused(x, train, relu);
        }
        let y = self.forward_composed(x, train)?;
        Ok(if relu { canopy_nn::ops::relu(&y)? } else { y })
    }

    fn forward_fused(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dt = x.dtype();
        if !train {
            let (scale, shift) = self.eval_affine(dt)?;
            return Ok(canopy_nn::ops::scale_shift(x, &scale, &shift, relu)?);
        }
        let (w, b) = (self.weight.to_dtype(dt)?, self.bias.to_dtype(dt)?);
        let n = x.elem_count() / self.channels;
        if n < 2 {
            return Err(Error::Shape {
                model: "BatchNorm1d",
                expected: "more than one value per channel in training".into(),
                actual: format!("{:?}", x.dims()),
            });
        }
        let (y, mean, var) = canopy_nn::ops::batch_norm_train(x, &w, &b, BN_EPS, relu)?;
        self.update_running(&mean, &var, n)?;
        Ok(y)
    }

    /// Running statistics after a training batch of `n` values per channel with batch mean
    /// `mean` and biased variance `var` (`(C,)` or any shape with `C` values).
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = BN_MOMENTUM;
        let rdt = self.running_mean.dtype();
        let flat = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().flatten_all()?.to_dtype(rdt)?) };
        let unbiased = (flat(var)? * (n as f64 / (n as f64 - 1.0)))?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (flat(mean)? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        let nbt = self.num_batches_tracked.as_tensor();
        self.num_batches_tracked
            .set(&(nbt.to_dtype(DType::F64)? + 1.0)?.to_dtype(nbt.dtype())?)?;
        Ok(())
    }

    /// The batch norm composed from candle ops (any rank, device and dtype).
    fn forward_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        let per_channel: Vec<usize> = match *dims {
            [_, c] if c == self.channels => vec![1, c],
            [_, c, _] if c == self.channels => vec![1, c, 1],
            _ => {
                return Err(Error::Shape {
                    model: "BatchNorm1d",
                    expected: format!("(N, {c}) or (N, {c}, L)", c = self.channels),
                    actual: format!("{dims:?}"),
                })
            }
        };
        let dt = x.dtype();
        let weight = self.weight.to_dtype(dt)?.reshape(per_channel.clone())?;
        let bias = self.bias.to_dtype(dt)?.reshape(per_channel.clone())?;
        if !train {
            let rm = self
                .running_mean
                .as_tensor()
                .to_dtype(dt)?
                .reshape(per_channel.clone())?;
            let rv = self
                .running_var
                .as_tensor()
                .to_dtype(dt)?
                .reshape(per_channel)?;
            let scale = weight.broadcast_div(&(rv + BN_EPS)?.sqrt()?)?; // (1, C, 1)
            let shift = (bias - rm.broadcast_mul(&scale)?)?;
            return Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?);
        }
        let n = x.elem_count() / self.channels;
        if n < 2 {
            return Err(Error::Shape {
                model: "BatchNorm1d",
                expected: "more than one value per channel in training".into(),
                actual: format!("{dims:?}"),
            });
        }
        let sum_stats = |t: &Tensor| -> Result<Tensor> {
            let s = if t.rank() == 3 {
                t.sum_keepdim(2)?
            } else {
                t.clone()
            };
            Ok((s.sum_keepdim(0)? / n as f64)?)
        };
        let mean = sum_stats(x)?; // (1, C[, 1])
        let xc = x.broadcast_sub(&mean)?;
        let var = sum_stats(&xc.sqr()?)?; // biased
        let scale = weight.broadcast_div(&(&var + BN_EPS)?.sqrt()?)?;
        let y = xc.broadcast_mul(&scale)?.broadcast_add(&bias)?;
        self.update_running(&mean, &var, n)?;
        Ok(y)
    }
}

/// `nn.MaxPool1d(3, stride, padding=1)` (canopy-nn's fused max-pool).
///
/// # Shapes
/// `(B, C, L)` -> `(B, C, L)` for stride 1, `(B, C, ceil(L / 2))` for stride 2.
pub(crate) fn max_pool3(x: &Tensor, stride: usize) -> Result<Tensor> {
    let window = PoolAxis {
        kernel: 3,
        stride,
        padding: 1,
    };
    Ok(max_pool1d(x, window, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use canopy_nn::batch_norm::BatchNorm;
    use canopy_nn::SeededVarMap;

    fn diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f64>())
            .unwrap_or(f64::INFINITY)
    }

    #[test]
    fn batch_norm_equals_canopy_nn_in_training_and_evaluation() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for dims in [vec![5, 3, 7], vec![6, 3]] {
            let (ours_store, ref_store) = (SeededVarMap::new(0), SeededVarMap::new(0));
            let ours = BatchNorm1d::new(3, ours_store.var_builder(DType::F64, &dev))?;
            let theirs = BatchNorm::new(3, 1e-5, 0.1, ref_store.var_builder(DType::F64, &dev))?;
            // identical, non-trivial parameters in both stores
            let mut t = std::collections::HashMap::new();
            t.insert(
                "weight".to_string(),
                Tensor::new(&[0.7f64, 1.3, -0.4], &dev)?,
            );
            t.insert("bias".to_string(), Tensor::new(&[0.1f64, -0.2, 0.3], &dev)?);
            ours_store.load(&t)?;
            ref_store.load(&t)?;
            let x = Var::from_tensor(&(Tensor::randn(0.5f64, 2.0, dims.clone(), &dev)?))?;
            for _ in 0..2 {
                let a = ours.forward_t(x.as_tensor(), true)?;
                let b = theirs.forward_t(x.as_tensor(), true)?;
                assert!(diff(&a, &b) < 1e-12, "{dims:?} train");
                let r = Tensor::randn(0f64, 1.0, dims.clone(), &dev)?;
                let ga = (&a * &r)?.sum_all()?.backward()?;
                let gb = (&b * &r)?.sum_all()?.backward()?;
                let (ga, gb) = (ga.get(x.as_tensor()), gb.get(x.as_tensor()));
                assert!(
                    matches!((ga, gb), (Some(p), Some(q)) if diff(p, q) < 1e-10),
                    "{dims:?} grad"
                );
            }
            let (m, v) = theirs.running_stats();
            assert!(diff(ours.running_mean.as_tensor(), m) < 1e-12);
            assert!(diff(ours.running_var.as_tensor(), v) < 1e-12);
            let a = ours.forward_t(x.as_tensor(), false)?;
            let b = theirs.forward_t(x.as_tensor(), false)?;
            assert!(diff(&a, &b) < 1e-12, "{dims:?} eval");
        }
        Ok(())
    }

    /// Convolution + batch norm (+ ReLU) folded into one convolution (evaluation) equals the
    /// convolution followed by the batch norm: values and gradients of the input, the conv
    /// weight and bias and the norm's affine parameters, after training passes left
    /// non-trivial running statistics, on the direct, Winograd and strided 1x1 kernels.
    #[test]
    fn conv_bias_folded_into_the_batch_norm_equals_the_two_layers() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        // (C_in, C_out, K, stride, padding, conv bias, ReLU): the direct kernels, the Winograd
        // kernels (64 channels, stride 1) and a strided 1x1 shortcut (MS-ResNet's downsample)
        let cases = [
            (3, 4, 3, 1, 1, true, true),
            (64, 64, 3, 1, 1, false, false),
            (64, 72, 7, 1, 1, true, true),
            (5, 16, 1, 2, 0, false, false),
            (4, 6, 7, 2, 3, false, true),
        ];
        for (seed, &(ci, co, k, s, p, with_bias, relu)) in cases.iter().enumerate() {
            let case = format!("{ci}->{co} k{k} s{s} p{p} bias {with_bias} relu {relu}");
            let store = SeededVarMap::new(seed as u64);
            let vb = store.var_builder(DType::F64, &dev);
            let conv = Conv1d::new(ci, co, k, s, p, with_bias, vb.pp("c"))?;
            let bn = BatchNorm1d::new(co, vb.pp("n"))?;
            let x = Var::from_tensor(&Tensor::randn(0.3f64, 1.5, (5, ci, 11), &dev)?)?;
            for _ in 0..3 {
                bn.forward_conv_act_t(&conv, x.as_tensor(), true, relu)?;
            }
            assert!(diff(bn.running_mean.as_tensor(), &bn.running_mean.zeros_like()?) > 1e-3);
            let a = bn.forward_conv_act_t(&conv, x.as_tensor(), false, relu)?;
            let b = bn.forward_act_t(&conv.forward(x.as_tensor())?, false, relu)?;
            assert!(diff(&a, &b) < 1e-10, "{case}");
            if relu {
                assert!(
                    a.min_all()?.to_scalar::<f64>()? == 0.0,
                    "{case}: nothing cut"
                );
            }
            let r = Tensor::randn(0f64, 1.0, a.dims(), &dev)?;
            let ga = (&a * &r)?.sum_all()?.backward()?;
            let gb = (&b * &r)?.sum_all()?.backward()?;
            let mut params = vec![x.as_tensor(), &conv.weight, &bn.weight, &bn.bias];
            params.extend(conv.bias.as_ref());
            for p in params {
                match (ga.get(p), gb.get(p)) {
                    (Some(u), Some(v)) => assert!(diff(u, v) < 1e-10, "{case} {:?}", p.dims()),
                    _ => panic!("{case}: a gradient is missing for {:?}", p.dims()),
                }
            }
        }
        Ok(())
    }

    /// The fused path with ReLU equals the composed batch norm followed by a ReLU, values,
    /// input and parameter gradients and running statistics.
    #[test]
    fn fused_batch_norm_relu_equals_the_composed_path() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let (fs, cs) = (SeededVarMap::new(1), SeededVarMap::new(1));
        let fused = BatchNorm1d::new(4, fs.var_builder(DType::F64, &dev))?;
        let composed = BatchNorm1d::new(4, cs.var_builder(DType::F64, &dev))?;
        let mut t = std::collections::HashMap::new();
        t.insert(
            "weight".to_string(),
            Tensor::new(&[0.7f64, 1.3, -0.4, 2.0], &dev)?,
        );
        t.insert(
            "bias".to_string(),
            Tensor::new(&[0.1f64, -0.2, 0.3, 0.0], &dev)?,
        );
        fs.load(&t)?;
        cs.load(&t)?;
        let x = Var::from_tensor(&Tensor::randn(0.3f64, 1.5, (6, 4, 9), &dev)?)?;
        for train in [true, true, false] {
            let a = fused.forward_act_t(x.as_tensor(), train, true)?;
            let b = canopy_nn::ops::relu(&composed.forward_composed(x.as_tensor(), train)?)?;
            assert!(diff(&a, &b) < 1e-12, "train {train}");
            let r = Tensor::randn(0f64, 1.0, (6, 4, 9), &dev)?;
            let ga = (&a * &r)?.sum_all()?.backward()?;
            let gb = (&b * &r)?.sum_all()?.backward()?;
            let params = [&fused.weight, &fused.bias];
            let cparams = [&composed.weight, &composed.bias];
            for (p, q) in params.into_iter().zip(cparams) {
                match (ga.get(p), gb.get(q)) {
                    (Some(u), Some(v)) => assert!(diff(u, v) < 1e-10, "train {train}"),
                    (None, None) => assert!(!train),
                    _ => panic!("a parameter gradient is missing on one side (train {train})"),
                }
            }
            let (gx, gy) = (ga.get(x.as_tensor()), gb.get(x.as_tensor()));
            assert!(matches!((gx, gy), (Some(p), Some(q)) if diff(p, q) < 1e-10));
        }
        assert!(
            diff(
                fused.running_mean.as_tensor(),
                composed.running_mean.as_tensor()
            ) < 1e-12
        );
        assert!(
            diff(
                fused.running_var.as_tensor(),
                composed.running_var.as_tensor()
            ) < 1e-12
        );
        Ok(())
    }
}
