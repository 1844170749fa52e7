//! Synthetic cloud and cloud-shadow injection, for experiments on how much a model relies on
//! clean data (the cloud-coverage ablation of Rußwurm & Körner, NeurIPS 2018 workshop).

use rand::{Rng, RngCore};

use super::{invalid, Transform};
use crate::{PatchSeries, Result, Series};

/// How an injected cloud or shadow changes one date's values.
///
/// The model is a per-date, spatially uniform layer:
/// * **cloud**: a semi-transparent layer of opacity `α ~ U(opacity.0, opacity.1)` blends every
///   band towards the cloud's own value `c_b`: `x'_b = (1 - α) x_b + α c_b`. Thick clouds are
///   bright and flat across the spectrum (reflectance about 0.4–0.8 in every band), so for
///   reflectances `c_b` is high; for NDVI a cloud drives the index towards 0, so `c = 0`.
/// * **shadow**: the surface is lit by diffuse light only, so every band is scaled down by
///   `f ~ U(shadow_factor.0, shadow_factor.1)`: `x'_b = f x_b`.
///
/// Thin haze, cloud edges, the spatial shape of clouds and the displacement of shadows from
/// their clouds are not modelled.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudModel {
    /// Value of an opaque cloud per band; a single value applies to every band.
    pub cloud_value: Vec<f32>,
    /// Range of the cloud opacity `α` (within 0..=1).
    pub opacity: (f32, f32),
    /// Range of the shadow darkening factor `f` (within 0..=1).
    pub shadow_factor: (f32, f32),
}

impl CloudModel {
    /// For top-of-atmosphere reflectances in 0..1: clouds towards 0.6 with opacity 0.5–1,
    /// shadows at 30–70 % of the light.
    pub fn reflectance() -> CloudModel {
        CloudModel {
            cloud_value: vec![0.6],
            opacity: (0.5, 1.0),
            shadow_factor: (0.3, 0.7),
        }
    }

    /// For NDVI series: clouds pull the index towards 0 with opacity 0.7–1; a shadow scales
    /// it by 0.6–1 (ratios are roughly preserved under shade, noise lowers them).
    pub fn ndvi() -> CloudModel {
        CloudModel {
            cloud_value: vec![0.0],
            opacity: (0.7, 1.0),
            shadow_factor: (0.6, 1.0),
        }
    }
}

/// Injects synthetic clouds and shadows into a share `coverage` of the observed dates.
///
/// Each observed date is corrupted independently with probability `coverage`; a corrupted
/// date is a shadow with probability `shadow_share`, a cloud otherwise (see [`CloudModel`]).
/// Corrupted dates are marked `false` in [`Series::truth`] (created from the mask when
/// absent) but **not** in [`Series::mask`]: a model trained on "raw" data must not be told
/// where the clouds are; only the evaluation reads `truth`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticClouds {
    coverage: f64,
    shadow_share: f64,
    model: CloudModel,
}

impl SyntheticClouds {
    /// A cloud injector.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `coverage` or `shadow_share` is outside 0..=1,
    /// the model's ranges are not ordered sub-ranges of 0..=1, or it has no cloud value.
    pub fn new(coverage: f64, shadow_share: f64, model: CloudModel) -> Result<SyntheticClouds> {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        let range = |(a, b): (f32, f32)| (0.0..=1.0).contains(&a) && (a..=1.0).contains(&b);
        if !unit(coverage) || !unit(shadow_share) {
            return Err(invalid(
                "SyntheticClouds",
                format!("coverage {coverage} and shadow_share {shadow_share} must be in 0..=1"),
            ));
        }
        if !range(model.opacity) || !range(model.shadow_factor) || model.cloud_value.is_empty() {
            return Err(invalid(
                "SyntheticClouds",
                format!(
                    "opacity {:?} and shadow_factor {:?} must be ordered ranges in 0..=1 and \
                     cloud_value non-empty",
                    model.opacity, model.shadow_factor
                ),
            ));
        }
        Ok(SyntheticClouds {
            coverage,
            shadow_share,
            model,
        })
    }
}

