//! Learning-rate schedules against torch.optim.lr_scheduler (fixture from
//! tools/golden/train_optim.py: the rate in force at steps 0..39).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use canopy_train::schedule::{
    Anneal, ConstantLr, CosineAnnealingLr, CyclicLr, CyclicMode, ExponentialLr, LinearLr,
    LrSchedule, MultiStepLr, NoamLr, OneCycleLr, Sequential, StepLr,
};

fn fixtures() -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/train_optim.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn schedules_match_pytorch() {
    let f = fixtures();
    let cases: Vec<(&str, Box<dyn LrSchedule>)> = vec![
        (
            "step",
            Box::new(StepLr {
                base: 0.1,
                step_size: 7,
                gamma: 0.5,
            }),
        ),
        (
            "multistep",
            Box::new(MultiStepLr {
                base: 0.1,
                milestones: vec![5, 12, 30],
                gamma: 0.3,
            }),
        ),
        (
            "exponential",
            Box::new(ExponentialLr {
                base: 0.1,
                gamma: 0.95,
            }),
        ),
        (
            "cosine",
            Box::new(CosineAnnealingLr {
                base: 0.1,
                t_max: 30,
                eta_min: 1e-3,
            }),
        ),
        (
            "cyclic_triangular",
            Box::new(CyclicLr::triangular(0.01, 0.1, 5)),
        ),
        (
            "cyclic_triangular2",
            Box::new(CyclicLr {
                base_lr: 0.01,
                max_lr: 0.1,
                step_size_up: 4,
                step_size_down: 6,
                mode: CyclicMode::Triangular2,
            }),
        ),
        (
            "cyclic_exp_range",
            Box::new(CyclicLr {
                mode: CyclicMode::ExpRange { gamma: 0.97 },
                ..CyclicLr::triangular(0.01, 0.1, 5)
            }),
        ),
        ("onecycle", Box::new(OneCycleLr::new(0.1, 40))),
        (
            "onecycle_linear3",
            Box::new(OneCycleLr {
                pct_start: 0.25,
                anneal: Anneal::Linear,
                three_phase: true,
                ..OneCycleLr::new(0.1, 40)
            }),
        ),
        ("linear", Box::new(LinearLr::warmup(0.1, 0.1, 8))),
        (
            "noam",
            Box::new(NoamLr {
                d_model: 64,
                warmup: 10,
                scale: 1.0,
            }),
        ),
        (
            "warmup_cosine",
            Box::new(Sequential::warmup_then(
                LinearLr::warmup(0.1, 0.1, 5),
                5,
                CosineAnnealingLr {
                    base: 0.1,
                    t_max: 35,
                    eta_min: 0.0,
                },
            )),
        ),
    ];
    let mut worst_all: f64 = 0.0;
    for (name, s) in cases {
        let want = f[&format!("sched.{name}")].to_vec1::<f64>().unwrap();
        assert_eq!(want.len(), 40);
        let mut worst: f64 = 0.0;
        for (t, w) in want.iter().enumerate() {
            let got = s.lr(t);
            let rel = (got - w).abs() / w.abs().max(1e-12);
            assert!(rel < 1e-10, "{name} at step {t}: ours {got}, PyTorch {w}");
            worst = worst.max(rel);
        }
        // The schedule must actually vary over the 40 steps.
        let distinct = want.windows(2).filter(|p| p[0] != p[1]).count();
        assert!(distinct >= 2, "{name}: fixture is flat");
        println!("{name}: max relative |delta| = {worst:e}");
        worst_all = worst_all.max(worst);
    }
    println!("all schedules: max relative |delta| = {worst_all:e}");
}

#[test]
fn closures_constants_and_sequential_validation() {
    let half = |t: usize| 1.0 / (t + 1) as f64;
    assert_eq!(half.lr(1), 0.5);
    assert_eq!(ConstantLr(0.3).lr(1000), 0.3);
    assert!(Sequential::new(vec![Box::new(ConstantLr(1.0))], vec![3]).is_err());
    assert!(Sequential::new(
        vec![
            Box::new(ConstantLr(1.0)),
            Box::new(ConstantLr(2.0)),
            Box::new(ConstantLr(3.0))
        ],
        vec![5, 5]
    )
    .is_err());
    let s = Sequential::new(
        vec![Box::new(ConstantLr(1.0)), Box::new(|t: usize| t as f64)],
        vec![3],
    )
    .unwrap();
    assert_eq!(
        (0..6).map(|t| s.lr(t)).collect::<Vec<_>>(),
        vec![1.0, 1.0, 1.0, 0.0, 1.0, 2.0]
    );
    // One-cycle past its end keeps the final value; invalid settings are reported.
    let oc = OneCycleLr::new(0.1, 10);
    assert_eq!(oc.lr(9), oc.lr(50));
    assert!((oc.lr(9) - 0.1 / 25.0 / 1e4).abs() < 1e-15);
    assert!(OneCycleLr {
        pct_start: 1.5,
        ..oc
    }
    .validate()
    .is_err());
}
