//! `canopy segment`: a checkpoint over a scene into a georeferenced class map; `--shard` runs
//! merged with `canopy segment merge` give the same map; missing weights and bad bands fail
//! with messages that say what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use canopy_nn::SeededVarMap;
use canopy_raster::{write_geotiff, GeoTiff, GeoTransform, Georef, Raster, WriteOptions};
use canopy_segment::{ModelConfig, UNetConfig};
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta, Normalisation};
use ndarray::Array3;

fn canopy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
}

fn fixtures(dir: &Path) -> (PathBuf, PathBuf) {
    let data = Array3::from_shape_fn((3, 70, 90), |(b, y, x)| {
        (50 + 20 * b + (x * 5 + y * 3) % 60 + if (x / 10 + y / 7) % 2 == 0 { 80 } else { 0 }) as u8
    });
    let scene = dir.join("scene.tif");
    let georef = Georef::new(
        GeoTransform::north_up(300_000.0, 5_000_000.0, 0.3, 0.3),
        Some(32632),
    );
    write_geotiff(&scene, &Raster::new(data, georef), &WriteOptions::default()).unwrap();
    let cfg = ModelConfig::Unet(UNetConfig {
        in_channels: 3,
        classes: 2,
        base_width: 4,
        depth: 3,
        batch_norm: true,
    });
    let vm = SeededVarMap::new(7);
    cfg.build(vm.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let meta = CheckpointMeta {
        config: serde_json::to_value(&cfg).unwrap(),
        class_names: vec!["background".into(), "building".into()],
        normalisation: Some(Normalisation {
            mean: vec![100.0; 3],
            std: vec![50.0; 3],
        }),
        ..CheckpointMeta::default()
    };
    let weights = dir.join("model.safetensors");
    save_checkpoint(&weights, &vm.named_vars().unwrap(), &meta).unwrap();
    (scene, weights)
}

fn run(args: &[&str]) -> (bool, String) {
    let out = canopy().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn segment_writes_a_georeferenced_class_map_and_shards_merge_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (scene, weights) = fixtures(dir.path());
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ok, text) = run(&[
        "segment",
        "--input",
        &p("scene.tif"),
        "--weights",
        &p("model.safetensors"),
        "--out",
        &p("classes.tif"),
        "--probabilities",
        &p("probs.tif"),
        "--tile",
        "32",
        "--overlap",
        "8",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Mpx/s") && text.contains("building"),
        "{text}"
    );
    let classes = GeoTiff::open(dir.path().join("classes.tif")).unwrap();
    let input = GeoTiff::open(&scene).unwrap();
    assert_eq!(classes.info().georef, input.info().georef);
    assert_eq!(
        (
            classes.info().width,
            classes.info().height,
            classes.info().bands
        ),
        (90, 70, 1)
    );
    assert_eq!(
        GeoTiff::open(dir.path().join("probs.tif"))
            .unwrap()
            .info()
            .bands,
        2
    );
    for i in 0..2 {
        let (ok, text) = run(&[
            "segment",
            "--input",
            &p("scene.tif"),
            "--weights",
            &p("model.safetensors"),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--shard",
            &format!("{i}/2"),
            "--shard-dir",
            &p(&format!("s{i}")),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains(&format!("shard {i}/2")), "{text}");
    }
    let (ok, text) = run(&[
        "segment",
        "merge",
        "--input",
        &p("scene.tif"),
        "--shards",
        &p("s0"),
        &p("s1"),
        "--out",
        &p("merged.tif"),
        "--tile",
        "32",
        "--overlap",
        "8",
    ]);
    assert!(ok, "{text}");
    let a: Raster<u8> = GeoTiff::open(dir.path().join("merged.tif"))
        .unwrap()
        .read()
        .unwrap();
    let b: Raster<u8> = classes.read().unwrap();
    assert_eq!(a.data, b.data);
    let _ = weights;
}

#[test]
fn segment_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ok, text) = run(&["segment", "--out", &p("c.tif")]);
    assert!(!ok && text.contains("--input"), "{text}");
    let (ok, text) = run(&[
        "segment",
        "--input",
        &p("scene.tif"),
        "--weights",
        &p("model.safetensors"),
        "--out",
        &p("c.tif"),
        "--bands",
        "1,2,5",
    ]);
    assert!(
        !ok && text.contains("scene.tif") && text.contains("band 5"),
        "{text}"
    );
    let (ok, text) = run(&[
        "segment",
        "--input",
        &p("scene.tif"),
        "--weights",
        &p("missing.safetensors"),
        "--out",
        &p("c.tif"),
    ]);
    assert!(!ok && text.contains("missing.safetensors"), "{text}");
    assert!(!dir.path().join("c.tif").exists());
}

#[test]
fn without_weights_the_built_in_model_runs_and_credits_its_data() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ok, text) = run(&["segment", "--input", &p("scene.tif"), "--out", &p("c.tif")]);
    assert!(ok, "{text}");
    assert!(text.contains("buildings-unet16"), "{text}");
    assert!(
        text.contains("OpenAerialMap") && text.contains("OpenStreetMap"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");
    let classes: Raster<u8> = GeoTiff::open(dir.path().join("c.tif"))
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(classes.data.dim(), (1, 70, 90));
    assert!(classes.data.iter().all(|&c| c <= 1), "classes 0/1 only");

    // a 16-bit scene at 10 m gets both warnings, and still runs
    let data = Array3::from_shape_fn((3, 40, 40), |(b, y, x)| {
        (1000 + 100 * b + 7 * x + 3 * y) as u16
    });
    let georef = Georef::new(
        GeoTransform::north_up(300_000.0, 5_000_000.0, 10.0, 10.0),
        Some(32632),
    );
    write_geotiff(
        dir.path().join("s2.tif"),
        &Raster::new(data, georef),
        &WriteOptions::default(),
    )
    .unwrap();
    let (ok, text) = run(&["segment", "--input", &p("s2.tif"), "--out", &p("c2.tif")]);
    assert!(ok, "{text}");
    assert!(text.contains("U16") && text.contains("8-bit"), "{text}");
    assert!(text.contains("10.000 m pixels"), "{text}");
}
