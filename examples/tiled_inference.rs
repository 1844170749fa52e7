//! Whole-scene tiled inference with a convolutional model on candle tensors, streamed from one
//! GeoTIFF to another with bounded memory.
//!
//! ```sh
//! cargo run --release --example tiled_inference -- --input scene.tif --output edges.tif
//! cargo run --release --example tiled_inference -- --output edges.tif      # synthetic scene
//! ```
//! The "model" is a fixed Sobel edge detector (two 3x3 convolutions through canopy-nn) on the
//! chosen band; swap in any network that maps `(1, C, H, W)` to `(1, K, H, W)`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use canopy::raster::tensor::{tensor_to_array, to_tensor};
use canopy::raster::{
    predict_geotiff, write_geotiff, Blend, Dims, GeoTiff, GeoTransform, Georef, Raster,
    StreamOptions, WriteOptions,
};
use canopy_nn::ops::{conv2d, Conv2dConfig};
use clap::Parser;
use ndarray::Array3;

#[derive(Parser, Debug)]
struct Args {
    /// Input GeoTIFF; a synthetic 2048x2048 scene is generated when omitted.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output GeoTIFF (float32, one band: edge magnitude).
    #[arg(long)]
    output: PathBuf,
    /// Band (0-based) the model reads.
    #[arg(long, default_value_t = 0)]
    band: usize,
    /// Window size.
    #[arg(long, default_value_t = 256)]
    tile: usize,
    /// Overlap between windows.
    #[arg(long, default_value_t = 32)]
    overlap: usize,
}

fn main() -> Result<()> {
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    let input = match &args.input {
        Some(p) => p.clone(),
        None => {
            let p = args.output.with_extension("input.tif");
            let data = Array3::from_shape_fn((1, 2048, 2048), |(_, r, c)| {
                let (x, y) = (c as f64 - 1024.0, r as f64 - 1024.0);
                if (x * x + y * y).sqrt() < 600.0 || (r / 256 + c / 256) % 3 == 0 {
                    200u8
                } else {
                    40
                }
            });
            let g = Georef::new(
                GeoTransform::north_up(500_000.0, 5_000_000.0, 1.0, 1.0),
                Some(32633),
            );
            write_geotiff(&p, &Raster::new(data, g), &WriteOptions::default())?;
            println!("generated {}", p.display());
            p
        }
    };
    let tif = GeoTiff::open(&input).with_context(|| format!("opening {}", input.display()))?;
    let dev = Device::Cpu;
    let sobel = Tensor::from_vec(
        vec![
            -1f32, 0., 1., -2., 0., 2., -1., 0., 1., -1., -2., -1., 0., 0., 0., 1., 2., 1.,
        ],
        (2, 1, 3, 3),
        &dev,
    )?;
    let cfg = Conv2dConfig::square(1, 1, 1, 1);
    let opts = StreamOptions {
        tile: Dims::square(args.tile),
        overlap: Dims::square(args.overlap),
        blend: Blend::Cosine,
        bands: Some(vec![args.band]),
        ..StreamOptions::default()
    };
    let t = std::time::Instant::now();
    macro_rules! run {
        ($t:ty) => {
            predict_geotiff(
                &tif,
                &args.output,
                1,
                &opts,
                |w: &Raster<$t>| {
                    let x = to_tensor(w, DType::F32, &dev)?.unsqueeze(0)?; // (C, H, W) -> (1, C, H, W)
                    let g = conv2d(&x, &sobel, None, cfg)
                        .map_err(|e| canopy::raster::Error::InvalidArgument(e.to_string()))?; // (1, 2, H, W)
                    let mag = g.sqr()?.sum_keepdim(1)?.sqrt()?; // (1, 1, H, W)
                    tensor_to_array(&mag)
                },
                |done, total| {
                    if done % 16 == 0 || done == total {
                        eprintln!("  {done}/{total} windows");
                    }
                },
            )?
        };
    }
    use canopy::raster::DataType;
    let report = match tif.info().dtype {
        DataType::U8 => run!(u8),
        DataType::U16 => run!(u16),
        DataType::I16 => run!(i16),
        DataType::F32 => run!(f32),
        other => {
            anyhow::bail!("this example reads u8, u16, i16 or f32 bands; the file holds {other}")
        }
    };
    println!(
        "wrote {} ({} windows, output {:?}, at most {:.1} MB of buffers) in {:.2} s",
        args.output.display(),
        report.windows,
        report.shape,
        report.memory_bound as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
