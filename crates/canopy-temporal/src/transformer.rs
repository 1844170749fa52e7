//! The self-attention classifier of Rußwurm & Körner (2020) as shipped in BreizhCrops: a linear
//! input projection, a stack of post-norm Transformer encoder layers with a final layer norm,
//! the maximum over time, ReLU and a linear head.
//!
//! Two presets follow the two reference modules:
//! - [`TransformerClassifierConfig::breizhcrops`] = `TransformerModel`: input projection
//!   followed by ReLU, no positional encoding (the order of the observations is then only
//!   visible through the data itself);
//! - [`TransformerClassifierConfig::russwurm2020`] = `PETransformerModel`: no ReLU after the
//!   projection, sinusoidal positional encoding added (period 10000, dropout 0.1 in training).
//!   The reference encodes the time-step *index*; [`TransformerClassifier::forward_with_positions`]
//!   takes any positions instead, e.g. the acquisition day of year, so that irregular and
//!   cloud-filtered series keep their dates (the paper's motivation).
//!
//! # Shapes
//! `(B, T, C)` series -> `(B, K)` logits; attention weights per layer `(B, heads, T, T)`.
//!
//! # Keys
//! As the reference `state_dict`: `inlinear.{weight,bias}`,
//! `transformerencoder.layers.{i}.self_attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}`,
//! `transformerencoder.layers.{i}.{linear1,linear2,norm1,norm2}.{weight,bias}`,
//! `transformerencoder.norm.{weight,bias}`, `outlinear.{weight,bias}`. The PE model's
//! `state_dict` also holds the fixed table `pe.pe` (a buffer, not a parameter): it is computed
//! here, so [`strip_positional_buffer`] checks and removes it before loading.
//!
//! # Differences from the reference
//! - Returns logits; the reference returns `log_softmax` of them.
//! - Positions can be days of year ([`TransformerClassifier::forward_with_positions`]); the
//!   reference's table stops at `max_len` (200) positions, the encoding here has no limit.
//! - [`TransformerClassifier::forward_with_attention`] returns the per-head self-attention
//!   weights of every layer (the reference discards them).
//!
//! # References
//! Rußwurm & Körner (2020), "Self-attention for raw optical satellite time series
//! classification", ISPRS J. Photogramm. Remote Sens. 169; Rußwurm et al. (2020), "BreizhCrops".
//! Reference code: <https://github.com/dl4sits/BreizhCrops>, `breizhcrops/models/TransformerModel.py`
//! and `PETransformerModel.py`; Vaswani et al. (2017) for the encoder layer.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use canopy_nn::attention::{
    Activation, NormPosition, TransformerEncoderLayer, TransformerEncoderLayerConfig,
};
use canopy_nn::ops::LayerNorm;
use canopy_nn::positional::sinusoidal_encoding;
use canopy_nn::{linear, Dropout, Linear};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SeriesClassifier};

const MODEL: &str = "TransformerClassifier";

/// The feed-forward activation of the encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedForwardActivation {
    /// ReLU (the reference default).
    #[default]
    Relu,
    /// GELU.
    Gelu,
}

/// How time is made visible to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionalEncoding {
    /// Nothing is added (`TransformerModel`).
    #[default]
    None,
    /// `sin`/`cos` of the position (index or day of year) added after the input projection,
    /// followed by dropout in training (`PETransformerModel`).
    Sinusoidal {
        /// The period base (10000 in the reference).
        period: f64,
        /// Dropout after adding the encoding (0.1 in the reference).
        dropout: f64,
    },
}

/// Configuration of a [`TransformerClassifier`], named like the reference's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformerClassifierConfig {
    /// Number of input bands `C`.
    pub input_dim: usize,
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Width of the encoder.
    pub d_model: usize,
    /// Attention heads per layer (must divide `d_model`).
    pub n_head: usize,
    /// Number of encoder layers.
    pub n_layers: usize,
    /// Width of the feed-forward block.
    pub d_inner: usize,
    /// Feed-forward activation.
    pub activation: FeedForwardActivation,
    /// Dropout in the encoder layers, in training.
    pub dropout: f64,
    /// ReLU after the input projection (`TransformerModel` has it, `PETransformerModel` not).
    pub input_relu: bool,
    /// Positional encoding.
    pub positional: PositionalEncoding,
}

impl Default for TransformerClassifierConfig {
    /// The BreizhCrops `TransformerModel` defaults for 13 bands and 9 classes.
    fn default() -> Self {
        Self::breizhcrops(13, 9)
    }
}

