//! Whole-scene inference: a trained model streamed over a GeoTIFF of any size, window by
//! window, writing a georeferenced class map (and optionally the class probabilities) with
//! bounded memory; and the same work split into deterministic shards whose partial results a
//! merge step stitches into the identical output.
//!
//! # Data flow
//! canopy-raster's [`Tiler`] cuts the scene into overlapping windows; each window is read
//! (only the strips/tiles it touches), converted to f32, normalised with the model's
//! statistics and run through the model in batches; softmax probabilities (for a one-logit
//! binary model: `1 - p, p`) and a validity channel go to a [`RowStitcher`] that blends the
//! overlaps ([`Blend::Cosine`] by default) and hands back finished rows, which are written at
//! once. Peak memory is a few rows of windows, whatever the scene's height.
//!
//! # Nodata
//! A pixel is nodata when any selected input band holds the file's nodata value (or NaN), or
//! when the alpha band (an RGBA file's fourth band, or `alpha_band`) is 0. Nodata pixels are
//! set to the band mean before the model sees them, and come out as
//! [`CLASS_NODATA`] (255) in the class map and NaN in the probabilities; both files record
//! their nodata value.
//!
//! # Shards
//! [`Shard`] `i/n` takes the `i`-th of `n` contiguous runs of the row-major window list
//! (balanced to one window), so `n` array jobs (Slurm `--array`, Kubernetes indexed jobs) cover
//! the scene exactly once. [`predict_shard`] writes each window's blended-ready prediction to a
//! folder (one safetensors file per window, written atomically, plus `manifest.json`);
//! [`merge_shards`] checks that every window is present exactly once and writes the same files
//! [`segment_geotiff`] writes, bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use canopy_raster::write::{GeoTiffWriter, WriteOptions};
use canopy_raster::{Blend, GeoTiff, Georef, RowStitcher, Rows, Tiler, Window};
use canopy_train::checkpoint::{load_checkpoint, CheckpointMeta, Normalisation};
use ndarray::{s, Array2, Array3, Array4, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::model::{ModelConfig, SegmentationModel};
use crate::{Error, Result};

/// The class-map value of nodata pixels.
pub const CLASS_NODATA: u8 = 255;

/// A model ready for inference: the network, its input normalisation and class names.
pub struct Segmenter {
    model: Box<dyn SegmentationModel>,
    config: ModelConfig,
    normalisation: Option<Normalisation>,
    class_names: Vec<String>,
    device: Device,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("config", &self.config)
            .field("normalisation", &self.normalisation)
            .field("class_names", &self.class_names)
            .finish()
    }
}

