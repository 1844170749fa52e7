//! `canopy classify`: train on a UCR file, then eval (JSON), predict (CSV) and explain (PNGs)
//! with the saved model directory; clear errors for a wrong model directory and unknown
//! classes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn canopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UCR-style file: three classes (labels 1, 2, 3) told apart by where their bump is.
fn write_ucr(path: &Path, per_class: usize, labels: &[u32]) {
    let mut text = String::new();
    let mut state = 7u64;
    for i in 0..per_class * labels.len() {
        let label = labels[i % labels.len()];
        text.push_str(&label.to_string());
        for t in 0..16 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 0.2;
            let centre = 3.0 + 4.0 * f64::from(label);
            let v = (-((t as f64 - centre) / 2.0).powi(2)).exp() + noise;
            text.push_str(&format!("\t{v:.4}"));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn train_eval_predict_explain_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.tsv");
    write_ucr(&data, 40, &[1, 2, 3]);
    let model = dir.path().join("model");
    let d = data.to_str().unwrap();
    let m = model.to_str().unwrap();
    let out = ok(&canopy(&[
        "classify",
        "train",
        "--data",
        d,
        "--format",
        "ucr",
        "--model",
        "tempcnn",
        "--epochs",
        "6",
        "--lr",
        "0.003",
        "--batch-size",
        "16",
        "--out",
        m,
        "--quiet",
    ]));
    assert!(
        out.contains("training tempcnn on 96 series (24 validation)"),
        "{out}"
    );
    for f in [
        "model.safetensors",
        "model.json",
        "normalization.json",
        "train/loss.png",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }

    let out = ok(&canopy(&[
        "classify", "eval", "--data", d, "--format", "ucr", "--model", m, "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], 120);
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{out}");
    let text = ok(&canopy(&[
        "classify", "eval", "--data", d, "--format", "ucr", "--model", m,
    ]));
    assert!(text.contains("kappa") && text.contains("f1"), "{text}");

    let csv = dir.path().join("pred.csv");
    ok(&canopy(&[
        "classify",
        "predict",
        "--data",
        d,
        "--format",
        "ucr",
        "--model",
        m,
        "--out",
        csv.to_str().unwrap(),
    ]));
    let pred = std::fs::read_to_string(&csv).unwrap();
    let mut lines = pred.lines();
    assert_eq!(lines.next(), Some("id,class,p_1,p_2,p_3"));
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first.len(), 5);
    let p: f64 = first[2..].iter().map(|v| v.parse::<f64>().unwrap()).sum();
    assert!((p - 1.0).abs() < 1e-4, "probabilities sum to {p}");
    assert_eq!(pred.lines().count(), 121);

    let png = dir.path().join("explain");
    let out = ok(&canopy(&[
        "classify",
        "explain",
        "--data",
        d,
        "--format",
        "ucr",
        "--model",
        m,
        "--out",
        png.to_str().unwrap(),
        "--ids",
        "2,3",
    ]));
    assert!(
        out.contains("saliency_2.png") && out.contains("saliency_3.png"),
        "{out}"
    );
    assert!(std::fs::metadata(png.join("saliency_2.png")).unwrap().len() > 5_000);
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.tsv");
    write_ucr(&data, 2, &[1, 2]);
    let d = data.to_str().unwrap();
    let out = canopy(&[
        "classify",
        "eval",
        "--data",
        d,
        "--format",
        "ucr",
        "--model",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.json") && err.contains("classify train"),
        "{err}"
    );

    let out = canopy(&[
        "classify",
        "train",
        "--data",
        d,
        "--format",
        "ucr",
        "--model",
        "resnet",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lstm, transformer, tempcnn"), "{err}");

    let out = canopy(&[
        "classify",
        "train",
        "--data",
        "/nonexistent.tsv",
        "--format",
        "ucr",
        "--model",
        "lstm",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.tsv"));
}

/// A 24 x 24 two-band stack of six dates (file names with three date spellings, NaN = cloud)
/// and its class raster: class 1 (left half) greens up over the season, class 2 (right half)
/// browns. Returns the stack folder and the class raster.
fn write_stack(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use canopy_raster::{write_geotiff, GeoTransform, Georef, Raster, WriteOptions};
    use ndarray::Array3;
    let stack = dir.join("stack");
    std::fs::create_dir_all(&stack).unwrap();
    let georef = Georef::new(
        GeoTransform::north_up(500_000.0, 5_000_000.0, 10.0, 10.0),
        Some(32633),
    );
    let (h, w) = (24, 24);
    // Class 1 (left half): NIR rises over the season; class 2 (right half): it falls.
    let dates = [
        "2020-04-01",
        "20200420",
        "2020-05-10",
        "2020_06_01",
        "2020-06-20",
        "2020-07-10",
    ];
    for (t, name) in dates.iter().enumerate() {
        let data = Array3::from_shape_fn((2, h, w), |(b, r, c)| {
            let x = t as f32 / 5.0;
            let trend = if c < w / 2 { x } else { 1.0 - x };
            let noise = ((r * 31 + c * 17 + t * 7 + b * 3) % 11) as f32 / 50.0;
            if (r + c + t) % 9 == 0 {
                f32::NAN // a cloud
            } else {
                0.2 + 0.5 * trend * (b as f32 + 1.0) + noise
            }
        });
        let file = match *name {
            "2020_06_01" => stack.join("S2_20200601_L2A.tif"),
            other => stack.join(format!("S2_{other}.tif")),
        };
        write_geotiff(
            &file,
            &Raster::new(data, georef.clone()),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    let labels = Array3::from_shape_fn((1, h, w), |(_, _, c)| if c < w / 2 { 1u8 } else { 2 });
    let label_path = dir.join("labels.tif");
    write_geotiff(
        &label_path,
        &Raster::new(labels, georef),
        &WriteOptions::default(),
    )
    .unwrap();
    (stack, label_path)
}

/// `--format geotiff-stack`: one GeoTIFF per date (dates in the file names, NaN = cloudy), a
/// class raster, a spatial block split; eval reads the data the same way from the model's
/// stored options.
#[test]
fn geotiff_stack_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, label_path) = write_stack(dir.path());
    let (h, w) = (24, 24);
    let model = dir.path().join("model");
    let (s, l, m) = (
        stack.to_str().unwrap(),
        label_path.to_str().unwrap(),
        model.to_str().unwrap(),
    );
    let out = ok(&canopy(&[
        "classify",
        "train",
        "--data",
        s,
        "--format",
        "geotiff-stack",
        "--label-raster",
        l,
        "--stack-bands",
        "RED,NIR",
        "--model",
        "tempcnn",
        "--epochs",
        "4",
        "--lr",
        "0.003",
        "--batch-size",
        "32",
        "--block",
        "6",
        "--out",
        m,
        "--quiet",
    ]));
    assert!(out.contains("training tempcnn on"), "{out}");
    let meta = std::fs::read_to_string(model.join("model.json")).unwrap();
    assert!(meta.contains("NIR"), "{meta}");
    let out = ok(&canopy(&[
        "classify",
        "eval",
        "--data",
        s,
        "--format",
        "geotiff-stack",
        "--label-raster",
        l,
        "--stack-bands",
        "RED,NIR",
        "--model",
        m,
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], h * w);
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{out}");

    // Without the class raster: a clear error.
    let bad = canopy(&[
        "classify",
        "train",
        "--data",
        s,
        "--format",
        "geotiff-stack",
        "--model",
        "tempcnn",
        "--out",
        m,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--label-raster"));
}

/// `--model convlstm` on the same stack: trained on 6 x 6 tiles, evaluated on every pixel
/// (`n` = all 576), one prediction row per pixel, state-trace PNGs; single-series formats are
/// refused with a message naming the image-series formats.
/// The ConvLSTM training options of the CLI tests: a short run on 6-pixel tiles.
const CONVLSTM_TRAIN: [&str; 11] = [
    "--model",
    "convlstm",
    "--epochs",
    "8",
    "--lr",
    "0.01",
    "--batch-size",
    "4",
    "--block",
    "6",
    "--quiet",
];

/// The data options for the stack and label raster of [`write_stack`] (plus `extra`), and the
/// output of `classify train` with [`CONVLSTM_TRAIN`] into `model`.
fn train_convlstm(
    stack: &Path,
    labels: &Path,
    extra: &[&str],
    model: &Path,
) -> (Vec<String>, String) {
    let data: Vec<String> = [
        "--data",
        stack.to_str().unwrap(),
        "--format",
        "geotiff-stack",
        "--label-raster",
        labels.to_str().unwrap(),
        "--stack-bands",
        "RED,NIR",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    let mut train = vec!["classify", "train"];
    train.extend(data.iter().map(String::as_str));
    train.extend(CONVLSTM_TRAIN);
    train.extend(["--out", model.to_str().unwrap()]);
    let out = ok(&canopy(&train));
    (data, out)
}

#[test]
fn convlstm_trains_on_tiles_and_evaluates_every_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, label_path) = write_stack(dir.path());
    let model = dir.path().join("convlstm");
    let m = model.to_str().unwrap();
    let (data, out) = train_convlstm(&stack, &label_path, &[], &model);
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    assert!(out.contains("training convlstm on"), "{out}");
    assert!(out.contains("validation: accuracy"), "{out}");
    let meta = std::fs::read_to_string(model.join("model.json")).unwrap();
    assert!(meta.contains("conv_rnn") && meta.contains("NIR"), "{meta}");

    let mut eval = vec!["classify", "eval"];
    eval.extend(&data);
    eval.extend(["--model", m, "--json"]);
    let out = ok(&canopy(&eval));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], 24 * 24);
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{out}");

    let csv = dir.path().join("pixels.csv");
    let mut predict = vec!["classify", "predict"];
    predict.extend(&data);
    predict.extend(["--model", m, "--out", csv.to_str().unwrap()]);
    ok(&canopy(&predict));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 24 * 24);
    assert!(lines[0].starts_with("id,class,p_1,p_2"), "{}", lines[0]);
    assert!(lines[1].starts_with("0_0,"), "{}", lines[1]);

    let png = dir.path().join("explain");
    let mut explain = vec!["classify", "explain"];
    explain.extend(&data);
    explain.extend([
        "--model",
        m,
        "--out",
        png.to_str().unwrap(),
        "--ids",
        "3_20",
    ]);
    ok(&canopy(&explain));
    for what in ["hidden", "cell"] {
        let f = png.join(format!("states_{what}_3_20.png"));
        assert!(
            std::fs::metadata(&f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
    }

    // single series cannot feed a ConvLSTM
    let tsv = dir.path().join("toy.tsv");
    write_ucr(&tsv, 5, &[1, 2]);
    let bad = canopy(&[
        "classify",
        "train",
        "--data",
        tsv.to_str().unwrap(),
        "--format",
        "ucr",
        "--model",
        "convlstm",
        "--out",
        m,
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("eopatch or geotiff-stack"), "{err}");
}

/// `--drop-class` with the ConvLSTM: the dropped class's pixels stay in the tiles as context but
/// count in neither the loss nor the metrics (eval reports only the other pixels), the model
/// knows only the remaining classes, and predict still writes every pixel.
#[test]
fn convlstm_drop_class_skips_those_pixels_in_training_and_evaluation() {
    use canopy_raster::{write_geotiff, GeoTransform, Georef, Raster, WriteOptions};
    use ndarray::Array3;
    let dir = tempfile::tempdir().unwrap();
    let (stack, label_path) = write_stack(dir.path());
    // the bottom four rows become class 3, with the same series as their half: unlearnable
    // from the data, so any of its pixels left in the metrics would lower the accuracy
    let (h, w) = (24, 24);
    let labels = Array3::from_shape_fn((1, h, w), |(_, r, c)| match (r >= h - 4, c < w / 2) {
        (true, _) => 3u8,
        (false, true) => 1,
        (false, false) => 2,
    });
    let georef = Georef::new(
        GeoTransform::north_up(500_000.0, 5_000_000.0, 10.0, 10.0),
        Some(32633),
    );
    write_geotiff(
        &label_path,
        &Raster::new(labels, georef),
        &WriteOptions::default(),
    )
    .unwrap();
    let model = dir.path().join("convlstm");
    let m = model.to_str().unwrap();
    let (data, out) = train_convlstm(&stack, &label_path, &["--drop-class", "3"], &model);
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    assert!(out.contains("2 classes"), "{out}");
    let meta = std::fs::read_to_string(model.join("model.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["class_names"], serde_json::json!(["1", "2"]), "{meta}");

    let mut eval = vec!["classify", "eval"];
    eval.extend(&data);
    eval.extend(["--model", m, "--json"]);
    let out = ok(&canopy(&eval));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], (h - 4) * w, "{out}");
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{out}");

    let csv = dir.path().join("pixels.csv");
    let mut predict = vec!["classify", "predict"];
    predict.extend(&data);
    predict.extend(["--model", m, "--out", csv.to_str().unwrap()]);
    ok(&canopy(&predict));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + h * w);
}
