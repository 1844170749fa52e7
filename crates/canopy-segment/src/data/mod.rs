//! Datasets for dense classification: loading labelled images, and turning them into
//! training patches.
//!
//! Every loader yields [`LabelledImage`]s: an image `(C, H, W)` of `f32` holding the file's raw
//! values (no scaling), a label mask `(H, W)` of `u8` (`0` background, `1` building or the
//! class you choose, [`IGNORE`] = 255 where there is no image or no label), the *group* the
//! image belongs to (the area it shows, used for splitting) and the file it came from.
//!
//! # Alpha and nodata
//! An alpha band is dropped from the image; pixels whose alpha is 0 become [`IGNORE`] in the
//! mask (so they are left out of the loss, the metrics and the normalisation statistics).
//! PNG/JPEG: the alpha channel of RGBA / grey-alpha images. GeoTIFF: see [`AlphaBand`]
//! (by default the band the `ExtraSamples` tag marks as alpha). A GeoTIFF pixel where any band
//! equals the file's nodata value is [`IGNORE`] too.
//!
//! # Loaders and the folder layouts they expect
//! All loaders open lazily: `open` reads the label files and lists the images, and
//! [`SampleSource::load`] decodes one image, so a test or a quick run can load a few.
//!
//! | loader | expects |
//! |---|---|
//! | [`GeoTiffPairs`] | pairs of GeoTIFFs, an image and a mask of the same size (the mask's values read through a [`MaskCoding`]) |
//! | [`GeoTiffPolygons`] | a folder of georeferenced `.tif` / `.tiff` tiles (GeoTIFFs, or PNG / JPEG data with a GDAL `.aux.xml` sidecar) and one or more GeoJSON files of polygons covering them (any CRS the GeoJSON names; reprojected to each tile's EPSG code when they differ) |
//! | [`XyzArea`] | a folder of Web-Mercator XYZ PNG tiles named `<prefix>-x-y-z.png` and a `labels.geojson` of lon/lat polygons for the whole area |
//! | [`CocoFolder`] | a COCO annotation file with polygon or RLE segmentations in pixel coordinates, and the folder its `file_name`s are relative to |
//!
//! The public datasets of `../shared/data/buildings` fit them as follows.
//!
//! * **RAMP** (`openaerialmap-ramp`, from hotosm/fAIr-utilities): `tiles/N/OAM-x-y-z.png`
//!   (256 x 256 RGB or RGBA, zooms 19-21 mixed in one area) with `tiles/N/labels.geojson`
//!   (OSM buildings, lon/lat) for [`XyzArea`]; the same labels clipped to each tile in pixel
//!   coordinates in `coco/aoiN.json`, whose `file_name`s (`N/OAM-...png`) are relative to
//!   `tiles/`, for [`CocoFolder`]. Both give the same masks (`tests/data_real.rs` measures the
//!   agreement). Area 2 has one self-intersecting OSM polygon, which [`XyzArea`] repairs.
//! * **Banepa** (`openaerialmap-banepa`, from hotosm/fAIr-models): `train/oam/*.tif` (512 x 512
//!   RGB, EPSG:4326; despite the name these are JPEG files georeferenced by their
//!   `.tif.aux.xml` GDAL sidecars, read as such) and `train/osm/*.geojson` (OSM buildings, CRS84) for
//!   [`GeoTiffPolygons`]. It lies next to RAMP area 3: give both the same group.
//! * **CrowdAI** sample (`crowdai-sample`): `train/images/*.jpg` (300 x 300 RGB) and
//!   `train/annotation.json` (category 100 = building) for [`CocoFolder`].
//! * **SpaceNet** chip (`spacenet-atlanta`): `sample_geotiff.tif` with the footprint mask
//!   `sample_fp_mask.tif` (0 / 255) for [`GeoTiffPairs`] with [`MaskCoding::Binary`].
//!
//! # Groups and splitting
//! Tiles of one area overlap across zoom levels and neighbouring tiles share buildings, so
//! a validation set must hold whole areas: [`split_by_groups`] and [`split_groups_randomly`]
//! never put one group on both sides. Loaders take the group name from the caller.
//!
//! # Training side
//! [`PatchDataset`] draws seeded random patches (optionally with a minimum fraction of valid
//! pixels), augments them ([`Augment`]: flips, 90° rotations, brightness / contrast jitter,
//! the same geometry for image and mask), normalises them with [`BandStats`] computed from the
//! training images (ignored pixels left out) and implements
//! [`canopy_train::batch::Dataset`]; [`collate_patches`] stacks its items into `(B, C, h, w)`
//! images and `(B, h, w)` `u32` labels.
//!
//! # Label noise
//! [`add_label_noise`] degrades clean masks the way OpenStreetMap outlines are wrong
//! (misregistration of the label layer and of single buildings, omitted buildings), for the
//! two-stage recipe: pretrain on imperfect labels, fine-tune on a few clean ones.
//!
//! # Example
//! ```
//! use canopy_segment::data::{
//!     collate_patches, split_by_groups, Augment, AugmentConfig, BandStats, LabelledImage,
//!     PatchConfig, PatchDataset, IGNORE,
//! };
//! use canopy_train::batch::{BatchConfig, BatchSource, Batcher};
//! use ndarray::{Array2, Array3};
//!
//! // Two areas of synthetic 64 x 64 RGB tiles with a square "building" (the loaders above
//! // produce the same type from files).
//! let tile = |group: &str, k: usize| {
//!     let image = Array3::from_shape_fn((3, 64, 64), |(b, r, c)| (b * 50 + r + c + k) as f32);
//!     let mut mask = Array2::<u8>::zeros((64, 64));
//!     mask.slice_mut(ndarray::s![10..30, 20..40]).fill(1);
//!     mask[[0, 0]] = IGNORE;
//!     LabelledImage::new(image, mask, group, format!("{group}/{k}.png"))
//! };
//! let samples = vec![tile("kampala", 0)?, tile("kampala", 1)?, tile("nairobi", 0)?];
//! let (train, val) = split_by_groups(samples, &["nairobi"])?;
//! assert_eq!((train.len(), val.len()), (2, 1));
//!
//! let stats = BandStats::compute(&train)?; // save stats.to_normalisation() with the model
//! let cfg = PatchConfig { height: 32, width: 32, patches_per_epoch: 8, ..Default::default() };
//! let patches = PatchDataset::new(train, cfg)?
//!     .with_augment(Augment::new(AugmentConfig::default()))
//!     .with_normalisation(stats)?;
//! let batches = Batcher::new(
//!     patches,
//!     |items| collate_patches(items, &candle_core::Device::Cpu),
//!     BatchConfig { batch_size: 4, ..Default::default() },
//! )?;
//! for batch in batches.batches(0)? {
//!     let (x, y) = batch?;
//!     assert_eq!(x.dims(), &[4, 3, 32, 32]); // (B, C, h, w) f32
//!     assert_eq!(y.dims(), &[4, 32, 32]); // (B, h, w) u32, 255 = ignore
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//! * E. Maggiori, Y. Tarabalka, G. Charpiat, P. Alliez, "Convolutional neural networks for
//!   large-scale remote-sensing image classification", IEEE TGRS 2017 (patch training,
//!   OSM labels).
//! * RAMP: hotosm/fAIr-utilities, `ramp-data/TRAIN/HOTOSM`; Banepa: hotosm/fAIr-models,
//!   `data/sample`; CrowdAI Mapping Challenge annotation format (COCO).
//! * torchgeo's samplers and its split-by-area practice (`torchgeo.samplers`,
//!   `torchgeo.datasets.splits`).

