//! Helpers shared by canopy-train's loss and metric tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};

/// Tolerance of the comparisons with PyTorch in f64.
pub const TOL: f64 = 1e-10;

/// The tensors of `tests/fixtures/<name>.safetensors`.
pub fn fixtures(name: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Fixture tensor `{case}.{key}`, with a readable panic when it is missing.
pub fn get(fx: &HashMap<String, Tensor>, case: &str, key: &str) -> Tensor {
    fx.get(&format!("{case}.{key}"))
        .unwrap_or_else(|| panic!("fixture {case}.{key} missing"))
        .clone()
}

/// An int64 label fixture as the u32 tensor the losses take.
pub fn labels(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

/// Largest absolute elementwise difference (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap();
    let v: Vec<f64> = d.abs().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.into_iter().fold(0.0, f64::max)
}

/// A scalar tensor as f64.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Runs `f(diff_inputs, fixtures)` on case `case`, compares the output and the gradients of the
/// inputs named in `diff` with PyTorch's; returns the largest deviation.
pub fn golden(
    case: &str,
    diff: &[&str],
    f: impl Fn(&[Tensor], &HashMap<String, Tensor>) -> canopy_train::Result<Tensor>,
) -> f64 {
    let fx = fixtures("train_losses");
    let vars: Vec<Var> = diff
        .iter()
        .map(|n| Var::from_tensor(&get(&fx, case, n)).unwrap())
        .collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&xs, &fx).unwrap();
    let d_out = max_abs_diff(&out, &get(&fx, case, "out"));
    assert!(
        d_out < TOL,
        "{case}: output differs from PyTorch by {d_out:e}"
    );
    let grads = (&out * get(&fx, case, "r"))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut worst = d_out;
    for (n, x) in diff.iter().zip(&xs) {
        let g = grads
            .get(x)
            .unwrap_or_else(|| panic!("{case}: no gradient for {n}"));
        let dg = max_abs_diff(g, &get(&fx, case, &format!("g{n}")));
        assert!(dg < TOL, "{case}: gradient of {n} differs by {dg:e}");
        worst = worst.max(dg);
    }
    eprintln!("{case}: max |Δ| vs PyTorch {worst:e}");
    worst
}

/// A u32 label tensor.
pub fn u32s(v: &[u32], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
}

/// Finite-difference check of `f` at seeded random inputs of the given shapes (values in
/// [-3, 3)).
pub fn gradcheck(shapes: &[&[usize]], f: impl Fn(&[Tensor]) -> canopy_nn::Result<Tensor>) {
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (random_f64(s, 7 + i as u64, &Device::Cpu).unwrap() * 3.0).unwrap())
        .collect();
    let reports = check_gradients(f, &inputs, GradCheckConfig::default()).unwrap();
    assert_eq!(reports.len(), shapes.len());
}

/// Adapts a canopy-train loss to the closure type the gradient checker takes.
pub fn nn(r: canopy_train::Result<Tensor>) -> canopy_nn::Result<Tensor> {
    r.map_err(|e| canopy_nn::Error::GradCheck(e.to_string()))
}

/// The ignored label of the fixtures.
pub const IGNORE: u32 = 255;

/// Class weights of the 3-class fixtures.
pub fn w3() -> Vec<f64> {
    vec![0.2, 1.0, 3.0]
}
/// Class weights of the 4-class fixtures.
pub fn w4() -> Vec<f64> {
    vec![0.5, 2.0, 1.0, 1.5]
}

/// A cross-entropy configuration.
pub fn ce(
    weight: Option<Vec<f64>>,
    ignore_index: Option<u32>,
    label_smoothing: f64,
    reduction: canopy_train::loss::Reduction,
) -> canopy_train::loss::CrossEntropyConfig {
    canopy_train::loss::CrossEntropyConfig {
        weight,
        ignore_index,
        label_smoothing,
        reduction,
    }
}

/// The labels `{case}.t` of a fixture as u32.
pub fn t(fx: &HashMap<String, Tensor>, case: &str) -> Tensor {
    labels(&get(fx, case, "t"))
}
