//! `f_cl`: cloud and cloud-shadow classification of each date.

use rand::RngCore;

use super::{invalid, series_id, Transform};
use crate::bands::{band_index, Band};
use crate::{Result, Series};

/// How [`CloudClassify`] decides that a date is cloudy.
///
/// Band positions are resolved from band names when the rule is built (see the
/// constructors), so a rule built for one band order cannot silently read another.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudRule {
    /// Keep the mask that came with the data (eo-learn `CLM`, BreizhCrops `QA60`, ...).
    Given,
    /// Cloudy when the value of band `band` exceeds `threshold` (a cloud-probability band
    /// such as eo-learn's `CLP` / s2cloudless, threshold typically 0.4–0.5 on 0..1).
    Probability {
        /// Column of the probability band.
        band: usize,
        /// Cloudy above this value.
        threshold: f32,
    },
    /// Brightness test: cloudy when the blue reflectance `B02` exceeds `threshold`
    /// (reflectance 0..1; 0.2 is a common choice). Clouds are bright and white across the
    /// visible, while vegetation, soil and water rarely exceed 0.15 in blue top-of-atmosphere
    /// reflectance; bright soils, snow and buildings are false positives. It is the first,
    /// simplest spectral test of rule-based detectors such as Hollstein et al. (2016), whose
    /// tree starts with a visible-band brightness split (`B03 < 0.319`), and of Fmask's
    /// basic cloud test (Zhu & Woodcock 2012).
    BlueBrightness {
        /// Column of `B02`.
        band: usize,
        /// Cloudy above this reflectance.
        threshold: f32,
    },
    /// The decision tree of Hollstein et al. (2016, Remote Sensing 8(8):666, figure 8) on
    /// Level-1C top-of-atmosphere reflectances 0..1 of all 13 bands; `Cloud`, `Cirrus` and
    /// `Shadow` dates become invalid (`Snow`, `Water`, `Clear` stay valid). See
    /// [`hollstein_class`].
    Hollstein {
        /// Columns of B01..B12 in [`Band::ALL`] order.
        bands: [usize; 13],
    },
}

impl CloudRule {
    /// A probability rule on the band named `name` among `band_names`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when no band has that name.
    pub fn probability(band_names: &[String], name: &str, threshold: f32) -> Result<CloudRule> {
        let band = band_names.iter().position(|n| n == name).ok_or_else(|| {
            invalid(
                "CloudRule::probability",
                format!("no band {name:?} among {band_names:?}"),
            )
        })?;
        Ok(CloudRule::Probability { band, threshold })
    }

    /// The blue brightness test on `B02` (any Sentinel-2 spelling) among `band_names`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `B02` is missing.
    pub fn blue_brightness(band_names: &[String], threshold: f32) -> Result<CloudRule> {
        Ok(CloudRule::BlueBrightness {
            band: band_index(band_names, Band::B02)?,
            threshold,
        })
    }

    /// Hollstein's tree; `band_names` must contain all 13 Level-1C bands, in any order.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the first missing band.
    pub fn hollstein(band_names: &[String]) -> Result<CloudRule> {
        let mut bands = [0; 13];
        for (slot, b) in bands.iter_mut().zip(Band::ALL) {
            *slot = band_index(band_names, b)?;
        }
        Ok(CloudRule::Hollstein { bands })
    }
}

/// The classes of Hollstein et al.'s decision tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HollsteinClass {
    /// Clear sky over land.
    Clear,
    /// Cloud shadow.
    Shadow,
    /// Water.
    Water,
    /// Cirrus.
    Cirrus,
    /// Opaque cloud.
    Cloud,
    /// Snow.
    Snow,
}

/// Hollstein et al. (2016)'s decision tree for one pixel: `r` holds the Level-1C
/// top-of-atmosphere reflectances (0..1) of B01..B12 in [`Band::ALL`] order
/// (B01, ..., B08, B8A, B09, B10, B11, B12).
///
/// The thresholds are the published ones (figure 8 of the paper; the same tree is the
/// Sentinel Hub custom script `hollstein`).
pub fn hollstein_class(r: &[f32; 13]) -> HollsteinClass {
    use HollsteinClass::*;
    let [b01, b02, b03, _b04, b05, b06, b07, _b08, b8a, b09, b10, b11, _b12] = *r;
    if b03 < 0.319 {
        if b8a < 0.166 {
            if b03 - b07 < 0.027 {
                if b09 - b11 < -0.097 {
                    Clear
                } else {
                    Shadow
                }
            } else if b09 - b11 < 0.021 {
                Water
            } else {
                Shadow
            }
        } else if b02 / b10 < 14.689 {
            if b02 / b09 < 0.788 {
                Clear
            } else {
                Cirrus
            }
        } else {
            Clear
        }
    } else if b05 / b11 < 4.33 {
        if b11 - b10 < 0.255 {
            if b06 - b07 < -0.016 {
                Cloud
            } else {
                Cirrus
            }
        } else if b01 < 0.3 {
            Clear
        } else {
            Cloud
        }
    } else if b03 < 0.525 {
        if b01 / b05 < 1.184 {
            Clear
        } else {
            Shadow
        }
    } else {
        Snow
    }
}

