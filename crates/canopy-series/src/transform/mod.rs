//! Preprocessing as chainable blocks.
//!
//! Rußwurm & Körner (Φ-week 2019) write classical preprocessing as a chain of blocks
//! `f_int(f_cl(f_atm(f_sel(X))))`: temporal selection `f_sel` (drop the winter), atmospheric
//! correction `f_atm`, cloud classification `f_cl`, temporal interpolation `f_int`, and more.
//! Each block here implements [`Transform`]; a [`Pipeline`] chains them, so the same code
//! builds the "preprocessed" and the "raw" variants of an experiment:
//!
//! | block | paper | what it does |
//! |---|---|---|
//! | [`TemporalSelect`] | `f_sel` | keeps the dates in `[start, end]` |
//! | [`CloudClassify`] | `f_cl` | marks dates invalid by a [`CloudRule`] |
//! | [`CloudFilter`] | | drops invalid dates |
//! | [`Interpolate`] | `f_int` | linear gap filling onto a regular date grid |
//! | [`GapFill`] | `f_cl` + `f_int` | invalid dates replaced by linear interpolation in place |
//! | [`RandomSubsample`] | | BreizhCrops' random choice of `T` ordered dates |
//! | [`PadTruncate`] | | fixed length with padding recorded in [`Series::padding`] |
//! | [`Normalize`], [`Scale`] | | per-band standardisation; reflectance scaling |
//! | [`SyntheticClouds`] | | injects clouds and shadows, recording them in [`Series::truth`] |
//!
//! Every block takes the random generator, even deterministic ones, so a pipeline is
//! reproducible from one seed: [`Pipeline::apply_dataset`] seeds sample `i` from
//! `(seed, i)`.
//!
//! # Example
//! ```
//! use canopy_series::transform::{Pipeline, TemporalSelect, CloudFilter, Interpolate, Transform};
//! use canopy_series::{Date, Series};
//! use ndarray::array;
//! use rand::SeedableRng;
//!
//! let d = |m, day| Date::new(2018, m, day);
//! let s = Series::new(array![[0.1f32], [0.9], [0.3], [0.5]],
//!                     Some(vec![d(1, 5)?, d(3, 1)?, d(3, 11)?, d(3, 31)?]))?
//!     .with_mask(vec![true, false, true, true])?;
//! let pipe = Pipeline::new()
//!     .then(TemporalSelect::new(d(2, 1)?, d(12, 31)?)?)
//!     .then(CloudFilter)
//!     .then(Interpolate::new(d(3, 11)?, d(3, 31)?, 10)?);
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let out = pipe.apply(s, &mut rng)?;
//! assert_eq!(out.values.column(0).to_vec(), vec![0.3, 0.4, 0.5]);
//! # Ok::<(), canopy_series::Error>(())
//! ```

mod cloud;
mod gapfill;
mod normalize;
mod synthetic;
mod temporal;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use cloud::{hollstein_class, CloudClassify, CloudRule, HollsteinClass};
pub use gapfill::GapFill;
pub use normalize::{Normalization, Normalize, Scale};
pub use synthetic::{CloudModel, SyntheticClouds};
pub use temporal::{CloudFilter, Interpolate, PadTruncate, RandomSubsample, TemporalSelect};

use crate::{Error, Result, Series, SeriesDataset};

/// One preprocessing block: a function of a series and a random generator.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// Transforms one series.
    ///
    /// Every block first checks the series' invariants ([`Series::check`]), so a hand-built
    /// series with, say, a mask of the wrong length is an error, never a panic.
    ///
    /// # Errors
    /// A series failing [`Series::check`]; block-specific: a series without the dates, bands
    /// or valid steps the block needs.
    fn apply(&self, s: Series, rng: &mut dyn RngCore) -> Result<Series>;
}

/// Blocks applied in order.
#[derive(Debug, Default)]
pub struct Pipeline {
    blocks: Vec<Box<dyn Transform>>,
}

impl Pipeline {
    /// An empty pipeline (the identity).
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// The pipeline followed by `block`.
    pub fn then(mut self, block: impl Transform + 'static) -> Pipeline {
        self.blocks.push(Box::new(block));
        self
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the pipeline has no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Applies the pipeline to every sample; sample `i` uses a generator seeded from
    /// `(seed, i)`, so the result does not depend on the order of processing.
    ///
    /// # Errors
    /// The first failing sample's error, prefixed with its index and id.
    pub fn apply_dataset(&self, ds: SeriesDataset, seed: u64) -> Result<SeriesDataset> {
        let mut i = 0u64;
        ds.try_map(|s| {
            let mut rng = sample_rng(seed, i);
            let id = s.id.clone().unwrap_or_default();
            let idx = i;
            i += 1;
            self.apply(s, &mut rng).map_err(|e| Error::InvalidArgument {
                op: "Pipeline::apply_dataset",
                message: format!("sample {idx} (id {id:?}): {e}"),
            })
        })
    }
}

/// The generator of sample `index` under `seed` (SplitMix-style mixing of both).
pub fn sample_rng(seed: u64, index: u64) -> StdRng {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

impl Transform for Pipeline {
    fn apply(&self, mut s: Series, rng: &mut dyn RngCore) -> Result<Series> {
        for b in &self.blocks {
            s = b.apply(s, rng)?;
        }
        Ok(s)
    }
}

pub(crate) fn invalid(op: &'static str, message: String) -> Error {
    Error::InvalidArgument { op, message }
}

pub(crate) fn series_id(s: &Series) -> &str {
    s.id.as_deref().unwrap_or("(no id)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Date;
    use ndarray::Array2;

    #[test]
    fn malformed_series_are_errors_for_every_block() -> Result<()> {
        let d = |m| Date::new(2019, m, 1);
        let mut s = Series::new(
            Array2::from_elem((3, 13), 0.1f32),
            Some(vec![d(1)?, d(2)?, d(3)?]),
        )?;
        s.mask.pop(); // now 2 mask entries for T = 3
        let names = crate::bands::band_names(&crate::BREIZHCROPS_L1C_BANDS);
        let norm = Normalization {
            bands: names.clone(),
            mean: vec![0.0; 13],
            std: vec![1.0; 13],
        };
        let blocks: Vec<Box<dyn Transform>> = vec![
            Box::new(TemporalSelect::new(d(1)?, d(12)?)?),
            Box::new(CloudClassify {
                rule: CloudRule::hollstein(&names)?,
            }),
            Box::new(CloudFilter),
            Box::new(Interpolate::new(d(1)?, d(3)?, 7)?),
            Box::new(RandomSubsample { length: 5 }),
            Box::new(PadTruncate {
                length: 5,
                value: 0.0,
            }),
            Box::new(Normalize(norm)),
            Box::new(Scale::breizhcrops()),
            Box::new(SyntheticClouds::new(0.5, 0.5, CloudModel::reflectance())?),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        for b in &blocks {
            assert!(
                b.apply(s.clone(), &mut rng).is_err(),
                "{b:?} accepted a bad series"
            );
        }
        Ok(())
    }
}
