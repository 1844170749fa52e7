//! canopy-train's losses against PyTorch (float64 fixtures from `tools/golden/train_losses.py`:
//! outputs and gradients of `sum(out * r)`), against finite differences, and on hand-computed
//! and edge cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common_loss;

use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::gradcheck::random_f64;
use canopy_train::loss::*;
use canopy_train::Error;
use common_loss::{ce, get, golden, gradcheck, max_abs_diff, nn, scalar, t, u32s, w3, w4, IGNORE};

#[test]
fn cross_entropy_matches_pytorch() {
    let (mean, sum, none) = (Reduction::Mean, Reduction::Sum, Reduction::None);
    let cases: Vec<(&str, CrossEntropyConfig)> = vec![
        ("ce_2d_mean", ce(None, None, 0.0, mean)),
        ("ce_2d_weight_none", ce(Some(w4()), None, 0.0, none)),
        (
            "ce_2d_smooth_weight_ignore_mean",
            ce(Some(w4()), Some(IGNORE), 0.2, mean),
        ),
        (
            "ce_dense_weight_ignore_smooth_mean",
            ce(Some(w3()), Some(IGNORE), 0.1, mean),
        ),
        ("ce_dense_ignore_sum", ce(None, Some(IGNORE), 0.0, sum)),
        (
            "ce_dense_smooth_weight_ignore_none",
            ce(Some(w3()), Some(IGNORE), 0.3, none),
        ),
        ("ce_1_trailing_smooth_mean", ce(None, None, 0.15, mean)),
        ("ce_3_trailing_weight_sum", ce(Some(w3()), None, 0.0, sum)),
    ];
    for (case, cfg) in cases {
        golden(case, &["x"], |x, fx| {
            cross_entropy(&x[0], &t(fx, case), &cfg)
        });
    }
}

#[test]
fn nll_matches_pytorch() {
    let cfg = NllConfig {
        weight: Some(w4()),
        ignore_index: Some(IGNORE),
        reduction: Reduction::Mean,
    };
    golden("nll_2d_weight_ignore_mean", &["x"], |x, fx| {
        nll_loss(&x[0], &t(fx, "nll_2d_weight_ignore_mean"), &cfg)
    });
    let cfg = NllConfig {
        reduction: Reduction::None,
        ..NllConfig::default()
    };
    golden("nll_dense_none", &["x"], |x, fx| {
        nll_loss(&x[0], &t(fx, "nll_dense_none"), &cfg)
    });
}

#[test]
fn bce_with_logits_matches_pytorch_including_extreme_logits() {
    golden("bce_mean", &["x"], |x, fx| {
        bce_with_logits(
            &x[0],
            &get(fx, "bce_mean", "y"),
            None,
            None,
            Reduction::Mean,
        )
    });
    let c = "bce_soft_pos_weight_sum";
    golden(c, &["x"], |x, fx| {
        let pw = get(fx, c, "pw");
        bce_with_logits(&x[0], &get(fx, c, "y"), None, Some(&pw), Reduction::Sum)
    });
    let c = "bce_dense_weight_pos_weight_mean";
    golden(c, &["x"], |x, fx| {
        let (w, pw) = (get(fx, c, "w"), get(fx, c, "pw"));
        bce_with_logits(
            &x[0],
            &get(fx, c, "y"),
            Some(&w),
            Some(&pw),
            Reduction::Mean,
        )
    });
    golden("bce_extreme_none", &["x"], |x, fx| {
        bce_with_logits(
            &x[0],
            &get(fx, "bce_extreme_none", "y"),
            None,
            None,
            Reduction::None,
        )
    });
    let c = "bce_extreme_pos_weight_none";
    golden(c, &["x"], |x, fx| {
        let pw = get(fx, c, "pw");
        bce_with_logits(&x[0], &get(fx, c, "y"), None, Some(&pw), Reduction::None)
    });
}

