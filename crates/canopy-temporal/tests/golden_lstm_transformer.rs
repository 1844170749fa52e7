//! Golden tests of the LSTM and Transformer classifiers against BreizhCrops (PyTorch).
//!
//! The fixtures come from `tools/golden/temporal_rnn.py` (torch 2.15.0, breizhcrops 0.0.4.1,
//! seed 0, float64, eval mode), which builds the reference modules with small configurations:
//!
//! ```python
//! lstm = LSTM(input_dim=13, num_classes=5, hidden_dims=16, num_layers=2, dropout=0.3,
//!             bidirectional=True, use_layernorm=True)
//! tr = TransformerModel(input_dim=13, num_classes=5, d_model=16, n_head=2, n_layers=2,
//!                       d_inner=32, dropout=0.1)
//! pe = PETransformerModel(..., same sizes, max_len=200)
//! x = torch.randn(3, 12, 13)
//! ```
//!
//! and saves each `state_dict`, the input, the logits (before `log_softmax`) and the reference
//! output (`log_softmax`), plus the LSTM's last-layer outputs and final states and the
//! Transformer's layer-0 attention weights. For the default configurations (13 bands, 9
//! classes) it saves only the sorted `(key, shape)` list and the parameter count.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use canopy_nn::SeededVarMap;
use canopy_temporal::lstm::LstmClassifierConfig;
use canopy_temporal::transformer::{strip_positional_buffer, TransformerClassifierConfig};
use canopy_temporal::{
    load_state_dict, load_tensors, LstmClassifier, SeriesClassifier, TransformerClassifier,
};
use rand::SeedableRng;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io(name: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixture(&format!("{name}_small_io.safetensors")),
        &Device::Cpu,
    )?)
}

fn get<'a>(t: &'a HashMap<String, Tensor>, k: &str) -> anyhow::Result<&'a Tensor> {
    t.get(k)
        .ok_or_else(|| anyhow::anyhow!("fixture has no tensor {k}"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    anyhow::ensure!(a.dims() == b.dims(), "{:?} vs {:?}", a.dims(), b.dims());
    Ok((a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?)
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0)
}

fn lstm_small() -> LstmClassifierConfig {
    LstmClassifierConfig {
        hidden_dims: 16,
        num_layers: 2,
        dropout: 0.3,
        ..LstmClassifierConfig::breizhcrops(13, 5)
    }
}

fn transformer_small(pe: bool) -> TransformerClassifierConfig {
    let base = if pe {
        TransformerClassifierConfig::russwurm2020(13, 5)
    } else {
        TransformerClassifierConfig::breizhcrops(13, 5)
    };
    TransformerClassifierConfig {
        d_model: 16,
        n_head: 2,
        n_layers: 2,
        d_inner: 32,
        dropout: 0.1,
        ..base
    }
}

/// Compares logits and log-probabilities; returns the largest difference.
fn check_outputs(
    name: &str,
    logits: &Tensor,
    t: &HashMap<String, Tensor>,
    tol: f64,
) -> anyhow::Result<f64> {
    let d_logits = max_diff(logits, get(t, "logits")?)?;
    let lp = canopy_nn::ops::log_softmax(logits, D::Minus1)?;
    let d_lp = max_diff(&lp, get(t, "log_probs")?)?;
    println!("{name}: max |Δ| logits {d_logits:.2e}, log_softmax {d_lp:.2e}");
    assert!(d_logits < tol, "{name}: logits differ by {d_logits:.3e}");
    assert!(d_lp < tol, "{name}: log-probabilities differ by {d_lp:.3e}");
    Ok(d_logits.max(d_lp))
}

#[test]
fn lstm_matches_breizhcrops() -> anyhow::Result<()> {
    let t = io("lstm")?;
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let vm = SeededVarMap::new(0);
        let m = LstmClassifier::new(&lstm_small(), vm.var_builder(dtype, &Device::Cpu))?;
        load_state_dict(fixture("lstm_small.safetensors"), &vm.named_vars()?)?;
        let x = get(&t, "input")?.to_dtype(dtype)?;
        let s = m.forward_with_states(&x, false, &mut rng())?;
        check_outputs(&format!("lstm {dtype:?}"), &s.logits, &t, tol)?;
        // The last layer's outputs are its hidden states, forward half first.
        let last = Tensor::cat(&[&s.hidden[2], &s.hidden[3]], D::Minus1)?;
        let d = max_diff(&last, get(&t, "output")?)?;
        assert!(d < tol, "lstm outputs differ by {d:.3e}");
        // Final states: step T-1 of the forward direction, step 0 of the reverse one.
        let c_n = get(&t, "c_n")?;
        for (i, c) in s.cell.iter().enumerate() {
            let step = if i % 2 == 0 { c.dim(1)? - 1 } else { 0 };
            let d = max_diff(&c.narrow(1, step, 1)?.squeeze(1)?, &c_n.get(i)?)?;
            assert!(d < tol, "c_n[{i}] ({}) differs by {d:.3e}", s.names[i]);
        }
    }
    Ok(())
}