impl SyntheticClouds {
    /// Injects clouds and shadows into an image time series as square blocks of
    /// `cell x cell` pixels: at every date the image is cut into a grid of cells (shifted by a
    /// random offset per date), each cell is corrupted with probability `coverage` (a shadow
    /// with probability `shadow_share`, a cloud otherwise, with one opacity or darkening per
    /// cell, see [`CloudModel`]). So `coverage` is the expected fraction of corrupted pixels
    /// at every date, and clouds have a spatial extent, as a ConvLSTM sees them. Corrupted
    /// pixels are `false` in [`PatchSeries::truth`] (created from the mask when absent), never
    /// in the mask.
    ///
    /// # Shapes
    /// `values (T, C, H, W)`; `truth (T, H, W)`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `cell` is 0, the patch fails
    /// [`PatchSeries::check`] or the cloud values do not match `C`.
    pub fn apply_patch(
        &self,
        mut p: PatchSeries,
        cell: usize,
        rng: &mut dyn RngCore,
    ) -> Result<PatchSeries> {
        p.check()?;
        let (t, c, h, w) = p.values.dim();
        let cv = &self.model.cloud_value;
        if cell == 0 || (cv.len() != 1 && cv.len() != c) {
            return Err(invalid(
                "SyntheticClouds::apply_patch",
                format!(
                    "need cell >= 1 and 1 or {c} cloud values, got cell {cell} and {} values",
                    cv.len()
                ),
            ));
        }
        let mut truth = p.truth.take().unwrap_or_else(|| p.mask.clone());
        for ti in 0..t {
            let (oy, ox) = (rng.random_range(0..cell), rng.random_range(0..cell));
            // Cell (i, j) covers rows i * cell - oy .. and columns j * cell - ox ..
            for i in 0..(h + oy).div_ceil(cell) {
                for j in 0..(w + ox).div_ceil(cell) {
                    if !rng.random_bool(self.coverage) {
                        continue;
                    }
                    let shadow = rng.random_bool(self.shadow_share);
                    let k = if shadow {
                        draw(rng, self.model.shadow_factor)
                    } else {
                        draw(rng, self.model.opacity)
                    };
                    let rows = (i * cell).saturating_sub(oy)..((i + 1) * cell - oy).min(h);
                    let cols = (j * cell).saturating_sub(ox)..((j + 1) * cell - ox).min(w);
                    for r in rows {
                        for x in cols.clone() {
                            truth[(ti, r, x)] = false;
                            for b in 0..c {
                                let v = &mut p.values[(ti, b, r, x)];
                                *v = if shadow {
                                    *v * k
                                } else {
                                    let target = if cv.len() == 1 { cv[0] } else { cv[b] };
                                    (1.0 - k) * *v + k * target
                                };
                            }
                        }
                    }
                }
            }
        }
        p.truth = Some(truth);
        Ok(p)
    }
}

/// A uniform draw from `a..=b` (just `a` for an empty range).
fn draw(rng: &mut dyn RngCore, (a, b): (f32, f32)) -> f32 {
    if b > a {
        rng.random_range(a..=b)
    } else {
        a
    }
}

