//! canopy-train's metrics: hand-computed cases, streaming and merging, tensor updates, serde,
//! and agreement with scikit-learn on the random cases of `tools/golden/train_metrics.py`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common_loss;

use candle_core::{DType, Device, Tensor};
use canopy_train::metrics::{AreaMetrics, ConfusionMatrix};
use canopy_train::Error;
use common_loss::{fixtures, get};

const IGNORE: u32 = 255;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}");
}

/// The worked example: truth and predictions over 3 classes.
///
/// ```text
///            pred 0  pred 1  pred 2
/// truth 0       3       1       0
/// truth 1       1       2       1
/// truth 2       0       0       2
/// ```
fn example() -> ConfusionMatrix {
    let truth = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2];
    let pred = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2];
    let mut cm = ConfusionMatrix::new(3).unwrap();
    cm.update(&truth, &pred).unwrap();
    cm
}

#[test]
fn hand_computed_scores() {
    let cm = example();
    assert_eq!(
        cm.to_rows(),
        vec![vec![3, 1, 0], vec![1, 2, 1], vec![0, 0, 2]]
    );
    close(cm.accuracy(), 0.7, "accuracy");
    // p_o = 0.7; p_e = (4·4 + 4·3 + 2·3) / 100 = 0.34; kappa = 0.36 / 0.66.
    close(cm.kappa(), 0.36 / 0.66, "kappa");
    close(cm.precision(0), 0.75, "precision 0");
    close(cm.precision(1), 2.0 / 3.0, "precision 1");
    close(cm.precision(2), 2.0 / 3.0, "precision 2");
    close(cm.recall(0), 0.75, "recall 0");
    close(cm.recall(1), 0.5, "recall 1");
    close(cm.recall(2), 1.0, "recall 2");
    close(cm.f1(1), 2.0 * 2.0 / (4.0 + 3.0), "f1 1");
    close(cm.f1(2), 0.8, "f1 2");
    close(cm.iou(0), 3.0 / 5.0, "iou 0");
    close(cm.iou(1), 2.0 / 5.0, "iou 1");
    close(cm.iou(2), 2.0 / 3.0, "iou 2");
    close(cm.mean_iou(), (0.6 + 0.4 + 2.0 / 3.0) / 3.0, "mean iou");
    let f1 = [0.75, 4.0 / 7.0, 0.8];
    close(cm.macro_f1(), f1.iter().sum::<f64>() / 3.0, "macro f1");
    close(
        cm.weighted_f1(),
        (4.0 * f1[0] + 4.0 * f1[1] + 2.0 * f1[2]) / 10.0,
        "weighted f1",
    );
    let scores = cm.class_scores();
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[1].support, 4);
    close(scores[2].iou, 2.0 / 3.0, "class_scores iou");
}

#[test]
fn zero_division_and_degenerate_cases() {
    let mut cm = ConfusionMatrix::new(3).unwrap();
    assert_eq!(cm.accuracy(), 0.0);
    assert!(cm.kappa().is_nan());
    // Class 2 never occurs and is never predicted; class 1 is never predicted.
    cm.update(&[0, 0, 1], &[0, 0, 0]).unwrap();
    assert_eq!(cm.precision(1), 0.0);
    assert_eq!(cm.recall(2), 0.0);
    assert_eq!(cm.f1(2), 0.0);
    assert_eq!(cm.iou(2), 0.0);
    close(cm.precision(0), 2.0 / 3.0, "precision 0");
    close(
        cm.mean_iou(),
        (2.0 / 3.0) / 3.0,
        "mean iou counts absent classes as 0",
    );
    // Truth and prediction both constant: kappa is undefined.
    let mut one = ConfusionMatrix::new(2).unwrap();
    one.update(&[1, 1], &[1, 1]).unwrap();
    assert!(one.kappa().is_nan());
    close(one.accuracy(), 1.0, "accuracy");
}

