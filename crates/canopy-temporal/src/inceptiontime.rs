//! InceptionTime (Fawaz et al. 2020) as implemented in the BreizhCrops benchmark, with every
//! sub-module registered.
//!
//! Each Inception module reduces its input to `hidden_dims / 4` channels with a 1x1
//! "bottleneck" convolution, applies three convolutions of kernel 41, 21 and 11 to it (the
//! reference's `kernel_size // 2**i + 1` for `kernel_size = 40`, zero-padded to keep the
//! length), and in parallel a max-pool (3, stride 1) followed by a 1x1 convolution of the
//! module's input; the four `hidden_dims / 4`-channel maps are concatenated, batch-normalised and
//! passed through a ReLU. After every third module a shortcut (1x1 convolution + batch norm of
//! the output of the previous shortcut, or of the input) is added and followed by a ReLU. An
//! average over time and a `Linear` give the logits.
//!
//! # Presets
//! [`InceptionTimeConfig::breizhcrops`]: 6 modules, `hidden_dims = 128`, no convolution
//! biases, residual connections; 528,201 parameters for 13 bands and 9 classes.
//!
//! # Weights
//! Variable names are the `state_dict` keys of BreizhCrops' `InceptionTime` **after** its
//! lists of sub-modules are wrapped in `nn.ModuleList` (see below):
//! `inception_modules_list.{i}.bottleneck.{weight,bias}`,
//! `inception_modules_list.{i}.convolutions.{0,1,2}.weight`,
//! `inception_modules_list.{i}.pool_conv.1.{weight,bias}`,
//! `inception_modules_list.{i}.bn_relu.0.*` (batch norm), `shortcut_layer_list.{j}.sc.0.weight`,
//! `shortcut_layer_list.{j}.sc.1.*` (batch norm), `outlinear.{weight,bias}`. The biases of
//! `bottleneck` and `pool_conv.1` exist only with `use_bias = true`.
//!
//! # Differences from the reference
//! - breizhcrops 0.0.4.1 keeps the Inception modules, their convolutions and the shortcut
//!   layers in plain Python lists, which PyTorch does not register: `parameters()`,
//!   `state_dict()`, `train()`/`eval()` and `.to(device)` see only the final `outlinear`
//!   (1,161 of 528,201 parameters for 13 bands and 9 classes). An optimizer built from
//!   `model.parameters()` therefore trains only the last layer, and the batch norms stay in
//!   training mode at evaluation. This module implements the intended model, every module
//!   registered; its weights correspond to the reference model after
//!   `nn.ModuleList` wrapping (as `tools/golden/temporal_cnn.py` and the peer benchmark do).
//!   Checkpoints saved from the unwrapped upstream model contain only `outlinear.*` and are
//!   refused by the strict loader.
//! - The reference creates `num_layers / 3 + 1` shortcut layers but uses only the first
//!   `num_layers / 3` (and none without residuals); the extra ones exist here too, so the key
//!   sets match, but receive no gradient.
//! - Returns logits, not log-probabilities.
//!
//! # References
//! - H. Ismail Fawaz, B. Lucas, G. Forestier, C. Pelletier, D. F. Schmidt, J. Weber,
//!   G. I. Webb, L. Idoumghar, P.-A. Muller, F. Petitjean, "InceptionTime: Finding AlexNet for
//!   Time Series Classification", Data Mining and Knowledge Discovery 34, 2020.
//! - M. Rußwurm, C. Pelletier, M. Zollner, S. Lefèvre, M. Körner, "BreizhCrops: A Time Series
//!   Dataset for Crop Type Mapping", ISPRS Archives XLIII-B2, 2020; reference code
//!   `breizhcrops/models/InceptionTime.py` at <https://github.com/dl4sits/BreizhCrops>.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use canopy_nn::{linear, Linear};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::cnn_layers::{check_series, max_pool3, BatchNorm1d, Conv1d};
use crate::{Error, Result, SeriesClassifier};

const MODEL: &str = "InceptionTime";

