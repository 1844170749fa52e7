//! canopy-train: losses, metrics, optimizers, learning-rate schedules, checkpoints and the
//! training loop shared by canopy's model crates.
#![warn(missing_docs)]

mod error;
pub mod loss;
pub mod metrics;

pub use error::{Error, Result};
pub use metrics::{AreaMetrics, ConfusionMatrix};
