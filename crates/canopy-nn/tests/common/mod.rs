//! Helpers shared by canopy-nn's golden tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// The tensors of `tests/fixtures/<name>.safetensors`.
pub fn fixtures(name: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Largest absolute elementwise difference (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
