//! Gap filling in place: invalid dates replaced by linear interpolation between the valid ones.

use rand::RngCore;

use super::Transform;
use crate::{Error, Result, Series};

/// Replaces the values of every observed date whose mask is `false` (a cloud, a shadow, a
/// missing value) by linear interpolation in time between the nearest valid dates of the same
/// band, keeping the series' own dates — the seeds' cloud filtering + interpolation (f_cl,
/// f_int) without changing the length, so raw and preprocessed series feed the same model.
/// Before the first and after the last valid date the value is that date's (constant
/// extrapolation, as `numpy.interp`). Afterwards every observed date is valid; padding steps
/// and [`Series::truth`] are left alone.
///
/// [`Interpolate`](super::Interpolate) resamples onto a regular grid instead.
///
/// # Errors
/// [`apply`](Transform::apply) fails on a series without dates, and — unless built with
/// [`keep_if_unobserved`](Self::keep_if_unobserved) — on a band with no valid observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GapFill {
    keep_unobserved: bool,
}

impl GapFill {
    /// Gap filling that refuses a band with no valid observation.
    pub fn new() -> GapFill {
        GapFill {
            keep_unobserved: false,
        }
    }

    /// Gap filling that leaves a band with no valid observation as it is (its mask too): a
    /// pixel under cloud on every date stays raw.
    pub fn keep_if_unobserved() -> GapFill {
        GapFill {
            keep_unobserved: true,
        }
    }
}

impl Transform for GapFill {
    fn apply(&self, mut s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        let days: Vec<f64> = s
            .require_dates("GapFill")?
            .iter()
            .map(|d| d.days_since_epoch() as f64)
            .collect();
        let n = s.observed_len();
        let mut all_filled = true;
        for band in 0..s.bands() {
            let obs: Vec<(f64, f64)> = (0..n)
                .filter(|&i| s.mask[i] && s.values[(i, band)].is_finite())
                .map(|i| (days[i], f64::from(s.values[(i, band)])))
                .collect();
            let (Some(&first), Some(&last)) = (obs.first(), obs.last()) else {
                if self.keep_unobserved {
                    all_filled = false;
                    continue;
                }
                return Err(Error::InvalidArgument {
                    op: "GapFill",
                    message: format!(
                        "series {}: band {band} has no valid observation to fill from; drop \
                         such series or use GapFill::keep_if_unobserved",
                        s.id.as_deref().unwrap_or("?")
                    ),
                });
            };
            let mut j = 0;
            for (i, &x) in days.iter().enumerate().take(n) {
                if s.mask[i] && s.values[(i, band)].is_finite() {
                    continue;
                }
                let v = if x <= first.0 {
                    first.1
                } else if x >= last.0 {
                    last.1
                } else {
                    while obs[j + 1].0 < x {
                        j += 1;
                    }
                    let ((x0, y0), (x1, y1)) = (obs[j], obs[j + 1]);
                    if x1 == x0 {
                        y1
                    } else {
                        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                    }
                };
                s.values[(i, band)] = v as f32;
            }
        }
        if all_filled {
            s.mask[..n].iter_mut().for_each(|m| *m = true);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Date;
    use ndarray::Array2;

    fn series(values: &[f32], mask: &[bool], days: &[i64]) -> Result<Series> {
        let dates = days
            .iter()
            .map(|&d| Date::from_days_since_epoch(d))
            .collect::<Result<Vec<_>>>()?;
        let v = Array2::from_shape_vec((values.len(), 1), values.to_vec()).map_err(|e| {
            Error::InvalidArgument {
                op: "test",
                message: e.to_string(),
            }
        })?;
        Series::new(v, Some(dates))?.with_mask(mask.to_vec())
    }

    #[test]
    fn invalid_dates_take_the_line_between_valid_neighbours_in_days() -> Result<()> {
        // valid at days 0 (1.0) and 10 (3.0); invalid at 2, 5 (between) and 12, 20 (after)
        let s = series(
            &[1.0, 9.0, 9.0, 3.0, 9.0, 9.0],
            &[true, false, false, true, false, false],
            &[0, 2, 5, 10, 12, 20],
        )?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let out = GapFill::new().apply(s, &mut rng)?;
        let v: Vec<f32> = out.values.column(0).to_vec();
        assert_eq!(v, vec![1.0, 1.4, 2.0, 3.0, 3.0, 3.0]);
        assert!(out.mask.iter().all(|&m| m));
        Ok(())
    }

    #[test]
    fn a_band_without_valid_dates_is_an_error_or_kept() -> Result<()> {
        let s = series(&[5.0, 6.0], &[false, false], &[0, 1])?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        assert!(GapFill::new().apply(s.clone(), &mut rng).is_err());
        let kept = GapFill::keep_if_unobserved().apply(s.clone(), &mut rng)?;
        assert_eq!(kept, s);
        Ok(())
    }
}
