//! Temporal blocks: selection, filtering, interpolation, sub-sampling, padding.

use ndarray::Array2;
use rand::seq::index::sample;
use rand::{Rng, RngCore};

use super::{invalid, series_id, Transform};
use crate::{Date, Result, Series};

/// `f_sel`: keeps the observed dates in `[start, end]` (both inclusive); padding is dropped.
///
/// # Errors
/// [`apply`](Transform::apply) fails on a series without dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalSelect {
    start: Date,
    end: Date,
}

impl TemporalSelect {
    /// Keeps `start..=end`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `end < start`.
    pub fn new(start: Date, end: Date) -> Result<TemporalSelect> {
        if end < start {
            return Err(invalid(
                "TemporalSelect",
                format!("end {end} is before start {start}"),
            ));
        }
        Ok(TemporalSelect { start, end })
    }
}

impl Transform for TemporalSelect {
    fn apply(&self, s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let dates = s.require_dates("TemporalSelect")?;
        let idx: Vec<usize> = (0..s.observed_len())
            .filter(|&i| (self.start..=self.end).contains(&dates[i]))
            .collect();
        s.select_steps(&idx)
    }
}

/// Drops the dates whose mask is `false` (clouds, no data) and the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloudFilter;

impl Transform for CloudFilter {
    fn apply(&self, s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let idx: Vec<usize> = (0..s.observed_len()).filter(|&i| s.mask[i]).collect();
        s.select_steps(&idx)
    }
}

/// `f_int`: linear interpolation of the valid observations onto the regular grid
/// `start, start + step, ...` up to and including `end` (the last grid date may be earlier
/// than `end` when the span is not a multiple of `step`).
///
/// Only observed steps with `mask = true` and finite values are used, per band. Between two
/// such observations the value is the straight line between them in days; before the first
/// and after the last it is that observation's value (constant extrapolation). The result has
/// every step valid, no padding, and no `truth` (it no longer refers to acquisitions).
///
/// # Errors
/// [`apply`](Transform::apply) fails on a series without dates or with no valid finite
/// observation in some band (filling would invent the whole band).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolate {
    grid: Vec<Date>,
}

impl Interpolate {
    /// The grid every `step_days` days from `start` to `end`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `step_days` is 0 or `end < start`.
    pub fn new(start: Date, end: Date, step_days: u32) -> Result<Interpolate> {
        if step_days == 0 || end < start {
            return Err(invalid(
                "Interpolate",
                format!(
                    "need step_days > 0 and start <= end, got {step_days} days, {start}..{end}"
                ),
            ));
        }
        let (a, b) = (start.days_since_epoch(), end.days_since_epoch());
        let grid = (a..=b)
            .step_by(step_days as usize)
            .map(Date::from_days_since_epoch)
            .collect::<Result<Vec<_>>>()?;
        Ok(Interpolate { grid })
    }

    /// The target dates.
    pub fn grid(&self) -> &[Date] {
        &self.grid
    }
}

impl Transform for Interpolate {
    fn apply(&self, s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let dates = s.require_dates("Interpolate")?;
        let c = s.bands();
        let mut out = Array2::<f32>::zeros((self.grid.len(), c));
        let grid: Vec<f64> = self
            .grid
            .iter()
            .map(|d| d.days_since_epoch() as f64)
            .collect();
        for band in 0..c {
            let obs: Vec<(f64, f64)> = (0..s.observed_len())
                .filter(|&i| s.mask[i] && s.values[(i, band)].is_finite())
                .map(|i| {
                    (
                        dates[i].days_since_epoch() as f64,
                        f64::from(s.values[(i, band)]),
                    )
                })
                .collect();
            let (Some(first), Some(last)) = (obs.first(), obs.last()) else {
                return Err(invalid(
                    "Interpolate",
                    format!(
                        "series {}: band {band} has no valid observation to interpolate from; \
                         drop such series or relax the cloud mask",
                        series_id(&s)
                    ),
                ));
            };
            let mut j = 0;
            for (g, &x) in grid.iter().enumerate() {
                let v = if x <= first.0 {
                    first.1
                } else if x >= last.0 {
                    last.1
                } else {
                    while obs[j + 1].0 < x {
                        j += 1;
                    }
                    let (x0, y0) = obs[j];
                    let (x1, y1) = obs[j + 1];
                    if x1 == x0 {
                        y1
                    } else {
                        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                    }
                };
                out[(g, band)] = v as f32;
            }
        }
        Ok(Series {
            values: out,
            dates: Some(self.grid.clone()),
            mask: vec![true; self.grid.len()],
            padding: 0,
            truth: None,
            label: s.label,
            id: s.id,
        })
    }
}

