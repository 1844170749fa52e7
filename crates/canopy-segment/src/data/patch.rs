//! Seeded random training patches as a [`canopy_train::batch::Dataset`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use canopy_train::batch::Dataset;
use ndarray::{s, Array2, Array3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Augment, BandStats, LabelledImage, IGNORE};
use crate::{Error, Result};

/// An image patch `(C, h, w)` and its mask `(h, w)`.
pub type Patch = (Array3<f32>, Array2<u8>);

/// How [`PatchDataset`] draws patches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchConfig {
    /// Patch height `h` in pixels.
    pub height: usize,
    /// Patch width `w` in pixels.
    pub width: usize,
    /// Patches per epoch (the dataset's length).
    pub patches_per_epoch: usize,
    /// A patch is redrawn until at least this fraction of its pixels is not [`IGNORE`]
    /// (0: accept any patch).
    pub min_valid_fraction: f64,
    /// Draws per patch before giving up on `min_valid_fraction` with an error.
    pub max_attempts: usize,
    /// Seed; patch `i` of epoch `e` depends only on `(seed, e, i)`.
    pub seed: u64,
}

impl Default for PatchConfig {
    /// 256 x 256 patches, 1000 per epoch, at least half of each valid, 100 attempts, seed 0.
    fn default() -> Self {
        PatchConfig {
            height: 256,
            width: 256,
            patches_per_epoch: 1000,
            min_valid_fraction: 0.5,
            max_attempts: 100,
            seed: 0,
        }
    }
}

/// Random patches from a list of labelled images, augmented and normalised.
///
/// An image is chosen with probability proportional to the number of patch positions it
/// offers (so every position of every image is equally likely), then a position uniformly;
/// draws whose valid fraction is below [`PatchConfig::min_valid_fraction`] are repeated.
/// The optional [`Augment`] runs on the raw values, then the optional [`BandStats`]
/// normalise. Patch `i` depends only on `(seed, epoch, i)`, so runs are reproducible with or
/// without a prefetching [`canopy_train::batch::Batcher`]; call [`PatchDataset::set_epoch`]
/// at the start of each epoch to get new patches.
#[derive(Debug)]
pub struct PatchDataset {
    samples: Arc<Vec<LabelledImage>>,
    cumulative: Vec<u64>,
    cfg: PatchConfig,
    augment: Option<Augment>,
    stats: Option<BandStats>,
    epoch: AtomicU64,
}

impl PatchDataset {
    /// A dataset over `samples`.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list, a zero size or count, `min_valid_fraction` outside
    /// `[0, 1]`, or `max_attempts == 0`; [`Error::Shape`] naming an image smaller than the
    /// patch or with another band count than the first.
    pub fn new(samples: Vec<LabelledImage>, cfg: PatchConfig) -> Result<Self> {
        let config = |message: String| Error::Config {
            context: "PatchDataset::new",
            message,
        };
        if samples.is_empty() {
            return Err(config("no sample to draw patches from".into()));
        }
        if cfg.height == 0 || cfg.width == 0 || cfg.patches_per_epoch == 0 || cfg.max_attempts == 0
        {
            return Err(config(format!(
                "height, width, patches_per_epoch and max_attempts must be > 0, got {cfg:?}"
            )));
        }
        if !(0.0..=1.0).contains(&cfg.min_valid_fraction) {
            return Err(config(format!(
                "min_valid_fraction must be in [0, 1], got {}",
                cfg.min_valid_fraction
            )));
        }
        let bands = samples.first().map_or(0, LabelledImage::bands);
        let mut cumulative = Vec::with_capacity(samples.len());
        let mut total = 0u64;
        for s in &samples {
            if s.height() < cfg.height || s.width() < cfg.width || s.bands() != bands {
                return Err(Error::Shape {
                    context: "PatchDataset::new",
                    expected: format!(
                        "images of {bands} bands and at least {} x {} pixels (the patch size)",
                        cfg.height, cfg.width
                    ),
                    actual: format!(
                        "{} bands, {} x {} in {}",
                        s.bands(),
                        s.height(),
                        s.width(),
                        s.source().display()
                    ),
                });
            }
            total += ((s.height() - cfg.height + 1) * (s.width() - cfg.width + 1)) as u64;
            cumulative.push(total);
        }
        Ok(PatchDataset {
            samples: Arc::new(samples),
            cumulative,
            cfg,
            augment: None,
            stats: None,
            epoch: AtomicU64::new(0),
        })
    }