#[test]
fn overlap_losses_match_the_torch_formulas() {
    let iou = |s: f64| SoftIouConfig {
        smooth: s,
        ignore_index: Some(IGNORE),
    };
    let y = |fx: &std::collections::HashMap<String, Tensor>, c: &str| get(fx, c, "y");
    golden("iou_binary", &["x"], |x, fx| {
        soft_iou_loss(&x[0], &y(fx, "iou_binary"), &iou(1.0))
    });
    golden("iou_binary_s0", &["x"], |x, fx| {
        soft_iou_loss(&x[0], &y(fx, "iou_binary_s0"), &iou(0.0))
    });
    golden("iou_multi_ignore", &["x"], |x, fx| {
        soft_iou_loss_multiclass(&x[0], &t(fx, "iou_multi_ignore"), &iou(1.0))
    });
    golden("iou_multi_2d_s05", &["x"], |x, fx| {
        soft_iou_loss_multiclass(&x[0], &t(fx, "iou_multi_2d_s05"), &iou(0.5))
    });
    let dice = |s: f64, d: DiceDenominator| DiceConfig {
        smooth: s,
        ignore_index: Some(IGNORE),
        denominator: d,
    };
    golden("dice_binary", &["x"], |x, fx| {
        dice_loss(
            &x[0],
            &y(fx, "dice_binary"),
            &dice(1.0, DiceDenominator::Linear),
        )
    });
    golden("dice_binary_squared", &["x"], |x, fx| {
        let c = dice(0.5, DiceDenominator::Squared);
        dice_loss(&x[0], &y(fx, "dice_binary_squared"), &c)
    });
    golden("dice_multi_ignore", &["x"], |x, fx| {
        let c = dice(1.0, DiceDenominator::Linear);
        dice_loss_multiclass(&x[0], &t(fx, "dice_multi_ignore"), &c)
    });
    golden("dice_multi_squared", &["x"], |x, fx| {
        let c = dice(1.0, DiceDenominator::Squared);
        dice_loss_multiclass(&x[0], &t(fx, "dice_multi_squared"), &c)
    });
    let cfg = CeSoftIouConfig {
        ce: ce(Some(w3()), Some(IGNORE), 0.0, Reduction::Mean),
        iou_weight: 0.7,
        smooth: 1.0,
    };
    golden("ce_iou_weight_ignore", &["x"], |x, fx| {
        ce_soft_iou_loss(&x[0], &t(fx, "ce_iou_weight_ignore"), &cfg)
    });
}

#[test]
fn focal_losses_match_the_torch_formulas() {
    let bin = |gamma, alpha, reduction| FocalConfig {
        gamma,
        alpha,
        reduction,
    };
    let cases = [
        ("focal_binary_default", FocalConfig::default()),
        (
            "focal_binary_g15_noalpha_sum",
            bin(1.5, None, Reduction::Sum),
        ),
        ("focal_binary_g0_none", bin(0.0, Some(0.6), Reduction::None)),
    ];
    for (c, cfg) in cases {
        golden(c, &["x"], |x, fx| focal_loss(&x[0], &get(fx, c, "y"), &cfg));
    }
    let cfg = FocalMulticlassConfig {
        alpha: Some(w3()),
        ignore_index: Some(IGNORE),
        ..FocalMulticlassConfig::default()
    };
    let c = "focal_multi_alpha_ignore_mean";
    golden(c, &["x"], |x, fx| {
        focal_loss_multiclass(&x[0], &t(fx, c), &cfg)
    });
    let cfg = FocalMulticlassConfig {
        gamma: 0.5,
        reduction: Reduction::None,
        ..FocalMulticlassConfig::default()
    };
    let c = "focal_multi_g05_none";
    golden(c, &["x"], |x, fx| {
        focal_loss_multiclass(&x[0], &t(fx, c), &cfg)
    });
}

#[test]
fn squared_errors_match_pytorch() {
    for (c, r) in [
        ("mse_mean", Reduction::Mean),
        ("mse_sum", Reduction::Sum),
        ("mse_none", Reduction::None),
    ] {
        golden(c, &["x", "b"], |x, _| mse_loss(&x[0], &x[1], r));
    }
    golden("wmse_disp", &["x", "b"], |x, fx| {
        weighted_mse_loss(&x[0], &x[1], &get(fx, "wmse_disp", "w"))
    });
}

// ---------------------------------------------------------------- finite differences

/// Labels 0..k with every fifth one ignored.
fn some_labels(n: usize, k: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| if i % 5 == 3 { IGNORE } else { (i * 7 + 1) % k })
        .collect()
}