/// BreizhCrops' random temporal sub-sampling: removes the padding, then draws `length` time
/// indices uniformly — without replacement when the series has at least `length` steps, with
/// replacement otherwise — and sorts them, so the order of acquisitions is kept.
///
/// This is the `transform` of BreizhCrops' `examples/train.py` (Rußwurm et al. 2020:
/// `np.random.choice(T, sequencelength, replace=T < sequencelength)` then `sort`), used
/// there with `length = 45` on raw Level-1C series of varying length.
///
/// # Errors
/// [`apply`](Transform::apply) fails on a series with no observed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomSubsample {
    /// Output length `T`.
    pub length: usize,
}

impl Transform for RandomSubsample {
    fn apply(&self, s: Series, rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let n = s.observed_len();
        if n == 0 {
            return Err(invalid(
                "RandomSubsample",
                format!("series {} has no observation to sample from", series_id(&s)),
            ));
        }
        let mut idx: Vec<usize> = if n >= self.length {
            sample(rng, n, self.length).into_vec()
        } else {
            (0..self.length).map(|_| rng.random_range(0..n)).collect()
        };
        idx.sort_unstable();
        s.select_steps(&idx)
    }
}

/// Brings every series to `length` steps: longer ones keep their first `length` observed
/// steps, shorter ones get padding steps appended with values `value` (BreizhCrops pads
/// with `-1`), `mask = false`, and the last date repeated (1970-01-01 for an empty series).
/// [`Series::padding`] records how many steps are padding, so batches can carry a padding mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadTruncate {
    /// Output length `T`.
    pub length: usize,
    /// Value of the padding steps.
    pub value: f32,
}

