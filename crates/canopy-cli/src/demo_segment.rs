//! Step 8 of `canopy demo`: the built-in building model over a generated aerial scene.
//!
//! The scene imitates 0.15 m drone imagery of a peri-urban area (the kind of ground the model
//! was trained on): soil and grass texture, trees, a dirt road, and rectangular houses with
//! corrugated-metal, rust-red or pale roofs, some of them gabled, with shadows on their lee
//! side. It is written as an 8-bit RGB GeoTIFF in UTM, segmented by `segment_geotiff` with the
//! built-in model, and the class map is scored against the generated footprints. A synthetic
//! scene is not the real thing: the score shows the pipeline works end to end, not the model's
//! accuracy on real imagery (that is in the model's sidecar, see `canopy_segment::builtin`).

use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use canopy_raster::write::{write_geotiff, WriteOptions};
use canopy_raster::{GeoTiff, GeoTransform, Georef, Raster};
use canopy_segment::infer::{segment_geotiff, SegmentOptions, SegmentOutputs};
use ndarray::{Array2, Array3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A house: centre, half sizes, rotation, roof colour and whether the roof is gabled.
struct House {
    cx: f64,
    cy: f64,
    hw: f64,
    hh: f64,
    angle: f64,
    roof: [f64; 3],
    gabled: bool,
}

impl House {
    /// Local roof coordinates of pixel centre `(x, y)`, or `None` outside the footprint.
    fn local(&self, x: f64, y: f64, grow: f64) -> Option<(f64, f64)> {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
        (u.abs() <= self.hw + grow && v.abs() <= self.hh + grow).then_some((u, v))
    }
}

/// Value noise: bilinear interpolation of a seeded lattice with spacing `cell`.
fn value_noise(rng: &mut StdRng, size: usize, cell: usize) -> Array2<f64> {
    let n = size / cell + 2;
    let lattice = Array2::from_shape_fn((n, n), |_| rng.random::<f64>());
    Array2::from_shape_fn((size, size), |(r, c)| {
        let (fy, fx) = (r as f64 / cell as f64, c as f64 / cell as f64);
        let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
        let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
        let top = lattice[[y0, x0]] * (1.0 - tx) + lattice[[y0, x0 + 1]] * tx;
        let bottom = lattice[[y0 + 1, x0]] * (1.0 - tx) + lattice[[y0 + 1, x0 + 1]] * tx;
        top * (1.0 - ty) + bottom * ty
    })
}

/// The RGB scene `(3, size, size)` and its building footprint mask.
pub fn scene(size: usize, seed: u64) -> (Array3<u8>, Array2<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let soil = value_noise(&mut rng, size, 48);
    let grain = value_noise(&mut rng, size, 6);
    let mut rgb = Array3::<f64>::zeros((3, size, size));
    for r in 0..size {
        for c in 0..size {
            // grass where the large-scale noise is high, bare soil elsewhere
            let g = ((soil[[r, c]] - 0.35) * 3.0).clamp(0.0, 1.0);
            let t = 0.85 + 0.3 * grain[[r, c]];
            let grass = [88.0, 112.0, 62.0];
            let dirt = [156.0, 128.0, 98.0];
            for b in 0..3 {
                rgb[[b, r, c]] = (g * grass[b] + (1.0 - g) * dirt[b]) * t;
            }
        }
    }
    // a dirt road across the scene
    let (road_y, road_slope) = (size as f64 * rng.random_range(0.3..0.7), 0.15);
    for r in 0..size {
        for c in 0..size {
            let d = (r as f64 - road_y - road_slope * c as f64).abs();
            if d < 22.0 {
                let t = 0.9 + 0.2 * grain[[r, c]];
                for (b, v) in [176.0, 158.0, 134.0].iter().enumerate() {
                    rgb[[b, r, c]] = v * t;
                }
            }
        }
    }
    // houses, not overlapping each other or the road
    let roofs = [
        [178.0, 182.0, 186.0], // galvanised metal
        [150.0, 72.0, 52.0],   // rust / red tiles
        [214.0, 210.0, 200.0], // pale concrete
        [96.0, 110.0, 128.0],  // painted blue-grey metal
    ];
    let mut houses: Vec<House> = Vec::new();
    let mut tries = 0;
    while houses.len() < size * size / 12_000 && tries < 2_000 {
        tries += 1;
        let h = House {
            cx: rng.random_range(40.0..size as f64 - 40.0),
            cy: rng.random_range(40.0..size as f64 - 40.0),
            hw: rng.random_range(20.0..55.0),
            hh: rng.random_range(16.0..38.0),
            angle: if rng.random_bool(0.6) {
                0.0
            } else {
                rng.random_range(-0.6..0.6)
            },
            roof: roofs[rng.random_range(0..roofs.len())],
            gabled: rng.random_bool(0.5),
        };
        let radius = h.hw.hypot(h.hh);
        let clear_of_road = (h.cy - road_y - road_slope * h.cx).abs() > radius + 28.0;
        let clear_of_houses = houses
            .iter()
            .all(|o| (o.cx - h.cx).hypot(o.cy - h.cy) > radius + o.hw.hypot(o.hh) + 8.0);
        if clear_of_road && clear_of_houses {
            houses.push(h);
        }
    }
    let mut mask = Array2::<bool>::from_elem((size, size), false);
    // shadows first (cast towards the bottom right), then the roofs over them
    for h in &houses {
        for r in 0..size {
            for c in 0..size {
                let (x, y) = (c as f64 + 0.5 - 6.0, r as f64 + 0.5 - 6.0);
                if h.local(x, y, 0.0).is_some() {
                    for b in 0..3 {
                        rgb[[b, r, c]] *= 0.45;
                    }
                }
            }
        }
    }
    for h in &houses {
        for r in 0..size {
            for c in 0..size {
                let Some((u, v)) = h.local(c as f64 + 0.5, r as f64 + 0.5, 0.0) else {
                    continue;
                };
                mask[[r, c]] = true;
                // corrugation, a lit and a shaded roof plane, a dark ridge and eaves
                let stripes = 1.0 + 0.05 * (u * std::f64::consts::PI / 2.5).sin();
                let plane = if h.gabled && v > 0.0 { 0.82 } else { 1.0 };
                let edge = if h.gabled && v.abs() < 1.0 { 0.7 } else { 1.0 };
                let eave = if (h.hw - u.abs()).min(h.hh - v.abs()) < 1.5 {
                    0.8
                } else {
                    1.0
                };
                for b in 0..3 {
                    rgb[[b, r, c]] = h.roof[b] * stripes * plane * edge * eave;
                }
            }
        }
    }
    // trees (dark crowns with a shadow), never on houses
    for _ in 0..size * size / 20_000 {
        let (cx, cy, rad) = (
            rng.random_range(0.0..size as f64),
            rng.random_range(0.0..size as f64),
            rng.random_range(8.0..22.0),
        );
        let touches_house = houses.iter().any(|h| h.local(cx, cy, rad + 4.0).is_some());
        if touches_house {
            continue;
        }
        for r in 0..size {
            for c in 0..size {
                let d = (c as f64 + 0.5 - cx).hypot(r as f64 + 0.5 - cy);
                if d < rad {
                    let t = 0.8 + 0.35 * grain[[r, c]];
                    for (b, v) in [46.0, 72.0, 38.0].iter().enumerate() {
                        rgb[[b, r, c]] = v * t;
                    }
                }
            }
        }
    }
    // sensor noise
    let pixels = rgb.mapv(|v| (v + rng.random_range(-4.0..4.0)).round().clamp(0.0, 255.0) as u8);
    (pixels, mask)
}

/// The building IoU below which the demo reports a broken pipeline (wrong band order,
/// normalisation or stitching would all land far below it).
const MIN_IOU: f64 = 0.5;

/// Runs step 8 into `out` on a scene of `size` x `size` pixels.
pub fn step(out: &Path, size: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    let (rgb, truth) = scene(size, 7);
    // UTM 37S (Zanzibar), 0.15 m pixels
    let georef = Georef::new(
        GeoTransform::north_up(530_000.0, 9_320_000.0, 0.15, 0.15),
        Some(32737),
    );
    let scene_path = out.join("aerial.tif");
    write_geotiff(
        &scene_path,
        &Raster::new(rgb, georef),
        &WriteOptions::default(),
    )?;
    let seg = canopy_segment::builtin::buildings()?;
    let classes_path = out.join("buildings.tif");
    let tif = GeoTiff::open(&scene_path)?;
    let report = segment_geotiff(
        &seg,
        &tif,
        &scene_path,
        &SegmentOutputs {
            classes: classes_path.clone(),
            probabilities: None,
        },
        &SegmentOptions {
            tile: 256,
            overlap: 32,
            ..SegmentOptions::default()
        },
        |_, _| {},
    )?;
    let classes = GeoTiff::open(&classes_path)?.read::<u8>()?;
    ensure!(
        classes.data.dim() == (1, size, size),
        "the class map has shape {:?}, expected (1, {size}, {size})",
        classes.data.dim()
    );
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&c, &t) in classes.data.iter().zip(truth.iter()) {
        match (c == 1, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let iou = tp as f64 / (tp + fp + fn_).max(1) as f64;
    ensure!(
        iou >= MIN_IOU,
        "the built-in building model reached IoU {iou:.3} < {MIN_IOU} on the generated scene: \
         the segmentation pipeline is broken"
    );
    let seconds = t.elapsed().as_secs_f64();
    println!(
        "8. built-in building U-Net over a generated 0.15 m aerial scene {} -> {} \
         ({:.2} Mpx in {seconds:.1} s): building IoU {iou:.3} against the generated footprints \
         ({} of {} building pixels found, {} false alarms). A synthetic scene: the model's \
         scores on real imagery are in its sidecar",
        scene_path.display(),
        classes_path.display(),
        report.pixels as f64 / 1e6,
        tp,
        tp + fn_,
        fp
    );
    Ok(())
}
