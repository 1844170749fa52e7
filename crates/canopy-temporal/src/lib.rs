#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cnn_layers;
mod error;
pub mod explain;
pub mod fit;
pub mod inceptiontime;
pub mod lstm;
pub mod model;
pub mod msresnet;
pub mod mtlcc;
pub mod recipe;
pub mod tempcnn;
pub mod transformer;
pub mod weights;
pub mod zoo;

pub use error::{Error, Result};
pub use lstm::{LstmClassifier, LstmClassifierConfig};
pub use model::SeriesClassifier;
pub use recipe::{ModelKind, Recipe};
pub use transformer::{TransformerClassifier, TransformerClassifierConfig};
pub use weights::{load_state_dict, load_tensors};
pub use zoo::ModelConfig;
