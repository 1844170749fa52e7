//! Seeded data augmentation: the same flips and rotations on image and mask, brightness and
//! contrast jitter on the image.

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which augmentations [`Augment`] draws, and how strong the jitter is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
    /// Mirror top-bottom with probability 1/2.
    pub vertical_flip: bool,
    /// Rotate by a uniformly drawn multiple of 90° (square patches; non-square patches only
    /// get 0° or 180°, so their shape is kept).
    pub rotate90: bool,
    /// Brightness factor drawn from `[1 - b, 1 + b]`, multiplying each band's mean (0: off).
    pub brightness: f32,
    /// Contrast factor drawn from `[1 - c, 1 + c]`, scaling deviations from each band's mean
    /// (0: off).
    pub contrast: f32,
}

impl Default for AugmentConfig {
    /// Flips and rotations on, ±10 % brightness and contrast.
    fn default() -> Self {
        AugmentConfig {
            horizontal_flip: true,
            vertical_flip: true,
            rotate90: true,
            brightness: 0.1,
            contrast: 0.1,
        }
    }
}

/// One drawn augmentation, applied identically to an image and its mask.
///
/// The geometric part is: horizontal flip, then vertical flip, then `quarter_turns`
/// counter-clockwise rotations by 90° (numpy's `rot90`). The radiometric part maps each band
/// `x -> (x - m) * contrast + m * brightness`, with `m` the band's mean over the patch; it
/// works on raw values (apply it before normalising) and never touches the mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Mirror left-right.
    pub horizontal_flip: bool,
    /// Mirror top-bottom.
    pub vertical_flip: bool,
    /// Counter-clockwise quarter turns, 0..4.
    pub quarter_turns: u8,
    /// Brightness factor (1: unchanged).
    pub brightness: f32,
    /// Contrast factor (1: unchanged).
    pub contrast: f32,
}

impl Transform {
    /// The transform that changes nothing.
    pub const IDENTITY: Transform = Transform {
        horizontal_flip: false,
        vertical_flip: false,
        quarter_turns: 0,
        brightness: 1.0,
        contrast: 1.0,
    };

    /// Applies the transform to an image `(C, H, W)` and its mask `(H, W)`.
    ///
    /// # Shapes
    /// Returns `(C, H', W')` and `(H', W')`, with `(H', W') = (W, H)` after an odd number of
    /// quarter turns.
    pub fn apply(
        &self,
        image: ArrayView3<'_, f32>,
        mask: ArrayView2<'_, u8>,
    ) -> (Array3<f32>, Array2<u8>) {
        let mut img = image;
        let mut m = mask;
        if self.horizontal_flip {
            img = img.slice_move(s![.., .., ..;-1]);
            m = m.slice_move(s![.., ..;-1]);
        }
        if self.vertical_flip {
            img = img.slice_move(s![.., ..;-1, ..]);
            m = m.slice_move(s![..;-1, ..]);
        }
        for _ in 0..self.quarter_turns % 4 {
            // Counter-clockwise: reverse the columns, then swap rows and columns.
            img = img.slice_move(s![.., .., ..;-1]).permuted_axes([0, 2, 1]);
            m = m.slice_move(s![.., ..;-1]).reversed_axes();
        }
        let mut img = img.as_standard_layout().into_owned();
        let m = m.as_standard_layout().into_owned();
        if self.brightness != 1.0 || self.contrast != 1.0 {
            for mut band in img.axis_iter_mut(Axis(0)) {
                let mean = band.iter().map(|&v| f64::from(v)).sum::<f64>() / band.len() as f64;
                let mean = mean as f32;
                band.mapv_inplace(|x| (x - mean) * self.contrast + mean * self.brightness);
            }
        }
        (img, m)
    }
}

/// Draws [`Transform`]s from an [`AugmentConfig`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Augment {
    cfg: AugmentConfig,
}

