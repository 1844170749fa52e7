//! Property tests of tiling, stitching and padding: identity and constant predictions stitch
//! back exactly for every blend, every pixel is covered, the streaming stitcher equals the
//! in-memory one bitwise, and padding then cropping is the identity.

use canopy_raster::pad::{pad, pad_to_multiple, PadMode, Padding};
use canopy_raster::{Blend, RowStitcher, Stitcher, Tiler, Window};
use ndarray::{s, Array3, ArrayView3, Axis};
use proptest::prelude::*;

/// Random finite `f32`s from every part of the range (signed zeros, subnormals, huge values).
fn random_image(c: usize, h: usize, w: usize, seed: u64) -> Array3<f32> {
    let mut state = seed | 1;
    Array3::from_shape_simple_fn((c, h, w), || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32;
        let v = f32::from_bits(bits);
        if v.is_finite() {
            v
        } else {
            -0.0
        }
    })
}

fn crop(a: &Array3<f32>, w: &Window) -> Array3<f32> {
    a.slice(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()])
        .to_owned()
}

fn bits(a: ArrayView3<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

fn blend_strategy() -> impl Strategy<Value = Blend> {
    prop_oneof![
        Just(Blend::None),
        Just(Blend::Linear),
        Just(Blend::Cosine),
        (0usize..64).prop_map(|m| Blend::CenterCrop { margin: m }),
    ]
}

/// A CenterCrop margin the tiler accepts (at most half the smaller overlap).
fn fit_blend(blend: Blend, tiler: &Tiler) -> Blend {
    match blend {
        Blend::CenterCrop { margin } => {
            let o = tiler.overlap();
            Blend::CenterCrop {
                margin: margin % (o.height.min(o.width) / 2 + 1),
            }
        }
        b => b,
    }
}

#[derive(Debug, Clone)]
struct Case {
    height: usize,
    width: usize,
    tile: (usize, usize),
    overlap: (usize, usize),
    channels: usize,
    blend: Blend,
    seed: u64,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..300,
        1usize..300,
        (1usize..128, 1usize..128),
        (0usize..128, 0usize..128),
        1usize..=3,
        blend_strategy(),
        any::<u64>(),
    )
        .prop_map(|(height, width, tile, o, channels, blend, seed)| Case {
            height,
            width,
            tile,
            overlap: (o.0 % tile.0, o.1 % tile.1),
            channels,
            blend,
            seed,
        })
        .prop_filter("keep each case to a few million pixel updates", |c| {
            let windows = |n: usize, t: usize, o: usize| n.saturating_sub(t) / (t - o) + 2;
            let per_axis_h = windows(c.height, c.tile.0, c.overlap.0) * c.tile.0.min(c.height);
            let per_axis_w = windows(c.width, c.tile.1, c.overlap.1) * c.tile.1.min(c.width);
            per_axis_h * per_axis_w * c.channels <= 3_000_000
        })
}

