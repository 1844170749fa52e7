//! Whole-scene inference with bounded memory: read windows from a GeoTIFF, run a model on each,
//! blend the predictions and write the result tile row by tile row.
//!
//! Memory holds one input window, one prediction, the [`RowStitcher`]'s rows in flight and the
//! writer's current block-row — about `(tile height + stride + block height) x width x
//! channels` values, never the scene. [`stream_memory_bound`] gives the figure for a layout.
//!
//! torchgeo's `GridGeoSampler` produces the windows of such a loop but leaves stitching and
//! writing to the user; rasterio users write this loop by hand.

use std::path::Path;

use ndarray::Array3;

use crate::write::{GeoTiffWriter, WriteOptions};
use crate::{Blend, Dims, Error, GeoTiff, Raster, Result, RowStitcher, Sample, Tiler, Window};

/// How [`predict_geotiff`] covers the scene and writes the result.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOptions {
    /// Window size given to the model.
    pub tile: Dims,
    /// Overlap between neighbouring windows.
    pub overlap: Dims,
    /// How overlapping predictions are combined.
    pub blend: Blend,
    /// Input bands (0-based) given to the model; `None` for all.
    pub bands: Option<Vec<usize>>,
    /// Layout and compression of the output file.
    pub write: WriteOptions,
    /// Nodata value recorded in the output file.
    pub nodata: Option<f64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            tile: Dims::square(256),
            overlap: Dims::square(32),
            blend: Blend::Cosine,
            bands: None,
            write: WriteOptions::default(),
            nodata: None,
        }
    }
}

/// What a [`predict_geotiff`] run did.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    /// Windows given to the model.
    pub windows: usize,
    /// Output size `(channels, rows, cols)`.
    pub shape: (usize, usize, usize),
    /// Upper bound of the bytes held by the pipeline's own buffers (see [`stream_memory_bound`]).
    pub memory_bound: usize,
}

/// Bytes held at most by [`predict_geotiff`]'s buffers for a `width`-wide scene with
/// `in_bands` input bands of `in_sample` bytes and `channels` output channels:
/// input window + prediction + stitcher rows in flight (f64 sums and weights) + rows handed
/// to the writer + the writer's block-row (f32).
pub fn stream_memory_bound(
    width: usize,
    in_bands: usize,
    in_sample: usize,
    channels: usize,
    opts: &StreamOptions,
) -> usize {
    let (th, tw) = (opts.tile.height, opts.tile.width);
    let stride = th.saturating_sub(opts.overlap.height).max(1);
    let block_rows = match opts.write.layout {
        crate::write::Layout::Tiled { height, .. } => height,
        crate::write::Layout::Striped { rows_per_strip } => rows_per_strip,
    };
    let window = in_bands * th * tw * in_sample;
    let prediction = channels * th * tw * 4;
    let stitcher = 8 * (channels + 1) * th * width;
    let handed = (th + stride) * width * channels * 4;
    let writer = 2 * block_rows * width * channels * 4;
    window + prediction + stitcher + handed + writer
}

/// Runs `model` over `input` window by window and writes the blended `channels`-band f32
/// prediction to `output` (georeferenced like the input), holding only a few rows of windows
/// in memory. `progress(done, total)` is called after every window.
///
/// The model receives each window as a [`Raster`] (with its own georeference) and returns
/// `(channels, window rows, window cols)` values.
///
/// # Errors
/// Reading or writing errors, [`Error::Shape`] when the model returns the wrong shape, and any
/// error the model returns. The output file appears only when everything succeeded.
pub fn predict_geotiff<T, F, P>(
    input: &GeoTiff,
    output: impl AsRef<Path>,
    channels: usize,
    opts: &StreamOptions,
    mut model: F,
    mut progress: P,
) -> Result<StreamReport>
where
    T: Sample,
    F: FnMut(&Raster<T>) -> Result<Array3<f32>>,
    P: FnMut(usize, usize),
{
    let info = input.info();
    let (width, height) = (info.width, info.height);
    let bands: Vec<usize> = opts
        .bands
        .clone()
        .unwrap_or_else(|| (0..info.bands).collect());
    let tiler = Tiler::new(width, height, opts.tile, opts.overlap)?;
    let mut stitcher = RowStitcher::new(&tiler, channels, opts.blend)?;
    let mut writer = GeoTiffWriter::<f32>::create(
        output.as_ref(),
        width,
        height,
        channels,
        &info.georef,
        opts.nodata,
        &opts.write,
    )?;
    let total = tiler.len();
    for (done, window) in tiler.windows().enumerate() {
        let raster: Raster<T> = input.read_bands_window(&bands, window)?;
        let pred = model(&raster)?;
        check_prediction(&pred, channels, &window)?;
        if let Some(rows) = stitcher.add(window, pred.view())? {
            writer.write_rows(rows.data.view())?;
        }
        progress(done + 1, total);
    }
    let rest = stitcher.finish()?;
    if rest.data.shape()[1] > 0 {
        writer.write_rows(rest.data.view())?;
    }
    writer.finish()?;
    Ok(StreamReport {
        windows: total,
        shape: (channels, height, width),
        memory_bound: stream_memory_bound(width, bands.len(), info.dtype.size(), channels, opts),
    })
}

fn check_prediction(pred: &Array3<f32>, channels: usize, window: &Window) -> Result<()> {
    let want = [channels, window.height, window.width];
    if pred.shape() != want {
        return Err(Error::Shape {
            context: format!("model output for window {window:?}"),
            expected: format!("{want:?} (channels, window rows, window cols)"),
            actual: format!("{:?}", pred.shape()),
        });
    }
    Ok(())
}
