//! MS-ResNet: a multi-scale 1-D residual network (Wang et al. 2017's ResNet baseline for time
//! series, in the three-branch form of the Multi-Scale-1D-ResNet repository) as used by the
//! BreizhCrops benchmark.
//!
//! The series is first stretched to [`STRETCH_LENGTH`] = 512 steps by nearest-neighbour
//! interpolation (PyTorch's `F.interpolate(x, size=512)`, whose default mode is `"nearest"`:
//! output step `d` takes input step `floor(d * T / 512)`), so any length `T` is accepted. A stem
//! (`Conv1d` kernel 7 stride 2, batch norm, ReLU, max-pool 3 stride 2) brings it to 128 steps;
//! three branches then apply three residual stages each (`hidden_dims`, `2 hidden_dims`,
//! `4 hidden_dims` channels, stride 2) with kernels 3, 5 and 7. Every convolution of the 5 and
//! 7 branches pads by 1 only, so their outputs are shorter than the shortcut; as in the
//! reference, the shortcut is cropped to the output's length (its first steps are kept). Each
//! branch ends in an average pool whose window (16, 11, 6) covers its whole remaining length;
//! the three `4 hidden_dims` vectors are concatenated and a `Linear` gives the logits.
//!
//! # Presets
//! [`MsResNetConfig::breizhcrops`]: `hidden_dims = 32`, `layers = [1, 1, 1, 1]`; 535,785
//! parameters for 13 bands and 9 classes.
//!
//! # Weights
//! Variable names are the `state_dict` keys of BreizhCrops' `MSResNet`: `conv1.weight`,
//! `bn1.*`, `layer{3x3,5x5,7x7}_{1,2,3}.{j}.{conv1,conv2}.weight`,
//! `layer..._{i}.{j}.{bn1,bn2}.*`, `layer..._{i}.0.downsample.{0.weight,1.*}` (1x1 strided
//! convolution + batch norm on the shortcut of each stage's first block), `fc.{weight,bias}`.
//! Convolutions have no bias; batch norms carry `weight`, `bias`, `running_mean`,
//! `running_var`, `num_batches_tracked`.
//!
//! # Differences from the reference
//! - Returns logits, not log-probabilities.
//! - `layers` has four entries like the reference's argument, but only the first three are
//!   used (the reference's fourth stage is commented out). With more than one block per stage
//!   the 5 and 7 branches become shorter than their pooling windows and the reference fails at
//!   run time; [`MsResNet::new`] refuses such configurations with [`Error::Config`].
//! - The reference squeezes the pooled features with `squeeze()`, which also drops the batch
//!   dimension of a batch of one; here a batch of one gives `(1, K)`.
//!
//! # References
//! - Z. Wang, W. Yan, T. Oates, "Time series classification from scratch with deep neural
//!   networks: A strong baseline", IJCNN 2017.
//! - F. Wang, Multi-Scale-1D-ResNet, <https://github.com/geekfeiw/Multi-Scale-1D-ResNet>
//!   (`model/multi_scale_ori.py`), from which BreizhCrops copied the model.
//! - M. Rußwurm, C. Pelletier, M. Zollner, S. Lefèvre, M. Körner, "BreizhCrops: A Time Series
//!   Dataset for Crop Type Mapping", ISPRS Archives XLIII-B2, 2020; reference code
//!   `breizhcrops/models/MSResNet.py` at <https://github.com/dl4sits/BreizhCrops>.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use canopy_nn::{linear, Linear};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::cnn_layers::{check_series, max_pool3, BatchNorm1d, Conv1d};
use crate::{Error, Result, SeriesClassifier};

const MODEL: &str = "MsResNet";

/// The length every series is stretched to before the first convolution.
pub const STRETCH_LENGTH: usize = 512;

/// Hyper-parameters of [`MsResNet`], named like the arguments of BreizhCrops' `MSResNet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsResNetConfig {
    /// Number of input bands `C`.
    pub input_dim: usize,
    /// Residual blocks per stage (the fourth entry is unused, as in the reference).
    pub layers: [usize; 4],
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Channels of the first stage (the second and third have 2x and 4x).
    pub hidden_dims: usize,
}

impl Default for MsResNetConfig {
    /// The BreizhCrops defaults for 13 bands and 9 classes.
    fn default() -> Self {
        Self::breizhcrops(13, 9)
    }
}

impl MsResNetConfig {
    /// BreizhCrops' defaults: `hidden_dims = 32`, `layers = [1, 1, 1, 1]`.
    pub fn breizhcrops(input_dim: usize, num_classes: usize) -> Self {
        MsResNetConfig {
            input_dim,
            layers: [1, 1, 1, 1],
            num_classes,
            hidden_dims: 32,
        }
    }
}

