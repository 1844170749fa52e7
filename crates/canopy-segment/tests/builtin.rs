//! The built-in building model: its embedded weights load into the configuration its sidecar
//! names, the sidecar carries provenance, licences and held-out scores, and the model runs on
//! an image of any size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use canopy_segment::builtin::{buildings, buildings_info, BUILDINGS_WEIGHTS};
use canopy_segment::ModelConfig;
use ndarray::{Array3, Array4};

#[test]
fn the_built_in_model_loads_with_its_description() {
    let seg = buildings().unwrap();
    assert_eq!(seg.in_channels(), 3);
    assert_eq!(seg.output_classes(), 2);
    assert_eq!(seg.class_names(), ["background", "building"]);
    match seg.config() {
        ModelConfig::Unet(c) => assert_eq!((c.base_width, c.depth, c.batch_norm), (16, 4, true)),
        other => panic!("unexpected built-in configuration {other:?}"),
    }
    let info = buildings_info().unwrap();
    assert_eq!(info.name, "buildings-unet16");
    assert!(info.attribution.iter().any(|a| a.contains("CC BY 4.0")));
    assert!(info.attribution.iter().any(|a| a.contains("ODbL")));
    assert!(
        info.recipe.contains("--example buildings"),
        "{}",
        info.recipe
    );
    // scores of every area, one of them held out, all of them real measurements
    assert!(info.scores.iter().any(|s| s.role == "val"));
    assert!(info.scores.iter().filter(|s| s.role == "train").count() >= 2);
    for s in &info.scores {
        assert!((0.0..=1.0).contains(&s.iou) && s.iou > 0.2, "{s:?}");
        assert!((0.5..=1.0).contains(&s.accuracy), "{s:?}");
    }
    // a few MB at most: it is compiled into every binary that uses it
    assert!(
        BUILDINGS_WEIGHTS.len() < 8 << 20,
        "{} bytes",
        BUILDINGS_WEIGHTS.len()
    );
}

#[test]
fn the_built_in_model_gives_probabilities_for_any_image_size() {
    let seg = buildings().unwrap();
    // a bright rectangle on darker ground, 50 x 70 pixels (not a multiple of 16)
    let img = Array3::from_shape_fn((3, 50, 70), |(b, y, x)| {
        if (15..35).contains(&y) && (20..50).contains(&x) {
            200.0 - 10.0 * b as f32
        } else {
            110.0 + 5.0 * b as f32 + ((x + 2 * y) % 9) as f32
        }
    });
    let images = img.insert_axis(ndarray::Axis(0));
    let valid = ndarray::Array3::from_elem((1, 50, 70), true);
    let p: Array4<f32> = seg.probabilities(&images, &valid).unwrap();
    assert_eq!(p.dim(), (1, 2, 50, 70));
    for y in 0..50 {
        for x in 0..70 {
            let s = p[[0, 0, y, x]] + p[[0, 1, y, x]];
            assert!(
                (s - 1.0).abs() < 1e-5,
                "probabilities sum to {s} at ({y}, {x})"
            );
        }
    }
}
