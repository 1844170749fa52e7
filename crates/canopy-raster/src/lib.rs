//! # canopy-raster
//!
//! GeoTIFF reading and writing with georeferencing, windowed reads, tiling with seam-free
//! stitching, and rasterisation of polygons: the first and last step of every canopy pipeline.
//!
//! The crate needs no tensor library; the `candle` feature adds `Raster` <-> `Tensor`
//! conversion.
#![warn(missing_docs)]

mod checksum;
pub mod compression;
pub mod dtype;
mod error;
pub mod gdal_metadata;
pub mod geo;
pub mod geokeys;
mod raster;
pub mod rasterize;
mod window;

pub use checksum::{sha256_le, to_hex};
pub use compression::Compression;
pub use dtype::{DataType, Sample};
pub use error::{Error, Result};
pub use geo::{xyz_tile_georef, AreaOrPoint, Crs, GeoTransform, Georef, Gcp};
pub use raster::{Raster, ScaleOffset};
pub use rasterize::{rasterize, rasterize_into, rasterize_mask, BurnRule, Burnable, Coords};
pub use window::Window;
