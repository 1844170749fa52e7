//! canopy-nn's blocks against PyTorch modules (fixtures from `tools/golden/nn_blocks.py`): the
//! PyTorch `state_dict` loads by name into a freshly built block (key sets equal both ways), the
//! outputs and input gradients match, and every parameter receives a gradient.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::attention::{
    Activation, MultiheadAttention, NormPosition, TransformerEncoderLayer,
    TransformerEncoderLayerConfig,
};
use canopy_nn::{check_all_parameters_have_gradients, SeededVarMap};
use rand::SeedableRng;

fn fixtures() -> HashMap<String, Tensor> {
    common::fixtures("nn_blocks")
}

use common::max_abs_diff;

/// Loads `name.sd.*` into the store, checking both key sets are equal.
fn load_state_dict(fx: &HashMap<String, Tensor>, name: &str, store: &SeededVarMap) {
    let prefix = format!("{name}.sd.");
    let sd: HashMap<String, Tensor> = fx
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    let unused = store.load(&sd).unwrap();
    assert!(
        unused.is_empty(),
        "{name}: PyTorch keys the block does not have: {unused:?}"
    );
    let ours: Vec<String> = store
        .named_vars()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut theirs: Vec<String> = sd.keys().cloned().collect();
    theirs.sort();
    assert_eq!(ours, theirs, "{name}: key sets differ");
}