#[test]
fn class_losses_pass_finite_difference_checks() {
    let tg = u32s(&some_labels(2 * 3 * 4, 4), &[2, 3, 4]);
    let shape: &[usize] = &[2, 4, 3, 4];
    let cfg = ce(Some(w4()), Some(IGNORE), 0.1, Reduction::Mean);
    gradcheck(&[shape], |x| nn(cross_entropy(&x[0], &tg, &cfg)));
    let cfg = ce(None, Some(IGNORE), 0.0, Reduction::None);
    gradcheck(&[shape], |x| nn(cross_entropy(&x[0], &tg, &cfg)));
    let cfg = NllConfig {
        weight: Some(w4()),
        ignore_index: Some(IGNORE),
        reduction: Reduction::Sum,
    };
    gradcheck(&[shape], |x| nn(nll_loss(&x[0], &tg, &cfg)));
    let cfg = FocalMulticlassConfig {
        alpha: Some(w4()),
        ignore_index: Some(IGNORE),
        ..Default::default()
    };
    gradcheck(&[shape], |x| nn(focal_loss_multiclass(&x[0], &tg, &cfg)));
    let iou = SoftIouConfig {
        smooth: 1.0,
        ignore_index: Some(IGNORE),
    };
    gradcheck(&[shape], |x| nn(soft_iou_loss_multiclass(&x[0], &tg, &iou)));
    for denominator in [DiceDenominator::Linear, DiceDenominator::Squared] {
        let d = DiceConfig {
            denominator,
            ignore_index: Some(IGNORE),
            ..Default::default()
        };
        gradcheck(&[shape], |x| nn(dice_loss_multiclass(&x[0], &tg, &d)));
    }
    let cfg = CeSoftIouConfig {
        ce: ce(None, Some(IGNORE), 0.0, Reduction::Mean),
        ..Default::default()
    };
    gradcheck(&[shape], |x| nn(ce_soft_iou_loss(&x[0], &tg, &cfg)));
}

#[test]
fn binary_and_regression_losses_pass_finite_difference_checks() {
    let s: &[usize] = &[2, 1, 3, 4];
    let y = Tensor::from_vec(
        (0..24).map(|i| (i % 3) as f64 / 2.0).collect::<Vec<_>>(),
        s,
        &Device::Cpu,
    )
    .unwrap();
    let pw = Tensor::new(&[2.5f64], &Device::Cpu).unwrap();
    let w = (random_f64(s, 99, &Device::Cpu).unwrap().abs().unwrap() + 0.1).unwrap();
    gradcheck(&[s], |x| {
        nn(bce_with_logits(
            &x[0],
            &y,
            Some(&w),
            Some(&pw),
            Reduction::Mean,
        ))
    });
    gradcheck(&[s], |x| {
        nn(bce_with_logits(&x[0], &y, None, None, Reduction::None))
    });
    gradcheck(&[s], |x| nn(focal_loss(&x[0], &y, &FocalConfig::default())));
    gradcheck(&[s], |x| {
        nn(soft_iou_loss(&x[0], &y, &SoftIouConfig::default()))
    });
    let sq = DiceConfig {
        denominator: DiceDenominator::Squared,
        ..Default::default()
    };
    gradcheck(&[s], |x| nn(dice_loss(&x[0], &y, &sq)));
    let d: &[usize] = &[2, 2, 3, 4];
    gradcheck(&[d, d], |x| nn(mse_loss(&x[0], &x[1], Reduction::Mean)));
    gradcheck(&[d, d], |x| nn(weighted_mse_loss(&x[0], &x[1], &w)));
}

// ---------------------------------------------------------------- hand-computed and edge cases