/// `f_cl`: sets `mask[t] = false` for every observed date the [`CloudRule`] calls cloudy
/// (an already invalid date stays invalid). Values are not changed.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudClassify {
    /// The rule.
    pub rule: CloudRule,
}

impl CloudClassify {
    /// Whether observed step `t` of `s` is cloudy under the rule.
    fn cloudy(&self, s: &Series, t: usize) -> bool {
        let v = |b: usize| s.values[(t, b)];
        match &self.rule {
            CloudRule::Given => false,
            CloudRule::Probability { band, threshold } => v(*band) > *threshold,
            CloudRule::BlueBrightness { band, threshold } => v(*band) > *threshold,
            CloudRule::Hollstein { bands } => {
                let r = bands.map(v);
                matches!(
                    hollstein_class(&r),
                    HollsteinClass::Cloud | HollsteinClass::Cirrus | HollsteinClass::Shadow
                )
            }
        }
    }
}

impl Transform for CloudClassify {
    fn apply(&self, mut s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let max_band = match &self.rule {
            CloudRule::Given => None,
            CloudRule::Probability { band, .. } | CloudRule::BlueBrightness { band, .. } => {
                Some(*band)
            }
            CloudRule::Hollstein { bands } => bands.iter().copied().max(),
        };
        if let Some(b) = max_band.filter(|&b| b >= s.bands()) {
            return Err(invalid(
                "CloudClassify",
                format!(
                    "series {} has {} bands, the rule reads column {b}; build the rule from \
                     this dataset's band names",
                    series_id(&s),
                    s.bands()
                ),
            ));
        }
        for t in 0..s.observed_len() {
            if self.cloudy(&s, t) {
                s.mask[t] = false;
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bands::band_names;
    use ndarray::Array2;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn rules_mark_cloudy_dates() -> Result<()> {
        let names = band_names(&crate::BREIZHCROPS_L1C_BANDS);
        // Vegetation-like clear spectrum vs. a bright white cloud, in BreizhCrops order
        // (B1, B10, B11, B12, B2, B3, B4, B5, B6, B7, B8, B8A, B9).
        let clear = [
            0.12, 0.002, 0.18, 0.09, 0.09, 0.08, 0.05, 0.1, 0.25, 0.3, 0.32, 0.34, 0.1,
        ];
        let cloud = [
            0.5, 0.05, 0.4, 0.3, 0.5, 0.48, 0.47, 0.49, 0.5, 0.52, 0.53, 0.53, 0.3,
        ];
        let v: Vec<f32> = clear.iter().chain(cloud.iter()).copied().collect();
        let s = Series::new(
            Array2::from_shape_vec((2, 13), v).map_err(|e| invalid("t", e.to_string()))?,
            None,
        )?;
        let mut rng = StdRng::seed_from_u64(0);
        let b = CloudClassify {
            rule: CloudRule::blue_brightness(&names, 0.2)?,
        };
        assert_eq!(b.apply(s.clone(), &mut rng)?.mask, vec![true, false]);
        let h = CloudClassify {
            rule: CloudRule::hollstein(&names)?,
        };
        assert_eq!(h.apply(s.clone(), &mut rng)?.mask, vec![true, false]);
        let p = CloudClassify {
            rule: CloudRule::probability(&names, "B01", 0.3)?,
        };
        assert_eq!(p.apply(s.clone(), &mut rng)?.mask, vec![true, false]);
        assert!(CloudRule::probability(&names, "CLP", 0.3).is_err());
        let few = Series::new(Array2::zeros((1, 2)), None)?;
        assert!(b.apply(few, &mut rng).is_err());
        Ok(())
    }

    #[test]
    fn hollstein_branches() {
        let mut r = [0.1f32; 13];
        // Dark everywhere, B03 - B07 >= 0.027 and B09 - B11 < 0.021: water.
        r[2] = 0.1;
        r[6] = 0.02;
        r[9] = 0.01;
        r[11] = 0.05;
        r[8] = 0.02;
        assert_eq!(hollstein_class(&r), HollsteinClass::Water);
        let snow = [
            0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.5, 0.01, 0.01, 0.01,
        ];
        assert_eq!(hollstein_class(&snow), HollsteinClass::Snow);
    }
}