impl Augment {
    /// An augmenter with `cfg` (jitter strengths are clamped to `[0, 1]`).
    pub fn new(mut cfg: AugmentConfig) -> Self {
        cfg.brightness = clamp01(cfg.brightness);
        cfg.contrast = clamp01(cfg.contrast);
        Augment { cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Draws a transform for an `h x w` patch from `rng`.
    pub fn draw(&self, rng: &mut impl Rng, h: usize, w: usize) -> Transform {
        let c = &self.cfg;
        let horizontal_flip = c.horizontal_flip && rng.random_bool(0.5);
        let vertical_flip = c.vertical_flip && rng.random_bool(0.5);
        let quarter_turns = match (c.rotate90, h == w) {
            (false, _) => 0,
            (true, true) => rng.random_range(0..4u8),
            (true, false) => 2 * rng.random_range(0..2u8),
        };
        let brightness = jitter(rng, c.brightness);
        let contrast = jitter(rng, c.contrast);
        Transform {
            horizontal_flip,
            vertical_flip,
            quarter_turns,
            brightness,
            contrast,
        }
    }

    /// Draws a transform and applies it.
    pub fn apply(
        &self,
        rng: &mut impl Rng,
        image: ArrayView3<'_, f32>,
        mask: ArrayView2<'_, u8>,
    ) -> (Array3<f32>, Array2<u8>) {
        let (h, w) = mask.dim();
        self.draw(rng, h, w).apply(image, mask)
    }
}

fn jitter<R: Rng + ?Sized>(rng: &mut R, a: f32) -> f32 {
    if a > 0.0 {
        1.0 + rng.random_range(-a..=a)
    } else {
        1.0
    }
}

fn clamp01(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn geometric(h: bool, v: bool, k: u8) -> Transform {
        Transform {
            horizontal_flip: h,
            vertical_flip: v,
            quarter_turns: k,
            ..Transform::IDENTITY
        }
    }

    #[test]
    fn quarter_turn_matches_numpy_rot90() {
        // np.rot90([[1, 2, 3], [4, 5, 6]]) == [[3, 6], [2, 5], [1, 4]]
        let m = array![[1u8, 2, 3], [4, 5, 6]];
        let img = m.mapv(f32::from).insert_axis(Axis(0));
        let (i2, m2) = geometric(false, false, 1).apply(img.view(), m.view());
        assert_eq!(m2, array![[3u8, 6], [2, 5], [1, 4]]);
        assert_eq!(i2.index_axis(Axis(0), 0), m2.mapv(f32::from));
        let (_, hf) = geometric(true, false, 0).apply(img.view(), m.view());
        assert_eq!(hf, array![[3u8, 2, 1], [6, 5, 4]]);
        let (_, vf) = geometric(false, true, 0).apply(img.view(), m.view());
        assert_eq!(vf, array![[4u8, 5, 6], [1, 2, 3]]);
    }

    #[test]
    fn image_and_mask_move_together_for_every_geometric_transform() {
        let (h, w) = (5, 7);
        let mask = Array2::from_shape_fn((h, w), |(r, c)| (r * w + c) as u8);
        // Band 0 holds the mask values, band 1 their negatives.
        let img = Array3::from_shape_fn((2, h, w), |(b, r, c)| {
            let v = (r * w + c) as f32;
            if b == 0 {
                v
            } else {
                -v
            }
        });
        for k in 0..4 {
            for hf in [false, true] {
                for vf in [false, true] {
                    let (i2, m2) = geometric(hf, vf, k).apply(img.view(), mask.view());
                    assert_eq!(
                        i2.index_axis(Axis(0), 0),
                        m2.mapv(f32::from),
                        "{hf} {vf} {k}"
                    );
                    assert_eq!(i2.index_axis(Axis(0), 1), m2.mapv(|v| -f32::from(v)));
                    let mut sorted: Vec<u8> = m2.iter().copied().collect();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..(h * w) as u8).collect::<Vec<_>>());
                }
            }
        }
        // Four quarter turns give the input back.
        let (i4, m4) = geometric(false, false, 4).apply(img.view(), mask.view());
        assert_eq!((i4, m4), (img.clone(), mask.clone()));
        let mut i = img.clone();
        let mut m = mask.clone();
        for _ in 0..4 {
            let (a, b) = geometric(false, false, 1).apply(i.view(), m.view());
            (i, m) = (a, b);
        }
        assert_eq!((i, m), (img, mask));
    }

    #[test]
    fn drawn_augmentations_are_seeded_and_keep_non_square_shapes() {
        let aug = Augment::new(AugmentConfig::default());
        let img = Array3::from_shape_fn((3, 4, 6), |(b, r, c)| (b * 100 + r * 6 + c) as f32);
        let mask = Array2::from_shape_fn((4, 6), |(r, c)| ((r + c) % 3) as u8);
        let a = aug.apply(&mut StdRng::seed_from_u64(9), img.view(), mask.view());
        let b = aug.apply(&mut StdRng::seed_from_u64(9), img.view(), mask.view());
        assert_eq!(a, b);
        let mut turned = 0;
        for seed in 0..64 {
            let t = aug.draw(&mut StdRng::seed_from_u64(seed), 4, 6);
            assert!(t.quarter_turns % 2 == 0);
            assert!((0.9..=1.1).contains(&t.brightness) && (0.9..=1.1).contains(&t.contrast));
            let (i2, m2) = t.apply(img.view(), mask.view());
            assert_eq!((i2.dim(), m2.dim()), ((3, 4, 6), (4, 6)));
            turned += usize::from(t.quarter_turns == 2);
        }
        assert!(turned > 10 && turned < 54, "{turned}");
    }

    #[test]
    fn jitter_scales_mean_and_spread_and_leaves_the_mask() {
        let img = array![[[0.0f32, 2.0], [4.0, 6.0]]];
        let mask = array![[0u8, 1], [1, 255]];
        let t = Transform {
            brightness: 1.5,
            contrast: 0.5,
            ..Transform::IDENTITY
        };
        let (i2, m2) = t.apply(img.view(), mask.view());
        // mean 3 -> 4.5; deviations -3, -1, 1, 3 halved.
        assert_eq!(i2, array![[[3.0f32, 4.0], [5.0, 6.0]]]);
        assert_eq!(m2, mask);
    }
}
