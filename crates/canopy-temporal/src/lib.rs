#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
pub mod fit;
pub mod model;
pub mod mtlcc;
pub mod recipe;
pub mod weights;

pub use error::{Error, Result};
pub use model::SeriesClassifier;
pub use recipe::{ModelKind, Recipe};
pub use weights::{load_state_dict, load_tensors};