impl Segmenter {
    /// Wraps a built model.
    ///
    /// # Errors
    /// [`Error::Config`] when the normalisation does not have one mean and one positive std per
    /// input band, or the model has 255 classes or more (the class map is u8 with 255 =
    /// nodata).
    pub fn new(
        model: Box<dyn SegmentationModel>,
        config: ModelConfig,
        normalisation: Option<Normalisation>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let bands = model.in_channels();
        if let Some(n) = &normalisation {
            if n.mean.len() != bands || n.std.len() != bands {
                return Err(Error::Config {
                    context: "Segmenter",
                    message: format!(
                        "normalisation has {} means and {} stds for a {bands}-band model",
                        n.mean.len(),
                        n.std.len()
                    ),
                });
            }
            if let Some(s) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(Error::Config {
                    context: "Segmenter",
                    message: format!("normalisation std {s} is not a positive number"),
                });
            }
        }
        let seg = Segmenter {
            model,
            config,
            normalisation,
            class_names,
            device: Device::Cpu,
        };
        if seg.output_classes() >= usize::from(CLASS_NODATA) {
            return Err(Error::Config {
                context: "Segmenter",
                message: format!(
                    "{} classes do not fit a u8 class map whose 255 marks nodata",
                    seg.output_classes()
                ),
            });
        }
        Ok(seg)
    }

    /// Loads a checkpoint written by canopy-train's `save_checkpoint` (a safetensors file and
    /// its JSON sidecar whose `config` is a [`ModelConfig`]).
    ///
    /// # Errors
    /// Missing or malformed files, a sidecar without a model configuration, weights that do
    /// not fit the configuration (all naming the file).
    pub fn from_checkpoint(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let device = Device::Cpu;
        let (tensors, meta) = load_checkpoint(path, &device).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("cannot read the checkpoint: {e}"),
        })?;
        Segmenter::from_tensors(path, &tensors, &meta)
    }

    /// Builds the model of `meta.config` over `tensors` (a checkpoint read by other means,
    /// e.g. weights embedded in a binary). `origin` names the source in errors.
    ///
    /// # Errors
    /// As [`Segmenter::from_checkpoint`].
    pub fn from_tensors(
        origin: &Path,
        tensors: &std::collections::HashMap<String, Tensor>,
        meta: &CheckpointMeta,
    ) -> Result<Self> {
        let file = |message: String| Error::File {
            path: origin.to_path_buf(),
            message,
        };
        let config: ModelConfig = serde_json::from_value(meta.config.clone()).map_err(|e| {
            file(format!(
                "the sidecar's `config` is not a canopy-segment model configuration ({e})"
            ))
        })?;
        let vm = canopy_nn::SeededVarMap::new(0);
        let model = config.build(vm.var_builder(DType::F32, &Device::Cpu))?;
        let aliases = match config {
            ModelConfig::Ternaus(_) => crate::ternaus::TernausNet::pytorch_aliases(),
            _ => Vec::new(),
        };
        crate::weights::load_tensors(tensors, &vm.named_vars()?, &aliases).map_err(
            |e| match e {
                Error::Config { message, .. } => file(message),
                other => other,
            },
        )?;
        Segmenter::new(
            model,
            config,
            meta.normalisation.clone(),
            meta.class_names.clone(),
        )
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Class names (may be empty).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The input bands the model needs.
    pub fn in_channels(&self) -> usize {
        self.model.in_channels()
    }

    /// Probability channels of the output: the classes, or 2 for a one-logit binary model.
    pub fn output_classes(&self) -> usize {
        self.model.classes().max(2)
    }

    /// Class probabilities of a batch of windows.
    ///
    /// # Shapes
    /// `images`: `(B, C, h, w)` raw band values; `valid`: `(B, h, w)` -> `(B, K, h, w)`.
    ///
    /// # Errors
    /// Shape errors naming the expected band count; model failures.
    pub fn probabilities(&self, images: &Array4<f32>, valid: &Array3<bool>) -> Result<Array4<f32>> {
        let (b, c, h, w) = images.dim();
        if c != self.in_channels() || valid.dim() != (b, h, w) {
            return Err(Error::Shape {
                context: "Segmenter::probabilities",
                expected: format!(
                    "images (B, {}, h, w) and a validity mask (B, h, w)",
                    self.in_channels()
                ),
                actual: format!("images {:?}, mask {:?}", images.dim(), valid.dim()),
            });
        }
        let mut x = images.clone();
        for (bi, mut image) in x.axis_iter_mut(Axis(0)).enumerate() {
            let ok = valid.index_axis(Axis(0), bi);
            for (ci, mut band) in image.axis_iter_mut(Axis(0)).enumerate() {
                let (mean, std) = match &self.normalisation {
                    Some(n) => (n.mean[ci] as f32, n.std[ci] as f32),
                    None => (0.0, 1.0),
                };
                band.zip_mut_with(&ok, |v, &good| {
                    *v = if good && v.is_finite() {
                        (*v - mean) / std
                    } else {
                        0.0
                    };
                });
            }
        }
        let data = x.into_raw_vec_and_offset().0;
        let t = Tensor::from_vec(data, (b, c, h, w), &self.device)?;
        let logits = self.model.forward_t(&t, false)?;
        let probs = if self.model.classes() == 1 {
            let p = candle_nn::ops::sigmoid(&logits)?;
            Tensor::cat(&[&(1.0 - &p)?, &p], 1)?
        } else {
            canopy_nn::ops::softmax(&logits, 1)?
        };
        let k = self.output_classes();
        let v: Vec<f32> = probs.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Array4::from_shape_vec((b, k, h, w), v).map_err(|e| Error::Shape {
            context: "Segmenter::probabilities",
            expected: format!("({b}, {k}, {h}, {w}) probabilities"),
            actual: e.to_string(),
        })
    }
}