#[test]
fn transformer_matches_breizhcrops() -> anyhow::Result<()> {
    let t = io("transformer")?;
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let vm = SeededVarMap::new(0);
        let m = TransformerClassifier::new(
            &transformer_small(false),
            vm.var_builder(dtype, &Device::Cpu),
        )?;
        load_state_dict(fixture("transformer_small.safetensors"), &vm.named_vars()?)?;
        let x = get(&t, "input")?.to_dtype(dtype)?;
        let a = m.forward_with_attention(&x, false, &mut rng())?;
        check_outputs(&format!("transformer {dtype:?}"), &a.logits, &t, tol)?;
        let d = max_diff(&a.attention[0], get(&t, "attn_l0")?)?;
        println!("transformer {dtype:?}: attention layer 0 max |Δ| {d:.2e}");
        assert!(d < tol, "attention weights differ by {d:.3e}");
    }
    Ok(())
}

#[test]
fn pe_transformer_matches_breizhcrops() -> anyhow::Result<()> {
    let t = io("transformer_pe")?;
    let sd =
        candle_core::safetensors::load(fixture("transformer_pe_small.safetensors"), &Device::Cpu)?;
    // Loading the reference dict as is names the computed table as the one unexpected key.
    let vm = SeededVarMap::new(0);
    let _ = TransformerClassifier::new(
        &transformer_small(true),
        vm.var_builder(DType::F32, &Device::Cpu),
    )?;
    let e = load_tensors(&sd, &vm.named_vars()?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("unexpected keys [\"pe.pe\"]"), "{e}");

    let sd = strip_positional_buffer(sd, 10000.0)?;
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let vm = SeededVarMap::new(0);
        let m = TransformerClassifier::new(
            &transformer_small(true),
            vm.var_builder(dtype, &Device::Cpu),
        )?;
        load_tensors(&sd, &vm.named_vars()?)?;
        let x = get(&t, "input")?.to_dtype(dtype)?;
        let logits = m.forward_t(&x, false, &mut rng())?;
        check_outputs(&format!("pe-transformer {dtype:?}"), &logits, &t, tol)?;
    }
    Ok(())
}

/// `(key, shape)` of the reference's default configuration and its parameter count.
fn reference_keys(model: &str) -> anyhow::Result<(BTreeMap<String, Vec<usize>>, usize)> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(
        "lstm_transformer_keys.json",
    ))?)?;
    let entry = &json[model];
    let count = entry["parameters"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no parameter count for {model}"))?;
    let keys: Vec<(String, Vec<usize>)> = serde_json::from_value(entry["state_dict"].clone())?;
    Ok((keys.into_iter().collect(), count as usize))
}

fn our_keys(vm: &SeededVarMap) -> anyhow::Result<(BTreeMap<String, Vec<usize>>, usize)> {
    let vars = vm.named_vars()?;
    let count = vars.iter().map(|(_, v)| v.elem_count()).sum();
    Ok((
        vars.into_iter()
            .map(|(k, v)| (k, v.dims().to_vec()))
            .collect(),
        count,
    ))
}

fn assert_same_keys(
    name: &str,
    ours: &BTreeMap<String, Vec<usize>>,
    theirs: &BTreeMap<String, Vec<usize>>,
) {
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{name}: keys only here {only_ours:?}, only in the reference {only_theirs:?}"
    );
    for (k, s) in ours {
        assert_eq!(Some(s), theirs.get(k), "{name}: shape of {k}");
    }
}

#[test]
fn default_configurations_have_the_reference_keys_and_counts() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let vm = SeededVarMap::new(0);
    LstmClassifier::new(
        &LstmClassifierConfig::default(),
        vm.var_builder(DType::F32, &dev),
    )?;
    let (ours, n) = our_keys(&vm)?;
    let (theirs, m) = reference_keys("lstm")?;
    assert_same_keys("lstm", &ours, &theirs);
    assert_eq!(n, m, "lstm parameter count");
    assert_eq!(n, 1_335_331);

    let vm = SeededVarMap::new(0);
    TransformerClassifier::new(
        &TransformerClassifierConfig::default(),
        vm.var_builder(DType::F32, &dev),
    )?;
    let (ours, n) = our_keys(&vm)?;
    let (theirs, m) = reference_keys("transformer")?;
    assert_same_keys("transformer", &ours, &theirs);
    assert_eq!(n, m, "transformer parameter count");

    // The PE model's state_dict has the computed table `pe.pe` on top of the parameters.
    let vm = SeededVarMap::new(0);
    TransformerClassifier::new(
        &TransformerClassifierConfig::russwurm2020(13, 9),
        vm.var_builder(DType::F32, &dev),
    )?;
    let (ours, n) = our_keys(&vm)?;
    let (mut theirs, m) = reference_keys("petransformer")?;
    assert_eq!(theirs.remove("pe.pe"), Some(vec![200, 1, 64]));
    assert_same_keys("petransformer", &ours, &theirs);
    assert_eq!(n, m, "petransformer parameter count");
    Ok(())
}

