//! Whole-scene inference: tiled results against a whole-image forward pass, nodata and alpha
//! handling, georeferencing kept, shards merged bit-exactly, checkpoints loaded back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use canopy_nn::SeededVarMap;
use canopy_raster::write::{write_geotiff, WriteOptions};
use canopy_raster::{Blend, GeoTiff, GeoTransform, Georef, Raster};
use canopy_segment::infer::{
    merge_shards, predict_image, predict_shard, segment_geotiff, SegmentOptions, SegmentOutputs,
    Segmenter, Shard, CLASS_NODATA,
};
use canopy_segment::{MlpActivation, MlpNetConfig, ModelConfig, UNetConfig};
use canopy_train::checkpoint::{save_checkpoint, CheckpointMeta, Normalisation};
use ndarray::{s, Array2, Array3};

fn segmenter(cfg: &ModelConfig, seed: u64) -> (Segmenter, SeededVarMap) {
    let vm = SeededVarMap::new(seed);
    let model = cfg.build(vm.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let n = cfg.in_channels();
    let norm = Normalisation {
        mean: (0..n).map(|i| 100.0 + 10.0 * i as f64).collect(),
        std: vec![40.0; n],
    };
    let seg = Segmenter::new(model, cfg.clone(), Some(norm), vec![]).unwrap();
    (seg, vm)
}

/// A per-pixel model (1x1 convolutions only): tiling cannot change its output.
fn pointwise() -> ModelConfig {
    ModelConfig::MlpNet(MlpNetConfig {
        in_channels: 3,
        classes: 3,
        widths: vec![8],
        kernels: vec![1],
        hidden: 6,
        activation: MlpActivation::Relu,
    })
}

fn unet() -> ModelConfig {
    ModelConfig::Unet(UNetConfig {
        in_channels: 3,
        classes: 2,
        base_width: 4,
        depth: 3,
        batch_norm: true,
    })
}

fn georef() -> Georef {
    Georef::new(
        GeoTransform::north_up(500_000.0, 4_600_000.0, 0.5, -0.5),
        Some(32633),
    )
}

fn scene(bands: usize, h: usize, w: usize) -> Array3<u16> {
    Array3::from_shape_fn((bands, h, w), |(b, y, x)| {
        (100 + 30 * b + (x * 7 + y * 13) % 90 + if (x / 9 + y / 11) % 3 == 0 { 60 } else { 0 })
            as u16
    })
}

fn write_scene(dir: &Path, data: Array3<u16>, nodata: Option<f64>) -> PathBuf {
    let path = dir.join("scene.tif");
    let raster = Raster::new(data, georef()).with_nodata(nodata);
    write_geotiff(&path, &raster, &WriteOptions::default().tiled(32, 32)).unwrap();
    path
}

fn read_u8(path: &Path) -> Raster<u8> {
    GeoTiff::open(path).unwrap().read_as::<u8>().unwrap()
}

fn read_f32(path: &Path) -> Raster<f32> {
    GeoTiff::open(path).unwrap().read_as::<f32>().unwrap()
}

fn opts(tile: usize, overlap: usize, blend: Blend) -> SegmentOptions {
    SegmentOptions {
        tile,
        overlap,
        blend,
        batch: 3,
        write: WriteOptions::default().tiled(32, 32),
        ..SegmentOptions::default()
    }
}

#[test]
fn tiled_pointwise_model_equals_whole_image_and_keeps_georeferencing() {
    let dir = tempfile::tempdir().unwrap();
    let data = scene(3, 90, 77);
    let input = write_scene(dir.path(), data.clone(), None);
    let (seg, _) = segmenter(&pointwise(), 1);
    let whole = predict_image(
        &seg,
        data.mapv(f32::from).view(),
        Array2::from_elem((90, 77), true).view(),
    )
    .unwrap();
    for blend in [Blend::None, Blend::Cosine, Blend::Linear] {
        let outputs = SegmentOutputs {
            classes: dir.path().join("classes.tif"),
            probabilities: Some(dir.path().join("probs.tif")),
        };
        let tif = GeoTiff::open(&input).unwrap();
        let mut calls = 0;
        let report = segment_geotiff(
            &seg,
            &tif,
            &input,
            &outputs,
            &opts(40, 12, blend),
            |_, _| calls += 1,
        )
        .unwrap();
        assert_eq!(report.windows, calls);
        assert!(report.windows > 4);
        let probs = read_f32(&outputs.probabilities.clone().unwrap());
        let diff = (&probs.data - &whole)
            .mapv(f32::abs)
            .fold(0f32, |a, &b| a.max(b));
        assert!(
            diff < 1e-5,
            "{blend:?}: tiled probabilities differ by {diff}"
        );
        let classes = read_u8(&outputs.classes);
        assert_eq!(
            classes.georef,
            tif.info().georef,
            "the input's georeferencing is kept"
        );
        assert_eq!(classes.georef.crs.epsg, Some(32633));
        assert_eq!(classes.nodata, Some(f64::from(CLASS_NODATA)));
        let mut counted = vec![0u64; 3];
        for y in 0..90 {
            for x in 0..77 {
                let p = whole.slice(s![.., y, x]);
                let best = (0..3).fold(0, |b, j| if p[j] > p[b] { j } else { b });
                assert_eq!(classes.data[[0, y, x]] as usize, best, "pixel ({x}, {y})");
                counted[best] += 1;
            }
        }
        assert_eq!(report.class_pixels, counted);
        assert!(
            counted.iter().filter(|&&c| c > 0).count() >= 2,
            "a trivial map: {counted:?}"
        );
    }
}

#[test]
fn nodata_and_alpha_pixels_come_out_as_nodata() {
    let dir = tempfile::tempdir().unwrap();
    // RGBA: alpha 0 in a block, nodata value 0 in the red band elsewhere
    let mut data = scene(4, 50, 60);
    data.slice_mut(s![3, .., ..]).fill(255);
    data.slice_mut(s![3, 5..15, 10..30]).fill(0);
    data.slice_mut(s![0, 30..35, 40..45]).fill(0);
    let input = write_scene(dir.path(), data, Some(0.0));
    let (seg, _) = segmenter(&unet(), 2);
    let outputs = SegmentOutputs {
        classes: dir.path().join("c.tif"),
        probabilities: Some(dir.path().join("p.tif")),
    };
    let tif = GeoTiff::open(&input).unwrap();
    let report = segment_geotiff(
        &seg,
        &tif,
        &input,
        &outputs,
        &opts(32, 8, Blend::Cosine),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.nodata_pixels, 10 * 20 + 5 * 5);
    let classes = read_u8(&outputs.classes);
    let probs = read_f32(&outputs.probabilities.unwrap());
    for y in 0..50 {
        for x in 0..60 {
            let masked = (5..15).contains(&y) && (10..30).contains(&x)
                || (30..35).contains(&y) && (40..45).contains(&x);
            assert_eq!(
                classes.data[[0, y, x]] == CLASS_NODATA,
                masked,
                "({x}, {y})"
            );
            assert_eq!(probs.data[[0, y, x]].is_nan(), masked, "({x}, {y})");
            if !masked {
                let s = probs.data[[0, y, x]] + probs.data[[1, y, x]];
                assert!((s - 1.0).abs() < 1e-5, "probabilities sum to {s}");
            }
        }
    }
}

#[test]
fn shards_merge_into_the_unsharded_result_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_scene(dir.path(), scene(3, 100, 90), None);
    let (seg, _) = segmenter(&unet(), 3);
    let o = opts(32, 10, Blend::Cosine);
    let tif = GeoTiff::open(&input).unwrap();
    let whole = SegmentOutputs {
        classes: dir.path().join("whole.tif"),
        probabilities: Some(dir.path().join("whole_p.tif")),
    };
    segment_geotiff(&seg, &tif, &input, &whole, &o, |_, _| {}).unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("shard{i}")))
        .collect();
    let mut seen = 0;
    for (i, d) in dirs.iter().enumerate() {
        let m = predict_shard(
            &seg,
            &tif,
            &input,
            d,
            Shard { index: i, count: 3 },
            &o,
            |_, _| {},
        )
        .unwrap();
        seen += m.windows.len();
    }
    let merged = SegmentOutputs {
        classes: dir.path().join("merged.tif"),
        probabilities: Some(dir.path().join("merged_p.tif")),
    };
    let report = merge_shards(&dirs, &tif, &merged, &o, |_, _| {}).unwrap();
    assert_eq!(report.windows, seen);
    assert_eq!(read_u8(&merged.classes).data, read_u8(&whole.classes).data);
    let (a, b) = (
        read_f32(merged.probabilities.as_ref().unwrap()),
        read_f32(whole.probabilities.as_ref().unwrap()),
    );
    assert!(a
        .data
        .iter()
        .zip(b.data.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    // a missing shard is named
    let e = merge_shards(&dirs[..2], &tif, &merged, &o, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("run shard 2/3"), "{e}");
    // a different tiling is refused
    let e = merge_shards(
        &dirs,
        &tif,
        &merged,
        &opts(40, 10, Blend::Cosine),
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("manifest.json") && e.contains("--tile"), "{e}");
}

#[test]
fn shard_ranges_cover_every_window_once() {
    for total in [1usize, 2, 7, 100, 101] {
        for count in 1..=9 {
            let mut covered = vec![0; total];
            for index in 0..count {
                for i in (Shard { index, count }).range(total) {
                    covered[i] += 1;
                }
            }
            assert!(
                covered.iter().all(|&c| c == 1),
                "total {total}, {count} shards"
            );
        }
    }
    assert_eq!(Shard::parse("2/5").unwrap(), Shard { index: 2, count: 5 });
    for bad in ["5/5", "1", "a/3", "0/0", "-1/2"] {
        assert!(Shard::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn checkpoints_load_back_into_a_segmenter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = unet();
    let (seg, vm) = segmenter(&cfg, 4);
    let meta = CheckpointMeta {
        config: serde_json::to_value(&cfg).unwrap(),
        class_names: vec!["background".into(), "building".into()],
        normalisation: Some(Normalisation {
            mean: vec![100.0, 110.0, 120.0],
            std: vec![40.0; 3],
        }),
        ..CheckpointMeta::default()
    };
    let path = dir.path().join("model.safetensors");
    save_checkpoint(&path, &vm.named_vars().unwrap(), &meta).unwrap();
    let loaded = Segmenter::from_checkpoint(&path).unwrap();
    assert_eq!(loaded.class_names(), ["background", "building"]);
    let data = scene(3, 24, 20).mapv(f32::from);
    let valid = Array2::from_elem((24, 20), true);
    let a = predict_image(&seg, data.view(), valid.view()).unwrap();
    let b = predict_image(&loaded, data.view(), valid.view()).unwrap();
    assert_eq!(a, b);
    // a sidecar that is not a segmentation model
    let mut bad = meta.clone();
    bad.config = serde_json::json!({"model": "lstm"});
    save_checkpoint(
        dir.path().join("bad.safetensors"),
        &vm.named_vars().unwrap(),
        &bad,
    )
    .unwrap();
    let e = Segmenter::from_checkpoint(dir.path().join("bad.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.safetensors") && e.contains("config"), "{e}");
}

#[test]
fn band_selection_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_scene(dir.path(), scene(2, 20, 20), None);
    let (seg, _) = segmenter(&unet(), 5);
    let tif = GeoTiff::open(&input).unwrap();
    let outputs = SegmentOutputs {
        classes: dir.path().join("c.tif"),
        probabilities: None,
    };
    let e = segment_geotiff(
        &seg,
        &tif,
        &input,
        &outputs,
        &opts(16, 4, Blend::None),
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("scene.tif") && e.contains("2 bands") && e.contains("needs 3"),
        "{e}"
    );
    assert!(!outputs.classes.exists(), "no partial output");
}