#[test]
fn out_of_range_target_is_a_typed_error_naming_value_and_classes() {
    let x = Tensor::zeros((2, 3, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let tg = u32s(&[0, 1, 2, 7, 0, 0, 0, 0], &[2, 2, 2]);
    for err in [
        cross_entropy(&x, &tg, &CrossEntropyConfig::default()).unwrap_err(),
        soft_iou_loss_multiclass(&x, &tg, &SoftIouConfig::default()).unwrap_err(),
        focal_loss_multiclass(&x, &tg, &FocalMulticlassConfig::default()).unwrap_err(),
    ] {
        match &err {
            Error::TargetOutOfRange { value, classes, .. } => {
                assert_eq!((*value, *classes), (7, 3));
                let msg = err.to_string();
                assert!(msg.contains('7') && msg.contains("3 classes"), "{msg}");
            }
            other => panic!("expected TargetOutOfRange, got {other:?}"),
        }
    }
    // The ignored label may be any value, in range or not.
    let cfg = ce(None, Some(7), 0.0, Reduction::Mean);
    assert!(cross_entropy(&x, &tg, &cfg).is_ok());
}

#[test]
fn shape_and_argument_errors() {
    let x = Tensor::zeros((2, 3, 4), DType::F64, &Device::Cpu).unwrap();
    let wrong = u32s(&[0; 6], &[2, 3]);
    let e = cross_entropy(&x, &wrong, &CrossEntropyConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let float_targets = Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap();
    let e = cross_entropy(&x, &float_targets, &CrossEntropyConfig::default()).unwrap_err();
    assert!(e.to_string().contains("u32"), "{e}");
    let ok = u32s(&[0; 8], &[2, 4]);
    let bad_w = ce(Some(vec![1.0, 2.0]), None, 0.0, Reduction::Mean);
    let e = cross_entropy(&x, &ok, &bad_w).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let bad_ls = ce(None, None, 1.5, Reduction::Mean);
    assert!(cross_entropy(&x, &ok, &bad_ls).is_err());
    let y = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap();
    assert!(bce_with_logits(&x, &y, None, None, Reduction::Mean).is_err());
    let neg = FocalConfig {
        gamma: -1.0,
        ..Default::default()
    };
    assert!(focal_loss(&x, &x, &neg).is_err());
    let zero_w = Tensor::zeros((2, 3, 4), DType::F64, &Device::Cpu).unwrap();
    assert!(weighted_mse_loss(&x, &x, &zero_w).is_err());
    let cfg = CeSoftIouConfig {
        ce: ce(None, None, 0.0, Reduction::None),
        ..Default::default()
    };
    assert!(ce_soft_iou_loss(&x, &ok, &cfg).is_err());
}

#[test]
fn cross_entropy_by_hand_and_all_ignored_is_nan_like_pytorch() {
    // Logits (0, ln 3): p = (1/4, 3/4). Weighted mean with w = (2, 1) over targets (0, 1):
    // (2·ln 4 + 1·ln(4/3)) / 3.
    let x = Tensor::new(&[[0.0f64, 3f64.ln()], [0.0, 3f64.ln()]], &Device::Cpu).unwrap();
    let tg = u32s(&[0, 1], &[2]);
    let cfg = ce(Some(vec![2.0, 1.0]), None, 0.0, Reduction::Mean);
    let got = scalar(&cross_entropy(&x, &tg, &cfg).unwrap());
    let want = (2.0 * 4f64.ln() + (4.0f64 / 3.0).ln()) / 3.0;
    assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    // Full smoothing: the target is uniform, the loss is the mean of -log p over classes.
    let cfg = ce(None, None, 1.0, Reduction::Sum);
    let got = scalar(&cross_entropy(&x, &tg, &cfg).unwrap());
    let want = 4f64.ln() + (4.0f64 / 3.0).ln();
    assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    let all_ignored = u32s(&[IGNORE, IGNORE], &[2]);
    let cfg = ce(None, Some(IGNORE), 0.0, Reduction::Mean);
    assert!(scalar(&cross_entropy(&x, &all_ignored, &cfg).unwrap()).is_nan());
    let cfg = ce(None, Some(IGNORE), 0.0, Reduction::Sum);
    assert_eq!(scalar(&cross_entropy(&x, &all_ignored, &cfg).unwrap()), 0.0);
}

#[test]
fn bce_is_finite_with_finite_gradients_at_huge_logits_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        let x = Var::from_tensor(
            &Tensor::new(&[-100.0f64, -30.0, 30.0, 100.0, 1e4], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let y = Tensor::new(&[1.0f64, 1.0, 0.0, 0.0, 1.0], &Device::Cpu).unwrap();
        let pw = Tensor::new(&[3.0f64], &Device::Cpu).unwrap();
        let l = bce_with_logits(x.as_tensor(), &y, None, Some(&pw), Reduction::None).unwrap();
        let v: Vec<f64> = l.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        // -log σ(-100) = 100 (times pos_weight 3), -log(1 - σ(100)) = 100, ...
        let want = [300.0, 90.0, 30.0, 100.0, 0.0];
        for (g, w) in v.iter().zip(want) {
            assert!((g - w).abs() < 1e-4 * w.max(1.0), "{dtype:?}: {v:?}");
        }
        let g = l.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f64> = g
            .get(x.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(gx.iter().all(|g| g.is_finite()), "{dtype:?}: {gx:?}");
        assert!(
            (gx[0] + 3.0).abs() < 1e-6 && (gx[3] - 1.0).abs() < 1e-6,
            "{gx:?}"
        );
    }
}

#[test]
fn overlap_losses_are_zero_for_perfect_predictions_and_one_for_disjoint() {
    let dev = &Device::Cpu;
    let y = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0], dev).unwrap();
    let perfect = ((&y * 200.0).unwrap() - 100.0).unwrap();
    let disjoint = perfect.neg().unwrap();
    let exact = SoftIouConfig {
        smooth: 0.0,
        ignore_index: None,
    };
    let d0 = DiceConfig {
        smooth: 0.0,
        ..Default::default()
    };
    assert!(scalar(&soft_iou_loss(&perfect, &y, &exact).unwrap()).abs() < 1e-12);
    assert!((scalar(&soft_iou_loss(&disjoint, &y, &exact).unwrap()) - 1.0).abs() < 1e-12);
    assert!(scalar(&dice_loss(&perfect, &y, &d0).unwrap()).abs() < 1e-12);
    // Half-right hard predictions: IoU = 1/3, Dice = 1/2 (here p = y on two of four pixels,
    // I = 1, U = 3, Σp + Σy = 4).
    let half = Tensor::new(&[100.0f64, 100.0, -100.0, -100.0], dev).unwrap();
    let iou = scalar(&soft_iou_loss(&half, &y, &exact).unwrap());
    assert!((iou - 2.0 / 3.0).abs() < 1e-12, "{iou}");
    let dice = scalar(&dice_loss(&half, &y, &d0).unwrap());
    assert!((dice - 0.5).abs() < 1e-12, "{dice}");
}

#[test]
fn focal_with_gamma_zero_and_no_alpha_is_bce_and_shrinks_easy_examples() {
    let dev = &Device::Cpu;
    let x = Tensor::new(&[3.0f64, -0.5, 0.2, -4.0], dev).unwrap();
    let y = Tensor::new(&[1.0f64, 1.0, 0.0, 0.0], dev).unwrap();
    let plain = FocalConfig {
        gamma: 0.0,
        alpha: None,
        reduction: Reduction::None,
    };
    let f = focal_loss(&x, &y, &plain).unwrap();
    let b = bce_with_logits(&x, &y, None, None, Reduction::None).unwrap();
    assert!(max_abs_diff(&f, &b) < 1e-15);
    let focused = FocalConfig {
        gamma: 2.0,
        ..plain
    };
    let f: Vec<f64> = focal_loss(&x, &y, &focused).unwrap().to_vec1().unwrap();
    let b: Vec<f64> = b.to_vec1().unwrap();
    // The easy examples (0 and 3) shrink by far more than the hard one (1).
    assert!(
        f[0] / b[0] < 0.01 && f[3] / b[3] < 0.001 && f[1] / b[1] > 0.3,
        "{f:?} {b:?}"
    );
}

#[test]
fn polygon_weights_build_the_documented_map() {
    let dev = &Device::Cpu;
    // One pixel each: outside, interior, edge (also interior), vertex (also edge and interior).
    let fill = [0.0f64, 1.0, 1.0, 1.0];
    let edge = [0.0f64, 0.0, 1.0, 1.0];
    let vert = [0.0f64, 0.0, 0.0, 1.0];
    let v: Vec<f64> = fill.iter().chain(&edge).chain(&vert).copied().collect();
    let p = Tensor::from_vec(v, (1, 3, 1, 4), dev).unwrap();
    let pw = PolygonWeights {
        background: 0.5,
        ..Default::default()
    };
    let w: Vec<f64> = pw
        .weight_map(&p)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = [0.5, 0.6, 1.6, 11.6];
    for (a, b) in w.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{w:?}");
    }
    assert!(pw.weight_map(&p.narrow(1, 0, 2).unwrap()).is_err());
    // Weighted MSE by hand: errors 1, 2 on two pixels, weights 1, 3 broadcast over 2 channels.
    let a = Tensor::new(&[[[[1.0f64, 2.0]], [[1.0, 2.0]]]], dev).unwrap(); // (1, 2, 1, 2)
    let b = a.zeros_like().unwrap();
    let w = Tensor::new(&[[[[1.0f64, 3.0]]]], dev).unwrap(); // (1, 1, 1, 2)
    let l = scalar(&weighted_mse_loss(&a, &b, &w).unwrap());
    assert!(
        (l - (2.0 * 1.0 + 2.0 * 3.0 * 4.0) / 8.0).abs() < 1e-14,
        "{l}"
    );
}

#[test]
fn ignored_pixels_get_no_gradient_and_f32_agrees_with_f64() {
    let x64 = (random_f64(&[2, 3, 2, 2], 5, &Device::Cpu).unwrap() * 2.0).unwrap();
    let tg = u32s(&[0, IGNORE, 2, 1, 1, 1, IGNORE, 0], &[2, 2, 2]);
    let cfg = ce(Some(w3()), Some(IGNORE), 0.2, Reduction::Mean);
    let x = Var::from_tensor(&x64).unwrap();
    let loss = cross_entropy(x.as_tensor(), &tg, &cfg).unwrap();
    let g = loss.backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap();
    // Pixel (0, 0, 1) and (1, 1, 0) are ignored: every class gets exactly zero gradient there.
    for (n, h, w) in [(0, 0, 1), (1, 1, 0)] {
        let col: Vec<f64> = g
            .narrow(0, n, 1)
            .unwrap()
            .narrow(2, h, 1)
            .unwrap()
            .narrow(3, w, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(col, vec![0.0; 3], "pixel ({n}, {h}, {w})");
    }
    let other: Vec<f64> = g
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 1)
        .unwrap()
        .narrow(3, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(other.iter().any(|v| v.abs() > 1e-3), "{other:?}");
    // The same loss in f32 is computed in f32 and agrees to f32 precision.
    let l32 = cross_entropy(&x64.to_dtype(DType::F32).unwrap(), &tg, &cfg).unwrap();
    assert_eq!(l32.dtype(), DType::F32);
    let d = (scalar(&l32) - scalar(&loss)).abs();
    assert!(d < 1e-5, "f32 vs f64: {d:e}");
}

#[test]
fn focal_gradients_stay_finite_at_saturated_logits_for_every_gamma() {
    let dev = &Device::Cpu;
    let xs = [-100.0f64, -40.0, 40.0, 100.0, 0.3];
    let y = Tensor::new(&[0.0f64, 0.0, 1.0, 1.0, 1.0], dev).unwrap();
    let labels = u32s(&[0, 1, 1, 0, 2], &[5]);
    for gamma in [0.0, 0.25, 0.5, 1.0, 2.0] {
        let x = Var::new(&xs, dev).unwrap();
        let cfg = FocalConfig {
            gamma,
            alpha: Some(0.25),
            reduction: Reduction::Sum,
        };
        let l = focal_loss(x.as_tensor(), &y, &cfg).unwrap();
        let g: Vec<f64> = l
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "binary, gamma {gamma}: {g:?}"
        );
        assert!(
            g[4].abs() > 1e-3,
            "the unsaturated pixel must still learn: {g:?}"
        );
        // Dense multi-class logits with one class far ahead at most pixels.
        let m: Vec<f64> = xs.iter().flat_map(|&v| [v, 0.0, -v]).collect();
        let x = Var::from_tensor(&Tensor::from_vec(m, (5, 3), dev).unwrap()).unwrap();
        let cfg = FocalMulticlassConfig {
            gamma,
            ..Default::default()
        };
        let l = focal_loss_multiclass(x.as_tensor(), &labels, &cfg).unwrap();
        assert!(scalar(&l).is_finite());
        let g = l.backward().unwrap();
        let g: Vec<f64> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "multi-class, gamma {gamma}: {g:?}"
        );
    }
}
