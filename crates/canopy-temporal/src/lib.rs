#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cnn_layers;
mod error;
pub mod inceptiontime;
pub mod model;
pub mod msresnet;
pub mod tempcnn;
pub mod weights;

pub use error::{Error, Result};
pub use model::SeriesClassifier;
pub use weights::{load_state_dict, load_tensors};