    /// Augments every patch with `augment`.
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = Some(augment);
        self
    }

    /// Normalises every patch with `stats` (after augmentation).
    ///
    /// # Errors
    /// [`Error::Shape`] when `stats` has another band count than the images.
    pub fn with_normalisation(mut self, stats: BandStats) -> Result<Self> {
        let bands = self.samples.first().map_or(0, LabelledImage::bands);
        if stats.mean.len() != bands || stats.std.len() != bands {
            return Err(Error::Shape {
                context: "PatchDataset::with_normalisation",
                expected: format!("statistics of {bands} bands"),
                actual: format!("{} means, {} stds", stats.mean.len(), stats.std.len()),
            });
        }
        self.stats = Some(stats);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &PatchConfig {
        &self.cfg
    }

    /// The images patches are drawn from.
    pub fn samples(&self) -> &[LabelledImage] {
        &self.samples
    }

    /// Chooses the epoch whose patches [`Dataset::get`] returns.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Patch `index` of `epoch`, with the image it came from and its top-left corner
    /// `(row, col)`.
    ///
    /// # Errors
    /// [`Error::Config`] when no draw reached `min_valid_fraction` within `max_attempts`
    /// (lower it, or drop mostly empty images); [`Error::Shape`]/[`Error::Config`] from the
    /// normalisation.
    pub fn patch_with_origin(
        &self,
        epoch: u64,
        index: usize,
    ) -> Result<(Patch, usize, (usize, usize))> {
        let mut rng = StdRng::seed_from_u64(mix(self.cfg.seed, epoch, index as u64));
        let (h, w) = (self.cfg.height, self.cfg.width);
        let total = self.cumulative.last().copied().unwrap_or(0);
        let need = (self.cfg.min_valid_fraction * (h * w) as f64).ceil() as usize;
        for _ in 0..self.cfg.max_attempts {
            let pick = rng.random_range(0..total);
            let k = self.cumulative.partition_point(|&c| c <= pick);
            let Some(sample) = self.samples.as_slice().get(k) else {
                continue;
            };
            let r = rng.random_range(0..=sample.height() - h);
            let c = rng.random_range(0..=sample.width() - w);
            let mask = sample.mask().slice_move(s![r..r + h, c..c + w]);
            if mask.iter().filter(|&&v| v != IGNORE).count() < need {
                continue;
            }
            let image = sample.image().slice_move(s![.., r..r + h, c..c + w]);
            let (mut image, mask) = match &self.augment {
                Some(a) => a.apply(&mut rng, image, mask),
                None => (image.to_owned(), mask.to_owned()),
            };
            if let Some(st) = &self.stats {
                st.apply(image.view_mut())?;
            }
            return Ok(((image, mask), k, (r, c)));
        }
        Err(Error::Config {
            context: "PatchDataset",
            message: format!(
                "no {h} x {w} patch with at least {} valid pixels in {} draws (epoch {epoch}, \
                 patch {index}); lower min_valid_fraction or drop images that are mostly IGNORE",
                need, self.cfg.max_attempts
            ),
        })
    }

    /// Patch `index` of `epoch`.
    ///
    /// # Errors
    /// As [`PatchDataset::patch_with_origin`].
    pub fn patch(&self, epoch: u64, index: usize) -> Result<Patch> {
        self.patch_with_origin(epoch, index).map(|(p, _, _)| p)
    }
}

/// SplitMix64 of the three numbers, so neighbouring indices get unrelated streams.
fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dataset for PatchDataset {
    type Item = Patch;

    fn len(&self) -> usize {
        self.cfg.patches_per_epoch
    }

    fn get(&self, index: usize) -> canopy_train::Result<Patch> {
        if index >= self.cfg.patches_per_epoch {
            return Err(canopy_train::Error::InvalidArgument {
                op: "PatchDataset::get",
                message: format!(
                    "index {index} out of range for {} patches",
                    self.cfg.patches_per_epoch
                ),
            });
        }
        self.patch(self.epoch.load(Ordering::Relaxed), index)
            .map_err(|e| canopy_train::Error::InvalidArgument {
                op: "PatchDataset::get",
                message: e.to_string(),
            })
    }
}

