//! TempCNN: a stack of temporal convolutions over the whole series followed by a dense layer
//! (Pelletier et al. 2019), in the form the BreizhCrops benchmark uses.
//!
//! The network sees a series `(B, T, C)` as `C` channels along time and applies three blocks of
//! `Conv1d` (zero-padded to keep the length, "same") + `BatchNorm1d` + ReLU + dropout. The
//! `hidden_dims x T` feature map is flattened, so the model is tied to one series length, and
//! goes through a dense block (`Linear` + `BatchNorm1d` + ReLU + dropout, `4 * hidden_dims`
//! units) and a final `Linear` to the class logits.
//!
//! # Presets
//! - [`TempCnnConfig::breizhcrops`]: the BreizhCrops defaults (kernel 7, 128 filters, dense
//!   512, dropout 0.18203942949809093, found by their hyper-parameter search); 3,197,449
//!   parameters for 13 bands, 9 classes, `T = 45`.
//! - [`TempCnnConfig::pelletier2019`]: the architecture retained in the TempCNN paper (three
//!   convolutions of 64 filters of size 5, a dense layer of 256 units, dropout 0.5); 786,057
//!   parameters for 13 bands, 9 classes, `T = 45`. Only the layer sizes and dropout are the
//!   paper's: the original Keras code also used He-normal initialisation, an L2 penalty of
//!   1e-6 on every kernel (use the optimizer's weight decay) and Keras' batch-norm constants
//!   (`epsilon = 1e-3`, momentum 0.99) where this implementation keeps PyTorch's.
//!
//! # Weights
//! Variable names are the `state_dict` keys of BreizhCrops' `TempCNN`, so a checkpoint saved
//! with `safetensors.torch.save_file(model.state_dict(), path)` loads with
//! [`crate::load_state_dict`]:
//! `conv_bn_relu{1,2,3}.block.0.{weight,bias}` (convolutions), `conv_bn_relu{1,2,3}.block.1.*`
//! and `dense.block.1.*` (batch norms: `weight`, `bias`, `running_mean`, `running_var`,
//! `num_batches_tracked`), `dense.block.0.{weight,bias}`, `logsoftmax.0.{weight,bias}` (the
//! classifier; the name comes from the reference's `Sequential(Linear, LogSoftmax)`).
//!
//! # Differences from the reference
//! The reference returns log-probabilities; [`TempCnn`] returns the logits before the
//! `log_softmax`. Dropout masks come from the caller's seeded generator.
//!
//! # References
//! - C. Pelletier, G. I. Webb, F. Petitjean, "Temporal Convolutional Neural Network for the
//!   Classification of Satellite Image Time Series", Remote Sensing 11(5):523, 2019;
//!   code: <https://github.com/charlotte-pel/temporalCNN>.
//! - M. Rußwurm, C. Pelletier, M. Zollner, S. Lefèvre, M. Körner, "BreizhCrops: A Time Series
//!   Dataset for Crop Type Mapping", ISPRS Archives XLIII-B2, 2020; reference code
//!   `breizhcrops/models/TempCNN.py` at <https://github.com/dl4sits/BreizhCrops>.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use canopy_nn::{linear, Dropout, Linear};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::cnn_layers::{check_series, BatchNorm1d, Conv1d};
use crate::{Error, Result, SeriesClassifier};

const MODEL: &str = "TempCnn";

/// Hyper-parameters of [`TempCnn`], named like the arguments of BreizhCrops' `TempCNN`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempCnnConfig {
    /// Number of input bands `C`.
    pub input_dim: usize,
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Series length `T` the dense layer is built for.
    pub sequencelength: usize,
    /// Temporal kernel size of the convolutions (odd, so that padding keeps the length).
    pub kernel_size: usize,
    /// Filters per convolution; the dense layer has `4 * hidden_dims` units.
    pub hidden_dims: usize,
    /// Dropout probability after every block.
    pub dropout: f64,
}

impl Default for TempCnnConfig {
    /// The BreizhCrops defaults: 13 bands, 9 classes, 45 steps.
    fn default() -> Self {
        Self::breizhcrops(13, 9, 45)
    }
}

impl TempCnnConfig {
    /// BreizhCrops' defaults: kernel 7, 128 filters, dense 512, dropout 0.18203942949809093.
    pub fn breizhcrops(input_dim: usize, num_classes: usize, sequencelength: usize) -> Self {
        TempCnnConfig {
            input_dim,
            num_classes,
            sequencelength,
            kernel_size: 7,
            hidden_dims: 128,
            dropout: 0.18203942949809093,
        }
    }

    /// The architecture of Pelletier et al. (2019): kernel 5, 64 filters, dense 256,
    /// dropout 0.5 (see the module docs for what else the original training used).
    pub fn pelletier2019(input_dim: usize, num_classes: usize, sequencelength: usize) -> Self {
        TempCnnConfig {
            input_dim,
            num_classes,
            sequencelength,
            kernel_size: 5,
            hidden_dims: 64,
            dropout: 0.5,
        }
    }

