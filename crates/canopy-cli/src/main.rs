//! The `canopy` command: inspect GeoTIFFs and run canopy's pipelines.

mod classify;
mod classify_patch;
mod demo;
mod demo_segment;
mod demo_series;
mod demo_train;
mod info;
mod polygonize;
mod segment;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// canopy: deep learning on remote-sensing data.
#[derive(Debug, Parser)]
#[command(name = "canopy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe a GeoTIFF: size, bands, sample type, CRS, geotransform, nodata, layout.
    Info {
        /// The GeoTIFF to describe.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Decode every sample and add the SHA-256 of the samples (little-endian, band-major,
        /// row-major).
        #[arg(long)]
        checksum: bool,
    },
    /// Satellite image time series classification: train, eval, predict, explain.
    #[command(subcommand)]
    Classify(Box<classify::Classify>),
    /// Segment a whole GeoTIFF scene with a trained model into a georeferenced class map
    /// (`canopy segment merge` stitches `--shard` runs).
    Segment(Box<segment::SegmentCommand>),
    /// Polygonize a class raster into GeoJSON (exact pixel outlines, equal to GDAL's).
    Polygonize(polygonize::PolygonizeArgs),
    /// Run the end-to-end demo on a synthetic scene (nothing to download).
    Demo {
        /// Directory for the demo's outputs.
        #[arg(long, default_value = "canopy-demo")]
        out: PathBuf,
        /// Scene width and height in pixels.
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
}

fn main() -> anyhow::Result<()> {
    // Tensor buffers are allocated and freed on every tile and step: keep them in the process
    // instead of page-faulting them in again (see canopy_nn::allocator).
    canopy_nn::keep_freed_memory();
    // the ops' parallel loops start on this thread instead of waking a pool and waiting for
    // it on every op (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let cli = Cli::parse();
    match cli.command {
        Command::Info {
            file,
            json,
            checksum,
        } => info::run(&file, json, checksum),
        Command::Classify(cmd) => classify::run(*cmd),
        Command::Polygonize(args) => polygonize::run(&args),
        Command::Segment(cmd) => segment::run(&cmd),
        Command::Demo { out, size } => demo::run(&out, size),
    }
}
