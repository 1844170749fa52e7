#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
pub mod model;

pub use error::{Error, Result};
pub use model::SeriesClassifier;