/// Stacks patches into a batch: images `(B, C, h, w)` f32 and labels `(B, h, w)` u32
/// ([`IGNORE`] stays 255, for a loss's ignore index). Use it as a
/// [`canopy_train::batch::Batcher`]'s collate function.
///
/// # Shapes
/// Items `(C, h, w)` + `(h, w)`, all equal; returns `(B, C, h, w)` and `(B, h, w)`.
///
/// # Errors
/// [`canopy_train::Error::Shape`] when the list is empty or the patches differ in shape;
/// candle errors from building the tensors.
pub fn collate_patches(
    items: Vec<Patch>,
    device: &Device,
) -> canopy_train::Result<(Tensor, Tensor)> {
    let Some((first_img, _)) = items.first() else {
        return Err(canopy_train::Error::Shape {
            op: "collate_patches",
            expected: "at least one patch".into(),
            actual: "an empty batch".into(),
        });
    };
    let (c, h, w) = first_img.dim();
    let b = items.len();
    let mut images = Vec::with_capacity(b * c * h * w);
    let mut labels = Vec::with_capacity(b * h * w);
    for (img, mask) in &items {
        if img.dim() != (c, h, w) || mask.dim() != (h, w) {
            return Err(canopy_train::Error::Shape {
                op: "collate_patches",
                expected: format!("every image ({c}, {h}, {w}) and mask ({h}, {w})"),
                actual: format!("image {:?}, mask {:?}", img.dim(), mask.dim()),
            });
        }
        images.extend(img.iter().copied());
        labels.extend(mask.iter().map(|&v| u32::from(v)));
    }
    let images = Tensor::from_vec(images, (b, c, h, w), device)?;
    let labels = Tensor::from_vec(labels, (b, h, w), device)?;
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::AugmentConfig;
    use canopy_train::batch::{BatchConfig, BatchSource, Batcher};
    use ndarray::Axis;

    /// A 3-band image whose band 0 equals its mask, the right half IGNORE.
    fn sample(h: usize, w: usize, name: &str) -> LabelledImage {
        let mask = Array2::from_shape_fn((h, w), |(r, c)| {
            if c >= w / 2 {
                IGNORE
            } else {
                ((r + c) % 2) as u8
            }
        });
        let mut img = Array3::from_shape_fn((3, h, w), |(b, r, c)| (b * 1000 + r * w + c) as f32);
        img.index_axis_mut(Axis(0), 0).assign(&mask.mapv(f32::from));
        LabelledImage::new(img, mask, "g", name).unwrap()
    }

    fn cfg(min_valid: f64) -> PatchConfig {
        PatchConfig {
            height: 8,
            width: 8,
            patches_per_epoch: 40,
            min_valid_fraction: min_valid,
            max_attempts: 200,
            seed: 7,
        }
    }

    #[test]
    fn patches_are_seeded_cut_where_they_say_and_respect_min_valid() {
        let ds =
            PatchDataset::new(vec![sample(20, 32, "a"), sample(30, 24, "b")], cfg(0.9)).unwrap();
        for i in 0..40 {
            let ((img, mask), k, (r, c)) = ds.patch_with_origin(0, i).unwrap();
            let src = &ds.samples()[k];
            assert_eq!(mask, src.mask().slice(s![r..r + 8, c..c + 8]));
            assert_eq!(img, src.image().slice(s![.., r..r + 8, c..c + 8]));
            assert!(mask.iter().filter(|&&v| v != IGNORE).count() >= 58);
            assert_eq!(ds.patch(0, i).unwrap(), (img, mask));
        }
        assert_ne!(ds.patch(0, 3).unwrap(), ds.patch(1, 3).unwrap());
    }

    #[test]
    fn unreachable_min_valid_is_an_error_not_a_hang() {
        let ds = PatchDataset::new(vec![sample(8, 8, "a")], cfg(0.9)).unwrap();
        let err = ds.patch(0, 0).unwrap_err();
        assert!(err.to_string().contains("min_valid_fraction"), "{err}");
    }

    #[test]
    fn too_small_images_are_named() {
        let err = PatchDataset::new(
            vec![sample(20, 20, "ok"), sample(6, 20, "tiny.png")],
            cfg(0.0),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tiny.png"), "{err}");
    }

    #[test]
    fn augmented_normalised_batches_keep_image_and_mask_aligned() {
        let samples = vec![sample(20, 32, "a"), sample(30, 24, "b")];
        let stats = BandStats {
            mean: vec![0.0, 10.0, 20.0],
            std: vec![1.0, 2.0, 4.0],
            count: 1,
        };
        let aug = Augment::new(AugmentConfig {
            brightness: 0.0,
            contrast: 0.0,
            ..AugmentConfig::default()
        });
        let ds = PatchDataset::new(samples, cfg(0.5))
            .unwrap()
            .with_augment(aug)
            .with_normalisation(stats)
            .unwrap();
        let batcher = Batcher::new(
            ds,
            |items| collate_patches(items, &Device::Cpu),
            BatchConfig {
                batch_size: 16,
                prefetch: 1,
                ..BatchConfig::default()
            },
        )
        .unwrap();
        let mut seen = 0;
        for batch in batcher.batches(0).unwrap() {
            let (x, y) = batch.unwrap();
            let (b, c, h, w) = x.dims4().unwrap();
            assert_eq!((c, h, w), (3, 8, 8));
            assert_eq!(y.dims3().unwrap(), (b, 8, 8));
            // Band 0 (mean 0, std 1) still equals the mask after flips and rotations.
            let band0: Vec<f32> = x
                .narrow(1, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let labels: Vec<u32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert!(band0.iter().zip(&labels).all(|(a, &l)| *a == l as f32));
            assert!(labels.iter().all(|&l| l <= 1 || l == 255));
            seen += b;
        }
        assert_eq!(seen, 40);
    }

    #[test]
    fn collate_rejects_mixed_shapes() {
        let a = (Array3::zeros((3, 4, 4)), Array2::zeros((4, 4)));
        let b = (Array3::zeros((3, 4, 5)), Array2::zeros((4, 5)));
        assert!(collate_patches(vec![a, b], &Device::Cpu).is_err());
        assert!(collate_patches(vec![], &Device::Cpu).is_err());
    }
}
