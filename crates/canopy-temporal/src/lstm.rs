//! The LSTM classifier of BreizhCrops: an input layer norm over the bands, a stacked
//! bidirectional LSTM without biases, and a head on the final *cell* states of every layer and
//! direction (layer norm, then one linear layer).
//!
//! # Shapes
//! `(B, T, C)` series -> `(B, K)` logits. The head concatenates the final cell states
//! `c_n` in PyTorch's order — layer 0 forward, layer 0 reverse, layer 1 forward, ... — into
//! `(B, num_layers * D * hidden_dims)` (D = 2 when bidirectional).
//!
//! # Keys
//! As the reference `state_dict`: `inlayernorm.{weight,bias}` (when the input norm is on),
//! `lstm.weight_ih_l{k}[_reverse]`, `lstm.weight_hh_l{k}[_reverse]` (and `lstm.bias_*` only if
//! `bias` is switched on, which the reference never does), `clayernorm.{weight,bias}`,
//! `linear_class.{weight,bias}`.
//!
//! # Differences from the reference
//! - Returns logits; the reference returns `log_softmax` of them.
//! - The input norm normalises each time step over its *bands*. With one band (e.g. a single
//!   index such as NDVI, or UCR Crop) every input becomes `bias` whatever the data, and the
//!   model stays at chance; the reference cannot switch it off alone (`use_layernorm=False`
//!   also drops `clayernorm` but the forward still calls it, which raises). Here the two norms
//!   are separate switches: [`LstmClassifierConfig::input_layernorm`] and
//!   [`LstmClassifierConfig::use_layernorm`]. The [`breizhcrops`](LstmClassifierConfig::breizhcrops)
//!   preset keeps the reference layout for two or more bands and turns the input norm off for
//!   one band (a checkpoint trained by the reference on one band then has two extra keys,
//!   `inlayernorm.*`: set `input_layernorm = true` to load it).
//! - [`LstmClassifier::forward_with_states`] also returns every hidden and cell state sequence
//!   for inspection (the reference only keeps the last layer's outputs and the final states).
//!
//! # References
//! Rußwurm, Pelletier, Zollner, Lefèvre & Körner (2020), "BreizhCrops: a time series dataset
//! for crop type mapping", ISPRS Archives; Rußwurm & Körner (2020), "Self-attention for raw
//! optical satellite time series classification", ISPRS J. Photogramm. Remote Sens. 169.
//! Reference code: <https://github.com/dl4sits/BreizhCrops>,
//! `breizhcrops/models/LongShortTermMemory.py`.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use canopy_nn::ops::LayerNorm;
use canopy_nn::rnn::{Lstm, LstmConfig};
use canopy_nn::{linear, Linear};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SeriesClassifier};

const MODEL: &str = "LstmClassifier";

/// Configuration of an [`LstmClassifier`], named like the reference's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LstmClassifierConfig {
    /// Number of input bands `C`.
    pub input_dim: usize,
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Hidden size of each LSTM layer and direction.
    pub hidden_dims: usize,
    /// Number of stacked LSTM layers.
    pub num_layers: usize,
    /// Dropout between LSTM layers, in training.
    pub dropout: f64,
    /// Run a reverse direction too.
    pub bidirectional: bool,
    /// Layer norm over the concatenated final cell states before the head (`clayernorm`).
    pub use_layernorm: bool,
    /// Layer norm over the bands of each time step at the input (`inlayernorm`); see the
    /// module docs for why it is off for one band.
    pub input_layernorm: bool,
    /// Biases in the LSTM cells (the reference has none).
    pub bias: bool,
}

impl Default for LstmClassifierConfig {
    /// The BreizhCrops defaults for 13 bands and 9 classes.
    fn default() -> Self {
        Self::breizhcrops(13, 9)
    }
}

impl LstmClassifierConfig {
    /// The reference defaults (`breizhcrops.models.LSTM`): 4 bidirectional layers of 128 units
    /// without biases, dropout 0.5713020228087161 (the tuned value), both layer norms — except
    /// that the input norm is off when `input_dim == 1`, where it would erase the input.
    pub fn breizhcrops(input_dim: usize, num_classes: usize) -> Self {
        LstmClassifierConfig {
            input_dim,
            num_classes,
            hidden_dims: 128,
            num_layers: 4,
            dropout: 0.571_302_022_808_716_1,
            bidirectional: true,
            use_layernorm: true,
            input_layernorm: input_dim > 1,
            bias: false,
        }
    }