fn tiler_of(c: &Case) -> canopy_raster::Result<Tiler> {
    Tiler::new(c.width, c.height, c.tile, c.overlap)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_global_rejects: 4096, ..ProptestConfig::default() })]

    #[test]
    fn windows_are_full_size_inside_and_cover_the_raster(c in case_strategy()) {
        let tiler = tiler_of(&c)?;
        let (rows, cols) = tiler.grid_shape();
        prop_assert_eq!(tiler.len(), rows * cols);
        prop_assert_eq!(tiler.windows().len(), tiler.len());
        let mut covered = Array3::<u8>::zeros((1, c.height, c.width));
        let mut owned = Array3::<u8>::zeros((1, c.height, c.width));
        for (k, w) in tiler.windows().enumerate() {
            prop_assert_eq!(w.height, c.tile.0.min(c.height));
            prop_assert_eq!(w.width, c.tile.1.min(c.width));
            prop_assert!(w.check_inside(c.width, c.height).is_ok());
            prop_assert_eq!(tiler.index_of(&w), Some((k / cols, k % cols)));
            covered.slice_mut(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()]).fill(1);
            let o = tiler.ownership(k / cols, k % cols).ok_or_else(|| TestCaseError::fail("no ownership"))?;
            prop_assert!(w.contains(&o) && !o.is_empty());
            owned.slice_mut(s![.., o.row_off..o.row_end(), o.col_off..o.col_end()]).mapv_inplace(|v| v + 1);
        }
        prop_assert!(covered.iter().all(|&v| v == 1));
        prop_assert!(owned.iter().all(|&v| v == 1), "ownership regions must partition the raster");
        // Offsets strictly increase, by at most the stride.
        for j in 1..cols {
            let (a, b) = (tiler.window(0, j - 1), tiler.window(0, j));
            let (a, b) = a.zip(b).ok_or_else(|| TestCaseError::fail("window outside the grid"))?;
            prop_assert!(a.col_off < b.col_off && b.col_off - a.col_off <= tiler.stride().width);
        }
    }

    #[test]
    fn identity_model_reproduces_the_input_bitwise(c in case_strategy()) {
        let tiler = tiler_of(&c)?;
        let blend = fit_blend(c.blend, &tiler);
        let image = random_image(c.channels, c.height, c.width, c.seed);
        let mut st = Stitcher::new(&tiler, c.channels, blend)?;
        for w in tiler.windows() {
            st.add(w, crop(&image, &w).view())?;
        }
        let out = st.finish()?;
        prop_assert_eq!(bits(out.view()), bits(image.view()));
    }

    #[test]
    fn constant_prediction_stitches_to_the_constant(c in case_strategy(), k in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
        let tiler = tiler_of(&c)?;
        let blend = fit_blend(c.blend, &tiler);
        let mut st = Stitcher::new(&tiler, c.channels, blend)?;
        let size = tiler.window_size();
        let pred = Array3::from_elem((c.channels, size.height, size.width), k);
        for w in tiler.windows() {
            st.add(w, pred.view())?;
        }
        let out = st.finish()?;
        prop_assert!(out.iter().all(|v| v.to_bits() == k.to_bits()));
    }

    #[test]
    fn row_stitcher_equals_stitcher(c in case_strategy()) {
        let tiler = tiler_of(&c)?;
        let blend = fit_blend(c.blend, &tiler);
        let image = random_image(c.channels, c.height, c.width, c.seed);
        let mut st = Stitcher::new(&tiler, c.channels, blend)?;
        let mut rs = RowStitcher::new(&tiler, c.channels, blend)?;
        let mut blocks = Vec::new();
        let max_rows = tiler.window_size().height;
        for (k, w) in tiler.windows().enumerate() {
            // Windows disagree, so the blend weights matter.
            let pred = crop(&image, &w).mapv(|v| v * 0.5 + k as f32);
            st.add(w, pred.view())?;
            if let Some(rows) = rs.add(w, pred.view())? {
                prop_assert!(rows.data.len_of(Axis(1)) <= tiler.stride().height);
                blocks.push(rows);
            }
        }
        let last = rs.finish()?;
        prop_assert!(last.data.len_of(Axis(1)) <= max_rows);
        blocks.push(last);
        let full = st.finish()?;
        let mut next = 0;
        for b in &blocks {
            prop_assert_eq!(b.row_off, next);
            prop_assert_eq!(bits(b.data.view()), bits(full.slice(s![.., b.row_off..b.row_end(), ..])));
            next = b.row_end();
        }
        prop_assert_eq!(next, c.height);
    }

    #[test]
    fn blend_none_takes_each_pixel_from_its_owner(c in case_strategy()) {
        let tiler = tiler_of(&c)?;
        let (_, cols) = tiler.grid_shape();
        let mut st = Stitcher::new(&tiler, 1, Blend::None)?;
        let size = tiler.window_size();
        for (k, w) in tiler.windows().enumerate() {
            st.add(w, Array3::from_elem((1, size.height, size.width), k as f32).view())?;
        }
        let out = st.finish()?;
        for ((_, y, x), &v) in out.indexed_iter() {
            let (i, j) = tiler.owner(y, x).ok_or_else(|| TestCaseError::fail("no owner"))?;
            prop_assert_eq!(v, (i * cols + j) as f32);
        }
    }

    #[test]
    fn padding_then_cropping_is_the_identity(
        (ch, h, w) in (1usize..=3, 1usize..40, 1usize..40),
        multiple in 1usize..40,
        p in (0usize..50, 0usize..50, 0usize..50, 0usize..50),
        mode in prop_oneof![Just(PadMode::Reflect), Just(PadMode::Replicate), Just(PadMode::Zero)],
        seed in any::<u64>(),
    ) {
        let image = random_image(ch, h, w, seed);
        let (padded, padding) = pad_to_multiple(image.view(), multiple, mode)?;
        prop_assert_eq!(padded.len_of(Axis(1)) % multiple, 0);
        prop_assert_eq!(padded.len_of(Axis(2)) % multiple, 0);
        prop_assert!(padded.len_of(Axis(1)) - h < multiple && padded.len_of(Axis(2)) - w < multiple);
        prop_assert_eq!(bits(padding.crop(padded.view())?), bits(image.view()));
        let padding = Padding { top: p.0, bottom: p.1, left: p.2, right: p.3 };
        let padded = pad(image.view(), padding, mode)?;
        prop_assert_eq!(padded.dim(), padding.padded_shape(image.dim()));
        prop_assert_eq!(bits(padding.crop(padded.view())?), bits(image.view()));
        // Every padded value comes from the input (or is zero).
        let values: std::collections::HashSet<u32> = image.iter().map(|v| v.to_bits()).collect();
        prop_assert!(padded.iter().all(|v| values.contains(&v.to_bits()) || (mode == PadMode::Zero && v.to_bits() == 0)));
    }
}

#[test]
fn extreme_overlap_and_tiny_rasters() -> anyhow::Result<()> {
    for (w, h, tile, overlap) in [
        (1, 1, 1, 0),
        (1, 1, 5, 4),
        (7, 3, 4, 3),
        (9, 9, 3, 2),
        (2, 300, 128, 127),
    ] {
        let tiler = Tiler::new(w, h, tile, overlap)?;
        let image = random_image(2, h, w, 7);
        for blend in [
            Blend::None,
            Blend::Linear,
            Blend::Cosine,
            Blend::CenterCrop {
                margin: overlap / 2,
            },
        ] {
            let mut st = Stitcher::new(&tiler, 2, blend)?;
            let mut rs = RowStitcher::new(&tiler, 2, blend)?;
            let mut rows = Vec::new();
            for win in tiler.windows() {
                let p = crop(&image, &win);
                st.add(win, p.view())?;
                if let Some(r) = rs.add(win, p.view())? {
                    rows.push(r.data);
                }
            }
            rows.push(rs.finish()?.data);
            let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
            let streamed = ndarray::concatenate(Axis(1), &views)?;
            assert_eq!(
                bits(st.finish()?.view()),
                bits(image.view()),
                "{w}x{h} {tile}/{overlap} {blend:?}"
            );
            assert_eq!(bits(streamed.view()), bits(image.view()));
        }
    }
    Ok(())
}