/// Hyper-parameters of [`InceptionTime`], named like the arguments of BreizhCrops'
/// `InceptionTime` (plus `kernel_size`, fixed to 40 there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionTimeConfig {
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Number of input bands `C`.
    pub input_dim: usize,
    /// Number of Inception modules.
    pub num_layers: usize,
    /// Channels after each module (a multiple of 4: four branches of `hidden_dims / 4`).
    pub hidden_dims: usize,
    /// Biases on the bottleneck and pooling-branch convolutions.
    pub use_bias: bool,
    /// Shortcut connections after every third module.
    pub use_residual: bool,
    /// Base kernel size `k` (a multiple of 4): the branches use `k + 1`, `k/2 + 1`, `k/4 + 1`.
    pub kernel_size: usize,
}

impl Default for InceptionTimeConfig {
    /// The BreizhCrops defaults for 13 bands and 9 classes.
    fn default() -> Self {
        Self::breizhcrops(13, 9)
    }
}

impl InceptionTimeConfig {
    /// BreizhCrops' defaults: 6 modules, `hidden_dims = 128`, no biases, residuals, kernel 40.
    pub fn breizhcrops(input_dim: usize, num_classes: usize) -> Self {
        InceptionTimeConfig {
            num_classes,
            input_dim,
            num_layers: 6,
            hidden_dims: 128,
            use_bias: false,
            use_residual: true,
            kernel_size: 40,
        }
    }

    fn validate(&self) -> Result<()> {
        let err = |message: String| {
            Err(Error::Config {
                model: MODEL,
                message,
            })
        };
        if self.input_dim == 0 || self.num_classes == 0 || self.num_layers == 0 {
            return err(format!(
                "input_dim ({}), num_classes ({}) and num_layers ({}) must be positive",
                self.input_dim, self.num_classes, self.num_layers
            ));
        }
        if self.hidden_dims == 0 || self.hidden_dims % 4 != 0 {
            return err(format!(
                "hidden_dims {} must be a positive multiple of 4 (four branches of hidden_dims / 4 channels)",
                self.hidden_dims
            ));
        }
        if self.kernel_size == 0 || self.kernel_size % 4 != 0 {
            return err(format!(
                "kernel_size {} must be a positive multiple of 4 so that all three branches keep the length",
                self.kernel_size
            ));
        }
        Ok(())
    }
}

/// The reference's `InceptionModule`.
#[derive(Debug, Clone)]
struct InceptionModule {
    bottleneck: Conv1d,
    convolutions: Vec<Conv1d>,
    pool_conv: Conv1d,
    bn: BatchNorm1d,
}

