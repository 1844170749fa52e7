//! Tensor batches of series and canopy-train [`Dataset`] implementations (feature `candle`).
//!
//! ```no_run
//! use canopy_series::batch::{collate, TransformedDataset};
//! use canopy_series::transform::{Pipeline, RandomSubsample, Scale};
//! use canopy_train::batch::{BatchConfig, Batcher};
//! # fn main() -> anyhow::Result<()> {
//! let ds = canopy_series::load::read_ucr("Crop_TRAIN.tsv", "NDVI")?;
//! let pipe = Pipeline::new().then(RandomSubsample { length: 45 });
//! let data = TransformedDataset::new(ds, pipe, 0);
//! let device = candle_core::Device::Cpu;
//! let batcher = Batcher::new(data, move |items| collate(&items, &device), BatchConfig::default())?;
//! for epoch in 0..2 {
//!     batcher.dataset().set_epoch(epoch as u64); // fresh random sub-samples every epoch
//!     for batch in batcher.epoch(epoch) {
//!         let b = batch?;
//!         assert_eq!(b.x.dims()[1], 45); // (B, 45, 1)
//!     }
//! }
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Device, Tensor};
use canopy_train::batch::Dataset;

use crate::transform::{sample_rng, Pipeline, Transform};
use crate::{Error, Series, SeriesDataset};

/// A batch of equally long series.
///
/// # Shapes
/// `x` `(B, T, C)` f32; `y` `(B,)` u32; `mask`, `clear` `(B, T)` u8; `doy` `(B, T)` u32.
#[derive(Debug, Clone)]
pub struct SeriesBatch {
    /// Values, `(B, T, C)` f32.
    pub x: Tensor,
    /// Labels, `(B,)` u32; `None` when no sample is labelled.
    pub y: Option<Tensor>,
    /// Padding mask, `(B, T)` u8: 1 for real time steps, 0 for padding (what a model's
    /// attention or pooling should ignore).
    pub mask: Tensor,
    /// Validity, `(B, T)` u8: 1 where the step is an observation whose mask is clear. Giving
    /// this to a model is preprocessing: "raw" experiments leave it out.
    pub clear: Tensor,
    /// Day of year (1..=366), `(B, T)` u32; `None` when some sample has no dates.
    pub doy: Option<Tensor>,
}

fn to_train(e: Error) -> canopy_train::Error {
    match e {
        Error::Candle(c) => canopy_train::Error::Candle(c),
        other => canopy_train::Error::InvalidArgument {
            op: "canopy-series",
            message: other.to_string(),
        },
    }
}

/// Stacks series into a [`SeriesBatch`] on `device`.
///
/// # Errors
/// [`canopy_train::Error::InvalidArgument`] when the batch is empty, the series differ in
/// `T` or `C` (make them equal with [`crate::transform::PadTruncate`] or
/// [`crate::transform::RandomSubsample`]), or only some samples are labelled; candle errors.
pub fn collate(items: &[Series], device: &Device) -> canopy_train::Result<SeriesBatch> {
    collate_inner(items, device).map_err(to_train)
}

fn collate_inner(items: &[Series], device: &Device) -> crate::Result<SeriesBatch> {
    let op = "collate";
    let first = items.first().ok_or_else(|| Error::InvalidArgument {
        op,
        message: "empty batch".into(),
    })?;
    let (t, c) = first.values.dim();
    let b = items.len();
    let mut x = Vec::with_capacity(b * t * c);
    let mut mask = Vec::with_capacity(b * t);
    let mut clear = Vec::with_capacity(b * t);
    let mut doy = Vec::with_capacity(b * t);
    let mut have_dates = true;
    let mut labels = Vec::with_capacity(b);
    for (i, s) in items.iter().enumerate() {
        if s.values.dim() != (t, c) {
            return Err(Error::InvalidArgument {
                op,
                message: format!(
                    "sample {i} is {:?}, the first ({t}, {c}); bring series to one length with \
                     PadTruncate or RandomSubsample",
                    s.values.dim()
                ),
            });
        }
        s.check()?;
        x.extend(s.values.iter().copied());
        let obs = s.observed_len();
        mask.extend((0..t).map(|k| u8::from(k < obs)));
        clear.extend((0..t).map(|k| u8::from(k < obs && s.mask[k])));
        match s.days_of_year() {
            Some(d) => doy.extend(d.into_iter().map(u32::from)),
            None => have_dates = false,
        }
        if let Some(l) = s.label {
            labels.push(l);
        }
    }
    if !labels.is_empty() && labels.len() != b {
        return Err(Error::InvalidArgument {
            op,
            message: format!(
                "{} of {b} samples are labelled; label all or none",
                labels.len()
            ),
        });
    }
    Ok(SeriesBatch {
        x: Tensor::from_vec(x, (b, t, c), device)?,
        y: if labels.is_empty() {
            None
        } else {
            Some(Tensor::from_vec(labels, b, device)?)
        },
        mask: Tensor::from_vec(mask, (b, t), device)?,
        clear: Tensor::from_vec(clear, (b, t), device)?,
        doy: if have_dates {
            Some(Tensor::from_vec(doy, (b, t), device)?)
        } else {
            None
        },
    })
}

