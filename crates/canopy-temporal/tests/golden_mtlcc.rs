//! MTLCC convolutional recurrent encoder against PyTorch (fixtures from
//! `tools/golden/temporal_mtlcc.py`, float64): logits, state sequences, input and parameter gradients,
//! for the PyTorch port's configuration, bidirectional / length-masked / ConvGRU variants and
//! the TensorFlow MTLCC model's layer-normalised ConvLSTM cell (forget bias 1, epsilon 1e-12)
//! and ConvGRU cell.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::SeededVarMap;
use canopy_temporal::mtlcc::{CellKind, ConvRnnClassifier, ConvRnnConfig, Direction, HeadState};

fn fixtures() -> Result<HashMap<String, Tensor>> {
    let path = format!(
        "{}/tests/fixtures/mtlcc.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    f.get(key)
        .ok_or_else(|| anyhow!("fixture key {key} missing"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

/// Builds the model for `case`, loads the fixture's state dict strictly, and compares.
fn check(case: &str, cfg: ConvRnnConfig) -> Result<()> {
    let f = fixtures()?;
    let vm = SeededVarMap::new(0);
    let model = ConvRnnClassifier::new(&cfg, vm.var_builder(DType::F64, &Device::Cpu))?;
    let prefix = format!("{case}.sd.");
    let sd: HashMap<String, Tensor> = f
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    canopy_temporal::load_tensors(&sd, &vm.named_vars()?)?;

    let x = Var::from_tensor(get(&f, &format!("{case}.x"))?)?;
    let lengths: Option<Vec<usize>> = f
        .get(&format!("{case}.lengths"))
        .map(|l| -> Result<Vec<usize>> {
            Ok(l.to_vec1::<i64>()?.iter().map(|&v| v as usize).collect())
        })
        .transpose()?;
    let out = model.forward_with_states(x.as_tensor(), lengths.as_deref())?;
    let d_logits = max_abs_diff(&out.logits, get(&f, &format!("{case}.logits"))?)?;
    let fwd = &out.states[0];
    let d_h = max_abs_diff(&fwd.hidden, get(&f, &format!("{case}.h"))?)?;
    if let Some(c) = &fwd.cell {
        let d_c = max_abs_diff(c, get(&f, &format!("{case}.c"))?)?;
        assert!(d_c < 1e-10, "{case}: cell states differ by {d_c}");
    }
    let r = get(&f, &format!("{case}.r"))?;
    let grads = (&out.logits * r)?.sum_all()?.backward()?;
    let gx = grads
        .get(x.as_tensor())
        .ok_or_else(|| anyhow!("no input gradient"))?;
    let d_gx = max_abs_diff(gx, get(&f, &format!("{case}.gx"))?)?;
    assert!(d_logits < 1e-10, "{case}: logits differ by {d_logits}");
    assert!(d_h < 1e-10, "{case}: hidden states differ by {d_h}");
    assert!(d_gx < 1e-10, "{case}: input gradients differ by {d_gx}");
    // the gradient of every parameter, which training follows
    for (name, var) in vm.named_vars()? {
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| anyhow!("{case}: no gradient for {name}"))?;
        let want = get(&f, &format!("{case}.grad.{name}"))?;
        let d = max_abs_diff(g, want)?;
        assert!(d < 1e-10, "{case}: gradients of {name} differ by {d}");
    }
    Ok(())
}

#[test]
fn pytorch_port_configuration_matches() -> Result<()> {
    let cfg = ConvRnnConfig {
        hidden: 6,
        ..ConvRnnConfig::mtlcc_pytorch(4, 3)
    };
    check("port", cfg)
}

#[test]
fn separate_backward_weights_with_lengths_match() -> Result<()> {
    let cfg = ConvRnnConfig {
        hidden: 5,
        bias: true,
        direction: Direction::Separate,
        head_state: HeadState::Hidden,
        ..ConvRnnConfig::mtlcc_pytorch(4, 3)
    };
    check("separate_lengths", cfg)
}

#[test]
fn shared_weight_convgru_with_lengths_matches() -> Result<()> {
    let cfg = ConvRnnConfig {
        hidden: 4,
        kernel: 5,
        cell: CellKind::Gru,
        bias: true,
        direction: Direction::Shared,
        ..ConvRnnConfig::mtlcc_pytorch(3, 2)
    };
    check("gru_shared", cfg)
}

#[test]
fn tensorflow_layer_normalised_cell_with_shared_weights_matches() -> Result<()> {
    let cfg = ConvRnnConfig {
        hidden: 4,
        ..ConvRnnConfig::mtlcc(3, 3)
    };
    check("tf_layer_norm", cfg)
}

#[test]
fn tensorflow_layer_normalised_convgru_matches() -> Result<()> {
    let cfg = ConvRnnConfig {
        hidden: 4,
        cell: CellKind::Gru,
        direction: Direction::Separate,
        head_state: HeadState::Hidden,
        ..ConvRnnConfig::mtlcc(3, 2)
    };
    check("tf_gru_layer_norm", cfg)
}

#[test]
fn padding_after_a_series_length_is_never_read() -> Result<()> {
    // the same series padded with zeros or with garbage gives the same logits
    let dev = Device::Cpu;
    let cfg = ConvRnnConfig {
        hidden: 4,
        ..ConvRnnConfig::mtlcc(3, 2)
    };
    let vm = SeededVarMap::new(3);
    let model = ConvRnnClassifier::new(&cfg, vm.var_builder(DType::F64, &dev))?;
    let x = Tensor::randn(0.0, 1.0, (1, 6, 3, 4, 4), &dev)?;
    let valid = x.narrow(1, 0, 4)?;
    let a = Tensor::cat(
        &[&valid, &Tensor::zeros((1, 2, 3, 4, 4), DType::F64, &dev)?],
        1,
    )?;
    let b = Tensor::cat(
        &[
            &valid,
            &(Tensor::ones((1, 2, 3, 4, 4), DType::F64, &dev)? * 50.0)?,
        ],
        1,
    )?;
    let ya = model.forward(&a, Some(&[4]))?;
    let yb = model.forward(&b, Some(&[4]))?;
    let alone = model.forward(&valid, None)?;
    assert!(max_abs_diff(&ya, &yb)? < 1e-12);
    assert!(max_abs_diff(&ya, &alone)? < 1e-12);
    // and without the lengths the garbage does change the result
    assert!(max_abs_diff(&model.forward(&b, None)?, &alone)? > 1e-3);
    Ok(())
}

#[test]
fn every_parameter_of_the_layer_normalised_model_learns() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = ConvRnnConfig {
        hidden: 4,
        ..ConvRnnConfig::mtlcc(2, 3)
    };
    let vm = SeededVarMap::new(1);
    let model = ConvRnnClassifier::new(&cfg, vm.var_builder(DType::F64, &dev))?;
    let x = Tensor::randn(0.0, 1.0, (2, 3, 2, 5, 5), &dev)?;
    let grads = model
        .forward(&x, Some(&[3, 2]))?
        .sqr()?
        .sum_all()?
        .backward()?;
    canopy_nn::check_all_parameters_have_gradients(&vm.named_vars()?, &grads)?;
    Ok(())
}

#[test]
fn bad_configurations_and_inputs_are_clear_errors() -> Result<()> {
    let dev = Device::Cpu;
    let vm = SeededVarMap::new(0);
    let bad = ConvRnnConfig {
        kernel: 4,
        ..ConvRnnConfig::mtlcc(3, 2)
    };
    let e = ConvRnnClassifier::new(&bad, vm.var_builder(DType::F32, &dev)).err();
    assert!(e
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("kernel 4 must be odd"));
    let model = ConvRnnClassifier::new(
        &ConvRnnConfig::mtlcc_pytorch(3, 2),
        vm.var_builder(DType::F32, &dev),
    )?;
    let x = Tensor::zeros((1, 2, 4, 3, 3), DType::F32, &dev)?;
    let e = model
        .forward(&x, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("(B, T, 3, H, W)"), "{e}");
    let x = Tensor::zeros((1, 2, 3, 3, 3), DType::F32, &dev)?;
    let e = model
        .forward(&x, Some(&[3]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("1..=2"), "{e}");
    Ok(())
}
