//! Step 6 of `canopy demo`: a short cloud-robustness run on generated NDVI series.
//!
//! Four crop-like classes differ in phenology: a winter cereal greening early, a spring cereal
//! greening about 25 days later, a summer crop greening late and a meadow that stays green with
//! two cuts. Each series has 46 dates (every 8 days), a random shift of the season by up to ±15
//! days, random amplitude and sensor noise. Synthetic clouds (canopy-series'
//! `SyntheticClouds`, NDVI model: the index pulled towards 0) then hit 40 % of the dates.
//!
//! A small TempCNN (Pelletier et al. 2019's layout with 16 filters) trains twice with the same
//! seed: on the **raw**
//! cloudy series (it is not told which dates are cloudy), and on **preprocessed** series whose
//! cloudy dates were replaced by linear interpolation between clear dates (the cloud positions
//! are known here because they were injected). The step prints both validation accuracies; the
//! seeds' claim is that they are close. It fails if either model is below 0.7 (chance: 0.25).

use std::time::Instant;

use anyhow::ensure;
use candle_core::{DType, Device};
use canopy_nn::SeededVarMap;
use canopy_series::batch::collate;
use canopy_series::transform::{CloudModel, GapFill, Normalization, Pipeline, SyntheticClouds};
use canopy_series::{Date, Series, SeriesDataset};
use canopy_temporal::fit::{evaluate, fit, FitOptions, LabelledSeries};
use canopy_temporal::tempcnn::{TempCnn, TempCnnConfig};
use canopy_temporal::ModelKind;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLASSES: [&str; 4] = ["winter cereal", "spring cereal", "summer crop", "meadow"];
const DATES: usize = 46;
const PER_CLASS_TRAIN: usize = 200;
const PER_CLASS_VAL: usize = 100;
const EPOCHS: usize = 10;
const SEED: u64 = 21;
/// The step fails below this validation accuracy for either variant.
pub const MIN_ACCURACY: f64 = 0.7;

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// NDVI of class `k` on day `d` of a season shifted by `shift` days, peak height `amp`.
fn phenology(k: usize, d: f64, shift: f64, amp: f64) -> f64 {
    let d = d - shift;
    match k {
        // green-up around day 95, senescence around day 185
        0 => 0.2 + amp * (logistic((d - 95.0) / 10.0) - logistic((d - 185.0) / 8.0)),
        // green-up around day 120, senescence around day 205
        1 => 0.2 + amp * (logistic((d - 120.0) / 10.0) - logistic((d - 205.0) / 8.0)),
        // green-up around day 165, senescence around day 260
        2 => 0.15 + amp * (logistic((d - 165.0) / 9.0) - logistic((d - 260.0) / 10.0)),
        // green most of the year, cut around days 150 and 220
        _ => {
            let cut = |c: f64| 0.35 * (-((d - c) / 8.0).powi(2)).exp();
            0.25 + amp * logistic((d - 80.0) / 12.0) * (1.0 - cut(150.0) - cut(220.0))
        }
    }
}

fn generate(per_class: usize, rng: &mut StdRng) -> anyhow::Result<SeriesDataset> {
    let start = Date::new(2019, 1, 1)?;
    let dates: Vec<Date> = (0..DATES)
        .map(|i| start.add_days(8 * i as i64))
        .collect::<canopy_series::Result<_>>()?;
    let mut samples = Vec::with_capacity(3 * per_class);
    for i in 0..per_class * CLASSES.len() {
        let k = i % CLASSES.len();
        let shift = rng.random_range(-15.0..15.0);
        let amp = rng.random_range(0.45..0.65);
        let values = Array2::from_shape_fn((DATES, 1), |(t, _)| {
            let noise: f64 = rng.random_range(-0.05..0.05);
            (phenology(k, 8.0 * t as f64, shift, amp) + noise) as f32
        });
        samples.push(
            Series::new(values, Some(dates.clone()))?
                .with_label(k as u32)
                .with_id(i.to_string()),
        );
    }
    Ok(SeriesDataset {
        samples,
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
        band_names: vec!["NDVI".into()],
    })
}

/// Validation accuracy of a TempCNN trained on `train`.
fn train_eval(train: SeriesDataset, val: SeriesDataset) -> anyhow::Result<f64> {
    let norm = Normalization::fit(&train)?;
    let pipe = Pipeline::new().then(norm.to_block());
    let tensors = |ds: SeriesDataset| -> anyhow::Result<LabelledSeries> {
        let b = collate(&pipe.apply_dataset(ds, 0)?.samples, &Device::Cpu)?;
        let y =
            b.y.ok_or_else(|| anyhow::anyhow!("unlabelled"))?
                .to_vec1::<u32>()?;
        Ok(LabelledSeries::new(b.x, y)?)
    };
    let (train, val) = (tensors(train)?, tensors(val)?);
    let vars = SeededVarMap::new(SEED);
    let cfg = TempCnnConfig {
        hidden_dims: 16,
        ..TempCnnConfig::pelletier2019(1, CLASSES.len(), DATES)
    };
    let model = TempCnn::new(&cfg, vars.var_builder(DType::F32, &Device::Cpu))?;
    let mut recipe = ModelKind::TempCnn.recipe();
    recipe.lr = 2e-3;
    recipe.batch_size = 64;
    fit(
        &model,
        &vars,
        &train,
        None,
        &FitOptions::new(recipe, EPOCHS, SEED),
    )?;
    Ok(evaluate(&model, &val)?.accuracy())
}

/// Marks the injected clouds in the mask (the truth is known for generated data), so that
/// gap filling can replace them.
fn reveal_clouds(mut ds: SeriesDataset) -> SeriesDataset {
    for s in &mut ds.samples {
        if let Some(truth) = &s.truth {
            s.mask = truth.clone();
        }
    }
    ds
}

/// Runs step 6 and prints its report.
pub fn step() -> anyhow::Result<()> {
    let t = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED);
    let clouds = Pipeline::new().then(SyntheticClouds::new(0.4, 0.2, CloudModel::ndvi())?);
    let train = clouds.apply_dataset(generate(PER_CLASS_TRAIN, &mut rng)?, 1)?;
    let val = clouds.apply_dataset(generate(PER_CLASS_VAL, &mut rng)?, 2)?;
    let fill = Pipeline::new().then(GapFill::keep_if_unobserved());
    let pre_train = fill.apply_dataset(reveal_clouds(train.clone()), 0)?;
    let pre_val = fill.apply_dataset(reveal_clouds(val.clone()), 0)?;
    let raw_acc = train_eval(train, val)?;
    let pre_acc = train_eval(pre_train, pre_val)?;
    println!(
        "6. cloud robustness on generated NDVI series (4 crop phenologies, 46 dates, 40 % of dates clouded): TempCNN validation accuracy raw {raw_acc:.3} vs cloud-filtered + interpolated {pre_acc:.3} (Δ {:+.3}), {} + {} series, {EPOCHS} epochs each, in {:.1} s",
        raw_acc - pre_acc,
        PER_CLASS_TRAIN * CLASSES.len(),
        PER_CLASS_VAL * CLASSES.len(),
        t.elapsed().as_secs_f64()
    );
    ensure!(
        raw_acc >= MIN_ACCURACY && pre_acc >= MIN_ACCURACY,
        "a time-series model did not learn: raw {raw_acc:.3}, preprocessed {pre_acc:.3} (need {MIN_ACCURACY})"
    );
    Ok(())
}