impl Dataset for SeriesDataset {
    type Item = Series;

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> canopy_train::Result<Series> {
        <[Series]>::get(&self.samples, index)
            .cloned()
            .ok_or_else(|| canopy_train::Error::InvalidArgument {
                op: "SeriesDataset::get",
                message: format!("index {index} out of range for {} samples", self.len()),
            })
    }
}

/// A [`SeriesDataset`] whose samples pass through a [`Pipeline`] when fetched (on-the-fly
/// augmentation such as random sub-sampling or synthetic clouds).
///
/// Sample `i` in epoch `e` uses a generator seeded from `(seed, e, i)`: results are
/// reproducible and independent of batch order and worker threads. Call
/// [`TransformedDataset::set_epoch`] before each epoch to draw new randomness.
#[derive(Debug)]
pub struct TransformedDataset {
    data: SeriesDataset,
    pipeline: Pipeline,
    seed: u64,
    epoch: AtomicU64,
}

impl TransformedDataset {
    /// Wraps `data` with `pipeline`, epoch 0.
    pub fn new(data: SeriesDataset, pipeline: Pipeline, seed: u64) -> TransformedDataset {
        TransformedDataset {
            data,
            pipeline,
            seed,
            epoch: AtomicU64::new(0),
        }
    }

    /// Sets the epoch whose randomness [`Dataset::get`] uses.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The untransformed data.
    pub fn data(&self) -> &SeriesDataset {
        &self.data
    }
}

impl Dataset for TransformedDataset {
    type Item = Series;

    fn len(&self) -> usize {
        self.data.len()
    }

    fn get(&self, index: usize) -> canopy_train::Result<Series> {
        let s = Dataset::get(&self.data, index)?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut rng = sample_rng(
            self.seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407),
            index as u64,
        );
        self.pipeline.apply(s, &mut rng).map_err(to_train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{PadTruncate, RandomSubsample};
    use crate::Date;
    use canopy_train::batch::{BatchConfig, Batcher};
    use ndarray::Array2;

    fn ds() -> anyhow::Result<SeriesDataset> {
        let mut samples = Vec::new();
        for i in 0..10usize {
            let t = 3 + i;
            let dates = (0..t)
                .map(|k| Date::from_days_since_epoch(18_000 + 5 * k as i64))
                .collect::<crate::Result<Vec<_>>>()?;
            let v = Array2::from_shape_fn((t, 2), |(k, c)| (100 * i + 10 * k + c) as f32);
            samples.push(Series::new(v, Some(dates))?.with_label((i % 2) as u32));
        }
        Ok(SeriesDataset {
            samples,
            class_names: vec!["a".into(), "b".into()],
            band_names: vec!["x".into(), "y".into()],
        })
    }

    #[test]
    fn collate_pads_and_masks() -> anyhow::Result<()> {
        let d = ds()?;
        let pipe = Pipeline::new().then(PadTruncate {
            length: 5,
            value: -1.0,
        });
        let data = TransformedDataset::new(d.clone(), pipe, 0);
        let items = vec![data.get(0)?, data.get(4)?];
        let b = collate(&items, &Device::Cpu)?;
        assert_eq!(b.x.dims(), &[2, 5, 2]);
        assert_eq!(
            b.mask.to_vec2::<u8>()?,
            vec![vec![1, 1, 1, 0, 0], vec![1, 1, 1, 1, 1]]
        );
        assert_eq!(
            b.y.as_ref().map(|y| y.to_vec1::<u32>()).transpose()?,
            Some(vec![0, 0])
        );
        let x = b.x.to_vec3::<f32>()?;
        assert_eq!(x[0][3], vec![-1.0, -1.0]);
        assert_eq!(x[1][4], vec![440.0, 441.0]);
        assert!(b.doy.is_some());
        // Unequal lengths are an error, not a panic.
        assert!(collate(&[d.samples[0].clone(), d.samples[1].clone()], &Device::Cpu).is_err());
        Ok(())
    }

    #[test]
    fn batcher_over_transformed_dataset_is_reproducible() -> anyhow::Result<()> {
        let make = || -> anyhow::Result<Batcher<TransformedDataset, SeriesBatch>> {
            let pipe = Pipeline::new().then(RandomSubsample { length: 4 });
            let data = TransformedDataset::new(ds()?, pipe, 9);
            let cfg = BatchConfig {
                batch_size: 4,
                prefetch: 1,
                ..Default::default()
            };
            Ok(Batcher::new(
                data,
                |items| collate(&items, &Device::Cpu),
                cfg,
            )?)
        };
        let (a, b) = (make()?, make()?);
        let xa: Vec<Vec<Vec<Vec<f32>>>> = a
            .epoch(0)
            .map(|r| Ok(r?.x.to_vec3::<f32>()?))
            .collect::<anyhow::Result<_>>()?;
        let xb: Vec<Vec<Vec<Vec<f32>>>> = b
            .epoch(0)
            .map(|r| Ok(r?.x.to_vec3::<f32>()?))
            .collect::<anyhow::Result<_>>()?;
        assert_eq!(xa, xb);
        assert_eq!(xa.len(), 3);
        a.dataset().set_epoch(1);
        let xc: Vec<Vec<Vec<Vec<f32>>>> = a
            .epoch(0)
            .map(|r| Ok(r?.x.to_vec3::<f32>()?))
            .collect::<anyhow::Result<_>>()?;
        assert_ne!(xa, xc, "a new epoch draws new sub-samples");
        Ok(())
    }
}
