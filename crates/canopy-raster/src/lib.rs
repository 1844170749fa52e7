#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod blend;
mod checksum;
pub mod compression;
pub mod dtype;
mod error;
pub mod gdal_metadata;
pub mod geo;
pub mod geokeys;
pub mod pad;
mod raster;
pub mod rasterize;
pub mod read;
pub mod stream;
pub mod stream_stitch;
#[cfg(feature = "candle")]
pub mod tensor;
pub mod tile;
mod window;
pub mod write;

pub use checksum::{sha256_le, to_hex};
pub use compression::Compression;
pub use dtype::{DataType, Sample};
pub use error::{Error, Result};
pub use geo::{xyz_tile_georef, AreaOrPoint, Crs, Gcp, GeoTransform, Georef};
pub use pad::{pad, pad_to_multiple, PadMode, Padding};
pub use raster::{Raster, ScaleOffset};
pub use rasterize::{rasterize, rasterize_into, rasterize_mask, BurnRule, Burnable, Coords};
pub use read::{AnyRaster, GeoTiff, ImageInfo, Interleave, Limits};
pub use stream::{predict_geotiff, StreamOptions, StreamReport};
pub use stream_stitch::{RowStitcher, Rows};
pub use tile::{Blend, Dims, Stitcher, Tiler, Windows};
pub use window::Window;
pub use write::{
    format_nodata, write_geotiff, BigTiff, GeoTiffWriter, Layout, Predictor, WriteOptions,
};