/// A deterministic part of the window list (`index` of `count`, 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (0-based `i < n`).
    ///
    /// # Errors
    /// [`Error::Config`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Config {
            context: "Shard",
            message: format!("{s:?} is not a shard `i/n` with 0 <= i < n (e.g. 0/4)"),
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The window indices `start..end` of this shard among `total` windows.
    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        (self.index * total / self.count)..((self.index + 1) * total / self.count)
    }
}

/// How a scene is covered and written.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// Window side in pixels.
    pub tile: usize,
    /// Overlap between neighbouring windows.
    pub overlap: usize,
    /// How overlapping predictions are combined.
    pub blend: Blend,
    /// Input bands (0-based) given to the model, in the model's order; `None`: the first
    /// `in_channels` bands.
    pub bands: Option<Vec<usize>>,
    /// Alpha band (0-based): pixels where it is 0 are nodata. `None`: the band after the
    /// model's bands when the file has exactly one more band than the model needs and is
    /// 4-band RGBA-like; `Some(usize::MAX)` disables alpha handling.
    pub alpha_band: Option<usize>,
    /// Windows per model call.
    pub batch: usize,
    /// Layout and compression of the outputs.
    pub write: WriteOptions,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            tile: 512,
            overlap: 64,
            blend: Blend::Cosine,
            bands: None,
            alpha_band: None,
            batch: 4,
            write: WriteOptions::default()
                .tiled(256, 256)
                .with_compression(canopy_raster::Compression::Deflate),
        }
    }
}

/// Where the results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOutputs {
    /// The u8 class map (argmax of the probabilities, [`CLASS_NODATA`] for nodata).
    pub classes: PathBuf,
    /// The f32 probabilities, one band per class (NaN for nodata), if wanted.
    pub probabilities: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentReport {
    /// Windows run through the model.
    pub windows: usize,
    /// Scene pixels.
    pub pixels: usize,
    /// Pixels per class in the class map (index = class), nodata excluded.
    pub class_pixels: Vec<u64>,
    /// Nodata pixels.
    pub nodata_pixels: u64,
}

/// What is read from the scene and how many windows go through the model at once.
struct Plan {
    bands: Vec<usize>,
    alpha: Option<usize>,
    batch: usize,
}

/// The bands and alpha band read for a scene with `file_bands` bands.
fn plan_bands(
    seg: &Segmenter,
    file_bands: usize,
    opts: &SegmentOptions,
    path: &Path,
) -> Result<Plan> {
    let need = seg.in_channels();
    let bands = match &opts.bands {
        Some(b) => b.clone(),
        None => {
            if file_bands < need {
                return Err(Error::File {
                    path: path.to_path_buf(),
                    message: format!(
                        "has {file_bands} bands, the model needs {need}: pick bands with --bands"
                    ),
                });
            }
            (0..need).collect()
        }
    };
    if bands.len() != need {
        return Err(Error::Config {
            context: "segment",
            message: format!("{} bands selected, the model needs {need}", bands.len()),
        });
    }
    if let Some(&b) = bands.iter().find(|&&b| b >= file_bands) {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: format!("has no band {} (1-based; it has {file_bands})", b + 1),
        });
    }
    let alpha = match opts.alpha_band {
        Some(usize::MAX) => None,
        Some(a) if a >= file_bands => {
            return Err(Error::File {
                path: path.to_path_buf(),
                message: format!("has no alpha band {} (1-based; it has {file_bands})", a + 1),
            })
        }
        Some(a) => Some(a),
        None if opts.bands.is_none() && need == 3 && file_bands == 4 => Some(3),
        None => None,
    };
    Ok(Plan {
        bands,
        alpha,
        batch: opts.batch.max(1),
    })
}