#[test]
fn streaming_and_merging_equal_one_big_update() {
    let truth: Vec<u32> = (0..100).map(|i| (i * 7 % 5) as u32).collect();
    let pred: Vec<u32> = (0..100).map(|i| (i * 3 % 5) as u32).collect();
    let mut whole = ConfusionMatrix::new(5).unwrap();
    whole.update(&truth, &pred).unwrap();
    let mut a = ConfusionMatrix::new(5).unwrap();
    let mut b = ConfusionMatrix::new(5).unwrap();
    for (i, (t, p)) in truth.chunks(13).zip(pred.chunks(13)).enumerate() {
        if i % 2 == 0 { &mut a } else { &mut b }
            .update(t, p)
            .unwrap();
    }
    assert_ne!(a, whole);
    a.merge(&b).unwrap();
    assert_eq!(a, whole);
    assert_eq!(whole.total(), 100);
    let other = ConfusionMatrix::new(4).unwrap();
    assert!(matches!(
        a.merge(&other),
        Err(Error::InvalidArgument { .. })
    ));
    let ignoring = ConfusionMatrix::new(5).unwrap().with_ignore_label(IGNORE);
    assert!(a.merge(&ignoring).is_err());
    a.reset();
    assert_eq!(a.total(), 0);
}

#[test]
fn ignore_label_mask_and_out_of_range_labels() {
    let mut cm = ConfusionMatrix::new(2).unwrap().with_ignore_label(IGNORE);
    // The ignored pixel's prediction may be anything, even out of range.
    cm.update(&[0, IGNORE, 1], &[0, 9, 1]).unwrap();
    assert_eq!(cm.total(), 2);
    cm.update_masked(&[0, 1, 1], &[1, 7, 1], &[true, false, true])
        .unwrap();
    assert_eq!(cm.to_rows(), vec![vec![1, 1], vec![0, 2]]);
    let before = cm.clone();
    let e = cm.update(&[0, 1, 2], &[0, 1, 1]).unwrap_err();
    match &e {
        Error::TargetOutOfRange { value, classes, .. } => assert_eq!((*value, *classes), (2, 2)),
        other => panic!("expected TargetOutOfRange, got {other:?}"),
    }
    assert!(e.to_string().contains("2 classes"), "{e}");
    assert!(cm.update(&[0, 1], &[0, 3]).is_err());
    assert_eq!(cm, before, "a failed update must not count anything");
    assert!(matches!(cm.update(&[0, 1], &[0]), Err(Error::Shape { .. })));
    assert!(cm.update_masked(&[0, 1], &[0, 1], &[true]).is_err());
    assert!(ConfusionMatrix::new(0).is_err());
}

#[test]
fn tensor_updates_from_logits_and_labels() {
    let dev = &Device::Cpu;
    // (N=1, K=3, H=2, W=2) logits; arg-max per pixel = [2, 0, 1, 1].
    let logits = Tensor::new(
        &[[
            [[0.1f32, 3.0], [0.0, 0.0]],
            [[0.2, 1.0], [5.0, 2.0]],
            [[0.9, 2.0], [1.0, 1.0]],
        ]],
        dev,
    )
    .unwrap();
    let truth = Tensor::new(&[[[2u32, 1], [1, IGNORE]]], dev).unwrap();
    let mut cm = ConfusionMatrix::new(3).unwrap().with_ignore_label(IGNORE);
    cm.update_from_logits(&logits, &truth, None).unwrap();
    assert_eq!(
        cm.to_rows(),
        vec![vec![0, 0, 0], vec![1, 1, 0], vec![0, 0, 1]]
    );
    // A validity mask (any dtype, nonzero = counted) drops the second pixel.
    let mask = Tensor::new(&[[[1u8, 0], [1, 1]]], dev).unwrap();
    let mut masked = ConfusionMatrix::new(3).unwrap().with_ignore_label(IGNORE);
    masked
        .update_from_logits(&logits, &truth, Some(&mask))
        .unwrap();
    assert_eq!(
        masked.to_rows(),
        vec![vec![0, 0, 0], vec![0, 1, 0], vec![0, 0, 1]]
    );
    let pred = Tensor::new(&[[[2u32, 0], [1, 1]]], dev).unwrap();
    let mut from_labels = ConfusionMatrix::new(3).unwrap().with_ignore_label(IGNORE);
    from_labels.update_from_labels(&pred, &truth, None).unwrap();
    assert_eq!(from_labels, cm);
    // Wrong class count, shape or dtype are shape errors.
    let mut k4 = ConfusionMatrix::new(4).unwrap();
    assert!(matches!(
        k4.update_from_logits(&logits, &truth, None),
        Err(Error::Shape { .. })
    ));
    let flat = truth.flatten_all().unwrap();
    assert!(cm.update_from_logits(&logits, &flat, None).is_err());
    let float_truth = truth.to_dtype(DType::F32).unwrap();
    assert!(cm.update_from_labels(&pred, &float_truth, None).is_err());
}

