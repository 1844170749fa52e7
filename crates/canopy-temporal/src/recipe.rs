//! The model names and the reference training recipes.
//!
//! BreizhCrops (Rußwurm et al. 2020, `github.com/dl4sits/BreizhCrops`) trains every model with
//! Adam and coupled L2 weight decay (`torch.optim.Adam(weight_decay=..)`, canopy-train's
//! [`Adam`](canopy_train::optim::Adam)), batch 256, cross-entropy, 150 epochs
//! (`examples/train.py`). The learning rate and weight decay of each model are the tuned values
//! its published pretrained weights were trained with (they are spelled out in the weight file
//! names of `breizhcrops/models/pretrained.py`). InceptionTime and the ConvLSTM have no
//! published tuned values; their recipe is Adam at 1e-3 with weight decay 1e-6, and says so.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The classifiers of this crate, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Stacked bidirectional LSTM (BreizhCrops `LSTM`).
    Lstm,
    /// Transformer encoder (BreizhCrops `TransformerModel`).
    Transformer,
    /// Temporal CNN (Pelletier et al. 2019; BreizhCrops `TempCNN`).
    TempCnn,
    /// Multi-scale 1-D ResNet (BreizhCrops `MSResNet`).
    MsResNet,
    /// InceptionTime (Fawaz et al. 2020), with every module registered.
    InceptionTime,
    /// MTLCC convolutional recurrent encoder over image series (see [`crate::mtlcc`]).
    ConvLstm,
}

impl ModelKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [ModelKind; 6] = [
        ModelKind::Lstm,
        ModelKind::Transformer,
        ModelKind::TempCnn,
        ModelKind::MsResNet,
        ModelKind::InceptionTime,
        ModelKind::ConvLstm,
    ];

    /// The command-line name (`lstm`, `transformer`, `tempcnn`, `msresnet`, `inceptiontime`,
    /// `convlstm`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Lstm => "lstm",
            ModelKind::Transformer => "transformer",
            ModelKind::TempCnn => "tempcnn",
            ModelKind::MsResNet => "msresnet",
            ModelKind::InceptionTime => "inceptiontime",
            ModelKind::ConvLstm => "convlstm",
        }
    }

    /// The reference training recipe (see the module docs for the sources).
    pub fn recipe(self) -> Recipe {
        let (lr, weight_decay, tuned) = match self {
            ModelKind::Lstm => (0.009880117756170353, 5.256755602421856e-07, true),
            ModelKind::Transformer => (0.00017369201853408445, 3.5156458637523697e-06, true),
            ModelKind::TempCnn => (0.00023892874563871753, 5.181869707846283e-05, true),
            ModelKind::MsResNet => (0.0006271686393146093, 4.750234747127917e-06, true),
            ModelKind::InceptionTime | ModelKind::ConvLstm => (1e-3, 1e-6, false),
        };
        Recipe {
            lr,
            weight_decay,
            batch_size: 256,
            epochs: 150,
            tuned,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let key = s.to_ascii_lowercase().replace(['-', '_'], "");
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == key)
            .ok_or_else(|| Error::Config {
                model: "ModelKind",
                message: format!(
                    "unknown model '{s}'; choose one of {}",
                    ModelKind::ALL.map(ModelKind::name).join(", ")
                ),
            })
    }
}

/// Optimizer settings and schedule length of a reference training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Adam learning rate.
    pub lr: f64,
    /// Coupled L2 weight decay (PyTorch `Adam(weight_decay=..)`).
    pub weight_decay: f64,
    /// Series per batch.
    pub batch_size: usize,
    /// Epochs of the reference script (BreizhCrops' 150 over hundreds of thousands of parcels;
    /// small datasets usually want more steps per epoch or fewer epochs).
    pub epochs: usize,
    /// Whether `lr` and `weight_decay` are published tuned values (false: a documented default).
    pub tuned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for k in ModelKind::ALL {
            assert_eq!(k.name().parse::<ModelKind>().ok(), Some(k));
        }
        assert_eq!(
            "MS-ResNet".parse::<ModelKind>().ok(),
            Some(ModelKind::MsResNet)
        );
        let e = "resnet".parse::<ModelKind>().err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("lstm, transformer, tempcnn"));
    }

    #[test]
    fn recipes_carry_the_breizhcrops_tuned_values() {
        let r = ModelKind::TempCnn.recipe();
        assert_eq!(
            (r.lr, r.weight_decay, r.batch_size),
            (0.00023892874563871753, 5.181869707846283e-05, 256)
        );
        assert!(r.tuned);
        assert!(!ModelKind::InceptionTime.recipe().tuned);
    }
}