/// The validity mask of a window: no selected band is nodata/NaN and alpha is not 0.
fn window_validity(
    input: &GeoTiff,
    bands: &[usize],
    alpha: Option<usize>,
    window: Window,
) -> Result<(Array3<f32>, Array2<bool>)> {
    let raster = input.read_window_as::<f32>(window)?;
    let nodata = raster.nodata;
    let data = raster.data.select(Axis(0), bands);
    let mut valid = Array2::from_elem((window.height, window.width), true);
    for band in data.axis_iter(Axis(0)) {
        valid.zip_mut_with(&band, |ok, &v| {
            *ok &= v.is_finite() && nodata.is_none_or(|nd| f64::from(v) != nd);
        });
    }
    if let Some(a) = alpha {
        let band = raster.data.index_axis(Axis(0), a);
        valid.zip_mut_with(&band, |ok, &v| *ok &= v != 0.0);
    }
    Ok((data, valid))
}

/// Runs the model over windows `indices` of `tiler` in batches, calling `sink` with each
/// window and its `(K + 1, h, w)` prediction (probabilities, then validity 0/1).
fn run_windows(
    seg: &Segmenter,
    input: &GeoTiff,
    tiler: &Tiler,
    indices: std::ops::Range<usize>,
    plan: &Plan,
    mut sink: impl FnMut(usize, Window, ArrayView3<f32>) -> Result<()>,
) -> Result<()> {
    let windows: Vec<Window> = tiler.windows().collect();
    let (bands, alpha, batch) = (&plan.bands, plan.alpha, plan.batch);
    let mut start = indices.start;
    while start < indices.end {
        let end = (start + batch).min(indices.end);
        let group = &windows[start..end];
        let (h, w) = (group[0].height, group[0].width);
        let same = group.iter().all(|g| g.height == h && g.width == w);
        // windows of a tiler share one size; fall back to one at a time if not
        let chunks: Vec<&[Window]> = if same {
            vec![group]
        } else {
            group.chunks(1).collect()
        };
        let mut offset = start;
        for chunk in chunks {
            let (h, w) = (chunk[0].height, chunk[0].width);
            let mut images = Array4::<f32>::zeros((chunk.len(), bands.len(), h, w));
            let mut valid = Array3::<bool>::from_elem((chunk.len(), h, w), true);
            for (i, win) in chunk.iter().enumerate() {
                let (data, ok) = window_validity(input, bands, alpha, *win)?;
                images.slice_mut(s![i, .., .., ..]).assign(&data);
                valid.slice_mut(s![i, .., ..]).assign(&ok);
            }
            let probs = seg.probabilities(&images, &valid)?;
            let k = probs.dim().1;
            for (i, win) in chunk.iter().enumerate() {
                let mut pred = Array3::<f32>::zeros((k + 1, h, w));
                pred.slice_mut(s![..k, .., ..])
                    .assign(&probs.slice(s![i, .., .., ..]));
                pred.slice_mut(s![k, .., ..])
                    .assign(
                        &valid
                            .slice(s![i, .., ..])
                            .mapv(|b| if b { 1.0 } else { 0.0 }),
                    );
                sink(offset + i, *win, pred.view())?;
            }
            offset += chunk.len();
        }
        start = end;
    }
    Ok(())
}

/// Writers of the class map and probabilities, fed with stitched rows.
struct Outputs {
    classes: GeoTiffWriter<u8>,
    probabilities: Option<GeoTiffWriter<f32>>,
    class_pixels: Vec<u64>,
    nodata_pixels: u64,
}