#[test]
fn multihead_attention_matches_pytorch() {
    let fx = fixtures();
    let store = SeededVarMap::new(0);
    let mha =
        MultiheadAttention::new(8, 2, 0.0, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
    load_state_dict(&fx, "mha", &store);
    let x = Var::from_tensor(&fx["mha.x"]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (y, w) = mha
        .forward_t(
            x.as_tensor(),
            x.as_tensor(),
            x.as_tensor(),
            Some(&fx["mha.mask"]),
            true,
            false,
            &mut rng,
        )
        .unwrap();
    assert!(max_abs_diff(&y, &fx["mha.y"]) < 1e-10);
    assert!(max_abs_diff(&w.unwrap(), &fx["mha.w"]) < 1e-10);
    let grads = (y * &fx["mha.r"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_abs_diff(grads.get(x.as_tensor()).unwrap(), &fx["mha.gx"]) < 1e-10);
    check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
}

#[test]
fn transformer_encoder_layers_match_pytorch() {
    let fx = fixtures();
    for (name, act, norm) in [
        ("enc_post_relu", Activation::Relu, NormPosition::Post),
        ("enc_pre_gelu", Activation::Gelu, NormPosition::Pre),
    ] {
        let cfg = TransformerEncoderLayerConfig {
            d_model: 8,
            nhead: 2,
            dim_feedforward: 16,
            dropout: 0.1,
            activation: act,
            layer_norm_eps: 1e-5,
            norm,
        };
        let store = SeededVarMap::new(0);
        let layer = TransformerEncoderLayer::new(&cfg, store.var_builder(DType::F64, &Device::Cpu))
            .unwrap();
        load_state_dict(&fx, name, &store);
        let x = Var::from_tensor(&fx[&format!("{name}.x")]).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (y, attn) = layer
            .forward_t(
                x.as_tensor(),
                Some(&fx[&format!("{name}.mask")]),
                false,
                &mut rng,
            )
            .unwrap();
        let d = max_abs_diff(&y, &fx[&format!("{name}.y")]);
        assert!(d < 1e-10, "{name}: output differs by {d:e}");
        assert_eq!(attn.dims(), &[2, 2, 6, 6]);
        let grads = (y * &fx[&format!("{name}.r")])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dg = max_abs_diff(
            grads.get(x.as_tensor()).unwrap(),
            &fx[&format!("{name}.gx")],
        );
        assert!(dg < 1e-10, "{name}: input gradient differs by {dg:e}");
        check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
    }
}

#[test]
fn dropout_in_training_is_reproducible_from_the_seed() {
    let cfg = TransformerEncoderLayerConfig {
        d_model: 8,
        nhead: 2,
        dim_feedforward: 16,
        ..Default::default()
    };
    let run = || {
        let store = SeededVarMap::new(3);
        let layer = TransformerEncoderLayer::new(&cfg, store.var_builder(DType::F32, &Device::Cpu))
            .unwrap();
        let x = Tensor::ones((2, 4, 8), DType::F32, &Device::Cpu).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        layer
            .forward_t(&x, None, true, &mut rng)
            .unwrap()
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn stacked_bidirectional_lstm_matches_pytorch_with_and_without_lengths() {
    use canopy_nn::rnn::{Lstm, LstmConfig};
    let fx = fixtures();
    let cfg = LstmConfig {
        input_size: 5,
        hidden_size: 4,
        num_layers: 2,
        bias: true,
        dropout: 0.3,
        bidirectional: true,
    };
    let store = SeededVarMap::new(0);
    let lstm = Lstm::new(&cfg, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
    load_state_dict(&fx, "lstm", &store);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for (case, lengths) in [("lstm", None), ("lstm_packed", Some(vec![6usize, 4, 1]))] {
        let x = Var::from_tensor(&fx[&format!("{case}.x")]).unwrap();
        let out = lstm
            .forward_t(x.as_tensor(), lengths.as_deref(), false, &mut rng)
            .unwrap();
        for (what, t) in [
            ("y", &out.output),
            ("hn", &out.h_n),
            ("cn", out.c_n.as_ref().unwrap()),
        ] {
            let d = max_abs_diff(t, &fx[&format!("{case}.{what}")]);
            assert!(d < 1e-10, "{case}: {what} differs by {d:e}");
        }
        assert_eq!(out.hidden_states.len(), 2);
        assert_eq!(out.cell_states[1].dims(), &[3, 6, 8]);
        let grads = (&out.output * &fx[&format!("{case}.r")])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dg = max_abs_diff(
            grads.get(x.as_tensor()).unwrap(),
            &fx[&format!("{case}.gx")],
        );
        assert!(dg < 1e-10, "{case}: input gradient differs by {dg:e}");
        check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
    }
}

#[test]
fn stacked_bidirectional_gru_matches_pytorch_with_lengths() {
    use canopy_nn::rnn::{Gru, LstmConfig};
    let fx = fixtures();
    let cfg = LstmConfig {
        input_size: 5,
        hidden_size: 3,
        num_layers: 2,
        bias: true,
        dropout: 0.0,
        bidirectional: true,
    };
    let store = SeededVarMap::new(0);
    let gru = Gru::new(&cfg, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
    load_state_dict(&fx, "gru", &store);
    let x = Var::from_tensor(&fx["gru.x"]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let out = gru
        .forward_t(x.as_tensor(), Some(&[6, 2, 5]), false, &mut rng)
        .unwrap();
    assert!(out.c_n.is_none() && out.cell_states.is_empty());
    for (what, t) in [("y", &out.output), ("hn", &out.h_n)] {
        let d = max_abs_diff(t, &fx[&format!("gru.{what}")]);
        assert!(d < 1e-10, "gru: {what} differs by {d:e}");
    }
    let grads = (&out.output * &fx["gru.r"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_abs_diff(grads.get(x.as_tensor()).unwrap(), &fx["gru.gx"]) < 1e-10);
    check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    use canopy_nn::batch_norm::BatchNorm;
    let fx = fixtures();
    let store = SeededVarMap::new(0);
    let bn = BatchNorm::new(3, 1e-5, 0.1, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
    load_state_dict(&fx, "bn", &store);
    let x = Var::from_tensor(&fx["bn.x"]).unwrap();
    let y = bn.forward_t(x.as_tensor(), true).unwrap();
    assert!(max_abs_diff(&y, &fx["bn.y"]) < 1e-10);
    let (m, v) = bn.running_stats();
    assert!(max_abs_diff(m, &fx["bn.running_mean"]) < 1e-12);
    assert!(max_abs_diff(v, &fx["bn.running_var"]) < 1e-12);
    // the store holds the updated buffers (a checkpoint would save them)
    let stored = store
        .named_vars()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "running_mean")
        .unwrap()
        .1;
    assert!(max_abs_diff(stored.as_tensor(), &fx["bn.running_mean"]) < 1e-12);
    assert_eq!(bn.batches_tracked().unwrap(), 1);
    let grads = (&y * &fx["bn.r"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_abs_diff(grads.get(x.as_tensor()).unwrap(), &fx["bn.gx"]) < 1e-10);
    let trainable: Vec<(String, Var)> = store
        .named_vars()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == "weight" || k == "bias")
        .collect();
    check_all_parameters_have_gradients(&trainable, &grads).unwrap();
    let ye = bn.forward_t(x.as_tensor(), false).unwrap();
    assert!(max_abs_diff(&ye, &fx["bn.y_eval"]) < 1e-10);
}

#[test]
fn conv_lstm_and_conv_gru_match_pytorch_bidirectional_with_shared_weights() {
    use canopy_nn::conv_rnn::{Bidirectional, ConvRnn};
    let fx = fixtures();
    for (name, gru) in [("convlstm", false), ("convgru", true)] {
        let store = SeededVarMap::new(0);
        let layer = ConvRnn::new(
            3,
            4,
            3,
            gru,
            Bidirectional::Shared,
            store.var_builder(DType::F64, &Device::Cpu),
        )
        .unwrap();
        load_state_dict(&fx, name, &store);
        let x = Var::from_tensor(&fx[&format!("{name}.x")]).unwrap();
        let out = layer.forward(x.as_tensor()).unwrap();
        let d = max_abs_diff(&out.hidden_states, &fx[&format!("{name}.y")]);
        assert!(d < 1e-10, "{name}: output differs by {d:e}");
        assert_eq!(out.last_hidden.len(), 2);
        let grads = (&out.hidden_states * &fx[&format!("{name}.r")])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dg = max_abs_diff(
            grads.get(x.as_tensor()).unwrap(),
            &fx[&format!("{name}.gx")],
        );
        assert!(dg < 1e-10, "{name}: input gradient differs by {dg:e}");
        check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
    }
}

#[test]
fn fused_lstm_equals_the_composed_reference_with_all_gradients() {
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    use canopy_nn::rnn::{Lstm, LstmConfig};
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // with biases, and without (the BreizhCrops configuration)
    for (bias, lengths) in [
        (true, None),
        (true, Some(vec![7usize, 3, 1, 5])),
        (false, Some(vec![2usize, 7, 4, 6])),
    ] {
        let cfg = LstmConfig {
            input_size: 3,
            hidden_size: 5,
            num_layers: 2,
            bias,
            dropout: 0.0,
            bidirectional: true,
        };
        let store = SeededVarMap::new(7);
        let lstm = Lstm::new(&cfg, store.var_builder(DType::F64, &dev)).unwrap();
        let vars = store.named_vars().unwrap();
        assert_eq!(vars.iter().any(|(n, _)| n.contains("bias")), bias);
        let x = Var::from_tensor(&random_f64(&[4, 7, 3], 11, &dev).unwrap()).unwrap();
        let r = random_f64(&[4, 7, 10], 12, &dev).unwrap();
        let rc = random_f64(&[4, 7, 10], 13, &dev).unwrap();
        let run = |fused: bool, rng: &mut rand::rngs::StdRng| {
            let out = if fused {
                lstm.forward_t(x.as_tensor(), lengths.as_deref(), true, rng)
            } else {
                lstm.forward_t_reference(x.as_tensor(), lengths.as_deref(), true, rng)
            }
            .unwrap();
            // a loss touching outputs, final states and the stored cell states
            let loss = ((&out.output * &r).unwrap().sum_all().unwrap()
                + (&out.cell_states[0] * &rc).unwrap().sum_all().unwrap()
                + out.h_n.sqr().unwrap().sum_all().unwrap()
                + out.c_n.as_ref().unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let mut g = vec![grads.get(x.as_tensor()).unwrap().clone()];
            for (_, v) in &vars {
                g.push(grads.get(v.as_tensor()).unwrap().clone());
            }
            (out, g)
        };
        let (a, ga) = run(true, &mut rng);
        let (b, gb) = run(false, &mut rng);
        for (what, p, q) in [
            ("output", &a.output, &b.output),
            ("h_n", &a.h_n, &b.h_n),
            ("c_n", a.c_n.as_ref().unwrap(), b.c_n.as_ref().unwrap()),
            ("cells", &a.cell_states[1], &b.cell_states[1]),
        ] {
            let d = max_abs_diff(p, q);
            assert!(d < 1e-12, "{lengths:?}: {what} differs by {d:e}");
        }
        for (i, (p, q)) in ga.iter().zip(&gb).enumerate() {
            let d = max_abs_diff(p, q);
            let name = if i == 0 { "x" } else { &vars[i - 1].0 };
            assert!(
                d < 1e-12,
                "{lengths:?}: gradient of {name} differs by {d:e}"
            );
        }
        // f32 through the vectorised exponential stays within f32 rounding of f64
        let x32 = x.as_tensor().to_dtype(DType::F32).unwrap();
        let store32 = SeededVarMap::new(7);
        let lstm32 = Lstm::new(&cfg, store32.var_builder(DType::F32, &dev)).unwrap();
        let y32 = lstm32
            .forward_t(&x32, lengths.as_deref(), false, &mut rng)
            .unwrap()
            .output
            .to_dtype(DType::F64)
            .unwrap();
        let d = max_abs_diff(&y32, &a.output);
        assert!(d < 1e-5, "f32 output differs from f64 by {d:e}");
    }
    // finite differences through the fused op, one layer, with lengths
    let small = LstmConfig {
        input_size: 2,
        hidden_size: 3,
        bidirectional: true,
        ..Default::default()
    };
    let store = SeededVarMap::new(3);
    let lstm = Lstm::new(&small, store.var_builder(DType::F64, &dev)).unwrap();
    let x = random_f64(&[2, 4, 2], 5, &dev).unwrap();
    check_gradients(
        |t| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let out = lstm.forward_t(&t[0], Some(&[4, 2]), false, &mut rng)?;
            Ok((out.output.sqr()?.sum_all()? + out.c_n.unwrap().sum_all()?)?)
        },
        &[x],
        GradCheckConfig::default(),
    )
    .unwrap();
}

#[test]
fn fused_lstm_equals_the_composed_reference_for_one_direction_and_wide_batches() {
    use canopy_nn::gradcheck::random_f64;
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // one direction runs its recurrence over the whole thread pool (two directions run one
    // task each); 30 sequences split every gate loop into several tasks, and their 330
    // steps put the input projection of the two directions into blocks of 256 rows, one of
    // which ends the first direction and starts the second
    let (b, t) = (30usize, 11usize);
    let ragged: Vec<usize> = (0..b).map(|i| 1 + (i * 7) % t).collect();
    for (bidirectional, lengths) in [
        (false, None),
        (false, Some(ragged.clone())),
        (true, Some(ragged.clone())),
    ] {
        let nd = if bidirectional { 2 } else { 1 };
        let (store, lstm) = common::two_layer_lstm((4, 6), bidirectional, DType::F64, 5);
        let vars = store.named_vars().unwrap();
        let x = Var::from_tensor(&random_f64(&[b, t, 4], 21, &dev).unwrap()).unwrap();
        let r = random_f64(&[b, t, 6 * nd], 22, &dev).unwrap();
        let rc = random_f64(&[b, t, 6 * nd], 23, &dev).unwrap();
        let var_refs: Vec<&Var> = vars.iter().map(|(_, v)| v).collect();
        let run = |reference: bool, rng: &mut rand::rngs::StdRng| {
            common::lstm_outputs_and_gradients(
                &lstm,
                &x,
                lengths.as_deref(),
                (&r, &rc),
                &var_refs,
                reference,
                rng,
            )
        };
        let (a, ga) = run(false, &mut rng);
        let (c, gc) = run(true, &mut rng);
        let label = format!("bidirectional {bidirectional}, lengths {lengths:?}");
        for (what, p, q) in [
            ("output", &a.output, &c.output),
            ("h_n", &a.h_n, &c.h_n),
            ("c_n", a.c_n.as_ref().unwrap(), c.c_n.as_ref().unwrap()),
            ("layer 0 hidden", &a.hidden_states[0], &c.hidden_states[0]),
            ("layer 0 cells", &a.cell_states[0], &c.cell_states[0]),
            ("layer 1 cells", &a.cell_states[1], &c.cell_states[1]),
        ] {
            let d = max_abs_diff(p, q);
            assert!(d < 1e-12, "{label}: {what} differs by {d:e}");
        }
        for (i, (p, q)) in ga.iter().zip(&gc).enumerate() {
            let d = max_abs_diff(p, q);
            let name = if i == 0 { "x" } else { &vars[i - 1].0 };
            assert!(d < 1e-12, "{label}: gradient of {name} differs by {d:e}");
            assert!(
                q.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
                    > 0.0,
                "{label}: gradient of {name} is zero"
            );
        }
        // f32 (vectorised exponential) stays within f32 rounding of the f64 result
        let (_store32, lstm32) = common::two_layer_lstm((4, 6), bidirectional, DType::F32, 5);
        let x32 = x.as_tensor().to_dtype(DType::F32).unwrap();
        let y32 = lstm32
            .forward_t(&x32, lengths.as_deref(), false, &mut rng)
            .unwrap()
            .output
            .to_dtype(DType::F64)
            .unwrap();
        let d = max_abs_diff(&y32, &a.output);
        assert!(d < 1e-5, "{label}: f32 output differs from f64 by {d:e}");
    }
}

#[test]
fn fused_conv_lstm_gates_equal_the_composed_reference_with_gradients() {
    use canopy_nn::conv_rnn::ConvLstmCell;
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    let dev = Device::Cpu;
    let store = SeededVarMap::new(4);
    let cell = ConvLstmCell::new(3, 4, 3, true, store.var_builder(DType::F64, &dev)).unwrap();
    let vars = store.named_vars().unwrap();
    let x = Var::from_tensor(&random_f64(&[2, 3, 5, 6], 1, &dev).unwrap()).unwrap();
    let h = Var::from_tensor(&random_f64(&[2, 4, 5, 6], 2, &dev).unwrap()).unwrap();
    let c = Var::from_tensor(&random_f64(&[2, 4, 5, 6], 3, &dev).unwrap()).unwrap();
    let r = random_f64(&[2, 4, 5, 6], 4, &dev).unwrap();
    let run = |fused: bool| {
        let (h2, c2) = if fused {
            cell.step(x.as_tensor(), h.as_tensor(), c.as_tensor())
        } else {
            cell.step_reference(x.as_tensor(), h.as_tensor(), c.as_tensor())
        }
        .unwrap();
        let loss = ((&h2 * &r).unwrap().sum_all().unwrap() + c2.sqr().unwrap().sum_all().unwrap())
            .unwrap();
        let g = loss.backward().unwrap();
        let mut all = vec![h2, c2];
        for v in [&x, &h, &c].into_iter().chain(vars.iter().map(|(_, v)| v)) {
            all.push(g.get(v.as_tensor()).unwrap().clone());
        }
        all
    };
    for (i, (a, b)) in run(true).iter().zip(&run(false)).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(
            d < 1e-12,
            "value {i} (h', c', dx, dh, dc, dW...) differs by {d:e}"
        );
    }
    check_gradients(
        |t| {
            let (h2, c2) = cell.step(&t[0], &t[1], &t[2])?;
            Ok((h2.sqr()?.sum_all()? + (c2 * 0.7)?.sum_all()?)?)
        },
        &[
            x.as_tensor().clone(),
            h.as_tensor().clone(),
            c.as_tensor().clone(),
        ],
        GradCheckConfig::default(),
    )
    .unwrap();
}

#[test]
fn fused_attention_equals_the_composed_reference_with_gradients() {
    use canopy_nn::gradcheck::random_f64;
    let dev = Device::Cpu;
    let store = SeededVarMap::new(9);
    let mha = MultiheadAttention::new(8, 2, 0.0, store.var_builder(DType::F64, &dev)).unwrap();
    let vars = store.named_vars().unwrap();
    let q = Var::from_tensor(&random_f64(&[3, 5, 8], 1, &dev).unwrap()).unwrap();
    let kv = Var::from_tensor(&random_f64(&[3, 6, 8], 2, &dev).unwrap()).unwrap();
    let r = random_f64(&[3, 5, 8], 3, &dev).unwrap();
    let mask = Tensor::from_vec(
        vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1],
        (3, 6),
        &dev,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for m in [None, Some(&mask)] {
        let mut run = |fused: bool| {
            let (y, w) = if fused {
                mha.forward_t(
                    q.as_tensor(),
                    kv.as_tensor(),
                    kv.as_tensor(),
                    m,
                    true,
                    true,
                    &mut rng,
                )
            } else {
                mha.forward_t_reference(
                    q.as_tensor(),
                    kv.as_tensor(),
                    kv.as_tensor(),
                    m,
                    true,
                    true,
                    &mut rng,
                )
            }
            .unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![y, w.unwrap().detach()];
            for v in [&q, &kv].into_iter().chain(vars.iter().map(|(_, v)| v)) {
                all.push(g.get(v.as_tensor()).unwrap().clone());
            }
            all
        };
        let (a, b) = (run(true), run(false));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let d = max_abs_diff(x, y);
            assert!(
                d < 1e-12,
                "mask {}: value {i} (y, weights, dq, dkv, dW..) differs by {d:e}",
                m.is_some()
            );
        }
    }
}

#[test]
fn conv_lstm_with_layer_norm_normalises_trains_every_parameter_and_passes_gradient_checks() {
    use canopy_nn::conv_rnn::{Bidirectional, ConvLstmCell, ConvRnn};
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    let dev = Device::Cpu;
    let store = SeededVarMap::new(5);
    let cell = ConvLstmCell::with_layer_norm(2, 3, 3, store.var_builder(DType::F64, &dev)).unwrap();
    let names = sorted_names(&store);
    assert!(names.contains(&"ln_c.weight".to_string()) && names.contains(&"ln_g.bias".to_string()));
    assert!(!names.contains(&"conv.bias".to_string()), "{names:?}");
    let x = random_f64(&[2, 2, 4, 5], 1, &dev).unwrap();
    let h = random_f64(&[2, 3, 4, 5], 2, &dev).unwrap();
    let c = (random_f64(&[2, 3, 4, 5], 3, &dev).unwrap() * 5.0).unwrap();
    // with unit gains and zero shifts the new cell state is standardised per sample
    let (_, c2) = cell.step(&x, &h, &c).unwrap();
    let flat = c2.flatten_from(1).unwrap();
    let mean = flat
        .mean(1)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let var = flat
        .sqr()
        .unwrap()
        .mean(1)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(mean < 1e-12, "mean {mean}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");
    check_gradients(
        |t| {
            let (h2, c2) = cell.step(&t[0], &t[1], &t[2])?;
            Ok(((h2 * 1.3)?.sum_all()? + c2.sqr()?.mean_all()?)?)
        },
        &[x, h, c],
        GradCheckConfig::default(),
    )
    .unwrap();
    // a bidirectional layer of normalised cells: every parameter receives a gradient
    let store = SeededVarMap::new(6);
    let layer = ConvRnn::lstm_with_layer_norm(
        2,
        3,
        3,
        Bidirectional::Separate,
        store.var_builder(DType::F64, &dev),
    )
    .unwrap();
    assert_every_parameter_learns(&layer, &store, 4);
}

/// The variable names in `store`, sorted.
fn sorted_names(store: &SeededVarMap) -> Vec<String> {
    let mut names: Vec<String> = store
        .named_vars()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

/// Every variable in `store` gets a gradient from a random projection of the hidden states
/// `layer` gives for a random `(2, 4, 2, 5, 5)` input.
fn assert_every_parameter_learns(
    layer: &canopy_nn::conv_rnn::ConvRnn,
    store: &SeededVarMap,
    seed: u64,
) {
    use canopy_nn::gradcheck::random_f64;
    let xs = random_f64(&[2, 4, 2, 5, 5], seed, &Device::Cpu).unwrap();
    let out = layer.forward(&xs).unwrap();
    let r = random_f64(out.hidden_states.dims(), seed + 1, &Device::Cpu).unwrap();
    let grads = (&out.hidden_states * r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    check_all_parameters_have_gradients(&store.named_vars().unwrap(), &grads).unwrap();
}

#[test]
fn conv_gru_with_layer_norm_passes_gradient_checks_and_trains_every_parameter() {
    use canopy_nn::conv_rnn::{Bidirectional, ConvGruCell, ConvRnn};
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    let dev = Device::Cpu;
    let store = SeededVarMap::new(8);
    let cell = ConvGruCell::with_layer_norm(2, 3, 3, store.var_builder(DType::F64, &dev)).unwrap();
    let names = sorted_names(&store);
    assert_eq!(
        names,
        [
            "ln_n.bias",
            "ln_n.weight",
            "ln_r.bias",
            "ln_r.weight",
            "ln_z.bias",
            "ln_z.weight",
            "out_gate.weight",
            "reset_gate.weight",
            "update_gate.weight"
        ]
    );
    // non-trivial gains and shifts, so that the affine part is checked too
    for (i, (_, var)) in store.named_vars().unwrap().into_iter().enumerate() {
        let v = random_f64(var.as_tensor().dims(), 20 + i as u64, &dev).unwrap();
        var.set(&v).unwrap();
    }
    let x = random_f64(&[2, 2, 4, 5], 11, &dev).unwrap();
    let h = random_f64(&[2, 3, 4, 5], 12, &dev).unwrap();
    check_gradients(
        |t| Ok(cell.step(&t[0], &t[1])?.sqr()?.sum_all()?),
        &[x, h],
        GradCheckConfig::default(),
    )
    .unwrap();
    let store = SeededVarMap::new(9);
    let layer = ConvRnn::gru_with_layer_norm(
        2,
        3,
        3,
        Bidirectional::Shared,
        store.var_builder(DType::F64, &dev),
    )
    .unwrap();
    assert_every_parameter_learns(&layer, &store, 13);
}

/// The fused batch norm (+ ReLU) equals `forward_t` (then ReLU) in training and evaluation,
/// updates the running statistics identically, and has exact gradients.
#[test]
fn fused_batch_norm_equals_the_composed_one_with_exact_gradients() {
    use canopy_nn::batch_norm::BatchNorm;
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    let dev = Device::Cpu;
    let x = random_f64(&[2, 3, 4, 5], 41, &dev).unwrap();
    let make = || {
        let vm = SeededVarMap::new(5);
        let bn = BatchNorm::new(3, 1e-5, 0.1, vm.var_builder(DType::F64, &dev)).unwrap();
        (bn, vm)
    };
    for relu in [false, true] {
        for train in [true, false] {
            let (fused, _) = make();
            let (plain, _) = make();
            let y = fused.forward_fused_t(&x, train, relu).unwrap();
            let mut want = plain.forward_t(&x, train).unwrap();
            if relu {
                want = want.relu().unwrap();
            }
            assert!(max_abs_diff(&y, &want) < 1e-12, "train {train} relu {relu}");
            let (a, b) = (fused.running_stats(), plain.running_stats());
            assert!(max_abs_diff(a.0, b.0) < 1e-15 && max_abs_diff(a.1, b.1) < 1e-15);
            check_gradients(
                |t| fused.forward_fused_t(&t[0], train, relu),
                std::slice::from_ref(&x),
                GradCheckConfig::default(),
            )
            .unwrap();
        }
    }
    let (bn, _) = make();
    assert!(bn
        .forward_fused_t(&random_f64(&[2, 4, 3, 3], 1, &dev).unwrap(), true, true)
        .is_err());
}

/// Self-attention (query, key and value the same tensor) takes the packed `(B, T, 3E)`
/// projection into the fused kernel: with a key mask and attention dropout in training it equals
/// the composed reference, draws included, for the output, the weights and every gradient.
#[test]
fn fused_packed_self_attention_with_dropout_equals_the_composed_reference() {
    use canopy_nn::gradcheck::random_f64;
    let dev = Device::Cpu;
    let store = SeededVarMap::new(11);
    let mha = MultiheadAttention::new(12, 3, 0.3, store.var_builder(DType::F64, &dev)).unwrap();
    let vars = store.named_vars().unwrap();
    let x = Var::from_tensor(&random_f64(&[4, 7, 12], 5, &dev).unwrap()).unwrap();
    let r = random_f64(&[4, 7, 12], 6, &dev).unwrap();
    let mut mask = vec![0u8; 28];
    for i in [3usize, 6, 13, 20, 21, 22] {
        mask[i] = 1;
    }
    let mask = Tensor::from_vec(mask, (4, 7), &dev).unwrap();
    for (m, train) in [(None, false), (Some(&mask), false), (Some(&mask), true)] {
        let run = |fused: bool| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let xt = x.as_tensor();
            let (y, w) = if fused {
                mha.forward_t(xt, xt, xt, m, true, train, &mut rng)
            } else {
                mha.forward_t_reference(xt, xt, xt, m, true, train, &mut rng)
            }
            .unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![y, w.unwrap().detach()];
            for v in std::iter::once(&x).chain(vars.iter().map(|(_, v)| v)) {
                all.push(g.get(v.as_tensor()).unwrap().clone());
            }
            all
        };
        let (a, b) = (run(true), run(false));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            let d = max_abs_diff(p, q);
            assert!(
                d < 1e-12,
                "mask {} train {train}: value {i} (y, weights, dx, dW..) differs by {d:e}",
                m.is_some()
            );
        }
        if m.is_some() {
            // masked keys get exactly zero weight, every row sums to one
            let w: Vec<f64> = a[1].flatten_all().unwrap().to_vec1().unwrap();
            let keys: Vec<u8> = mask.flatten_all().unwrap().to_vec1().unwrap();
            for (row, probs) in w.chunks(7).enumerate() {
                let b = row / (3 * 7);
                for (j, &p) in probs.iter().enumerate() {
                    assert!(keys[b * 7 + j] == 0 || p == 0.0, "row {row} key {j}: {p}");
                }
                assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }
}

/// Finite-difference gradients of the fused attention with respect to its inputs and all four
/// parameters, for self-attention (packed operand) and for attention to another sequence
/// (separate operands), with a key mask.
#[test]
fn fused_attention_passes_gradient_checks_for_inputs_and_parameters() {
    use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
    let dev = Device::Cpu;
    let (e, heads) = (6usize, 2usize);
    let mask = Tensor::from_vec(vec![0u8, 0, 1, 0, 0, 0, 0, 1, 0, 0], (2, 5), &dev).unwrap();
    let build = |t: &[Tensor]| {
        let mut map = HashMap::new();
        map.insert("in_proj_weight".to_string(), t[0].clone());
        map.insert("in_proj_bias".to_string(), t[1].clone());
        map.insert("out_proj.weight".to_string(), t[2].clone());
        map.insert("out_proj.bias".to_string(), t[3].clone());
        let vb = candle_nn::VarBuilder::from_tensors(map, DType::F64, &dev);
        MultiheadAttention::new(e, heads, 0.0, vb)
    };
    let params = vec![
        (random_f64(&[3 * e, e], 1, &dev).unwrap() * 0.5).unwrap(),
        random_f64(&[3 * e], 2, &dev).unwrap(),
        (random_f64(&[e, e], 3, &dev).unwrap() * 0.5).unwrap(),
        random_f64(&[e], 4, &dev).unwrap(),
    ];
    let x = random_f64(&[2, 5, e], 5, &dev).unwrap();
    let kv = random_f64(&[2, 5, e], 6, &dev).unwrap();
    let mut inputs = params.clone();
    inputs.push(x.clone());
    check_gradients(
        |t| {
            let mha = build(t)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            Ok(mha
                .forward_t(&t[4], &t[4], &t[4], Some(&mask), false, true, &mut rng)?
                .0)
        },
        &inputs,
        GradCheckConfig::default(),
    )
    .unwrap();
    inputs.push(kv);
    check_gradients(
        |t| {
            let mha = build(t)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            Ok(mha
                .forward_t(&t[4], &t[5], &t[5], Some(&mask), false, true, &mut rng)?
                .0)
        },
        &inputs,
        GradCheckConfig::default(),
    )
    .unwrap();
}
