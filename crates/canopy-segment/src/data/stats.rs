//! Per-band normalisation statistics from training images.

use canopy_train::checkpoint::Normalisation;
use ndarray::{ArrayView2, ArrayViewMut3, Axis};

use super::{LabelledImage, IGNORE};
use crate::{Error, Result};

/// Per-band mean and (population) standard deviation of the valid pixels of a set of images.
///
/// Pixels whose mask is [`IGNORE`] (alpha 0, nodata, no label) are left out. Each image's
/// bands are summed in two passes and the images are merged with Chan et al.'s pairwise
/// update, so the result is accurate for 16-bit data and millions of pixels. The statistics
/// convert to and from [`Normalisation`], which a checkpoint saves next to the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct BandStats {
    /// Per-band means.
    pub mean: Vec<f64>,
    /// Per-band standard deviations (divisor n).
    pub std: Vec<f64>,
    /// Number of pixels the statistics are over.
    pub count: u64,
}

impl BandStats {
    /// Statistics of `samples` (typically the training split).
    ///
    /// # Errors
    /// [`Error::Config`] when there is no sample or no valid pixel; [`Error::Shape`] naming
    /// the first image whose band count differs from the first one's.
    pub fn compute(samples: &[LabelledImage]) -> Result<Self> {
        let first = samples.first().ok_or_else(|| Error::Config {
            context: "BandStats::compute",
            message: "no sample to compute statistics from".into(),
        })?;
        let bands = first.bands();
        let mut n = 0u64;
        let mut mean = vec![0.0f64; bands];
        let mut m2 = vec![0.0f64; bands];
        for s in samples {
            if s.bands() != bands {
                return Err(Error::Shape {
                    context: "BandStats::compute",
                    expected: format!("{bands} bands in every image (as in the first)"),
                    actual: format!("{} bands in {}", s.bands(), s.source().display()),
                });
            }
            let mask = s.mask();
            let nb = mask.iter().filter(|&&v| v != IGNORE).count() as u64;
            if nb == 0 {
                continue;
            }
            for (b, band) in s.image().axis_iter(Axis(0)).enumerate() {
                let (mb, m2b) = band_moments(band, mask, nb);
                let total = (n + nb) as f64;
                let delta = mb - mean[b];
                mean[b] += delta * nb as f64 / total;
                m2[b] += m2b + delta * delta * n as f64 * nb as f64 / total;
            }
            n += nb;
        }
        if n == 0 {
            return Err(Error::Config {
                context: "BandStats::compute",
                message: "every pixel of every sample is masked (IGNORE); nothing to compute \
                          statistics from"
                    .into(),
            });
        }
        let std = m2.iter().map(|v| (v / n as f64).sqrt()).collect();
        Ok(BandStats {
            mean,
            std,
            count: n,
        })
    }

