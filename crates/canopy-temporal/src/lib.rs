#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
pub mod explain;
pub mod fit;
pub mod lstm;
pub mod model;
pub mod mtlcc;
pub mod recipe;
pub mod transformer;
pub mod weights;

pub use error::{Error, Result};
pub use lstm::{LstmClassifier, LstmClassifierConfig};
pub use model::SeriesClassifier;
pub use recipe::{ModelKind, Recipe};
pub use transformer::{TransformerClassifier, TransformerClassifierConfig};
pub use weights::{load_state_dict, load_tensors};