/// The three branches: name infix, kernel size, average-pool window.
const BRANCHES: [(&str, usize, usize); 3] = [("3x3", 3, 16), ("5x5", 5, 11), ("7x7", 7, 6)];

/// Output length of a convolution or pooling window.
fn out_len(len: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (len + 2 * padding)
        .checked_sub(kernel)
        .map(|s| s / stride + 1)
}

/// The reference's `BasicBlock{3x3,5x5,7x7}`: two convolutions with batch norm, a shortcut
/// (projected by `downsample` in the first block of a stage) cropped to the output length.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv1d,
    bn1: BatchNorm1d,
    conv2: Conv1d,
    bn2: BatchNorm1d,
    downsample: Option<(Conv1d, BatchNorm1d)>,
}

impl BasicBlock {
    /// # Shapes
    /// `(B, C_in, L)` -> `(B, planes, L_out)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let out = self.bn1.forward_conv_act_t(&self.conv1, x, train, true)?;
        let out = self
            .bn2
            .forward_conv_act_t(&self.conv2, &out, train, false)?;
        let residual = match &self.downsample {
            Some((conv, bn)) => bn.forward_conv_act_t(conv, x, train, false)?,
            None => x.clone(),
        };
        let len = out.dim(2)?;
        let residual = if residual.dim(2)? == len {
            residual
        } else {
            residual.narrow(2, 0, len)? // keep the first `len` steps, like `[:, :, 0:-d]`
        };
        Ok(canopy_nn::ops::add_relu(&out, &residual)?) // the cropped view is read in place
    }
}

/// One branch: three stages of residual blocks, then the average over the remaining steps.
#[derive(Debug, Clone)]
struct Branch {
    blocks: Vec<BasicBlock>,
}

impl Branch {
    fn new(
        name: &str,
        kernel: usize,
        pool: usize,
        cfg: &MsResNetConfig,
        stem_len: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        // the 3x3 convolutions pad by 1 and keep the length, the others pad by 1 too and shrink
        let padding = 1;
        let mut blocks = Vec::new();
        let mut inplanes = cfg.hidden_dims;
        let mut len = stem_len;
        let too_short = |len: usize| Error::Config {
            model: MODEL,
            message: format!(
                "with layers {:?} the {name} branch shrinks the series to {len} steps before its \
                 average pool of {pool}; only one block per stage fits (use layers [1, 1, 1, 1])",
                cfg.layers
            ),
        };
        for (stage, &n) in cfg.layers.iter().take(3).enumerate() {
            let planes = cfg.hidden_dims << stage;
            let vbs = vb.pp(format!("layer{name}_{}", stage + 1));
            for j in 0..n {
                let vbb = vbs.pp(j.to_string());
                let stride = if j == 0 { 2 } else { 1 };
                let downsample = if j == 0 {
                    Some((
                        Conv1d::new(
                            inplanes,
                            planes,
                            1,
                            stride,
                            0,
                            false,
                            vbb.pp("downsample.0"),
                        )?,
                        BatchNorm1d::new(planes, vbb.pp("downsample.1"))?,
                    ))
                } else {
                    None
                };
                blocks.push(BasicBlock {
                    conv1: Conv1d::new(
                        inplanes,
                        planes,
                        kernel,
                        stride,
                        padding,
                        false,
                        vbb.pp("conv1"),
                    )?,
                    bn1: BatchNorm1d::new(planes, vbb.pp("bn1"))?,
                    conv2: Conv1d::new(planes, planes, kernel, 1, padding, false, vbb.pp("conv2"))?,
                    bn2: BatchNorm1d::new(planes, vbb.pp("bn2"))?,
                    downsample,
                });
                len = out_len(len, kernel, stride, padding)
                    .and_then(|l| out_len(l, kernel, 1, padding))
                    .filter(|&l| l > 0)
                    .ok_or_else(|| too_short(0))?;
                inplanes = planes;
            }
        }
        if len != pool {
            return Err(too_short(len));
        }
        Ok(Branch { blocks })
    }

    /// # Shapes
    /// `(B, hidden_dims, 128)` -> `(B, 4 hidden_dims)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward_t(&y, train)?;
        }
        // the pool window equals the remaining length (checked in `new`): a mean over time
        Ok(y.mean(2)?) // (B, 4H, L) -> (B, 4H)
    }
}

/// MS-ResNet (see the module docs).
#[derive(Debug, Clone)]
pub struct MsResNet {
    conv1: Conv1d,
    bn1: BatchNorm1d,
    branches: Vec<Branch>,
    fc: Linear,
    cfg: MsResNetConfig,
}