impl Outputs {
    fn create(
        outputs: &SegmentOutputs,
        width: usize,
        height: usize,
        k: usize,
        georef: &Georef,
        write: &WriteOptions,
    ) -> Result<Self> {
        let classes = GeoTiffWriter::<u8>::create(
            &outputs.classes,
            width,
            height,
            1,
            georef,
            Some(f64::from(CLASS_NODATA)),
            write,
        )?;
        let probabilities = match &outputs.probabilities {
            Some(p) => Some(GeoTiffWriter::<f32>::create(
                p,
                width,
                height,
                k,
                georef,
                Some(f64::NAN),
                write,
            )?),
            None => None,
        };
        Ok(Outputs {
            classes,
            probabilities,
            class_pixels: vec![0; k],
            nodata_pixels: 0,
        })
    }

    /// Writes stitched rows `(K + 1, rows, W)` (the last channel is validity).
    fn write(&mut self, rows: &Rows) -> Result<()> {
        let (c, n, w) = rows.data.dim();
        let k = c - 1;
        let mut classes = Array3::<u8>::zeros((1, n, w));
        let mut probs = self
            .probabilities
            .as_ref()
            .map(|_| rows.data.slice(s![..k, .., ..]).to_owned());
        for r in 0..n {
            for x in 0..w {
                if rows.data[[k, r, x]] < 0.5 {
                    classes[[0, r, x]] = CLASS_NODATA;
                    self.nodata_pixels += 1;
                    if let Some(p) = probs.as_mut() {
                        for j in 0..k {
                            p[[j, r, x]] = f32::NAN;
                        }
                    }
                    continue;
                }
                let mut best = 0;
                for j in 1..k {
                    if rows.data[[j, r, x]] > rows.data[[best, r, x]] {
                        best = j;
                    }
                }
                classes[[0, r, x]] = best as u8;
                self.class_pixels[best] += 1;
            }
        }
        self.classes.write_rows(classes.view())?;
        if let (Some(wr), Some(p)) = (self.probabilities.as_mut(), probs) {
            wr.write_rows(p.view())?;
        }
        Ok(())
    }

    fn finish(self, windows: usize, pixels: usize) -> Result<SegmentReport> {
        self.classes.finish()?;
        if let Some(p) = self.probabilities {
            p.finish()?;
        }
        Ok(SegmentReport {
            windows,
            pixels,
            class_pixels: self.class_pixels,
            nodata_pixels: self.nodata_pixels,
        })
    }
}

fn make_tiler(width: usize, height: usize, opts: &SegmentOptions) -> Result<Tiler> {
    if opts.tile == 0 || opts.overlap >= opts.tile {
        return Err(Error::Config {
            context: "segment",
            message: format!(
                "tile {} and overlap {}: the tile must be positive and larger than the overlap",
                opts.tile, opts.overlap
            ),
        });
    }
    Ok(Tiler::new(width, height, opts.tile, opts.overlap)?)
}

