//! Every series classifier behind one serialisable configuration, so a tool can build, save and
//! reload "a model" without knowing which one.

use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::inceptiontime::{InceptionTime, InceptionTimeConfig};
use crate::lstm::{LstmClassifier, LstmClassifierConfig};
use crate::msresnet::{MsResNet, MsResNetConfig};
use crate::tempcnn::{TempCnn, TempCnnConfig};
use crate::transformer::{TransformerClassifier, TransformerClassifierConfig};
use crate::{Error, ModelKind, Result, SeriesClassifier};

/// The configuration of any `(B, T, C)` classifier of this crate; serialised with a `model`
/// tag (`{"model": "tempcnn", ...the model's fields}`), the form `canopy classify` saves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum ModelConfig {
    /// [`LstmClassifier`].
    Lstm(LstmClassifierConfig),
    /// [`TransformerClassifier`].
    Transformer(TransformerClassifierConfig),
    /// [`TempCnn`].
    TempCnn(TempCnnConfig),
    /// [`MsResNet`].
    MsResNet(MsResNetConfig),
    /// [`InceptionTime`].
    InceptionTime(InceptionTimeConfig),
}

impl ModelConfig {
    /// The reference (BreizhCrops) configuration of `kind` for `input_dim` bands, `num_classes`
    /// classes and series of `sequence_length` dates (TempCNN's dense layer depends on it).
    ///
    /// # Errors
    /// [`Error::Config`] for [`ModelKind::ConvLstm`], which classifies image series
    /// (see [`crate::mtlcc`]).
    pub fn reference(
        kind: ModelKind,
        input_dim: usize,
        num_classes: usize,
        sequence_length: usize,
    ) -> Result<Self> {
        Ok(match kind {
            ModelKind::Lstm => {
                ModelConfig::Lstm(LstmClassifierConfig::breizhcrops(input_dim, num_classes))
            }
            ModelKind::Transformer => ModelConfig::Transformer(
                TransformerClassifierConfig::breizhcrops(input_dim, num_classes),
            ),
            ModelKind::TempCnn => ModelConfig::TempCnn(TempCnnConfig::breizhcrops(
                input_dim,
                num_classes,
                sequence_length,
            )),
            ModelKind::MsResNet => {
                ModelConfig::MsResNet(MsResNetConfig::breizhcrops(input_dim, num_classes))
            }
            ModelKind::InceptionTime => {
                ModelConfig::InceptionTime(InceptionTimeConfig::breizhcrops(input_dim, num_classes))
            }
            ModelKind::ConvLstm => {
                return Err(Error::Config {
                    model: "ModelConfig",
                    message: "convlstm classifies image series (B, T, C, H, W); build it with \
                              canopy_temporal::mtlcc::ConvRnnClassifier"
                        .into(),
                })
            }
        })
    }

    /// Which model this configures.
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Lstm(_) => ModelKind::Lstm,
            ModelConfig::Transformer(_) => ModelKind::Transformer,
            ModelConfig::TempCnn(_) => ModelKind::TempCnn,
            ModelConfig::MsResNet(_) => ModelKind::MsResNet,
            ModelConfig::InceptionTime(_) => ModelKind::InceptionTime,
        }
    }

    /// Creates the model's variables in `vb`.
    ///
    /// # Errors
    /// As the model's constructor.
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn SeriesClassifier>> {
        Ok(match self {
            ModelConfig::Lstm(c) => Box::new(LstmClassifier::new(c, vb)?),
            ModelConfig::Transformer(c) => Box::new(TransformerClassifier::new(c, vb)?),
            ModelConfig::TempCnn(c) => Box::new(TempCnn::new(c, vb)?),
            ModelConfig::MsResNet(c) => Box::new(MsResNet::new(c, vb)?),
            ModelConfig::InceptionTime(c) => Box::new(InceptionTime::new(c, vb)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use canopy_nn::SeededVarMap;

    #[test]
    fn every_reference_model_builds_classifies_and_round_trips_through_json() -> anyhow::Result<()>
    {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 24, 3), &dev)?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        for kind in ModelKind::ALL {
            let Ok(cfg) = ModelConfig::reference(kind, 3, 4, 24) else {
                assert_eq!(kind, ModelKind::ConvLstm);
                continue;
            };
            assert_eq!(cfg.kind(), kind);
            let json = serde_json::to_string(&cfg)?;
            assert!(json.contains(&format!("\"model\":\"{kind}\"")), "{json}");
            let back: ModelConfig = serde_json::from_str(&json)?;
            assert_eq!(back, cfg);
            let vars = SeededVarMap::new(0);
            let model = back.build(vars.var_builder(DType::F32, &dev))?;
            assert_eq!((model.input_dim(), model.num_classes()), (3, 4));
            let y = model.forward_t(&x, false, &mut rng)?;
            assert_eq!(y.dims(), &[2, 4], "{kind}");
        }
        Ok(())
    }
}
