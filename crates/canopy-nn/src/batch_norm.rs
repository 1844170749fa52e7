//! Batch normalisation (`torch.nn.BatchNorm1d/2d`) with PyTorch's parameter and buffer names
//! (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`) and training-mode
//! statistics: the batch is normalised with its biased variance, the running variance is
//! updated with the unbiased one, `running = (1 - momentum) running + momentum batch`.
//!
//! The running buffers live in the variable store (updated in place), so a checkpoint saved
//! after training holds them — candle's `BatchNorm` keeps them in private copies.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::error::{invalid, shape};
use crate::Result;

/// `BatchNorm1d` (`(N, C)` or `(N, C, L)`) and `BatchNorm2d` (`(N, C, H, W)`) in one type.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    eps: f64,
    momentum: f64,
    channels: usize,
}

impl BatchNorm {
    /// `channels` features, PyTorch defaults `eps = 1e-5`, `momentum = 0.1`.
    ///
    /// # Errors
    /// When `channels` is zero or variables cannot be created.
    pub fn new(channels: usize, eps: f64, momentum: f64, vb: VarBuilder) -> Result<Self> {
        if channels == 0 || !(0.0..=1.0).contains(&momentum) {
            return Err(invalid(
                "BatchNorm",
                format!("channels {channels} > 0 and momentum {momentum} in [0, 1] required"),
            ));
        }
        let var = |t: Tensor| -> Result<Var> { Ok(Var::from_tensor(&t)?) };
        Ok(BatchNorm {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: var(vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?,
            running_var: var(vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?,
            num_batches_tracked: var(vb.get_with_hints(
                (),
                "num_batches_tracked",
                Init::Const(0.0),
            )?)?,
            eps,
            momentum,
            channels,
        })
    }

    /// The running mean and variance.
    pub fn running_stats(&self) -> (&Tensor, &Tensor) {
        (self.running_mean.as_tensor(), self.running_var.as_tensor())
    }

    /// Normalises `x`; in training with the batch's statistics (and updates the running ones),
    /// in evaluation with the running statistics.
    ///
    /// # Shapes
    /// `(N, C)`, `(N, C, L)` or `(N, C, H, W)`, unchanged.
    ///
    /// # Errors
    /// Shape errors; a training batch of a single value per channel.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 || dims.len() > 4 || dims[1] != self.channels {
            return Err(shape(
                "BatchNorm",
                format!("(N, {}, ...) with 2 to 4 dimensions", self.channels),
                &dims,
            ));
        }
        let mut bshape = vec![1usize; dims.len()];
        bshape[1] = self.channels;
        // (N, C, ...) -> (C, N * ...)
        let flat = x
            .transpose(0, 1)?
            .contiguous()?
            .reshape((self.channels, ()))?;
        let (mean, var) = if train {
            let n = flat.dim(1)?;
            if n < 2 {
                return Err(invalid(
                    "BatchNorm",
                    "training needs more than one value per channel",
                ));
            }
            let mean = flat.mean_keepdim(1)?; // (C, 1)
            let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?; // biased
            let m = self.momentum;
            let unbiased = (var.detach() * (n as f64 / (n as f64 - 1.0)))?.squeeze(1)?;
            let dt = self.running_mean.dtype();
            let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))?
                + (mean.detach().squeeze(1)?.to_dtype(dt)? * m)?)?;
            let new_var =
                ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased.to_dtype(dt)? * m)?)?;
            self.running_mean.set(&new_mean)?;
            self.running_var.set(&new_var)?;
            self.num_batches_tracked
                .set(&(self.num_batches_tracked.as_tensor() + 1.0)?)?;
            (mean.reshape(bshape.clone())?, var.reshape(bshape.clone())?)
        } else {
            (
                self.running_mean
                    .as_tensor()
                    .to_dtype(x.dtype())?
                    .reshape(bshape.clone())?,
                self.running_var
                    .as_tensor()
                    .to_dtype(x.dtype())?
                    .reshape(bshape.clone())?,
            )
        };
        let y = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(y.broadcast_mul(&self.weight.reshape(bshape.clone())?)?
            .broadcast_add(&self.bias.reshape(bshape)?)?)
    }

    /// Normalises `(N, C, H, W)` (or `(N, C, ...)`) like [`BatchNorm::forward_t`] and, with
    /// `relu`, applies a ReLU, in one op: in training the fused
    /// [`batch_norm_train`](crate::ops::batch_norm_train) kernel (statistics, normalisation,
    /// ReLU and the whole backward pass in parallel passes over the data), in evaluation the
    /// running statistics folded into a per-channel scale and shift for
    /// [`scale_shift`](crate::ops::scale_shift). The same values as `forward_t` (then `relu`),
    /// without the transposed copy and the element-wise temporaries — several times faster on
    /// image batches.
    ///
    /// # Shapes
    /// `(N, C, ...)` with 3 or 4 dimensions, unchanged.
    ///
    /// # Errors
    /// Shape errors; a training batch of a single value per channel; non-CPU tensors.
    pub fn forward_fused_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 3 || dims.len() > 4 || dims[1] != self.channels {
            return Err(shape(
                "BatchNorm",
                format!("(N, {}, ...) with 3 or 4 dimensions", self.channels),
                &dims,
            ));
        }
        let dt = x.dtype();
        if !train {
            let (scale, shift) = self.eval_scale_shift(dt)?;
            return crate::ops::scale_shift(x, &scale, &shift, relu);
        }
        let n = x.elem_count() / self.channels;
        if n < 2 {
            return Err(invalid(
                "BatchNorm",
                "training needs more than one value per channel",
            ));
        }
        let (y, mean, var) =
            crate::ops::batch_norm_train(x, &self.weight, &self.bias, self.eps, relu)?;
        let m = self.momentum;
        let st = self.running_mean.dtype();
        let unbiased = (var * (n as f64 / (n as f64 - 1.0)))?.to_dtype(st)?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.to_dtype(st)? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        self.num_batches_tracked
            .set(&(self.num_batches_tracked.as_tensor() + 1.0)?)?;
        Ok(y)
    }

    /// The evaluation-mode normalisation as a per-channel affine map `y = scale·x + shift`:
    /// `scale = γ / sqrt(σ²_running + eps)`, `shift = β - μ_running·scale`, both `(C,)` in
    /// `dtype`, computed with candle ops on the parameters (so gradients reach `γ` and `β`).
    /// A convolution followed by this norm folds into one convolution with its weight scaled per
    /// output channel and `scale·bias + shift` as bias (see
    /// [`conv2d_act`](crate::ops::conv2d_act)).
    ///
    /// # Errors
    /// On backend failures.
    pub fn eval_scale_shift(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        let mean = self.running_mean.as_tensor().to_dtype(dtype)?;
        let var = self.running_var.as_tensor().to_dtype(dtype)?;
        let scale = (self.weight.to_dtype(dtype)? / (var + self.eps)?.sqrt()?)?;
        let shift = (self.bias.to_dtype(dtype)? - (mean * &scale)?)?;
        Ok((scale, shift))
    }

    /// The number of channels (features) normalised.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The number of training batches seen.
    ///
    /// # Errors
    /// On backend failures.
    pub fn batches_tracked(&self) -> Result<u64> {
        Ok(self
            .num_batches_tracked
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()? as u64)
    }
}
