//! Helpers shared by canopy-train's loss and metric tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

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