fn assert_all_gradients(
    m: &dyn SeriesClassifier,
    vm: &SeededVarMap,
    c: usize,
) -> anyhow::Result<()> {
    let x = canopy_nn::gradcheck::random_f64(&[3, 7, c], 5, &Device::Cpu)?.to_dtype(DType::F32)?;
    let logits = m.forward_t(&x, true, &mut rng())?;
    let r =
        canopy_nn::gradcheck::random_f64(logits.dims(), 6, &Device::Cpu)?.to_dtype(DType::F32)?;
    let grads = (logits * r)?.sum_all()?.backward()?;
    canopy_nn::check_all_parameters_have_gradients(&vm.named_vars()?, &grads)?;
    Ok(())
}

#[test]
fn every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let vm = SeededVarMap::new(4);
    let m = LstmClassifier::new(&lstm_small(), vm.var_builder(DType::F32, &dev))?;
    assert_all_gradients(&m, &vm, 13)?;
    let variant = LstmClassifierConfig {
        input_layernorm: true,
        bias: true,
        bidirectional: false,
        ..LstmClassifierConfig {
            hidden_dims: 6,
            num_layers: 2,
            ..LstmClassifierConfig::breizhcrops(2, 3)
        }
    };
    let vm = SeededVarMap::new(4);
    let m = LstmClassifier::new(&variant, vm.var_builder(DType::F32, &dev))?;
    assert_all_gradients(&m, &vm, 2)?;
    for pe in [false, true] {
        let vm = SeededVarMap::new(4);
        let m =
            TransformerClassifier::new(&transformer_small(pe), vm.var_builder(DType::F32, &dev))?;
        assert_all_gradients(&m, &vm, 13)?;
    }
    Ok(())
}

/// The default preset on one band learns a toy problem the reference layout cannot (its input
/// norm maps every one-band input to the same value).
#[test]
fn one_band_lstm_preset_learns_a_separable_toy_problem() -> anyhow::Result<()> {
    use canopy_train::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
    let dev = Device::Cpu;
    let cfg = LstmClassifierConfig::breizhcrops(1, 2);
    assert!(!cfg.input_layernorm);
    let vm = SeededVarMap::new(7);
    let m = LstmClassifier::new(&cfg, vm.var_builder(DType::F32, &dev))?;
    // Class 0: a rising ramp, class 1: a falling ramp (plus a little noise).
    let (b, t) = (8usize, 6usize);
    let mut values = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b);
    let noise = (canopy_nn::gradcheck::random_f64(&[b, t], 7, &dev)? * 0.05)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    for (i, row) in noise.iter().enumerate() {
        let class = (i % 2) as u32;
        labels.push(class);
        for (s, n) in row.iter().enumerate() {
            let ramp = s as f32 / (t - 1) as f32;
            values.push(if class == 0 { ramp } else { 1.0 - ramp } + n);
        }
    }
    let x = Tensor::from_vec(values, (b, t, 1), &dev)?;
    let y = Tensor::new(labels.as_slice(), &dev)?;
    let mut opt = Adam::new(
        vec![ParamGroup::new("all", vm.named_vars()?)],
        AdamConfig::adam(3e-3),
    )?;
    let ce = canopy_train::loss::CrossEntropyConfig::default();
    let mut r = rng();
    let mut first = None;
    let mut last = f32::NAN;
    for _ in 0..15 {
        let logits = m.forward_t(&x, false, &mut r)?;
        let loss = canopy_train::loss::cross_entropy(&logits, &y, &ce)?;
        last = loss.to_scalar::<f32>()?;
        first.get_or_insert(last);
        opt.step(&loss.backward()?)?;
    }
    let logits = m.forward_t(&x, false, &mut r)?;
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    println!("toy problem: loss {first:?} -> {last}, predictions {pred:?}");
    assert_eq!(pred, labels, "loss {first:?} -> {last}");
    Ok(())
}
