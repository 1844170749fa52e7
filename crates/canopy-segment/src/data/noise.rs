//! Simulated label noise: the errors of crowd-sourced building outlines (OpenStreetMap) against
//! the imagery they are used with, for the "pretrain on imperfect labels, fine-tune on clean
//! ones" recipe.
//!
//! Maggiori et al. (TGRS 2017, "Convolutional neural networks for large-scale remote-sensing
//! image classification", section IV) train first on OSM-derived labels that are misregistered
//! and incomplete, then fine-tune on a small set of accurate labels. To study that recipe on
//! data whose labels are accurate, [`add_label_noise`] degrades a mask the two ways the paper
//! describes OSM as wrong:
//!
//! * **misregistration**: the whole label layer of an image is offset by a random
//!   `(dx, dy)` in `[-max_shift, max_shift]²` pixels (imagery and vector data registered
//!   differently), and each building moves by a further random offset in
//!   `[-object_shift, object_shift]²` (outlines traced on other imagery);
//! * **omission**: each building (an 8-connected component of the class) is left out with
//!   probability `omission` (not yet mapped).
//!
//! Pixels that were [`IGNORE`] stay ignored (they mark missing imagery, not labels); labels
//! shifted out of the image are lost and shifted-in areas are background. The noise of an
//! image depends only on the seed and the image's index, so it is the same in every run and
//! epoch, as the errors of a real label source would be.

use std::collections::VecDeque;

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{LabelledImage, IGNORE};
use crate::{Error, Result};

/// How labels are degraded (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelNoiseConfig {
    /// The class whose objects are moved and dropped (the others are background).
    pub class: u8,
    /// Largest offset of an image's whole label layer, pixels.
    pub max_shift: usize,
    /// Largest further offset of each object, pixels.
    pub object_shift: usize,
    /// Probability that an object is left out.
    pub omission: f64,
    /// Seed; the noise of image `i` uses the seed and `i` only.
    pub seed: u64,
}

impl Default for LabelNoiseConfig {
    /// Buildings (class 1), 8 px layer offset, 2 px per-building offset, 20 % omission.
    fn default() -> Self {
        LabelNoiseConfig {
            class: 1,
            max_shift: 8,
            object_shift: 2,
            omission: 0.2,
            seed: 0,
        }
    }
}

impl LabelNoiseConfig {
    fn validate(&self) -> Result<()> {
        let bad = |message: String| Error::Config {
            context: "LabelNoiseConfig",
            message,
        };
        if self.class == IGNORE {
            return Err(bad(format!(
                "class {IGNORE} is the ignore value; choose the class of the objects to degrade"
            )));
        }
        if !(0.0..=1.0).contains(&self.omission) {
            return Err(bad(format!(
                "omission {} is not a probability in [0, 1]",
                self.omission
            )));
        }
        Ok(())
    }
}

/// What [`add_label_noise`] did to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoiseReport {
    /// Objects (8-connected components of the class) in the clean mask.
    pub objects: usize,
    /// Objects left out.
    pub omitted: usize,
    /// The offset of the whole label layer `(dx, dy)`, pixels (positive: right, down).
    pub shift: (i64, i64),
    /// Valid pixels whose label differs from the clean mask.
    pub changed_pixels: usize,
    /// Valid pixels of the class in the clean mask.
    pub class_pixels: usize,
}

/// The 8-connected components of `mask == class`, as lists of `(row, col)`.
fn components(mask: &Array2<u8>, class: u8) -> Vec<Vec<(usize, usize)>> {
    let (h, w) = mask.dim();
    let mut seen = Array2::<bool>::from_elem((h, w), false);
    let mut out = Vec::new();
    let mut queue = VecDeque::new();
    for r0 in 0..h {
        for c0 in 0..w {
            if seen[[r0, c0]] || mask[[r0, c0]] != class {
                continue;
            }
            seen[[r0, c0]] = true;
            queue.push_back((r0, c0));
            let mut pixels = Vec::new();
            while let Some((r, c)) = queue.pop_front() {
                pixels.push((r, c));
                for dr in -1i64..=1 {
                    for dc in -1i64..=1 {
                        let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                        if rr < 0 || cc < 0 || rr >= h as i64 || cc >= w as i64 {
                            continue;
                        }
                        let (rr, cc) = (rr as usize, cc as usize);
                        if !seen[[rr, cc]] && mask[[rr, cc]] == class {
                            seen[[rr, cc]] = true;
                            queue.push_back((rr, cc));
                        }
                    }
                }
            }
            out.push(pixels);
        }
    }
    out
}

