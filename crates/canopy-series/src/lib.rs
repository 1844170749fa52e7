#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bands;
#[cfg(feature = "candle")]
pub mod batch;
pub mod date;
mod error;
pub mod load;
pub mod npy;
pub mod sample;
pub mod split;
pub mod transform;

pub use bands::{Band, BREIZHCROPS_L1C_BANDS};
pub use date::Date;
pub use error::{Error, Result};
pub use sample::{PatchSeries, Series, SeriesDataset};
