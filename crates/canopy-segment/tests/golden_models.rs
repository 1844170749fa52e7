//! canopy-segment's models against the PyTorch reference implementations of
//! `tools/golden/segment_models.py` (torch 2.15.0): eval-mode logits of small seeded
//! configurations within 1e-9 in f64 and 1e-4 in f32, parameter counts and state_dict key sets
//! (both ways) of the default configurations, and every parameter receiving a gradient.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_segment::weights::{load_state_dict, state_dict_with_aliases};
use canopy_segment::{
    FcnConfig, MlpActivation, MlpNetConfig, ModelConfig, ResNetUNetConfig, SegmentationModel,
    TernausNet, TernausNetConfig, UNetConfig,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn aliases(cfg: &ModelConfig) -> Vec<(String, String)> {
    match cfg {
        ModelConfig::Ternaus(_) => TernausNet::pytorch_aliases(),
        _ => Vec::new(),
    }
}

/// The small configuration of each fixture case (as in segment_models.py).
fn case(name: &str) -> ModelConfig {
    match name {
        "fcn" => ModelConfig::Fcn(FcnConfig {
            in_channels: 3,
            classes: 2,
            widths: [8, 12, 10],
            two_scale: false,
        }),
        "fcn_two_scale" => ModelConfig::Fcn(FcnConfig {
            in_channels: 4,
            classes: 3,
            widths: [6, 8, 5],
            two_scale: true,
        }),
        "mlpnet_relu" | "mlpnet_linear" => {
            let relu = name == "mlpnet_relu";
            ModelConfig::MlpNet(MlpNetConfig {
                in_channels: 3,
                classes: if relu { 3 } else { 2 },
                widths: vec![6, 8, 10, 12],
                kernels: vec![5, 5, 3, 3],
                hidden: if relu { 9 } else { 7 },
                activation: if relu {
                    MlpActivation::Relu
                } else {
                    MlpActivation::Linear
                },
            })
        }
        "unet_bn" => ModelConfig::Unet(UNetConfig {
            in_channels: 3,
            classes: 2,
            base_width: 4,
            depth: 3,
            batch_norm: true,
        }),
        "unet_plain" => ModelConfig::Unet(UNetConfig {
            in_channels: 5,
            classes: 3,
            base_width: 3,
            depth: 4,
            batch_norm: false,
        }),
        "ternaus" => ModelConfig::Ternaus(TernausNetConfig {
            in_channels: 3,
            classes: 2,
            num_filters: 2,
            encoder_widths: [4, 6, 8, 8, 10],
        }),
        "resnet_unet" => ModelConfig::ResnetUnet(ResNetUNetConfig {
            in_channels: 3,
            classes: 2,
            encoder_widths: [4, 4, 6, 8, 10],
            blocks: [2, 1, 2, 1],
            decoder_channels: [10, 8, 6, 4, 4],
        }),
        other => panic!("unknown case {other}"),
    }
}

const CASES: [&str; 8] = [
    "fcn",
    "fcn_two_scale",
    "mlpnet_relu",
    "mlpnet_linear",
    "unet_bn",
    "unet_plain",
    "ternaus",
    "resnet_unet",
];

fn build(cfg: &ModelConfig, dtype: DType) -> (Box<dyn SegmentationModel>, SeededVarMap) {
    let vm = SeededVarMap::new(0);
    let model = cfg.build(vm.var_builder(dtype, &Device::Cpu)).unwrap();
    (model, vm)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
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

#[test]
fn logits_match_pytorch_in_f64_and_f32() {
    for name in CASES {
        let cfg = case(name);
        let io = candle_core::safetensors::load(
            fixture(&format!("{name}_io.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
            let (model, vm) = build(&cfg, dtype);
            load_state_dict(
                fixture(&format!("{name}.safetensors")),
                &vm.named_vars().unwrap(),
                &aliases(&cfg),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let x = io["x"].to_dtype(dtype).unwrap();
            let y = model.forward_t(&x, false).unwrap();
            assert_eq!(y.dims(), io["y"].dims(), "{name}: output shape");
            let scale = io["y"]
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let err = max_abs_diff(&y, &io["y"]);
            eprintln!("{name} {dtype:?}: max |diff| {err:.2e}, max |y| {scale:.3}");
            assert!(
                err <= tol * scale.max(1.0),
                "{name} ({dtype:?}): max |diff| {err:e} > {tol:e} (max |y| {scale})"
            );
        }
    }
}

#[test]
fn default_configurations_have_the_reference_keys_and_sizes() {
    let defaults: [(&str, ModelConfig); 8] = [
        ("fcn", ModelConfig::Fcn(FcnConfig::maggiori(3, 2))),
        (
            "fcn_two_scale",
            ModelConfig::Fcn(FcnConfig::two_scale(3, 2)),
        ),
        ("mlpnet", ModelConfig::MlpNet(MlpNetConfig::maggiori(3, 2))),
        ("unet_half", ModelConfig::Unet(UNetConfig::half(3, 2))),
        ("unet_bench", ModelConfig::Unet(UNetConfig::bench(3, 2))),
        (
            "unet_original",
            ModelConfig::Unet(UNetConfig::original(3, 2)),
        ),
        (
            "ternaus",
            ModelConfig::Ternaus(TernausNetConfig::unet11(3, 1)),
        ),
        // smp.Unet("resnet18") itself (the script checks its reference against it)
        (
            "resnet_unet",
            ModelConfig::ResnetUnet(ResNetUNetConfig::resnet18(3, 2)),
        ),
    ];
    for (name, cfg) in defaults {
        let text = std::fs::read_to_string(fixture(&format!("{name}_defaults.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let reference: BTreeMap<String, Vec<usize>> = json["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                let key = kv[0].as_str().unwrap().to_string();
                let shape = kv[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (key, shape)
            })
            .collect();
        let (_, vm) = build(&cfg, DType::F32);
        let vars = vm.named_vars().unwrap();
        let ours: HashMap<String, Tensor> = state_dict_with_aliases(&vars, &aliases(&cfg)).unwrap();
        let ours: BTreeMap<String, Vec<usize>> = ours
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let only_ref: Vec<_> = reference
            .keys()
            .filter(|k| !ours.contains_key(*k))
            .collect();
        let only_ours: Vec<_> = ours
            .keys()
            .filter(|k| !reference.contains_key(*k))
            .collect();
        assert!(
            only_ref.is_empty() && only_ours.is_empty(),
            "{name}: keys only in PyTorch {only_ref:?}, only here {only_ours:?}"
        );
        assert_eq!(ours, reference, "{name}: shapes differ");
        // parameters = variables without batch-norm buffers
        let params: usize = vars
            .iter()
            .filter(|(n, _)| {
                !n.ends_with("running_mean")
                    && !n.ends_with("running_var")
                    && !n.ends_with("num_batches_tracked")
            })
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(
            params as u64,
            json["parameters"].as_u64().unwrap(),
            "{name}: parameter count"
        );
    }
}

#[test]
fn every_parameter_receives_a_gradient() {
    for name in CASES {
        let cfg = case(name);
        let (model, vm) = build(&cfg, DType::F32);
        let x = Tensor::randn(0f32, 1.0, (2, cfg.in_channels(), 35, 37), &Device::Cpu).unwrap();
        let y = model.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[2, cfg.classes(), 35, 37]);
        // a loss that depends on every logit non-trivially
        let w = Tensor::randn(0f32, 1.0, y.shape(), &Device::Cpu).unwrap();
        let loss = (y * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let params: Vec<_> = vm
            .named_vars()
            .unwrap()
            .into_iter()
            .filter(|(n, _)| !n.contains("running_") && !n.ends_with("num_batches_tracked"))
            .collect();
        canopy_nn::check_all_parameters_have_gradients(&params, &grads)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn wrong_inputs_and_weights_are_clear_errors() {
    let cfg = case("unet_bn");
    let (model, vm) = build(&cfg, DType::F32);
    let x = Tensor::zeros((1, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let e = model.forward_t(&x, false).unwrap_err().to_string();
    assert!(e.contains("3 input bands"), "{e}");
    let x = Tensor::zeros((3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let e = model.forward_t(&x, false).unwrap_err().to_string();
    assert!(e.contains("unsqueeze"), "{e}");
    // weights of another configuration
    let e = load_state_dict(
        fixture("unet_plain.safetensors"),
        &vm.named_vars().unwrap(),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unet_plain.safetensors") && e.contains("missing keys"),
        "{e}"
    );
    let e = load_state_dict(fixture("nope.safetensors"), &vm.named_vars().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    // a zero size in a configuration is a configuration error naming the field
    for (cfg, field) in [
        (
            ResNetUNetConfig {
                blocks: [2, 0, 2, 2],
                ..ResNetUNetConfig::resnet18(3, 2)
            },
            "blocks",
        ),
        (
            ResNetUNetConfig {
                decoder_channels: [256, 128, 0, 32, 16],
                ..ResNetUNetConfig::resnet18(3, 2)
            },
            "decoder_channels",
        ),
        (ResNetUNetConfig::resnet18(0, 2), "in_channels"),
    ] {
        let vm = SeededVarMap::new(0);
        let e = ModelConfig::ResnetUnet(cfg)
            .build(vm.var_builder(DType::F32, &Device::Cpu))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ResNetUNet") && e.contains(field), "{e}");
    }
}

#[test]
fn configurations_round_trip_through_json() {
    for name in CASES {
        let cfg = case(name);
        let text = serde_json::to_string(&cfg).unwrap();
        let back: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cfg, "{text}");
    }
}
