//! Helpers shared by canopy-nn's golden tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;

use candle_core::DType;
use candle_core::{Device, Tensor, Var};
use canopy_nn::rnn::{Lstm, LstmConfig, RnnOutput};
use canopy_nn::SeededVarMap;

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

/// The largest absolute value of `t` (f64).
pub fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Runs `lstm` on `x` in training mode — the fused op, or the composed candle reference when
/// `reference` — and backpropagates a loss that reaches every kind of output:
/// `Σ output·r + Σ_layers Σ cells·rc + Σ h_n² + Σ c_n`. Returns the outputs and the gradients of
/// `x`, then of `vars` in their order.
pub fn lstm_outputs_and_gradients(
    lstm: &Lstm,
    x: &Var,
    lengths: Option<&[usize]>,
    (r, rc): (&Tensor, &Tensor),
    vars: &[&Var],
    reference: bool,
    rng: &mut rand::rngs::StdRng,
) -> (RnnOutput, Vec<Tensor>) {
    let out = if reference {
        lstm.forward_t_reference(x.as_tensor(), lengths, true, rng)
    } else {
        lstm.forward_t(x.as_tensor(), lengths, true, rng)
    }
    .unwrap();
    let mut loss = ((&out.output * r).unwrap().sum_all().unwrap()
        + out.h_n.sqr().unwrap().sum_all().unwrap()
        + out.c_n.as_ref().unwrap().sum_all().unwrap())
    .unwrap();
    for cells in &out.cell_states {
        loss = (loss + (cells * rc).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let mut g = vec![grads.get(x.as_tensor()).unwrap().clone()];
    for v in vars {
        g.push(grads.get(v.as_tensor()).unwrap().clone());
    }
    (out, g)
}

/// A two-layer LSTM with biases and no dropout, its parameters drawn from a store seeded with
/// `seed`, in `dtype` on the CPU.
pub fn two_layer_lstm(
    (input_size, hidden_size): (usize, usize),
    bidirectional: bool,
    dtype: DType,
    seed: u64,
) -> (SeededVarMap, Lstm) {
    let cfg = LstmConfig {
        input_size,
        hidden_size,
        num_layers: 2,
        bias: true,
        dropout: 0.0,
        bidirectional,
    };
    let store = SeededVarMap::new(seed);
    let lstm = Lstm::new(&cfg, store.var_builder(dtype, &Device::Cpu)).unwrap();
    (store, lstm)
}