fn offset(rng: &mut StdRng, max: usize) -> (i64, i64) {
    let m = max as i64;
    if m == 0 {
        (0, 0)
    } else {
        (rng.random_range(-m..=m), rng.random_range(-m..=m))
    }
}

/// A copy of `image` whose mask carries simulated misregistration and omission; `index` is the
/// image's position in its dataset (it seeds the image's noise together with `cfg.seed`).
///
/// # Errors
/// [`Error::Config`] when `cfg.class` is [`IGNORE`] or `cfg.omission` is not in `[0, 1]`.
pub fn add_label_noise(
    image: &LabelledImage,
    index: usize,
    cfg: &LabelNoiseConfig,
) -> Result<(LabelledImage, NoiseReport)> {
    cfg.validate()?;
    // one stream per image, independent of the order images are processed in
    let mut rng =
        StdRng::seed_from_u64(cfg.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let clean = image.mask().to_owned();
    let (h, w) = clean.dim();
    let shift = offset(&mut rng, cfg.max_shift);
    let objects = components(&clean, cfg.class);
    let mut noisy = clean.mapv(|m| if m == cfg.class { 0 } else { m });
    let mut omitted = 0;
    for pixels in &objects {
        // draw both numbers for every object so one object's fate does not shift the others'
        let dropped = rng.random_bool(cfg.omission);
        let (odx, ody) = offset(&mut rng, cfg.object_shift);
        if dropped {
            omitted += 1;
            continue;
        }
        let (dx, dy) = (shift.0 + odx, shift.1 + ody);
        for &(r, c) in pixels {
            let (rr, cc) = (r as i64 + dy, c as i64 + dx);
            if rr >= 0 && cc >= 0 && rr < h as i64 && cc < w as i64 {
                let target = &mut noisy[[rr as usize, cc as usize]];
                if *target != IGNORE {
                    *target = cfg.class;
                }
            }
        }
    }
    // ignored pixels stay ignored; labels moved onto them are dropped
    noisy.zip_mut_with(&clean, |n, &c| {
        if c == IGNORE {
            *n = IGNORE;
        }
    });
    let mut changed_pixels = 0;
    let mut class_pixels = 0;
    for (&n, &c) in noisy.iter().zip(clean.iter()) {
        if c != IGNORE {
            changed_pixels += usize::from(n != c);
            class_pixels += usize::from(c == cfg.class);
        }
    }
    let report = NoiseReport {
        objects: objects.len(),
        omitted,
        shift,
        changed_pixels,
        class_pixels,
    };
    let out = LabelledImage::new(
        image.image().to_owned(),
        noisy,
        image.group(),
        image.source(),
    )?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

    fn squares(h: usize, w: usize, at: &[(usize, usize, usize)]) -> LabelledImage {
        let mut mask = Array2::<u8>::zeros((h, w));
        for &(r, c, side) in at {
            mask.slice_mut(s![r..r + side, c..c + side]).fill(1);
        }
        LabelledImage::new(Array3::zeros((1, h, w)), mask, "g", "x.png").unwrap()
    }

    #[test]
    fn no_noise_is_the_identity() {
        let img = squares(32, 32, &[(4, 4, 5), (20, 10, 6)]);
        let cfg = LabelNoiseConfig {
            max_shift: 0,
            object_shift: 0,
            omission: 0.0,
            ..LabelNoiseConfig::default()
        };
        let (noisy, report) = add_label_noise(&img, 3, &cfg).unwrap();
        assert_eq!(noisy.mask(), img.mask());
        assert_eq!(report.objects, 2);
        assert_eq!(report.changed_pixels, 0);
        assert_eq!(report.class_pixels, 25 + 36);
    }

    #[test]
    fn full_omission_removes_every_object() {
        let img = squares(32, 32, &[(4, 4, 5), (20, 10, 6), (2, 25, 3)]);
        let cfg = LabelNoiseConfig {
            omission: 1.0,
            ..LabelNoiseConfig::default()
        };
        let (noisy, report) = add_label_noise(&img, 0, &cfg).unwrap();
        assert!(noisy.mask().iter().all(|&m| m == 0));
        assert_eq!((report.objects, report.omitted), (3, 3));
        assert_eq!(report.changed_pixels, 25 + 36 + 9);
    }

    #[test]
    fn a_layer_shift_moves_every_object_by_the_reported_offset() {
        let img = squares(48, 48, &[(16, 16, 6), (30, 8, 4)]);
        let cfg = LabelNoiseConfig {
            max_shift: 5,
            object_shift: 0,
            omission: 0.0,
            seed: 11,
            ..LabelNoiseConfig::default()
        };
        let mut shifts = std::collections::HashSet::new();
        for index in 0..20 {
            let (noisy, report) = add_label_noise(&img, index, &cfg).unwrap();
            let (dx, dy) = report.shift;
            assert!(dx.abs() <= 5 && dy.abs() <= 5, "{:?}", report.shift);
            shifts.insert(report.shift);
            for ((r, c), &m) in noisy.mask().indexed_iter() {
                let (sr, sc) = (r as i64 - dy, c as i64 - dx);
                let expected = if sr >= 0 && sc >= 0 && sr < 48 && sc < 48 {
                    img.mask()[[sr as usize, sc as usize]]
                } else {
                    0
                };
                assert_eq!(
                    m, expected,
                    "image {index} pixel ({r}, {c}) shift {dx},{dy}"
                );
            }
        }
        assert!(shifts.len() > 5, "offsets barely vary: {shifts:?}");
    }

    #[test]
    fn noise_is_deterministic_per_image_and_differs_between_images() {
        let img = squares(40, 40, &[(5, 5, 6), (20, 20, 8), (30, 5, 4)]);
        let cfg = LabelNoiseConfig::default();
        let (a, ra) = add_label_noise(&img, 7, &cfg).unwrap();
        let (b, rb) = add_label_noise(&img, 7, &cfg).unwrap();
        assert_eq!(a.mask(), b.mask());
        assert_eq!(ra, rb);
        let differs = (0..10).any(|i| add_label_noise(&img, i, &cfg).unwrap().1.shift != ra.shift);
        assert!(differs);
    }

    #[test]
    fn ignored_pixels_stay_ignored_and_block_moved_labels() {
        let mut img = squares(20, 20, &[(5, 5, 6)]);
        let mut mask = img.mask().to_owned();
        mask.slice_mut(s![.., 15..]).fill(IGNORE);
        img = LabelledImage::new(img.image().to_owned(), mask.clone(), "g", "x").unwrap();
        let cfg = LabelNoiseConfig {
            max_shift: 8,
            object_shift: 0,
            omission: 0.0,
            seed: 3,
            ..LabelNoiseConfig::default()
        };
        for index in 0..10 {
            let (noisy, _) = add_label_noise(&img, index, &cfg).unwrap();
            for (&n, &m) in noisy.mask().iter().zip(mask.iter()) {
                assert_eq!(n == IGNORE, m == IGNORE);
            }
        }
    }

    #[test]
    fn omission_rate_follows_the_probability() {
        // 10 x 10 grid of separate 2 x 2 buildings
        let at: Vec<_> = (0..10)
            .flat_map(|i| (0..10).map(move |j| (4 * i, 4 * j, 2)))
            .collect();
        let img = squares(40, 40, &at);
        let cfg = LabelNoiseConfig {
            max_shift: 0,
            object_shift: 0,
            omission: 0.3,
            seed: 5,
            ..LabelNoiseConfig::default()
        };
        let mut omitted = 0;
        let mut objects = 0;
        for index in 0..10 {
            let (noisy, r) = add_label_noise(&img, index, &cfg).unwrap();
            omitted += r.omitted;
            objects += r.objects;
            let left = noisy.mask().iter().filter(|&&m| m == 1).count();
            assert_eq!(left, 4 * (r.objects - r.omitted));
        }
        assert_eq!(objects, 1000);
        let rate = omitted as f64 / objects as f64;
        assert!((0.25..0.35).contains(&rate), "omission rate {rate}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let img = squares(8, 8, &[]);
        for cfg in [
            LabelNoiseConfig {
                omission: 1.5,
                ..LabelNoiseConfig::default()
            },
            LabelNoiseConfig {
                class: IGNORE,
                ..LabelNoiseConfig::default()
            },
        ] {
            let err = add_label_noise(&img, 0, &cfg).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{err}");
        }
    }
}