mod augment;
mod coco;
mod geotiff;
mod image_io;
mod noise;
mod pam;
mod patch;
mod polygons;
mod split;
mod stats;
mod xyz;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

use crate::{Error, Result};

pub use augment::{Augment, AugmentConfig, Transform};
pub use coco::{CategoryMap, CocoFolder};
pub use geotiff::{AlphaBand, GeoTiffPairs, GeoTiffPolygons, MaskCoding};
pub use noise::{add_label_noise, LabelNoiseConfig, NoiseReport};
pub use patch::{collate_patches, Patch, PatchConfig, PatchDataset};
pub use polygons::{web_mercator, LabelReport};
pub use split::{split_by_groups, split_groups_randomly};
pub use stats::BandStats;
pub use xyz::XyzArea;

/// The mask value of pixels that carry no label (no image under them, alpha 0, nodata).
pub const IGNORE: u8 = 255;

/// An image with its label mask, its group and its source file.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    image: Array3<f32>,
    mask: Array2<u8>,
    group: String,
    source: PathBuf,
}

impl LabelledImage {
    /// Bundles an image `(C, H, W)` and a mask `(H, W)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the mask is not `H x W` or the image has no band or no pixel.
    pub fn new(
        image: Array3<f32>,
        mask: Array2<u8>,
        group: impl Into<String>,
        source: impl Into<PathBuf>,
    ) -> Result<Self> {
        let (c, h, w) = image.dim();
        if c == 0 || h == 0 || w == 0 || mask.dim() != (h, w) {
            return Err(Error::Shape {
                context: "LabelledImage::new",
                expected: format!(
                    "an image (C, H, W) with C, H, W > 0 and a mask (H, W) = ({h}, {w})"
                ),
                actual: format!("image {:?}, mask {:?}", image.dim(), mask.dim()),
            });
        }
        Ok(LabelledImage {
            image,
            mask,
            group: group.into(),
            source: source.into(),
        })
    }

