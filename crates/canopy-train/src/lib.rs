//! canopy-train: losses, metrics, optimizers, learning-rate schedules, checkpoints and the
//! training loop shared by canopy's model crates.
#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod clip;
mod error;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod schedule;
pub mod trainer;

pub use error::{Error, Result};

/// The README's quick start, compiled and run as a doc-test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