/// Segments a whole scene (see the module docs). `progress(done, total)` is called after
/// every window.
///
/// # Errors
/// Reading and writing errors naming the file; a band selection that does not fit the model.
/// The outputs appear only when everything succeeded.
pub fn segment_geotiff(
    seg: &Segmenter,
    input: &GeoTiff,
    input_path: &Path,
    outputs: &SegmentOutputs,
    opts: &SegmentOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<SegmentReport> {
    let info = input.info();
    let (width, height) = (info.width, info.height);
    let plan = plan_bands(seg, info.bands, opts, input_path)?;
    let tiler = make_tiler(width, height, opts)?;
    let k = seg.output_classes();
    let mut stitcher = RowStitcher::new(&tiler, k + 1, opts.blend)?;
    let mut out = Outputs::create(outputs, width, height, k, &info.georef, &opts.write)?;
    let total = tiler.len();
    run_windows(seg, input, &tiler, 0..total, &plan, |i, win, pred| {
        if let Some(rows) = stitcher.add(win, pred)? {
            out.write(&rows)?;
        }
        progress(i + 1, total);
        Ok(())
    })?;
    let rest = stitcher.finish()?;
    if rest.data.dim().1 > 0 {
        out.write(&rest)?;
    }
    out.finish(total, width * height)
}

/// The `manifest.json` of a shard folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// The shard.
    pub shard: Shard,
    /// Scene width and height.
    pub width: usize,
    /// Scene height.
    pub height: usize,
    /// Window side.
    pub tile: usize,
    /// Overlap.
    pub overlap: usize,
    /// Probability channels.
    pub classes: usize,
    /// Window indices this shard wrote.
    pub windows: Vec<usize>,
    /// The input file, for the record.
    pub input: PathBuf,
}

