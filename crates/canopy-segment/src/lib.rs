#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;

pub use error::{Error, Result};
