//! # canopy-vector
//!
//! From class maps to GIS-ready vectors: the step every building-mapping pipeline ends with.
//!
//! The crate is geometry only: it builds without candle, on `geo` / `geo-types` geometries and
//! canopy-raster's [`GeoTransform`](canopy_raster::GeoTransform).
//!
//! # Coordinates
//! Pixel space is `(x, y) = (column, row)` with `(0, 0)` the outer corner of the top-left pixel,
//! the same convention as canopy-raster's rasterizer, so polygonize followed by rasterize gives
//! the mask back exactly.

#![warn(missing_docs)]

pub mod coco;
pub mod contour;
mod error;
pub mod geojson_io;
pub mod metrics;
pub mod polygonize;
pub mod regularize;
pub mod simplify;
pub mod stream;

pub use error::{Error, Result};
pub use geojson_io::{read_geojson, write_geojson, OutputCrs, VectorFeature};
pub use polygonize::{polygonize, polygonize_raster, Connectivity, PolygonizeOptions, Region};
pub use regularize::{regularize, RegularizeOptions};
pub use simplify::{simplify_coverage, simplify_polygons, SimplifyMethod};
