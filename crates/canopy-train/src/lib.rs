#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod atomic;
pub mod batch;
pub mod checkpoint;
pub mod clip;
mod error;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod schedule;
pub mod trainer;

pub use error::{Error, Result};
pub use metrics::{AreaMetrics, ConfusionMatrix};