    fn validate(&self) -> Result<()> {
        let err = |message: String| {
            Err(Error::Config {
                model: MODEL,
                message,
            })
        };
        if self.input_dim == 0 || self.num_classes == 0 || self.hidden_dims == 0 {
            return err(format!(
                "input_dim ({}), num_classes ({}) and hidden_dims ({}) must be positive",
                self.input_dim, self.num_classes, self.hidden_dims
            ));
        }
        if self.sequencelength == 0 {
            return err("sequencelength must be positive".into());
        }
        if self.kernel_size % 2 == 0 {
            return err(format!(
                "kernel_size {} must be odd: padding kernel_size / 2 keeps the length only for odd kernels",
                self.kernel_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// Convolution (or linear layer) + batch norm + ReLU + dropout, the reference's
/// `Conv1D_BatchNorm_Relu_Dropout` / `FC_BatchNorm_Relu_Dropout` (`block.0`, `block.1`).
#[derive(Debug, Clone)]
struct Block<L> {
    layer: L,
    bn: BatchNorm1d,
    dropout: Dropout,
}

impl<L> Block<L> {
    fn finish(&self, y: Tensor, train: bool, rng: &mut dyn RngCore) -> Result<Tensor> {
        let y = self.bn.forward_act_t(&y, train, true)?;
        Ok(self.dropout.forward_t(&y, train, rng)?)
    }
}

/// TempCNN (see the module docs).
#[derive(Debug, Clone)]
pub struct TempCnn {
    convs: [Block<Conv1d>; 3],
    dense: Block<Linear>,
    classifier: Linear,
    cfg: TempCnnConfig,
}

impl TempCnn {
    /// Builds the model, creating or loading its variables through `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration (even kernel, zero sizes, dropout outside
    /// `[0, 1)`); variable creation errors.
    pub fn new(cfg: &TempCnnConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_dims;
        let dropout = Dropout::new(cfg.dropout)?;
        let conv_block = |i: usize, c_in: usize| -> Result<Block<Conv1d>> {
            let vb = vb.pp(format!("conv_bn_relu{i}")).pp("block");
            let k = cfg.kernel_size;
            Ok(Block {
                layer: Conv1d::new(c_in, h, k, 1, k / 2, true, vb.pp("0"))?,
                bn: BatchNorm1d::new(h, vb.pp("1"))?,
                dropout,
            })
        };
        let convs = [
            conv_block(1, cfg.input_dim)?,
            conv_block(2, h)?,
            conv_block(3, h)?,
        ];
        let vbd = vb.pp("dense").pp("block");
        let dense = Block {
            layer: linear(h * cfg.sequencelength, 4 * h, true, vbd.pp("0"))?,
            bn: BatchNorm1d::new(4 * h, vbd.pp("1"))?,
            dropout,
        };
        let classifier = linear(4 * h, cfg.num_classes, true, vb.pp("logsoftmax").pp("0"))?;
        Ok(TempCnn {
            convs,
            dense,
            classifier,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TempCnnConfig {
        &self.cfg
    }
}

impl SeriesClassifier for TempCnn {
    /// # Shapes
    /// `x`: `(B, T, C)` with `T = sequencelength`, `C = input_dim` -> `(B, K)`.
    fn forward_t(&self, x: &Tensor, train: bool, rng: &mut dyn RngCore) -> Result<Tensor> {
        let (b, _, _) = check_series(MODEL, x, self.cfg.input_dim, Some(self.cfg.sequencelength))?;
        let mut y = x.transpose(1, 2)?.contiguous()?; // (B, T, C) -> (B, C, T)
        for block in &self.convs {
            // (B, H, T); in evaluation the conv bias is folded into the batch norm
            let z = block.bn.forward_conv_act_t(&block.layer, &y, train, true)?;
            y = block.dropout.forward_t(&z, train, rng)?;
        }
        let y = y.reshape((b, ()))?; // (B, H, T) -> (B, H * T), channel-major like torch's view
        let z = candle_core::Module::forward(&self.dense.layer, &y)?; // (B, 4H)
        let y = self.dense.finish(z, train, rng)?;
        Ok(candle_core::Module::forward(&self.classifier, &y)?) // (B, K)
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn input_dim(&self) -> usize {
        self.cfg.input_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use canopy_nn::SeededVarMap;
    use rand::SeedableRng;

    #[test]
    fn wrong_shapes_and_configs_are_typed_errors() -> anyhow::Result<()> {
        let store = SeededVarMap::new(0);
        let cfg = TempCnnConfig {
            hidden_dims: 4,
            ..TempCnnConfig::breizhcrops(3, 2, 6)
        };
        let m = TempCnn::new(&cfg, store.var_builder(DType::F32, &Device::Cpu))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let ok = Tensor::zeros((2, 6, 3), DType::F32, &Device::Cpu)?;
        assert_eq!(m.forward_t(&ok, false, &mut rng)?.dims(), &[2, 2]);
        for bad in [vec![6, 3], vec![2, 6, 4], vec![2, 7, 3]] {
            let x = Tensor::zeros(bad.clone(), DType::F32, &Device::Cpu)?;
            let e = m.forward_t(&x, false, &mut rng);
            assert!(matches!(e, Err(Error::Shape { .. })), "{bad:?}: {e:?}");
        }
        let even = TempCnnConfig {
            kernel_size: 4,
            ..cfg.clone()
        };
        let e = TempCnn::new(
            &even,
            SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu),
        );
        assert!(matches!(e, Err(Error::Config { .. })));
        let drop = TempCnnConfig {
            dropout: 1.0,
            ..cfg
        };
        let e = TempCnn::new(
            &drop,
            SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu),
        );
        assert!(matches!(e, Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn config_round_trips_through_json() -> anyhow::Result<()> {
        let cfg = TempCnnConfig::pelletier2019(10, 7, 24);
        let back: TempCnnConfig = serde_json::from_str(&serde_json::to_string(&cfg)?)?;
        assert_eq!(back, cfg);
        assert_eq!(
            TempCnnConfig::default(),
            TempCnnConfig::breizhcrops(13, 9, 45)
        );
        Ok(())
    }
}
