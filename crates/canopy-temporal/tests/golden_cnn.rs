//! TempCNN, MS-ResNet and InceptionTime against the BreizhCrops reference implementations.
//!
//! Fixtures come from `tools/golden/temporal_cnn.py` (torch 2.15.0, breizhcrops 0.0.4.1,
//! seeded): for each small case a float64 `state_dict` (with BatchNorm running statistics from
//! a few training-mode passes) and the eval-mode log-probabilities of a random batch, e.g.
//!
//! ```python
//! model = TempCNN(input_dim=13, num_classes=9, sequencelength=16, kernel_size=7,
//!                 hidden_dims=12, dropout=0.2)
//! ...  # three train-mode passes, then model.eval()
//! save_file(model.state_dict(), "tempcnn.safetensors")
//! save_file({"x": x, "logp": model(x)}, "tempcnn_io.safetensors")
//! ```
//!
//! The weights load strictly through `load_state_dict` (key sets equal both ways), and
//! `log_softmax` of our logits matches within 1e-9 in f64 and 1e-4 in f32. For the default
//! configurations the fixtures hold the reference's sorted `(key, shape)` list and parameter
//! count. A training-mode pass gives every used parameter a finite, non-zero gradient; for the
//! dropout-free models (MS-ResNet, InceptionTime) its loss, every parameter gradient and the
//! updated running statistics match PyTorch's (`NAME_grad.safetensors`, float64).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use canopy_nn::{check_all_parameters_have_gradients, SeededVarMap};
use canopy_temporal::inceptiontime::{InceptionTime, InceptionTimeConfig};
use canopy_temporal::msresnet::{MsResNet, MsResNetConfig};
use canopy_temporal::tempcnn::{TempCnn, TempCnnConfig};
use canopy_temporal::{load_state_dict, Error, SeriesClassifier};
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

type Make = dyn Fn(VarBuilder<'static>) -> canopy_temporal::Result<Box<dyn SeriesClassifier>>;

fn tempcnn(cfg: TempCnnConfig) -> Box<Make> {
    Box::new(move |vb| Ok(Box::new(TempCnn::new(&cfg, vb)?) as Box<dyn SeriesClassifier>))
}

fn msresnet(cfg: MsResNetConfig) -> Box<Make> {
    Box::new(move |vb| Ok(Box::new(MsResNet::new(&cfg, vb)?) as Box<dyn SeriesClassifier>))
}

fn inceptiontime(cfg: InceptionTimeConfig) -> Box<Make> {
    Box::new(move |vb| Ok(Box::new(InceptionTime::new(&cfg, vb)?) as Box<dyn SeriesClassifier>))
}

/// The small cases of the golden script, with their configurations.
fn cases() -> Vec<(&'static str, Box<Make>)> {
    vec![
        (
            "tempcnn",
            tempcnn(TempCnnConfig {
                hidden_dims: 12,
                dropout: 0.2,
                ..TempCnnConfig::breizhcrops(13, 9, 16)
            }),
        ),
        (
            // 16 channels: canopy-nn runs the stride-1 convolutions as Winograd products
            "tempcnn_wide",
            tempcnn(TempCnnConfig {
                hidden_dims: 16,
                dropout: 0.2,
                ..TempCnnConfig::breizhcrops(13, 9, 9)
            }),
        ),
        (
            "tempcnn_k5",
            tempcnn(TempCnnConfig {
                kernel_size: 5,
                hidden_dims: 8,
                dropout: 0.5,
                ..TempCnnConfig::breizhcrops(4, 5, 10)
            }),
        ),
        (
            "msresnet",
            msresnet(MsResNetConfig {
                hidden_dims: 4,
                ..MsResNetConfig::breizhcrops(13, 9)
            }),
        ),
        (
            "msresnet_long",
            msresnet(MsResNetConfig {
                hidden_dims: 6,
                ..MsResNetConfig::breizhcrops(5, 4)
            }),
        ),
        (
            "inceptiontime",
            inceptiontime(InceptionTimeConfig {
                hidden_dims: 8,
                ..InceptionTimeConfig::breizhcrops(13, 9)
            }),
        ),
        (
            "inceptiontime_bias",
            inceptiontime(InceptionTimeConfig {
                num_layers: 4,
                hidden_dims: 8,
                use_bias: true,
                ..InceptionTimeConfig::breizhcrops(3, 4)
            }),
        ),
    ]
}

/// The largest magnitude in `t`, as f64.
fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap())
}

