#![doc = include_str!("../README.md")]
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