impl Transform for SyntheticClouds {
    fn apply(&self, mut s: Series, rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let c = s.bands();
        let cv = &self.model.cloud_value;
        if cv.len() != 1 && cv.len() != c {
            return Err(invalid(
                "SyntheticClouds",
                format!(
                    "cloud_value has {} entries for {c} bands (give 1 or {c})",
                    cv.len()
                ),
            ));
        }
        let mut truth = s.truth.take().unwrap_or_else(|| s.mask.clone());
        let obs = s.observed_len();
        for (t, clear) in truth.iter_mut().enumerate().take(obs) {
            if !rng.random_bool(self.coverage) {
                continue;
            }
            *clear = false;
            let mut row = s.values.row_mut(t);
            if rng.random_bool(self.shadow_share) {
                let f = draw(rng, self.model.shadow_factor);
                row.mapv_inplace(|x| x * f);
            } else {
                let alpha = draw(rng, self.model.opacity);
                for (b, x) in row.iter_mut().enumerate() {
                    let target = if cv.len() == 1 { cv[0] } else { cv[b] };
                    *x = (1.0 - alpha) * *x + alpha * target;
                }
            }
        }
        s.truth = Some(truth);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn coverage_matches_request_and_mask_is_untouched() -> Result<()> {
        for &coverage in &[0.0, 0.1, 0.3, 0.7, 1.0] {
            let block = SyntheticClouds::new(coverage, 0.3, CloudModel::reflectance())?;
            let mut rng = StdRng::seed_from_u64(42);
            let (mut hit, mut total, mut brighter, mut darker) = (0usize, 0usize, 0, 0);
            for _ in 0..400 {
                let s = Series::new(Array2::from_elem((50, 4), 0.1f32), None)?;
                let out = block.apply(s, &mut rng)?;
                assert!(out.mask.iter().all(|&m| m), "input mask must stay clear");
                let truth = out.truth.clone().unwrap_or_default();
                for (t, &clear) in truth.iter().enumerate() {
                    total += 1;
                    let v = out.values[(t, 0)];
                    if clear {
                        assert_eq!(v, 0.1);
                    } else {
                        hit += 1;
                        brighter += usize::from(v > 0.1);
                        darker += usize::from(v < 0.1);
                    }
                }
            }
            let frac = hit as f64 / total as f64;
            // 20 000 Bernoulli draws: standard deviation <= 0.0036.
            assert!(
                (frac - coverage).abs() < 0.015,
                "coverage {coverage}: got {frac}"
            );
            if coverage > 0.0 {
                let shadow = darker as f64 / hit as f64;
                assert!((shadow - 0.3).abs() < 0.05, "shadow share {shadow}");
                assert_eq!(brighter + darker, hit);
            }
        }
        Ok(())
    }

    #[test]
    fn patch_clouds_cover_the_requested_fraction_in_blocks() -> Result<()> {
        use ndarray::{Array3, Array4};
        let (t, h, w) = (200, 20, 30);
        let p = PatchSeries {
            values: Array4::from_elem((t, 2, h, w), 0.1f32),
            dates: None,
            mask: Array3::from_elem((t, h, w), true),
            truth: None,
            labels: None,
            band_names: vec!["B02".into(), "B08".into()],
            class_names: vec![],
        };
        let block = SyntheticClouds::new(0.3, 0.0, CloudModel::reflectance())?;
        let out = block.apply_patch(p.clone(), 5, &mut StdRng::seed_from_u64(3))?;
        assert_eq!(out.mask, p.mask, "the input mask is untouched");
        let truth = out
            .truth
            .clone()
            .unwrap_or_else(|| Array3::from_elem((0, 0, 0), true));
        let frac = truth.iter().filter(|&&c| !c).count() as f64 / truth.len() as f64;
        assert!((frac - 0.3).abs() < 0.02, "cloudy fraction {frac}");
        // Clouds come in blocks: most cloudy pixels have a cloudy right neighbour.
        let (mut pairs, mut both) = (0, 0);
        for ((ti, r, x), &clear) in truth.indexed_iter() {
            if !clear && x + 1 < w {
                pairs += 1;
                both += usize::from(!truth[(ti, r, x + 1)]);
            }
        }
        assert!(both as f64 / pairs as f64 > 0.7, "{both} of {pairs}");
        for ((ti, b, r, x), &v) in out.values.indexed_iter() {
            assert_eq!(v > 0.1, !truth[(ti, r, x)], "at {:?}", (ti, b, r, x));
        }
        assert!(block
            .apply_patch(p, 0, &mut StdRng::seed_from_u64(3))
            .is_err());
        Ok(())
    }

    #[test]
    fn rejects_bad_settings_and_is_seeded() -> Result<()> {
        assert!(SyntheticClouds::new(1.5, 0.0, CloudModel::ndvi()).is_err());
        let mut m = CloudModel::ndvi();
        m.opacity = (0.9, 0.2);
        assert!(SyntheticClouds::new(0.5, 0.0, m).is_err());
        let b = SyntheticClouds::new(0.5, 0.0, CloudModel::ndvi())?;
        let s = Series::new(Array2::from_elem((30, 1), 0.8f32), None)?;
        let a1 = b.apply(s.clone(), &mut StdRng::seed_from_u64(7))?;
        let a2 = b.apply(s.clone(), &mut StdRng::seed_from_u64(7))?;
        assert_eq!(a1, a2);
        // NDVI clouds pull towards 0.
        for (t, &clear) in a1.truth.clone().unwrap_or_default().iter().enumerate() {
            assert!(clear || a1.values[(t, 0)] <= 0.8 * 0.3 + 1e-6);
        }
        let mut bad = CloudModel::reflectance();
        bad.cloud_value = vec![0.5, 0.5];
        let b = SyntheticClouds::new(0.5, 0.0, bad)?;
        assert!(b
            .apply(
                Series::new(Array2::zeros((3, 3)), None)?,
                &mut StdRng::seed_from_u64(0)
            )
            .is_err());
        Ok(())
    }
}