#[test]
fn eval_outputs_match_the_reference() {
    for (case, make) in cases() {
        let io = candle_core::safetensors::load(
            fixture(&format!("{case}_io.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
            let store = SeededVarMap::new(0);
            let model = make(store.var_builder(dtype, &Device::Cpu)).unwrap();
            load_state_dict(
                fixture(&format!("{case}.safetensors")),
                &store.named_vars().unwrap(),
            )
            .unwrap();
            let x = io["x"].to_dtype(dtype).unwrap();
            let mut rng = StdRng::seed_from_u64(0);
            let logits = model.forward_t(&x, false, &mut rng).unwrap();
            let logp = canopy_nn::ops::log_softmax(&logits, 1).unwrap();
            assert_eq!(logp.dims(), io["logp"].dims(), "{case}");
            let d = max_abs_diff(&logp, &io["logp"]);
            println!("{case} {dtype:?}: max |Δ log p| = {d:.3e}");
            assert!(
                d < tol,
                "{case} {dtype:?}: max |Δ log p| = {d:.3e} >= {tol:e}"
            );
        }
    }
}

#[test]
fn checkpoints_of_other_models_are_refused() {
    let store = SeededVarMap::new(0);
    let _m = TempCnn::new(
        &TempCnnConfig {
            hidden_dims: 12,
            ..TempCnnConfig::breizhcrops(13, 9, 16)
        },
        store.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap();
    let e = load_state_dict(
        fixture("tempcnn_k5.safetensors"),
        &store.named_vars().unwrap(),
    );
    assert!(matches!(e, Err(Error::File { .. })), "{e:?}");
    let e = load_state_dict(
        fixture("msresnet.safetensors"),
        &store.named_vars().unwrap(),
    );
    let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("missing keys") && msg.contains("conv_bn_relu1"),
        "{msg}"
    );
}

#[derive(serde::Deserialize)]
struct Defaults {
    parameters: usize,
    state_dict: Vec<(String, Vec<usize>)>,
    parameters_registered_upstream: Option<usize>,
}

#[test]
fn default_configurations_have_the_reference_keys_shapes_and_counts() {
    let defaults: Vec<(&str, Box<Make>)> = vec![
        ("tempcnn", tempcnn(TempCnnConfig::default())),
        (
            "tempcnn_pelletier2019",
            tempcnn(TempCnnConfig::pelletier2019(13, 9, 45)),
        ),
        ("msresnet", msresnet(MsResNetConfig::default())),
        (
            "inceptiontime",
            inceptiontime(InceptionTimeConfig::default()),
        ),
    ];
    for (name, make) in defaults {
        let json = std::fs::read_to_string(fixture(&format!("{name}_defaults.json"))).unwrap();
        let reference: Defaults = serde_json::from_str(&json).unwrap();
        let store = SeededVarMap::new(0);
        let _model = make(store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let ours: BTreeMap<String, Vec<usize>> = store
            .named_vars()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.dims().to_vec()))
            .collect();
        let theirs: BTreeMap<String, Vec<usize>> = reference.state_dict.into_iter().collect();
        let missing: Vec<&String> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
        let extra: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: reference keys we lack {missing:?}, keys the reference lacks {extra:?}"
        );
        for (k, shape) in &theirs {
            assert_eq!(&ours[k], shape, "{name}: shape of {k}");
        }
        let count: usize = ours
            .iter()
            .filter(|(k, _)| !is_buffer(k))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(count, reference.parameters, "{name}: parameter count");
        println!(
            "{name}: {count} parameters, {} state_dict entries",
            ours.len()
        );
        if let Some(upstream) = reference.parameters_registered_upstream {
            // only `outlinear` (128 x 9 + 9) is registered by the unwrapped upstream model
            assert_eq!(upstream, 128 * 9 + 9, "{name}");
        }
    }
}

