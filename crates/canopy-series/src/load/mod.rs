//! Loaders: UCR/UEA text files, eo-learn EOPatch folders, BreizhCrops parcel CSVs, GeoTIFF
//! stacks and parcel aggregation over polygons.
//!
//! | loader | source | gives |
//! |---|---|---|
//! | [`read_ucr`] | UCR/UEA `.tsv` (label, then `T` values per line) | [`crate::SeriesDataset`], `(T, 1)` |
//! | [`EoPatch`] | eo-learn EOPatch folder (`data/`, `mask/`, `mask_timeless/`, `timestamps.json`) | [`crate::PatchSeries`] |
//! | [`read_breizhcrops_csv`], [`read_breizhcrops_dir`] | BreizhCrops per-parcel CSV | [`crate::Series`] `(T, 13)` |
//! | [`read_stack`], [`read_stack_single`] | GeoTIFF per date, or one file of bands x dates | [`RasterStack`] |
//! | [`aggregate_parcels`] | a [`RasterStack`] and field polygons | [`crate::SeriesDataset`] |

pub mod breizhcrops;
pub mod eopatch;
pub mod parcel;
pub mod stack;
pub mod ucr;

pub use breizhcrops::{read_breizhcrops_csv, read_breizhcrops_dir, BreizhCropsParcel};
pub use eopatch::{EoPatch, PatchSpec};
pub use parcel::{aggregate_parcels, Aggregate, Parcel};
pub use stack::{read_stack, read_stack_single, RasterStack, StackOrder};
pub use ucr::read_ucr;