    /// Number of directions `D` (1 or 2).
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Width of the head's input: `num_layers * D * hidden_dims`.
    pub fn state_dim(&self) -> usize {
        self.num_layers * self.directions() * self.hidden_dims
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                model: MODEL,
                message,
            })
        };
        if self.input_dim == 0 || self.num_classes == 0 {
            return bad(format!(
                "input_dim ({}) and num_classes ({}) must be positive",
                self.input_dim, self.num_classes
            ));
        }
        if self.hidden_dims == 0 || self.num_layers == 0 {
            return bad(format!(
                "hidden_dims ({}) and num_layers ({}) must be positive",
                self.hidden_dims, self.num_layers
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// Everything [`LstmClassifier::forward_with_states`] computes.
#[derive(Debug, Clone)]
pub struct LstmStates {
    /// `(B, K)` logits.
    pub logits: Tensor,
    /// Hidden state sequences `h_t`, one `(B, T, H)` tensor per layer and direction in PyTorch's
    /// order (layer 0 forward, layer 0 reverse, layer 1 forward, ...); see [`names`](Self::names).
    pub hidden: Vec<Tensor>,
    /// Cell state sequences `c_t`, laid out as [`hidden`](Self::hidden).
    pub cell: Vec<Tensor>,
    /// A name per entry of `hidden`/`cell`: `l{k}` or `l{k}_reverse`, as PyTorch's weight suffixes.
    pub names: Vec<String>,
}

/// The BreizhCrops LSTM classifier (see the module docs).
#[derive(Debug, Clone)]
pub struct LstmClassifier {
    inlayernorm: Option<LayerNorm>,
    lstm: Lstm,
    clayernorm: Option<LayerNorm>,
    linear_class: Linear,
    cfg: LstmClassifierConfig,
}

impl LstmClassifier {
    /// Builds the model; parameters are created in (or loaded from) `vb` under the reference's
    /// names, initialised as PyTorch does.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or a dropout outside `[0, 1)`.
    pub fn new(cfg: &LstmClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let inlayernorm = if cfg.input_layernorm {
            Some(LayerNorm::new(
                cfg.input_dim,
                1e-5,
                true,
                vb.pp("inlayernorm"),
            )?)
        } else {
            None
        };
        let lstm = Lstm::new(
            &LstmConfig {
                input_size: cfg.input_dim,
                hidden_size: cfg.hidden_dims,
                num_layers: cfg.num_layers,
                bias: cfg.bias,
                dropout: cfg.dropout,
                bidirectional: cfg.bidirectional,
            },
            vb.pp("lstm"),
        )?;
        let clayernorm = if cfg.use_layernorm {
            Some(LayerNorm::new(
                cfg.state_dim(),
                1e-5,
                true,
                vb.pp("clayernorm"),
            )?)
        } else {
            None
        };
        let linear_class = linear(
            cfg.state_dim(),
            cfg.num_classes,
            true,
            vb.pp("linear_class"),
        )?;
        Ok(LstmClassifier {
            inlayernorm,
            lstm,
            clayernorm,
            linear_class,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LstmClassifierConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::cnn_layers::check_series(MODEL, x, self.cfg.input_dim, None)?;
        Ok(())
    }

    /// Logits and every hidden and cell state sequence.
    ///
    /// The states come from canopy-nn's [`Lstm`], which records them per layer as
    /// `(B, T, D * H)` (forward half first); they are split here per direction.
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> logits `(B, K)`, states `num_layers * D` tensors of `(B, T, H)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, input_dim)`.
    pub fn forward_with_states(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<LstmStates> {
        let (logits, out) = self.run(x, train, rng)?;
        let (d, h) = (self.cfg.directions(), self.cfg.hidden_dims);
        let (mut hidden, mut cell, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (k, (hs, cs)) in out.hidden_states.iter().zip(&out.cell_states).enumerate() {
            for dir in 0..d {
                hidden.push(hs.narrow(D::Minus1, dir * h, h)?); // (B, T, D*H) -> (B, T, H)
                cell.push(cs.narrow(D::Minus1, dir * h, h)?);
                names.push(if dir == 0 {
                    format!("l{k}")
                } else {
                    format!("l{k}_reverse")
                });
            }
        }
        Ok(LstmStates {
            logits,
            hidden,
            cell,
            names,
        })
    }

    fn run(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, canopy_nn::rnn::RnnOutput)> {
        self.check_input(x)?;
        let x = match &self.inlayernorm {
            Some(norm) => norm.forward(x)?,
            None => x.clone(),
        };
        let out = self.lstm.forward_t(&x, None, train, rng)?;
        let c_n = out.c_n.as_ref().ok_or_else(|| Error::Config {
            model: MODEL,
            message: "the LSTM returned no cell state".into(),
        })?;
        let b = x.dim(0)?;
        // (L*D, B, H) -> (B, L*D, H) -> (B, L*D*H)
        let mut h = c_n
            .transpose(0, 1)?
            .contiguous()?
            .reshape((b, self.cfg.state_dim()))?;
        if let Some(norm) = &self.clayernorm {
            h = norm.forward(&h)?;
        }
        let logits = candle_core::Module::forward(&self.linear_class, &h)?;
        Ok((logits, out))
    }
}

impl SeriesClassifier for LstmClassifier {
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, K)`.
    fn forward_t(&self, x: &Tensor, train: bool, rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(self.run(x, train, rng)?.0)
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
    fn preset_keys_shapes_and_one_band_rule() -> anyhow::Result<()> {
        let cfg = LstmClassifierConfig::breizhcrops(13, 9);
        assert_eq!(cfg.state_dim(), 1024);
        assert!(cfg.input_layernorm && !cfg.bias && cfg.bidirectional);
        assert!(!LstmClassifierConfig::breizhcrops(1, 2).input_layernorm);

        let small = LstmClassifierConfig {
            hidden_dims: 4,
            num_layers: 2,
            ..LstmClassifierConfig::breizhcrops(1, 3)
        };
        let vm = SeededVarMap::new(1);
        let m = LstmClassifier::new(&small, vm.var_builder(DType::F32, &Device::Cpu))?;
        let names: Vec<String> = vm.named_vars()?.into_iter().map(|(n, _)| n).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("inlayernorm")),
            "{names:?}"
        );
        assert!(names.contains(&"lstm.weight_hh_l1_reverse".to_string()));
        let x = Tensor::ones((2, 5, 1), DType::F32, &Device::Cpu)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let s = m.forward_with_states(&x, false, &mut rng)?;
        assert_eq!(s.logits.dims(), &[2, 3]);
        assert_eq!(s.hidden.len(), 4);
        assert_eq!(s.cell[3].dims(), &[2, 5, 4]);
        assert_eq!(s.names[1], "l0_reverse");

        let e = m.forward_t(
            &Tensor::ones((2, 5, 3), DType::F32, &Device::Cpu)?,
            false,
            &mut rng,
        );
        assert!(matches!(e, Err(Error::Shape { .. })));
        // The reference layout on one band: the input norm erases the input, every series
        // gets the same logits.
        let erased = LstmClassifier::new(
            &LstmClassifierConfig {
                input_layernorm: true,
                ..small.clone()
            },
            SeededVarMap::new(1).var_builder(DType::F32, &Device::Cpu),
        )?;
        let a =
            canopy_nn::gradcheck::random_f64(&[2, 5, 1], 1, &Device::Cpu)?.to_dtype(DType::F32)?;
        let b = ((canopy_nn::gradcheck::random_f64(&[2, 5, 1], 2, &Device::Cpu)? * 5.0)? + 3.0)?
            .to_dtype(DType::F32)?;
        let d = (erased.forward_t(&a, false, &mut rng)?
            - erased.forward_t(&b, false, &mut rng)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let d = (m.forward_t(&a, false, &mut rng)? - m.forward_t(&b, false, &mut rng)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d > 1e-4, "{d}");

        let e = LstmClassifier::new(
            &LstmClassifierConfig {
                dropout: 1.0,
                ..small
            },
            SeededVarMap::new(1).var_builder(DType::F32, &Device::Cpu),
        );
        assert!(matches!(e, Err(Error::Config { .. })));
        Ok(())
    }
}