#[test]
fn every_used_parameter_gets_a_gradient_in_training() {
    let unused = |case: &str| -> Vec<&'static str> {
        match case {
            // shortcut_layer_list.{num_layers / 3} is created but never used, as in the reference
            "inceptiontime" => vec!["shortcut_layer_list.2."],
            "inceptiontime_bias" => vec!["shortcut_layer_list.1."],
            _ => vec![],
        }
    };
    for (case, make) in cases() {
        let store = SeededVarMap::new(1);
        let model = make(store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let io = candle_core::safetensors::load(
            fixture(&format!("{case}_io.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let x = io["x"].to_dtype(DType::F32).unwrap();
        let b = x.dim(0).unwrap();
        let k = model.num_classes() as u32;
        let targets = Tensor::from_vec(
            (0..b as u32).map(|i| i % k).collect::<Vec<_>>(),
            b,
            &Device::Cpu,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let logits = model.forward_t(&x, true, &mut rng).unwrap();
        let loss = cross_entropy(&logits, &targets, &CrossEntropyConfig::default()).unwrap();
        let grads = loss.backward().unwrap();
        let skip = unused(case);
        let all = store.named_vars().unwrap();
        let trainable: Vec<(String, Var)> = all
            .iter()
            .filter(|(k, _)| !is_buffer(k) && !skip.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        check_all_parameters_have_gradients(&trainable, &grads)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        // the unused layers really get nothing, and training updated the running statistics
        for (k, v) in &all {
            if skip.iter().any(|p| k.starts_with(p)) && !is_buffer(k) {
                assert!(
                    grads.get(v.as_tensor()).is_none(),
                    "{case}: {k} has a gradient"
                );
            }
            if k.ends_with("num_batches_tracked") && !skip.iter().any(|p| k.starts_with(p)) {
                let n = v
                    .as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert_eq!(n, 1.0, "{case}: {k}");
            }
        }
    }
}

/// The largest absolute difference of two tensors relative to the largest magnitude of `want`,
/// or to 1e-6 when that is smaller: a convolution bias that a batch norm follows has a gradient
/// of exactly zero in theory, 1e-17 of rounding in either implementation.
fn rel_diff(got: &Tensor, want: &Tensor) -> f64 {
    max_abs_diff(got, want) / max_abs(want).max(1e-6)
}

/// One training step against PyTorch in float64, from the fixture's weights: the loss of a
/// train-mode pass (batch statistics), the gradient of every parameter the pass uses (what
/// the optimizer follows) and the running statistics the pass leaves behind. The models
/// without dropout only: with dropout the two draw different masks.
#[test]
fn training_step_gradients_match_the_reference() {
    let with_grads = [
        "msresnet",
        "msresnet_long",
        "inceptiontime",
        "inceptiontime_bias",
    ];
    for (case, make) in cases().into_iter().filter(|(c, _)| with_grads.contains(c)) {
        let load = |suffix: &str| {
            candle_core::safetensors::load(fixture(&format!("{case}{suffix}")), &Device::Cpu)
                .unwrap()
        };
        let (io, reference) = (load("_io.safetensors"), load("_grad.safetensors"));
        let store = SeededVarMap::new(0);
        let model = make(store.var_builder(DType::F64, &Device::Cpu)).unwrap();
        load_state_dict(
            fixture(&format!("{case}.safetensors")),
            &store.named_vars().unwrap(),
        )
        .unwrap();
        let labels: Vec<u32> = reference["y"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect();
        let targets = Tensor::from_vec(labels.clone(), labels.len(), &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let logits = model.forward_t(&io["x"], true, &mut rng).unwrap();
        let loss = cross_entropy(&logits, &targets, &CrossEntropyConfig::default()).unwrap();
        let d_loss = rel_diff(&loss.reshape(1).unwrap(), &reference["loss"]);
        assert!(
            d_loss < 1e-12,
            "{case}: train-mode loss differs by {d_loss:e}"
        );
        let grads = loss.backward().unwrap();
        let (mut checked, mut worst) = (0, 0.0f64);
        for (k, v) in store.named_vars().unwrap() {
            if k.ends_with(".running_mean") || k.ends_with(".running_var") {
                let want = &reference[&format!("after.{k}")];
                let d = rel_diff(v.as_tensor(), want);
                assert!(d < 1e-12, "{case}: {k} after the pass differs by {d:e}");
                continue;
            }
            if is_buffer(&k) {
                continue;
            }
            match reference.get(&format!("grad.{k}")) {
                Some(want) => {
                    let got = grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{case}: no gradient for {k}"));
                    // a bias right before batch norm (InceptionTime's `pool_conv`) has a gradient
                    // of exactly zero: both sides hold rounding noise (~1e-17, its pattern moves
                    // with any change of summation order), checked in absolute terms
                    let (scale, d) = (max_abs(want), rel_diff(got, want));
                    if scale < 1e-12 {
                        let a = max_abs_diff(got, want);
                        assert!(a < 1e-14, "{case}: zero gradient of {k} is {a:e} off");
                    } else {
                        assert!(d < 1e-10, "{case}: gradient of {k} differs by {d:e}");
                        worst = worst.max(d);
                    }
                    checked += 1;
                }
                None => assert!(
                    grads.get(v.as_tensor()).is_none(),
                    "{case}: {k} has a gradient, the reference's has none"
                ),
            }
        }
        let expected = reference.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(checked, expected, "{case}: gradients compared");
        println!("{case}: {checked} parameter gradients, largest relative difference {worst:.2e}");
    }
}