    /// The image, `(C, H, W)`.
    pub fn image(&self) -> ArrayView3<'_, f32> {
        self.image.view()
    }

    /// The label mask, `(H, W)`; [`IGNORE`] marks unlabelled pixels.
    pub fn mask(&self) -> ArrayView2<'_, u8> {
        self.mask.view()
    }

    /// The group (area) the image belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Puts the image in another group (e.g. to merge two neighbouring areas).
    pub fn set_group(&mut self, group: impl Into<String>) {
        self.group = group.into();
    }

    /// The file the image was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of bands `C`.
    pub fn bands(&self) -> usize {
        self.image.dim().0
    }

    /// Height `H`.
    pub fn height(&self) -> usize {
        self.mask.dim().0
    }

    /// Width `W`.
    pub fn width(&self) -> usize {
        self.mask.dim().1
    }

    /// Fraction of pixels that are not [`IGNORE`].
    pub fn valid_fraction(&self) -> f64 {
        fraction(
            self.mask.iter().filter(|&&v| v != IGNORE).count(),
            self.mask.len(),
        )
    }

    /// Fraction of the valid (not [`IGNORE`]) pixels labelled `class`; 0 when none is valid.
    pub fn class_fraction(&self, class: u8) -> f64 {
        let valid = self.mask.iter().filter(|&&v| v != IGNORE).count();
        fraction(self.mask.iter().filter(|&&v| v == class).count(), valid)
    }

    /// The image and the mask.
    pub fn into_parts(self) -> (Array3<f32>, Array2<u8>) {
        (self.image, self.mask)
    }
}

fn fraction(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// A collection of labelled images opened from files and decoded on demand.
pub trait SampleSource {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image file of item `index`, `None` when out of range.
    fn path(&self, index: usize) -> Option<&Path>;

    /// Decodes item `index` and builds its mask.
    ///
    /// # Errors
    /// [`Error::Config`] when `index` is out of range; otherwise an error naming the file that
    /// could not be read or does not fit its labels.
    fn load(&self, index: usize) -> Result<LabelledImage>;

    /// Decodes every item.
    ///
    /// # Errors
    /// The first error of [`SampleSource::load`].
    fn load_all(&self) -> Result<Vec<LabelledImage>> {
        (0..self.len()).map(|i| self.load(i)).collect()
    }
}

pub(crate) fn out_of_range(context: &'static str, index: usize, len: usize) -> Error {
    Error::Config {
        context,
        message: format!("index {index} out of range for {len} images"),
    }
}

/// Marks [`IGNORE`] in `mask` wherever `valid` is false.
pub(crate) fn apply_validity(mask: &mut Array2<u8>, valid: Option<&Array2<bool>>) {
    if let Some(valid) = valid {
        mask.zip_mut_with(valid, |m, &ok| {
            if !ok {
                *m = IGNORE;
            }
        });
    }
}

/// The files in `dir` whose name ends with one of `extensions` (case-insensitive), sorted.
pub(crate) fn list_files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        if path.is_file() && extensions.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_a_mask_of_another_size() {
        let err = LabelledImage::new(
            Array3::zeros((3, 4, 5)),
            Array2::zeros((4, 4)),
            "a",
            "x.png",
        )
        .unwrap_err();
        assert!(err.to_string().contains("(4, 5)"), "{err}");
    }

    #[test]
    fn fractions_leave_ignored_pixels_out() {
        let mask = ndarray::array![[0u8, 1], [IGNORE, 1]];
        let s = LabelledImage::new(Array3::zeros((1, 2, 2)), mask, "a", "x").unwrap();
        assert!((s.valid_fraction() - 0.75).abs() < 1e-12);
        assert!((s.class_fraction(1) - 2.0 / 3.0).abs() < 1e-12);
    }
}
