//! End-to-end use of the real data in `../shared/data/sits` (skipped when absent): UCR Crop
//! through a stratified split, synthetic clouds and random sub-sampling into batches, and
//! the eo-learn test patch through a spatial split of its pixels.

use std::path::PathBuf;

use canopy_series::load::{read_ucr, EoPatch, PatchSpec};
use canopy_series::split::{pixel_positions, spatial_split, stratified_split};
use canopy_series::transform::{
    CloudClassify, CloudFilter, CloudModel, CloudRule, Interpolate, Normalization, Pipeline,
    RandomSubsample, SyntheticClouds, TemporalSelect,
};
use canopy_series::Date;

fn sits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sits")
}

#[test]
fn ucr_crop_split_clouds_subsample() -> anyhow::Result<()> {
    let p = sits().join("ucr-crop/Crop_TRAIN.tsv");
    if !p.exists() {
        println!("SKIPPED: {} is absent", p.display());
        return Ok(());
    }
    let ds = read_ucr(&p, "NDVI")?;
    let split = stratified_split(&ds, 0.2, 17)?;
    assert_eq!(split.train.len() + split.val.len(), 7_200);
    // Crop has 300 series per class: 60 of each in validation.
    let val = ds.subset(&split.val)?;
    assert!(
        val.class_counts().iter().all(|&c| c == 60),
        "{:?}",
        val.class_counts()
    );
    let train = ds.subset(&split.train)?;
    let norm = Normalization::fit(&train)?;
    assert!(norm.mean[0] > 0.0 && norm.mean[0] < 1.0 && norm.std[0] > 0.05);

    let pipe = Pipeline::new()
        .then(SyntheticClouds::new(0.25, 0.0, CloudModel::ndvi())?)
        .then(RandomSubsample { length: 30 })
        .then(norm.to_block());
    let out = pipe.apply_dataset(train, 5)?;
    assert!(out
        .samples
        .iter()
        .all(|s| s.len() == 30 && s.mask.iter().all(|&m| m)));
    let (hidden, total) = out.samples.iter().fold((0, 0), |(h, t), s| {
        let tr = s.truth.as_deref().unwrap_or(&[]);
        (h + tr.iter().filter(|&&c| !c).count(), t + tr.len())
    });
    let frac = hidden as f64 / total as f64;
    assert!((frac - 0.25).abs() < 0.01, "injected cloud fraction {frac}");

    #[cfg(feature = "candle")]
    {
        let b = canopy_series::batch::collate(&out.samples[..8], &candle_core::Device::Cpu)?;
        assert_eq!(b.x.dims(), &[8, 30, 1]);
        assert!(b.doy.is_none(), "UCR series have no dates");
    }
    Ok(())
}

#[test]
fn eolearn_patch_preprocessing_and_spatial_split() -> anyhow::Result<()> {
    let dir = sits().join("eolearn-testpatch");
    if !dir.exists() {
        println!("SKIPPED: {} is absent", dir.display());
        return Ok(());
    }
    let patch = EoPatch::open(&dir)?.load(&PatchSpec::new(&["NDVI", "CLP"]).with_labels("LULC"))?;
    let pixels = patch.crop(0, 0, 40, 40)?.to_pixel_dataset()?;
    let pos = pixel_positions(&pixels)?;
    let split = spatial_split(&pos, 10, 1, 0.25, 3)?;
    assert_eq!(split.val.len(), 400);
    // Probability rule on CLP on top of the CLM mask, then f_sel, filtering, f_int.
    let clp = CloudRule::probability(&pixels.band_names, "CLP", 0.5)?;
    let pipe = Pipeline::new()
        .then(CloudClassify { rule: clp })
        .then(TemporalSelect::new(
            Date::new(2016, 3, 1)?,
            Date::new(2016, 10, 31)?,
        )?)
        .then(CloudFilter);
    let clean = pipe.apply_dataset(pixels, 0)?;
    let kept: Vec<_> = clean.samples.iter().filter(|s| !s.is_empty()).collect();
    assert!(!kept.is_empty());
    for s in &kept {
        let d = s.dates.as_deref().unwrap_or(&[]);
        assert!(d
            .iter()
            .all(|d| d.year() == 2016 && (3..=10).contains(&d.month())));
        // No cloud-probability above the threshold survives.
        assert!(s.values.column(1).iter().all(|&p| p <= 0.5));
    }
    let grid = Interpolate::new(Date::new(2016, 3, 1)?, Date::new(2016, 10, 31)?, 10)?;
    let n = grid.grid().len();
    let filled = Pipeline::new().then(grid).apply_dataset(
        canopy_series::SeriesDataset {
            samples: kept.into_iter().cloned().collect(),
            ..clean.clone()
        },
        0,
    )?;
    assert!(filled
        .samples
        .iter()
        .all(|s| s.len() == n && s.values.iter().all(|v| v.is_finite())));
    Ok(())
}