    /// Normalises `image` `(C, H, W)` in place: `(x - mean) / std` per band.
    ///
    /// # Errors
    /// [`Error::Shape`] when the band count differs; [`Error::Config`] when a band's standard
    /// deviation is 0 or not finite (a constant band cannot be normalised: drop it).
    pub fn apply(&self, mut image: ArrayViewMut3<'_, f32>) -> Result<()> {
        if image.dim().0 != self.mean.len() {
            return Err(Error::Shape {
                context: "BandStats::apply",
                expected: format!("{} bands", self.mean.len()),
                actual: format!("{:?}", image.dim()),
            });
        }
        for (b, mut band) in image.axis_iter_mut(Axis(0)).enumerate() {
            let (m, s) = (
                self.mean.get(b).copied().unwrap_or(0.0),
                self.std.get(b).copied().unwrap_or(0.0),
            );
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::Config {
                    context: "BandStats::apply",
                    message: format!("band {b} has standard deviation {s}; it cannot be scaled"),
                });
            }
            let inv = 1.0 / s;
            band.mapv_inplace(|x| ((f64::from(x) - m) * inv) as f32);
        }
        Ok(())
    }

    /// The statistics as saved in a checkpoint's sidecar.
    pub fn to_normalisation(&self) -> Normalisation {
        Normalisation {
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// Statistics read back from a checkpoint (`count` unknown, set to 0).
    ///
    /// # Errors
    /// [`Error::Shape`] when `mean` and `std` differ in length.
    pub fn from_normalisation(n: &Normalisation) -> Result<Self> {
        if n.mean.len() != n.std.len() {
            return Err(Error::Shape {
                context: "BandStats::from_normalisation",
                expected: "as many standard deviations as means".into(),
                actual: format!("{} means, {} stds", n.mean.len(), n.std.len()),
            });
        }
        Ok(BandStats {
            mean: n.mean.clone(),
            std: n.std.clone(),
            count: 0,
        })
    }
}

/// Mean and sum of squared deviations of the pixels of `band` whose mask is not IGNORE.
fn band_moments(band: ArrayView2<'_, f32>, mask: ArrayView2<'_, u8>, n: u64) -> (f64, f64) {
    let mut sum = 0.0f64;
    ndarray::Zip::from(band).and(mask).for_each(|&x, &m| {
        if m != IGNORE {
            sum += f64::from(x);
        }
    });
    let mean = sum / n as f64;
    let mut m2 = 0.0f64;
    ndarray::Zip::from(band).and(mask).for_each(|&x, &m| {
        if m != IGNORE {
            let d = f64::from(x) - mean;
            m2 += d * d;
        }
    });
    (mean, m2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_sample(rng: &mut StdRng, h: usize, w: usize, name: &str) -> LabelledImage {
        let img = Array3::from_shape_fn((3, h, w), |(b, _, _)| {
            rng.random_range(0.0..1000.0f32) + 500.0 * b as f32
        });
        let mask = Array2::from_shape_fn((h, w), |_| {
            if rng.random_bool(0.2) {
                IGNORE
            } else {
                rng.random_range(0..2u8)
            }
        });
        LabelledImage::new(img, mask, "g", name).unwrap()
    }

    #[test]
    fn stats_equal_a_direct_computation_over_valid_pixels() {
        let mut rng = StdRng::seed_from_u64(3);
        let samples: Vec<_> = (0..4)
            .map(|i| random_sample(&mut rng, 7 + i, 9, &format!("s{i}")))
            .collect();
        let stats = BandStats::compute(&samples).unwrap();
        for b in 0..3 {
            let vals: Vec<f64> = samples
                .iter()
                .flat_map(|s| {
                    let img = s.image();
                    s.mask()
                        .indexed_iter()
                        .filter(|(_, &m)| m != IGNORE)
                        .map(|((r, c), _)| f64::from(img[[b, r, c]]))
                        .collect::<Vec<_>>()
                })
                .collect();
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            assert_eq!(stats.count, vals.len() as u64);
            assert!(
                (stats.mean[b] - mean).abs() < 1e-9,
                "{} {mean}",
                stats.mean[b]
            );
            assert!((stats.std[b] - var.sqrt()).abs() < 1e-9);
        }
    }

    #[test]
    fn ignored_pixels_do_not_move_the_statistics() {
        let img = Array3::from_shape_vec((1, 1, 4), vec![1.0, 3.0, 1e6, -1e6]).unwrap();
        let mask = Array2::from_shape_vec((1, 4), vec![0, 1, IGNORE, IGNORE]).unwrap();
        let s = LabelledImage::new(img, mask, "g", "x").unwrap();
        let st = BandStats::compute(&[s]).unwrap();
        assert_eq!(st.mean, vec![2.0]);
        assert_eq!(st.std, vec![1.0]);
    }

    #[test]
    fn apply_normalises_and_round_trips_through_a_checkpoint() {
        let mut rng = StdRng::seed_from_u64(5);
        let s = random_sample(&mut rng, 16, 16, "a");
        let st = BandStats::compute(std::slice::from_ref(&s)).unwrap();
        let back = BandStats::from_normalisation(&st.to_normalisation()).unwrap();
        let mut img = s.image().to_owned();
        back.apply(img.view_mut()).unwrap();
        let normed = LabelledImage::new(img, s.mask().to_owned(), "g", "x").unwrap();
        let again = BandStats::compute(&[normed]).unwrap();
        for b in 0..3 {
            assert!(again.mean[b].abs() < 1e-5, "{}", again.mean[b]);
            assert!((again.std[b] - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn constant_bands_and_empty_input_are_errors() {
        assert!(BandStats::compute(&[]).is_err());
        let s =
            LabelledImage::new(Array3::ones((1, 2, 2)), Array2::zeros((2, 2)), "g", "x").unwrap();
        let st = BandStats::compute(std::slice::from_ref(&s)).unwrap();
        let mut img = s.image().to_owned();
        let err = st.apply(img.view_mut()).unwrap_err();
        assert!(err.to_string().contains("band 0"), "{err}");
    }
}
