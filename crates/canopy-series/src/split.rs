//! Deterministic train/validation splits: stratified by class, or spatial by blocks of
//! pixels so that neighbouring (spatially autocorrelated) pixels never end up on both sides.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result, SeriesDataset};

/// Indices of a split, each list sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Training samples.
    pub train: Vec<usize>,
    /// Validation (or test) samples.
    pub val: Vec<usize>,
}

fn check_fraction(op: &'static str, f: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&f) {
        return Err(Error::InvalidArgument {
            op,
            message: format!("the validation fraction must be in 0..=1, got {f}"),
        });
    }
    Ok(())
}

/// Stratified split: within each class (unlabelled samples form one more group) the samples
/// are shuffled with `seed` and `round(val_fraction * n_class)` go to validation, so class
/// proportions are kept on both sides.
///
/// # Errors
/// [`Error::InvalidArgument`] when `val_fraction` is outside 0..=1.
pub fn stratified_split(ds: &SeriesDataset, val_fraction: f64, seed: u64) -> Result<Split> {
    check_fraction("stratified_split", val_fraction)?;
    let mut groups: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, s) in ds.samples.iter().enumerate() {
        groups.entry(s.label).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split::default();
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let n_val = (val_fraction * idx.len() as f64).round() as usize;
        split.val.extend_from_slice(&idx[..n_val]);
        split.train.extend_from_slice(&idx[n_val..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    Ok(split)
}

/// Pixel positions `(row, col)` from ids of the form `"row_col"` (what
/// [`crate::PatchSeries::to_pixel_dataset`] writes).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first sample whose id is missing or not `row_col`.
pub fn pixel_positions(ds: &SeriesDataset) -> Result<Vec<(usize, usize)>> {
    ds.samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = s.id.as_deref().unwrap_or("");
            id.split_once('_')
                .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
                .ok_or_else(|| Error::InvalidArgument {
                    op: "pixel_positions",
                    message: format!("sample {i} has id {id:?}, expected \"row_col\""),
                })
        })
        .collect()
}

/// Spatial block split: the plane is cut into `block x block` pixel squares, the squares that
/// hold samples are shuffled with `seed`, and `round(val_fraction * squares)` of them go to
/// validation. Training pixels closer than `buffer` pixels (Chebyshev distance) to a
/// validation square are dropped from both sides, so no training pixel touches validation
/// ground.
///
/// # Errors
/// [`Error::InvalidArgument`] when `block` is 0 or `val_fraction` is outside 0..=1.
pub fn spatial_split(
    positions: &[(usize, usize)],
    block: usize,
    buffer: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<Split> {
    check_fraction("spatial_split", val_fraction)?;
    if block == 0 {
        return Err(Error::InvalidArgument {
            op: "spatial_split",
            message: "block size must be at least 1 pixel".into(),
        });
    }
    let key = |(r, c): (usize, usize)| (r / block, c / block);
    let blocks: BTreeSet<(usize, usize)> = positions.iter().map(|&p| key(p)).collect();
    let mut blocks: Vec<_> = blocks.into_iter().collect();
    blocks.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_val = (val_fraction * blocks.len() as f64).round() as usize;
    let val_blocks: BTreeSet<(usize, usize)> = blocks[..n_val].iter().copied().collect();
    let mut split = Split::default();
    for (i, &(r, c)) in positions.iter().enumerate() {
        if val_blocks.contains(&key((r, c))) {
            split.val.push(i);
            continue;
        }
        let (r0, r1) = (r.saturating_sub(buffer) / block, (r + buffer) / block);
        let (c0, c1) = (c.saturating_sub(buffer) / block, (c + buffer) / block);
        let near = (r0..=r1).any(|br| (c0..=c1).any(|bc| val_blocks.contains(&(br, bc))));
        if !near {
            split.train.push(i);
        }
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;
    use ndarray::Array2;

    fn ds(labels: &[u32]) -> Result<SeriesDataset> {
        let samples = labels
            .iter()
            .map(|&l| Ok(Series::new(Array2::zeros((1, 1)), None)?.with_label(l)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SeriesDataset {
            samples,
            class_names: vec!["a".into(), "b".into()],
            band_names: vec!["x".into()],
        })
    }

    #[test]
    fn stratified_keeps_proportions_and_is_seeded() -> Result<()> {
        let labels: Vec<u32> = (0..100).map(|i| u32::from(i % 10 == 0)).collect();
        let d = ds(&labels)?;
        let s = stratified_split(&d, 0.2, 3)?;
        assert_eq!(s.val.len(), 20);
        assert_eq!(s.val.iter().filter(|&&i| labels[i] == 1).count(), 2);
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s, stratified_split(&d, 0.2, 3)?);
        assert_ne!(s, stratified_split(&d, 0.2, 4)?);
        assert!(stratified_split(&d, 1.5, 0).is_err());
        Ok(())
    }

    #[test]
    fn spatial_blocks_do_not_touch() -> Result<()> {
        let pos: Vec<(usize, usize)> = (0..40).flat_map(|r| (0..40).map(move |c| (r, c))).collect();
        let s = spatial_split(&pos, 10, 2, 0.25, 1)?;
        assert_eq!(s.val.len(), 4 * 100);
        for &t in &s.train {
            for &v in &s.val {
                let (a, b) = (pos[t], pos[v]);
                let d = a.0.abs_diff(b.0).max(a.1.abs_diff(b.1));
                assert!(d > 2, "train {a:?} within 2 px of val {b:?}");
            }
        }
        assert!(s.train.len() >= 400 && s.train.len() < 1200);
        let no_buffer = spatial_split(&pos, 10, 0, 0.25, 1)?;
        assert_eq!(no_buffer.train.len() + no_buffer.val.len(), 1600);
        let mut d = ds(&[0, 1])?;
        d.samples[0].id = Some("3_4".into());
        d.samples[1].id = Some("x".into());
        assert!(pixel_positions(&d).is_err());
        d.samples[1].id = Some("10_0".into());
        assert_eq!(pixel_positions(&d)?, vec![(3, 4), (10, 0)]);
        Ok(())
    }
}