impl MsResNet {
    /// Builds the model, creating or loading its variables through `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes, a stage without blocks, or more than one block per
    /// stage (see the module docs); variable creation errors.
    pub fn new(cfg: &MsResNetConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.input_dim == 0 || cfg.num_classes == 0 || cfg.hidden_dims == 0 {
            return Err(Error::Config {
                model: MODEL,
                message: format!(
                    "input_dim ({}), num_classes ({}) and hidden_dims ({}) must be positive",
                    cfg.input_dim, cfg.num_classes, cfg.hidden_dims
                ),
            });
        }
        if cfg.layers.iter().take(3).any(|&n| n == 0) {
            return Err(Error::Config {
                model: MODEL,
                message: format!(
                    "layers {:?}: every one of the first three stages needs at least one block",
                    cfg.layers
                ),
            });
        }
        let h = cfg.hidden_dims;
        let conv1 = Conv1d::new(cfg.input_dim, h, 7, 2, 3, false, vb.pp("conv1"))?;
        let bn1 = BatchNorm1d::new(h, vb.pp("bn1"))?;
        // 512 -> conv1 (k7 s2 p3) -> 256 -> max-pool (k3 s2 p1) -> 128
        let stem_len = out_len(STRETCH_LENGTH, 7, 2, 3)
            .and_then(|l| out_len(l, 3, 2, 1))
            .unwrap_or(0);
        let branches = BRANCHES
            .iter()
            .map(|&(name, k, pool)| Branch::new(name, k, pool, cfg, stem_len, &vb))
            .collect::<Result<Vec<_>>>()?;
        let fc = linear(4 * h * 3, cfg.num_classes, true, vb.pp("fc"))?;
        Ok(MsResNet {
            conv1,
            bn1,
            branches,
            fc,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MsResNetConfig {
        &self.cfg
    }

    /// The concatenated pooled features of the three branches (what the reference's
    /// `_logits` returns as its second value).
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, 12 hidden_dims)`.
    ///
    /// # Errors
    /// As [`SeriesClassifier::forward_t`].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_series(MODEL, x, self.cfg.input_dim, None)?;
        // nearest-neighbour stretch along time, step d <- floor(d * T / 512), and the move to
        // channels-first in one pass: (B, T, C) -> (B, C, 512)
        let x = canopy_nn::ops::nearest_resample_to_channels_first(x, STRETCH_LENGTH)?;
        let x = self.bn1.forward_conv_act_t(&self.conv1, &x, train, true)?; // (B, H, 256)
        let x0 = max_pool3(&x, 2)?; // (B, H, 256) -> (B, H, 128)
        let feats = self
            .branches
            .iter()
            .map(|b| b.forward_t(&x0, train))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&feats, 1)?) // 3 x (B, 4H) -> (B, 12H)
    }
}

impl SeriesClassifier for MsResNet {
    /// # Shapes
    /// `x`: `(B, T, C)` with any `T >= 1`, `C = input_dim` -> `(B, K)`.
    fn forward_t(&self, x: &Tensor, train: bool, _rng: &mut dyn RngCore) -> Result<Tensor> {
        let f = self.features_t(x, train)?;
        Ok(self.fc.forward(&f)?)
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
    fn more_than_one_block_per_stage_is_a_config_error() {
        for layers in [[2, 1, 1, 1], [1, 1, 2, 1], [1, 0, 1, 1]] {
            let cfg = MsResNetConfig {
                layers,
                hidden_dims: 2,
                ..MsResNetConfig::breizhcrops(3, 2)
            };
            let e = MsResNet::new(
                &cfg,
                SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu),
            );
            assert!(matches!(e, Err(Error::Config { .. })), "{layers:?}: {e:?}");
        }
        let cfg = MsResNetConfig {
            layers: [1, 1, 1, 7],
            hidden_dims: 2,
            ..MsResNetConfig::breizhcrops(3, 2)
        };
        assert!(MsResNet::new(
            &cfg,
            SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu)
        )
        .is_ok());
    }

    #[test]
    fn any_length_and_a_batch_of_one() -> anyhow::Result<()> {
        let cfg = MsResNetConfig {
            hidden_dims: 2,
            ..MsResNetConfig::breizhcrops(3, 4)
        };
        let m = MsResNet::new(
            &cfg,
            SeededVarMap::new(0).var_builder(DType::F32, &Device::Cpu),
        )?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        for t in [1, 45, 600] {
            let x = Tensor::randn(0f32, 1.0, (1, t, 3), &Device::Cpu)?;
            assert_eq!(m.forward_t(&x, false, &mut rng)?.dims(), &[1, 4]);
        }
        let x = Tensor::zeros((2, 5, 4), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            m.forward_t(&x, false, &mut rng),
            Err(Error::Shape { .. })
        ));
        Ok(())
    }
}
