//! # canopy
//!
//! Deep learning on remote-sensing data, on candle tensors. This crate is a facade: it
//! re-exports canopy's libraries as modules, each behind a feature, so that one dependency
//! brings in what a project needs.
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`raster`] | `canopy-raster`: GeoTIFF I/O, windows, tiling + stitching, rasterisation | `raster` (default) |
//! | `nn` | `canopy-nn`: gradient-checked operators on candle | `nn` |
//! | `train` | `canopy-train`: losses, metrics, optimizers, schedules, checkpoints, training loop | `train` |
//! | `series` | `canopy-series`: time-series samples, loaders, preprocessing blocks | `series` |
//! | `temporal` | `canopy-temporal`: LSTM, Transformer, TempCNN, MS-ResNet, InceptionTime, ConvLSTM classifiers | `temporal` |
//! | `vector` | `canopy-vector`: polygonize (equal to GDAL), simplify, regularise, polygon metrics, GeoJSON / COCO | `vector` |
//! | `segment` | `canopy-segment`: FCN, multi-scale MLP net, U-Net, TernausNet; segmentation datasets; whole-scene inference | `segment` |
//!
//! The `tensor` feature adds `Raster` <-> candle `Tensor` conversion to [`raster`].
#![warn(missing_docs)]

#[cfg(feature = "raster")]
pub use canopy_raster as raster;

#[cfg(feature = "nn")]
pub use canopy_nn as nn;

#[cfg(feature = "train")]
pub use canopy_train as train;

#[cfg(feature = "series")]
pub use canopy_series as series;

#[cfg(feature = "temporal")]
pub use canopy_temporal as temporal;

#[cfg(feature = "vector")]
pub use canopy_vector as vector;

#[cfg(feature = "segment")]
pub use canopy_segment as segment;