fn window_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("window_{index:07}.safetensors"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs shard `shard` of the scene and writes its windows' predictions into `dir` (created if
/// needed). Files are written atomically, so a rerun after a crash redoes only what is missing
/// or overwrites with identical content.
///
/// # Errors
/// As [`segment_geotiff`], and I/O errors naming the folder.
pub fn predict_shard(
    seg: &Segmenter,
    input: &GeoTiff,
    input_path: &Path,
    dir: &Path,
    shard: Shard,
    opts: &SegmentOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<ShardManifest> {
    let info = input.info();
    let plan = plan_bands(seg, info.bands, opts, input_path)?;
    let tiler = make_tiler(info.width, info.height, opts)?;
    let range = shard.range(tiler.len());
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let total = range.len();
    let mut done = 0;
    run_windows(seg, input, &tiler, range.clone(), &plan, |i, _win, pred| {
        let (c, h, w) = pred.dim();
        let t = Tensor::from_vec(
            pred.iter().copied().collect::<Vec<f32>>(),
            (c, h, w),
            &Device::Cpu,
        )?;
        let path = window_file(dir, i);
        let tmp = path.with_extension("safetensors.tmp");
        t.save_safetensors("prediction", &tmp)?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        done += 1;
        progress(done, total);
        Ok(())
    })?;
    let manifest = ShardManifest {
        shard,
        width: info.width,
        height: info.height,
        tile: opts.tile,
        overlap: opts.overlap,
        classes: seg.output_classes(),
        windows: range.collect(),
        input: input_path.to_path_buf(),
    };
    let path = dir.join("manifest.json");
    let tmp = dir.join("manifest.json.tmp");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Config {
        context: "predict_shard",
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(manifest)
}

/// Stitches the shard folders `dirs` of one scene into the outputs (georeferenced like
/// `input`, the scene the shards were computed from).
///
/// # Errors
/// [`Error::File`] when a manifest is missing or belongs to another scene or tiling, when a
/// window is missing (naming the shard that should have written it) or present twice.
pub fn merge_shards(
    dirs: &[PathBuf],
    input: &GeoTiff,
    outputs: &SegmentOutputs,
    opts: &SegmentOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<SegmentReport> {
    let info = input.info();
    let mut manifests = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let m: ShardManifest = serde_json::from_str(&text).map_err(|e| Error::File {
            path: path.clone(),
            message: format!("not a shard manifest: {e}"),
        })?;
        if (m.width, m.height, m.tile, m.overlap)
            != (info.width, info.height, opts.tile, opts.overlap)
        {
            return Err(Error::File {
                path,
                message: format!(
                    "is a {}x{} scene tiled {} with overlap {}, but the merge is for a {}x{} scene \
                     tiled {} with overlap {} (use the same --tile/--overlap as the shards)",
                    m.width, m.height, m.tile, m.overlap, info.width, info.height, opts.tile, opts.overlap
                ),
            });
        }
        manifests.push((dir.clone(), m));
    }
    let Some((_, first)) = manifests.first() else {
        return Err(Error::Config {
            context: "merge_shards",
            message: "no shard folders given".into(),
        });
    };
    let k = first.classes;
    let count = first.shard.count;
    let tiler = make_tiler(info.width, info.height, opts)?;
    let total = tiler.len();
    let mut owner: BTreeMap<usize, PathBuf> = BTreeMap::new();
    for (dir, m) in &manifests {
        if m.classes != k || m.shard.count != count {
            return Err(Error::File {
                path: dir.join("manifest.json"),
                message: format!(
                    "has {} classes in {} shards, another folder {k} classes in {count} shards",
                    m.classes, m.shard.count
                ),
            });
        }
        for &i in &m.windows {
            if let Some(prev) = owner.insert(i, dir.clone()) {
                return Err(Error::File {
                    path: dir.clone(),
                    message: format!(
                        "window {i} is also in {} (a shard given twice?)",
                        prev.display()
                    ),
                });
            }
        }
    }
    if let Some(i) = (0..total).find(|i| !owner.contains_key(i)) {
        let shard = (0..count)
            .find(|&s| Shard { index: s, count }.range(total).contains(&i))
            .unwrap_or(0);
        return Err(Error::Config {
            context: "merge_shards",
            message: format!(
                "window {i} of {total} is missing: run shard {shard}/{count} and pass its folder"
            ),
        });
    }
    let mut stitcher = RowStitcher::new(&tiler, k + 1, opts.blend)?;
    let mut out = Outputs::create(
        outputs,
        info.width,
        info.height,
        k,
        &info.georef,
        &opts.write,
    )?;
    for (i, win) in tiler.windows().enumerate() {
        let dir = &owner[&i];
        let path = window_file(dir, i);
        let t = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::File {
                path: path.clone(),
                message: format!("cannot read the window prediction: {e}"),
            })?
            .remove("prediction")
            .ok_or_else(|| Error::File {
                path: path.clone(),
                message: "has no `prediction` tensor".into(),
            })?;
        let dims = t.dims().to_vec();
        if dims != [k + 1, win.height, win.width] {
            return Err(Error::File {
                path,
                message: format!(
                    "holds {dims:?}, window {i} needs ({}, {}, {})",
                    k + 1,
                    win.height,
                    win.width
                ),
            });
        }
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let pred = Array3::from_shape_vec((k + 1, win.height, win.width), v).map_err(|e| {
            Error::Shape {
                context: "merge_shards",
                expected: format!("({}, {}, {})", k + 1, win.height, win.width),
                actual: e.to_string(),
            }
        })?;
        if let Some(rows) = stitcher.add(win, pred.view())? {
            out.write(&rows)?;
        }
        progress(i + 1, total);
    }
    let rest = stitcher.finish()?;
    if rest.data.dim().1 > 0 {
        out.write(&rest)?;
    }
    out.finish(total, info.width * info.height)
}

/// The class probabilities of one in-memory image `(C, H, W)` (no tiling), for tests and
/// small images.
///
/// # Errors
/// As [`Segmenter::probabilities`].
pub fn predict_image(
    seg: &Segmenter,
    image: ArrayView3<f32>,
    valid: ArrayView2<bool>,
) -> Result<Array3<f32>> {
    let (c, h, w) = image.dim();
    let images = image
        .to_owned()
        .into_shape_with_order((1, c, h, w))
        .map_err(|e| Error::Shape {
            context: "predict_image",
            expected: "(C, H, W)".into(),
            actual: e.to_string(),
        })?;
    let valid = valid
        .to_owned()
        .into_shape_with_order((1, h, w))
        .map_err(|e| Error::Shape {
            context: "predict_image",
            expected: "(H, W)".into(),
            actual: e.to_string(),
        })?;
    Ok(seg
        .probabilities(&images, &valid)?
        .index_axis_move(Axis(0), 0))
}