#[test]
fn serde_round_trip_and_validation() {
    let cm = example().with_ignore_label(IGNORE);
    let json = serde_json::to_string(&cm).unwrap();
    let back: ConfusionMatrix = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cm);
    let bad = r#"{"classes":2,"ignore_label":null,"counts":[1,2,3]}"#;
    let e = serde_json::from_str::<ConfusionMatrix>(bad).unwrap_err();
    assert!(e.to_string().contains("3 counts"), "{e}");
    let mut areas = AreaMetrics::new(2, 1).unwrap();
    areas.update("a", &[0, 1], &[1, 1]).unwrap();
    let back: AreaMetrics = serde_json::from_str(&serde_json::to_string(&areas).unwrap()).unwrap();
    assert_eq!(back, areas);
    let mixed = json_with_three_class_area(&areas);
    let e = serde_json::from_str::<AreaMetrics>(&mixed).unwrap_err();
    assert!(e.to_string().contains("3 classes"), "{e}");
}

/// `areas` serialised with its area "a" replaced by a 3-class matrix.
fn json_with_three_class_area(areas: &AreaMetrics) -> String {
    let mut v: serde_json::Value = serde_json::to_value(areas).unwrap();
    v["areas"]["a"] = serde_json::to_value(ConfusionMatrix::new(3).unwrap()).unwrap();
    v.to_string()
}

#[test]
fn tables_show_names_and_scores() {
    let cm = example();
    let t = cm.to_table(Some(&["water", "forest"]));
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[1].starts_with("water") && lines[1].contains("0.7500"),
        "{t}"
    );
    assert!(
        lines[2].starts_with("forest") && lines[2].contains("0.4000"),
        "{t}"
    );
    // The third class has no name and falls back to its index.
    assert!(
        lines[3].starts_with('2') && lines[3].contains("0.6667"),
        "{t}"
    );
    assert!(
        t.contains("accuracy 0.7000") && t.contains("kappa 0.5455"),
        "{t}"
    );
    assert_eq!(format!("{cm}"), cm.to_table(None));
}