impl Transform for PadTruncate {
    fn apply(&self, s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let n = s.observed_len().min(self.length);
        let keep: Vec<usize> = (0..n).collect();
        let mut s = s.select_steps(&keep)?;
        let pad = self.length - n;
        if pad == 0 {
            return Ok(s);
        }
        let c = s.bands();
        let mut values = Array2::from_elem((self.length, c), self.value);
        values.slice_mut(ndarray::s![..n, ..]).assign(&s.values);
        s.values = values;
        s.mask.resize(self.length, false);
        if let Some(tr) = s.truth.as_mut() {
            tr.resize(self.length, false);
        }
        if let Some(d) = s.dates.as_mut() {
            let last = match d.last() {
                Some(&l) => l,
                None => Date::from_days_since_epoch(0)?,
            };
            d.resize(self.length, last);
        }
        s.padding = pad;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn series(days: &[i64], values: &[f32]) -> Series {
        let dates = days
            .iter()
            .map(|&d| Date::from_days_since_epoch(17_500 + d))
            .collect::<Result<Vec<_>>>()
            .ok();
        let v = Array2::from_shape_vec((values.len(), 1), values.to_vec())
            .unwrap_or_else(|_| Array2::zeros((0, 1)));
        Series {
            values: v,
            dates,
            mask: vec![true; values.len()],
            padding: 0,
            truth: None,
            label: None,
            id: None,
        }
    }

    fn sorted_days() -> impl Strategy<Value = Vec<i64>> {
        prop::collection::btree_set(0i64..400, 2..30).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #[test]
        fn interpolation_is_exact_on_lines(days in sorted_days(), a in -2.0f64..2.0, b in -0.01f64..0.01,
                                           step in 1u32..20) {
            let vals: Vec<f32> = days.iter().map(|&d| (a + b * d as f64) as f32).collect();
            let s = series(&days, &vals);
            let (lo, hi) = (days[0], days[days.len() - 1]);
            let start = Date::from_days_since_epoch(17_500 + lo)?;
            let end = Date::from_days_since_epoch(17_500 + hi)?;
            let out = Interpolate::new(start, end, step)?.apply(s, &mut StdRng::seed_from_u64(0))?;
            prop_assert!(out.len() as i64 == (hi - lo) / i64::from(step) + 1);
            let dates = out.dates.clone().unwrap_or_default();
            for (i, d) in dates.iter().enumerate() {
                let x = (d.days_since_epoch() - 17_500) as f64;
                let want = a + b * x;
                prop_assert!((f64::from(out.values[(i, 0)]) - want).abs() < 1e-5,
                    "day {x}: {} vs {want}", out.values[(i, 0)]);
            }
        }

        #[test]
        fn selection_keeps_only_dates_in_range(days in sorted_days(), lo in 0i64..400, len in 0i64..400) {
            let vals: Vec<f32> = days.iter().map(|&d| d as f32).collect();
            let s = series(&days, &vals);
            let start = Date::from_days_since_epoch(17_500 + lo)?;
            let end = Date::from_days_since_epoch(17_500 + lo + len)?;
            let out = TemporalSelect::new(start, end)?.apply(s, &mut StdRng::seed_from_u64(0))?;
            let expect: Vec<f32> = days.iter().filter(|&&d| d >= lo && d <= lo + len).map(|&d| d as f32).collect();
            prop_assert_eq!(out.values.column(0).to_vec(), expect);
            for d in out.dates.unwrap_or_default() {
                prop_assert!(d >= start && d <= end);
            }
        }

        #[test]
        fn subsampling_keeps_order_and_length(days in sorted_days(), length in 1usize..60, seed in 0u64..1000) {
            let vals: Vec<f32> = days.iter().map(|&d| d as f32).collect();
            let n = days.len();
            let s = series(&days, &vals);
            let out = RandomSubsample { length }.apply(s, &mut StdRng::seed_from_u64(seed))?;
            prop_assert_eq!(out.len(), length);
            let v = out.values.column(0).to_vec();
            prop_assert!(v.windows(2).all(|w| w[0] <= w[1]), "order kept");
            if n >= length {
                prop_assert!(v.windows(2).all(|w| w[0] < w[1]), "no repeats without replacement");
            }
            out.check()?;
        }
    }

    #[test]
    fn interpolation_fills_gaps_and_extrapolates_constantly() -> Result<()> {
        let mut s = series(&[10, 20, 30, 40], &[1.0, 100.0, 3.0, 5.0]);
        s.mask[1] = false; // a cloud: ignored
        let d = |x: i64| Date::from_days_since_epoch(17_500 + x);
        let out = Interpolate::new(d(0)?, d(50)?, 5)?.apply(s, &mut StdRng::seed_from_u64(0))?;
        let v = out.values.column(0).to_vec();
        assert_eq!(
            v,
            vec![1.0, 1.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 5.0, 5.0]
        );
        let empty = series(&[1], &[f32::NAN]);
        assert!(Interpolate::new(d(0)?, d(5)?, 1)?
            .apply(empty, &mut StdRng::seed_from_u64(0))
            .is_err());
        Ok(())
    }

    #[test]
    fn padding_and_filtering() -> Result<()> {
        let mut s = series(&[1, 2, 3], &[1.0, 2.0, 3.0]);
        s.mask[1] = false;
        let mut rng = StdRng::seed_from_u64(0);
        let p = PadTruncate {
            length: 5,
            value: -1.0,
        }
        .apply(s.clone(), &mut rng)?;
        assert_eq!(p.values.column(0).to_vec(), vec![1.0, 2.0, 3.0, -1.0, -1.0]);
        assert_eq!(p.mask, vec![true, false, true, false, false]);
        assert_eq!((p.padding, p.observed_len()), (2, 3));
        p.check()?;
        let t = PadTruncate {
            length: 2,
            value: 0.0,
        }
        .apply(p.clone(), &mut rng)?;
        assert_eq!((t.len(), t.padding), (2, 0));
        let f = CloudFilter.apply(p.clone(), &mut rng)?;
        assert_eq!(f.values.column(0).to_vec(), vec![1.0, 3.0]);
        // Subsampling removes padding before drawing.
        let r = RandomSubsample { length: 10 }.apply(p, &mut rng)?;
        assert!(r.values.iter().all(|&v| v > 0.0));
        assert!(s.dates.is_some());
        Ok(())
    }
}
