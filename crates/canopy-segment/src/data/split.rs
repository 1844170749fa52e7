//! Train / validation splits that keep every group (area) on one side.
//!
//! Tiles of one area overlap across zoom levels and neighbours share buildings, so splitting
//! by tile leaks validation pixels into training. Both functions here move whole groups; to
//! treat two neighbouring areas as one (RAMP area 3 and Banepa), load them with the same
//! group name or use [`super::LabelledImage::set_group`] first.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::LabelledImage;
use crate::{Error, Result};

/// Puts the samples of `val_groups` in the validation set and the rest in the training set.
///
/// # Errors
/// [`Error::Config`] when a name of `val_groups` matches no sample, or when no sample is left
/// for training.
pub fn split_by_groups(
    samples: Vec<LabelledImage>,
    val_groups: &[&str],
) -> Result<(Vec<LabelledImage>, Vec<LabelledImage>)> {
    for g in val_groups {
        if !samples.iter().any(|s| s.group() == *g) {
            let mut known: Vec<&str> = samples.iter().map(LabelledImage::group).collect();
            known.sort_unstable();
            known.dedup();
            return Err(Error::Config {
                context: "split_by_groups",
                message: format!("no sample in group {g:?}; the groups are {known:?}"),
            });
        }
    }
    let (val, train): (Vec<_>, Vec<_>) = samples
        .into_iter()
        .partition(|s| val_groups.contains(&s.group()));
    if train.is_empty() {
        return Err(Error::Config {
            context: "split_by_groups",
            message: "every group is in the validation set; leave at least one for training".into(),
        });
    }
    Ok((train, val))
}

/// Moves randomly chosen whole groups (seeded) to the validation set until it holds at least
/// `val_fraction` of the pixels, keeping at least one group for training.
///
/// # Errors
/// [`Error::Config`] when `val_fraction` is not in `(0, 1)` or there are fewer than two groups.
pub fn split_groups_randomly(
    samples: Vec<LabelledImage>,
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<LabelledImage>, Vec<LabelledImage>)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(Error::Config {
            context: "split_groups_randomly",
            message: format!("val_fraction must be in (0, 1), got {val_fraction}"),
        });
    }
    let mut pixels: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &samples {
        *pixels.entry(s.group()).or_default() += s.height() * s.width();
    }
    if pixels.len() < 2 {
        return Err(Error::Config {
            context: "split_groups_randomly",
            message: format!(
                "{} group(s): a split by group needs at least two (load areas with distinct \
                 group names)",
                pixels.len()
            ),
        });
    }
    let total: usize = pixels.values().sum();
    let mut groups: Vec<(&str, usize)> = pixels.into_iter().collect();
    groups.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut val_groups: Vec<String> = Vec::new();
    let mut val_pixels = 0usize;
    for (g, n) in groups.iter().take(groups.len() - 1) {
        if val_pixels as f64 >= val_fraction * total as f64 {
            break;
        }
        val_groups.push((*g).to_string());
        val_pixels += n;
    }
    let names: Vec<&str> = val_groups.iter().map(String::as_str).collect();
    split_by_groups(samples, &names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};
    use std::collections::BTreeSet;

    fn samples() -> Vec<LabelledImage> {
        let groups = [
            "ramp-1", "ramp-2", "nepal", "ramp-5", "nepal", "ramp-1", "crowdai",
        ];
        groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                (0..3).map(move |k| {
                    LabelledImage::new(
                        Array3::zeros((3, 4, 4)),
                        Array2::zeros((4, 4)),
                        *g,
                        format!("{g}/{i}-{k}.png"),
                    )
                    .unwrap()
                })
            })
            .collect()
    }

    fn groups(v: &[LabelledImage]) -> BTreeSet<String> {
        v.iter().map(|s| s.group().to_string()).collect()
    }

    #[test]
    fn random_splits_never_share_a_group_and_lose_nothing() {
        for seed in 0..50 {
            for frac in [0.1, 0.3, 0.6, 0.9] {
                let (train, val) = split_groups_randomly(samples(), frac, seed).unwrap();
                assert_eq!(train.len() + val.len(), 21);
                assert!(groups(&train).is_disjoint(&groups(&val)));
                assert!(!train.is_empty() && !val.is_empty());
                let val_frac = val.len() as f64 / 21.0;
                assert!(
                    val_frac >= frac || groups(&train).len() == 1,
                    "{seed} {frac}"
                );
            }
        }
    }

    #[test]
    fn named_split_moves_whole_groups() {
        let (train, val) = split_by_groups(samples(), &["nepal"]).unwrap();
        assert_eq!(val.len(), 6);
        assert_eq!(groups(&val), BTreeSet::from(["nepal".to_string()]));
        assert!(!groups(&train).contains("nepal"));
        let err = split_by_groups(samples(), &["atlantis"]).unwrap_err();
        assert!(err.to_string().contains("atlantis"), "{err}");
    }

    #[test]
    fn one_group_cannot_be_split() {
        let mut s = samples();
        for x in &mut s {
            x.set_group("all");
        }
        assert!(split_groups_randomly(s, 0.2, 0).is_err());
    }
}