impl TransformerClassifierConfig {
    /// `breizhcrops.models.TransformerModel` defaults: `d_model` 64, 2 heads, 5 layers,
    /// `d_inner` 128, ReLU, dropout 0.017998950510888446 (the tuned value), ReLU after the input
    /// projection, no positional encoding.
    pub fn breizhcrops(input_dim: usize, num_classes: usize) -> Self {
        TransformerClassifierConfig {
            input_dim,
            num_classes,
            d_model: 64,
            n_head: 2,
            n_layers: 5,
            d_inner: 128,
            activation: FeedForwardActivation::Relu,
            dropout: 0.017_998_950_510_888_446,
            input_relu: true,
            positional: PositionalEncoding::None,
        }
    }

    /// `breizhcrops.models.PETransformerModel` defaults (the positional-encoding variant of
    /// Rußwurm & Körner 2020): as [`breizhcrops`](Self::breizhcrops) but without the ReLU after
    /// the input projection and with sinusoidal positions (period 10000, dropout 0.1).
    pub fn russwurm2020(input_dim: usize, num_classes: usize) -> Self {
        TransformerClassifierConfig {
            input_relu: false,
            positional: PositionalEncoding::Sinusoidal {
                period: 10000.0,
                dropout: 0.1,
            },
            ..Self::breizhcrops(input_dim, num_classes)
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                model: MODEL,
                message,
            })
        };
        if self.input_dim == 0 || self.num_classes == 0 || self.n_layers == 0 || self.d_inner == 0 {
            return bad(format!(
                "input_dim ({}), num_classes ({}), n_layers ({}) and d_inner ({}) must be positive",
                self.input_dim, self.num_classes, self.n_layers, self.d_inner
            ));
        }
        if self.n_head == 0 || self.d_model == 0 || self.d_model % self.n_head != 0 {
            return bad(format!(
                "n_head ({}) must divide d_model ({}); choose e.g. d_model = {}",
                self.n_head,
                self.d_model,
                self.n_head.max(1) * 32
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if let PositionalEncoding::Sinusoidal { period, dropout } = self.positional {
            if period.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                || !(0.0..1.0).contains(&dropout)
            {
                return bad(format!(
                    "positional encoding needs period > 0 (got {period}) and dropout in [0, 1) \
                     (got {dropout})"
                ));
            }
        }
        Ok(())
    }
}

/// Logits with the self-attention weights of every layer.
#[derive(Debug, Clone)]
pub struct TransformerAttention {
    /// `(B, K)` logits.
    pub logits: Tensor,
    /// One `(B, heads, T, T)` tensor per layer: row `t` is how much step `t` attends to each
    /// step (rows sum to one). Values for inspection; they carry no gradient on the CPU.
    pub attention: Vec<Tensor>,
}

/// The BreizhCrops / Rußwurm & Körner (2020) Transformer classifier (see the module docs).
#[derive(Debug, Clone)]
pub struct TransformerClassifier {
    inlinear: Linear,
    layers: Vec<TransformerEncoderLayer>,
    norm: LayerNorm,
    outlinear: Linear,
    pe_dropout: Option<Dropout>,
    cfg: TransformerClassifierConfig,
}

impl TransformerClassifier {
    /// Builds the model under the reference's variable names, initialised as PyTorch does.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes, heads that do not divide `d_model`, or dropouts
    /// outside `[0, 1)`.
    pub fn new(cfg: &TransformerClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let layer_cfg = TransformerEncoderLayerConfig {
            d_model: cfg.d_model,
            nhead: cfg.n_head,
            dim_feedforward: cfg.d_inner,
            dropout: cfg.dropout,
            activation: match cfg.activation {
                FeedForwardActivation::Relu => Activation::Relu,
                FeedForwardActivation::Gelu => Activation::Gelu,
            },
            layer_norm_eps: 1e-5,
            norm: NormPosition::Post,
        };
        let enc = vb.pp("transformerencoder");
        let layers = (0..cfg.n_layers)
            .map(|i| TransformerEncoderLayer::new(&layer_cfg, enc.pp("layers").pp(i.to_string())))
            .collect::<canopy_nn::Result<Vec<_>>>()?;
        let pe_dropout = match cfg.positional {
            PositionalEncoding::None => None,
            PositionalEncoding::Sinusoidal { dropout, .. } => Some(Dropout::new(dropout)?),
        };
        Ok(TransformerClassifier {
            inlinear: linear(cfg.input_dim, cfg.d_model, true, vb.pp("inlinear"))?,
            layers,
            norm: LayerNorm::new(cfg.d_model, 1e-5, true, enc.pp("norm"))?,
            outlinear: linear(cfg.d_model, cfg.num_classes, true, vb.pp("outlinear"))?,
            pe_dropout,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerClassifierConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize)> {
        let (b, t, _) = crate::cnn_layers::check_series(MODEL, x, self.cfg.input_dim, None)?;
        Ok((b, t))
    }

    /// Logits and the attention weights of every layer, with positions `0..T` when the model
    /// has a positional encoding (as the reference).
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> logits `(B, K)`, attention `n_layers` x `(B, heads, T, T)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, input_dim)`.
    pub fn forward_with_attention(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<TransformerAttention> {
        self.run(x, None, train, rng)
    }

    /// Logits and attention weights with explicit positions, e.g. acquisition days of year
    /// (one row per series, since cloud filtering leaves different dates per sample). Without
    /// a positional encoding the positions are ignored.
    ///
    /// # Shapes
    /// `x`: `(B, T, C)`, `positions`: `(B, T)` (any float or integer dtype) -> as
    /// [`forward_with_attention`](Self::forward_with_attention).
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, input_dim)` or `positions` is not `(B, T)`.
    pub fn forward_with_positions(
        &self,
        x: &Tensor,
        positions: &Tensor,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<TransformerAttention> {
        self.run(x, Some(positions), train, rng)
    }

    fn encoding(
        &self,
        positions: Option<&Tensor>,
        b: usize,
        t: usize,
        x: &Tensor,
    ) -> Result<Option<Tensor>> {
        let PositionalEncoding::Sinusoidal { period, .. } = self.cfg.positional else {
            return Ok(None);
        };
        let d = self.cfg.d_model;
        let pe = match positions {
            None => {
                let idx: Vec<f64> = (0..t).map(|i| i as f64).collect();
                sinusoidal_encoding(&idx, d, period, x.dtype(), x.device())?.unsqueeze(0)?
                // (1, T, D)
            }
            Some(p) => {
                if p.dims() != [b, t] {
                    return Err(Error::Shape {
                        model: MODEL,
                        expected: format!(
                            "positions of shape ({b}, {t}), one per time step of each series \
                             (e.g. days of year)"
                        ),
                        actual: format!("{:?}", p.dims()),
                    });
                }
                let rows: Vec<Vec<f64>> = p.to_dtype(candle_core::DType::F64)?.to_vec2()?;
                let tables = rows
                    .iter()
                    .map(|r| sinusoidal_encoding(r, d, period, x.dtype(), x.device()))
                    .collect::<canopy_nn::Result<Vec<_>>>()?;
                Tensor::stack(&tables, 0)? // (B, T, D)
            }
        };
        Ok(Some(pe))
    }

    fn run(
        &self,
        x: &Tensor,
        positions: Option<&Tensor>,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<TransformerAttention> {
        let (b, t) = self.check_input(x)?;
        // (B, T, C) -> (B, T, D)
        let mut h = if self.cfg.input_relu {
            self.inlinear.forward_relu(x)?
        } else {
            candle_core::Module::forward(&self.inlinear, x)?
        };
        if let Some(pe) = self.encoding(positions, b, t, x)? {
            h = h.broadcast_add(&pe)?;
            if let Some(drop) = &self.pe_dropout {
                h = drop.forward_t(&h, train, rng)?;
            }
        }
        let mut attention = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, a) = layer.forward_t(&h, None, train, rng)?;
            h = y;
            attention.push(a);
        }
        let h = self.norm.forward(&h)?;
        let h = canopy_nn::ops::relu(&h.max(1)?)?; // (B, T, D) -> (B, D)
        let logits = candle_core::Module::forward(&self.outlinear, &h)?;
        Ok(TransformerAttention { logits, attention })
    }
}

impl SeriesClassifier for TransformerClassifier {
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, K)`.
    fn forward_t(&self, x: &Tensor, train: bool, rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(self.run(x, None, train, rng)?.logits)
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn input_dim(&self) -> usize {
        self.cfg.input_dim
    }
}

/// Prepares a `PETransformerModel` `state_dict` for loading: checks that the fixed positional
/// table `pe.pe` (`(max_len, 1, d_model)`) equals the sinusoidal encoding of `0..max_len` with
/// `period`, then removes it (it is computed, not loaded). A `state_dict` without `pe.pe` is
/// returned unchanged.
///
/// # Errors
/// [`Error::Config`] when `pe.pe` has another shape or other values (a model trained with a
/// different encoding, which this crate does not reproduce).
pub fn strip_positional_buffer(
    mut tensors: HashMap<String, Tensor>,
    period: f64,
) -> Result<HashMap<String, Tensor>> {
    let Some(pe) = tensors.remove("pe.pe") else {
        return Ok(tensors);
    };
    let (len, d) = match pe.dims() {
        [len, 1, d] => (*len, *d),
        dims => {
            return Err(Error::Config {
                model: "strip_positional_buffer",
                message: format!(
                    "pe.pe should be (max_len, 1, d_model), the state dict has {dims:?}"
                ),
            })
        }
    };
    let idx: Vec<f64> = (0..len).map(|i| i as f64).collect();
    let ours = sinusoidal_encoding(&idx, d, period, candle_core::DType::F64, pe.device())?;
    let diff = (pe.squeeze(1)?.to_dtype(candle_core::DType::F64)? - ours)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?;
    if diff > 1e-4 {
        return Err(Error::Config {
            model: "strip_positional_buffer",
            message: format!(
                "pe.pe differs from the sinusoidal encoding with period {period} by {diff:.3e}; \
                 the checkpoint uses another positional encoding"
            ),
        });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};
    use canopy_nn::SeededVarMap;
    use rand::SeedableRng;

    fn small(positional: bool) -> TransformerClassifierConfig {
        let base = if positional {
            TransformerClassifierConfig::russwurm2020(3, 4)
        } else {
            TransformerClassifierConfig::breizhcrops(3, 4)
        };
        TransformerClassifierConfig {
            d_model: 8,
            d_inner: 16,
            n_layers: 2,
            ..base
        }
    }

    #[test]
    fn attention_shapes_positions_and_errors() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let m = TransformerClassifier::new(
            &small(true),
            SeededVarMap::new(3).var_builder(DType::F32, &dev),
        )?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let x = canopy_nn::gradcheck::random_f64(&[2, 6, 3], 3, &dev)?.to_dtype(DType::F32)?;
        let a = m.forward_with_attention(&x, false, &mut rng)?;
        assert_eq!(a.logits.dims(), &[2, 4]);
        assert_eq!(a.attention.len(), 2);
        assert_eq!(a.attention[1].dims(), &[2, 2, 6, 6]);
        let rows = a.attention[0]
            .sum(D::Minus1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-5));

        // Index positions given explicitly equal the default; day-of-year positions differ.
        let idx = Tensor::arange(0u32, 6, &dev)?
            .unsqueeze(0)?
            .repeat((2, 1))?;
        let same = m.forward_with_positions(&x, &idx, false, &mut rng)?;
        let d = (&same.logits - &a.logits)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let doy = Tensor::new(&[[5f32, 40., 90., 130., 200., 300.]; 2], &dev)?;
        let other = m.forward_with_positions(&x, &doy, false, &mut rng)?;
        let d = (&other.logits - &a.logits)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d > 1e-4, "{d}");

        let bad = Tensor::zeros((2, 5), DType::F32, &dev)?;
        assert!(matches!(
            m.forward_with_positions(&x, &bad, false, &mut rng),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            m.forward_t(
                &Tensor::zeros((2, 6, 4), DType::F32, &dev)?,
                false,
                &mut rng
            ),
            Err(Error::Shape { .. })
        ));
        let e = TransformerClassifier::new(
            &TransformerClassifierConfig {
                n_head: 3,
                ..small(false)
            },
            SeededVarMap::new(3).var_builder(DType::F32, &dev),
        );
        assert!(matches!(e, Err(Error::Config { .. })));
        Ok(())
    }

    #[test]
    fn positional_buffer_is_checked_and_removed() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let idx: Vec<f64> = (0..10).map(f64::from).collect();
        let pe = sinusoidal_encoding(&idx, 8, 10000.0, DType::F32, &dev)?.unsqueeze(1)?;
        let mut t = HashMap::new();
        t.insert("pe.pe".to_string(), pe.clone());
        t.insert("x".to_string(), pe.clone());
        let out = strip_positional_buffer(t.clone(), 10000.0)?;
        assert_eq!(out.len(), 1);
        assert!(matches!(
            strip_positional_buffer(t, 1000.0),
            Err(Error::Config { .. })
        ));
        Ok(())
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn configs_round_trip_through_json() -> anyhow::Result<()> {
        for cfg in [
            TransformerClassifierConfig::breizhcrops(10, 7),
            TransformerClassifierConfig::russwurm2020(13, 9),
        ] {
            let json = serde_json::to_string(&cfg)?;
            let back: TransformerClassifierConfig = serde_json::from_str(&json)?;
            assert_eq!(back, cfg, "{json}");
        }
        // Missing fields take the defaults.
        let partial: TransformerClassifierConfig = serde_json::from_str(
            r#"{"input_dim": 4, "positional": {"sinusoidal": {"period": 1000.0, "dropout": 0.0}}}"#,
        )?;
        assert_eq!(partial.d_model, 64);
        assert_eq!(
            partial.positional,
            PositionalEncoding::Sinusoidal {
                period: 1000.0,
                dropout: 0.0
            }
        );
        let lstm = crate::LstmClassifierConfig::breizhcrops(1, 3);
        let back: crate::LstmClassifierConfig =
            serde_json::from_str(&serde_json::to_string(&lstm)?)?;
        assert_eq!(back, lstm);
        Ok(())
    }
}