impl InceptionModule {
    fn new(c_in: usize, cfg: &InceptionTimeConfig, vb: VarBuilder) -> Result<Self> {
        let nf = cfg.hidden_dims / 4;
        let convolutions = (0..3)
            .map(|i| {
                let k = cfg.kernel_size >> i;
                Conv1d::new(
                    nf,
                    nf,
                    k + 1,
                    1,
                    k / 2,
                    false,
                    vb.pp("convolutions").pp(i.to_string()),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(InceptionModule {
            bottleneck: Conv1d::new(c_in, nf, 1, 1, 0, cfg.use_bias, vb.pp("bottleneck"))?,
            convolutions,
            pool_conv: Conv1d::new(c_in, nf, 1, 1, 0, cfg.use_bias, vb.pp("pool_conv").pp("1"))?,
            bn: BatchNorm1d::new(4 * nf, vb.pp("bn_relu").pp("0"))?,
        })
    }

    /// # Shapes
    /// `(B, C_in, T)` -> `(B, hidden_dims, T)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let z = self.bottleneck.forward(x)?; // (B, H/4, T)
        let mut feats = self
            .convolutions
            .iter()
            .map(|c| c.forward(&z))
            .collect::<Result<Vec<_>>>()?;
        feats.push(self.pool_conv.forward(&max_pool3(x, 1)?)?);
        let y = Tensor::cat(&feats, 1)?; // 4 x (B, H/4, T) -> (B, H, T)
        self.bn.forward_act_t(&y, train, true)
    }
}

/// The reference's `ShortcutLayer`: `relu(out + bn(conv1x1(input)))`.
#[derive(Debug, Clone)]
struct Shortcut {
    conv: Conv1d,
    bn: BatchNorm1d,
}

impl Shortcut {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("sc");
        Ok(Shortcut {
            conv: Conv1d::new(c_in, c_out, 1, 1, 0, false, vb.pp("0"))?,
            bn: BatchNorm1d::new(c_out, vb.pp("1"))?,
        })
    }

    fn forward_t(&self, input: &Tensor, out: &Tensor, train: bool) -> Result<Tensor> {
        let s = self.bn.forward_t(&self.conv.forward(input)?, train)?;
        Ok(canopy_nn::ops::add_relu(out, &s)?)
    }
}

/// InceptionTime (see the module docs).
#[derive(Debug, Clone)]
pub struct InceptionTime {
    modules: Vec<InceptionModule>,
    shortcuts: Vec<Shortcut>,
    outlinear: Linear,
    cfg: InceptionTimeConfig,
}

impl InceptionTime {
    /// Builds the model, creating or loading its variables through `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or a `hidden_dims` / `kernel_size` that is not a
    /// multiple of 4; variable creation errors.
    pub fn new(cfg: &InceptionTimeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_dims;
        let vbm = vb.pp("inception_modules_list");
        let modules = (0..cfg.num_layers)
            .map(|i| {
                let c_in = if i == 0 { cfg.input_dim } else { h };
                InceptionModule::new(c_in, cfg, vbm.pp(i.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let vbs = vb.pp("shortcut_layer_list");
        let shortcuts = (0..=cfg.num_layers / 3)
            .map(|j| {
                let c_in = if j == 0 { cfg.input_dim } else { h };
                Shortcut::new(c_in, h, vbs.pp(j.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let outlinear = linear(h, cfg.num_classes, true, vb.pp("outlinear"))?;
        Ok(InceptionTime {
            modules,
            shortcuts,
            outlinear,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &InceptionTimeConfig {
        &self.cfg
    }

    /// The prefixes of variables the forward pass never uses (the reference's extra shortcut
    /// layer, or all shortcut layers without residuals): they are in the `state_dict` but get
    /// no gradient.
    pub fn unused_prefixes(&self) -> Vec<String> {
        let first_unused = if self.cfg.use_residual {
            self.cfg.num_layers / 3
        } else {
            0
        };
        (first_unused..self.shortcuts.len())
            .map(|j| format!("shortcut_layer_list.{j}."))
            .collect()
    }
}

impl SeriesClassifier for InceptionTime {
    /// # Shapes
    /// `x`: `(B, T, C)` with any `T >= 1`, `C = input_dim` -> `(B, K)`.
    fn forward_t(&self, x: &Tensor, train: bool, _rng: &mut dyn RngCore) -> Result<Tensor> {
        check_series(MODEL, x, self.cfg.input_dim, None)?;
        let mut y = x.transpose(1, 2)?.contiguous()?; // (B, T, C) -> (B, C, T)
        let mut input_res = y.clone();
        for (d, module) in self.modules.iter().enumerate() {
            y = module.forward_t(&y, train)?; // (B, H, T)
            if self.cfg.use_residual && d % 3 == 2 {
                if let Some(sc) = self.shortcuts.get(d / 3) {
                    y = sc.forward_t(&input_res, &y, train)?;
                    input_res = y.clone();
                }
            }
        }
        let y = y.mean(2)?; // (B, H, T) -> (B, H)
        Ok(self.outlinear.forward(&y)?)
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

    #[test]
    fn configs_are_validated_and_unused_layers_named() -> anyhow::Result<()> {
        let vb = || SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu);
        for cfg in [
            InceptionTimeConfig {
                hidden_dims: 6,
                ..InceptionTimeConfig::breizhcrops(3, 2)
            },
            InceptionTimeConfig {
                kernel_size: 10,
                ..InceptionTimeConfig::breizhcrops(3, 2)
            },
        ] {
            assert!(matches!(
                InceptionTime::new(&cfg, vb()),
                Err(Error::Config { .. })
            ));
        }
        let cfg = InceptionTimeConfig {
            hidden_dims: 4,
            ..InceptionTimeConfig::breizhcrops(3, 2)
        };
        let m = InceptionTime::new(&cfg, vb())?;
        assert_eq!(
            m.unused_prefixes(),
            vec!["shortcut_layer_list.2.".to_string()]
        );
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let x = Tensor::zeros((2, 1, 3), DType::F32, &Device::Cpu)?;
        assert_eq!(m.forward_t(&x, false, &mut rng)?.dims(), &[2, 2]);
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            m.forward_t(&x, false, &mut rng),
            Err(Error::Shape { .. })
        ));
        Ok(())
    }
}