#[test]
fn area_metrics_follow_the_inria_protocol() {
    let mut m = AreaMetrics::new(2, 1).unwrap().with_ignore_label(IGNORE);
    // austin: tp 1, fn 1, tn 2 -> IoU 1/2, accuracy 3/4.
    m.update("austin", &[0, 1, 1, 0], &[0, 1, 0, 0]).unwrap();
    // vienna, in two tiles: tp 3, fp 1, tn 1 (one ignored) -> IoU 3/4, accuracy 4/5.
    m.update("vienna", &[1, 1, 0, IGNORE], &[1, 1, 1, 0])
        .unwrap();
    m.update("vienna", &[1, 0], &[1, 0]).unwrap();
    close(m.iou("austin").unwrap(), 0.5, "austin IoU");
    close(m.accuracy("austin").unwrap(), 0.75, "austin accuracy");
    close(m.iou("vienna").unwrap(), 0.75, "vienna IoU");
    close(m.accuracy("vienna").unwrap(), 0.8, "vienna accuracy");
    assert!(m.iou("chicago").is_none());
    // Overall from summed counts: tp 4, fp 1, fn 1 -> 4/6, not the mean (0.625) of the areas.
    close(m.overall_iou(), 4.0 / 6.0, "overall IoU");
    close(m.overall_accuracy(), 7.0 / 9.0, "overall accuracy");
    assert_eq!(m.areas().collect::<Vec<_>>(), vec!["austin", "vienna"]);
    let mut other = AreaMetrics::new(2, 1).unwrap().with_ignore_label(IGNORE);
    other.update("austin", &[1], &[1]).unwrap();
    m.merge(&other).unwrap();
    close(m.iou("austin").unwrap(), 2.0 / 3.0, "merged austin IoU");
    assert!(m.merge(&AreaMetrics::new(2, 0).unwrap()).is_err());
    assert!(AreaMetrics::new(2, 2).is_err());
    let t = m.to_table();
    assert!(
        t.contains("austin") && t.contains("66.67") && t.contains("overall"),
        "{t}"
    );
}

fn as_vec_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn equal_to_scikit_learn_on_random_cases() {
    let fx = fixtures("train_metrics");
    let cases = [
        "binary",
        "k3",
        "k5_skewed",
        "k7_missing_classes",
        "k4_ignore",
    ];
    let mut worst = 0.0f64;
    for case in cases {
        let k = get(&fx, case, "k")
            .to_dtype(DType::U32)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        let truth = get(&fx, case, "truth").to_dtype(DType::U32).unwrap();
        let pred = get(&fx, case, "pred").to_dtype(DType::U32).unwrap();
        let mut cm = ConfusionMatrix::new(k as usize)
            .unwrap()
            .with_ignore_label(IGNORE);
        // Half through slices, half through tensors, merged: the streaming path is exercised.
        let t: Vec<u32> = truth.to_vec1().unwrap();
        let p: Vec<u32> = pred.to_vec1().unwrap();
        let half = t.len() / 2;
        cm.update(&t[..half], &p[..half]).unwrap();
        let mut rest = ConfusionMatrix::new(k as usize)
            .unwrap()
            .with_ignore_label(IGNORE);
        rest.update_from_labels(
            &pred.narrow(0, half, t.len() - half).unwrap(),
            &truth.narrow(0, half, t.len() - half).unwrap(),
            None,
        )
        .unwrap();
        cm.merge(&rest).unwrap();
        let want_cm: Vec<u64> = as_vec_f64(&get(&fx, case, "cm"))
            .iter()
            .map(|&v| v as u64)
            .collect();
        assert_eq!(
            cm.as_slice(),
            want_cm.as_slice(),
            "{case}: confusion matrix"
        );
        let mut check = |what: &str, got: Vec<f64>| {
            let want = as_vec_f64(&get(&fx, case, what));
            assert_eq!(got.len(), want.len(), "{case}.{what}");
            for (g, w) in got.iter().zip(&want) {
                let d = (g - w).abs();
                assert!(d < 1e-12, "{case}.{what}: {got:?} vs scikit-learn {want:?}");
                worst = worst.max(d);
            }
        };
        let kk = k as usize;
        check("accuracy", vec![cm.accuracy()]);
        check("kappa", vec![cm.kappa()]);
        check("precision", (0..kk).map(|c| cm.precision(c)).collect());
        check("recall", (0..kk).map(|c| cm.recall(c)).collect());
        check("f1", (0..kk).map(|c| cm.f1(c)).collect());
        check("support", (0..kk).map(|c| cm.support(c) as f64).collect());
        check("jaccard", (0..kk).map(|c| cm.iou(c)).collect());
        check("macro_f1", vec![cm.macro_f1()]);
        check("weighted_f1", vec![cm.weighted_f1()]);
        check("mean_jaccard", vec![cm.mean_iou()]);
    }
    eprintln!("metrics: max |Δ| vs scikit-learn {worst:e}");
}
