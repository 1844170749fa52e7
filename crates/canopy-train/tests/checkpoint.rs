//! Checkpoints: atomic safetensors + JSON sidecar, strict loading, bit-exact reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common_fs;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{linear, Linear, VarBuilder};
use canopy_nn::init::SeededVarMap;
use canopy_train::checkpoint::{
    load_checkpoint, load_checkpoint_into, save_checkpoint, sidecar_path, CheckpointMeta,
    Normalisation,
};
use common_fs::file_names;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> Mlp {
        Mlp {
            fc1: linear(4, 8, vb.pp("fc1")).unwrap(),
            fc2: linear(8, 3, vb.pp("fc2")).unwrap(),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2
            .forward(&self.fc1.forward(x).unwrap().relu().unwrap())
            .unwrap()
    }
}

fn model(seed: u64) -> (SeededVarMap, Mlp) {
    let m = SeededVarMap::new(seed);
    let net = Mlp::new(m.var_builder(DType::F32, &Device::Cpu));
    (m, net)
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        config: serde_json::json!({"hidden": 8, "classes": 3}),
        class_names: vec!["water".into(), "forest".into(), "urban".into()],
        band_order: vec!["B02".into(), "B03".into(), "B04".into(), "B08".into()],
        normalisation: Some(Normalisation {
            mean: vec![0.1, 0.2, 0.3, 0.4],
            std: vec![1.0, 2.0, 3.0, 4.0],
        }),
        epoch: 7,
        step: 700,
        metrics: BTreeMap::from([("val_loss".to_string(), 0.25)]),
        optimizer_state: Some("last.optim.safetensors".into()),
        extra: serde_json::Value::Null,
    }
}

#[test]
fn reload_reproduces_outputs_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (vm, net) = model(1);
    let x = Tensor::arange(0f32, 20.0, &Device::Cpu)
        .unwrap()
        .reshape((5, 4))
        .unwrap();
    let y = net
        .forward(&x)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    save_checkpoint(&path, &vm.named_vars().unwrap(), &meta()).unwrap();

    let (vm2, net2) = model(2);
    let before = net2
        .forward(&x)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(before, y, "a fresh model should differ before loading");
    let m = load_checkpoint_into(&path, &vm2.named_vars().unwrap()).unwrap();
    let after = net2
        .forward(&x)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(after, y);
    assert_eq!(m, meta());

    // PyTorch key names, the sidecar next to the weights, no temporary files left behind.
    let (tensors, _) = load_checkpoint(&path, &Device::Cpu).unwrap();
    let mut keys: Vec<_> = tensors.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    assert_eq!(tensors["fc1.weight"].dims(), &[8, 4]);
    assert!(sidecar_path(&path).ends_with("model.json"));
    assert_eq!(file_names(dir.path()), ["model.json", "model.safetensors"]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sidecar_path(&path)).unwrap()).unwrap();
    assert_eq!(json["band_order"][3], "B08");
    assert_eq!(json["epoch"], 7);
}

#[test]
fn overwriting_replaces_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let (vm, _) = model(1);
    save_checkpoint(&path, &vm.named_vars().unwrap(), &meta()).unwrap();
    let (vm2, _) = model(2);
    let m2 = CheckpointMeta { epoch: 8, ..meta() };
    save_checkpoint(&path, &vm2.named_vars().unwrap(), &m2).unwrap();
    let (t, m) = load_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(m.epoch, 8);
    let want = vm2.named_vars().unwrap()[0]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = t["fc1.bias"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn strict_loading_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let (vm, _) = model(1);
    let vars = vm.named_vars().unwrap();
    save_checkpoint(&path, &vars, &CheckpointMeta::default()).unwrap();

    // A model with an extra variable: missing key.
    let mut more = vars.clone();
    more.push((
        "fc3.weight".into(),
        Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    ));
    let err = load_checkpoint_into(&path, &more).unwrap_err().to_string();
    assert!(
        err.contains("fc3.weight") && err.contains("m.safetensors"),
        "{err}"
    );

    // A model lacking a variable: unused key.
    let err = load_checkpoint_into(&path, &vars[1..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc1.bias"), "{err}");

    // Same names, other shape.
    let mut other = vars.clone();
    other[0].1 = Var::zeros(5, DType::F32, &Device::Cpu).unwrap();
    let err = load_checkpoint_into(&path, &other).unwrap_err().to_string();
    assert!(err.contains("fc1.bias") && err.contains("[5]"), "{err}");

    // Missing sidecar / file.
    std::fs::remove_file(sidecar_path(&path)).unwrap();
    assert!(load_checkpoint(&path, &Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("m.json"));
    assert!(load_checkpoint(dir.path().join("nope.safetensors"), &Device::Cpu).is_err());
}

#[test]
fn failed_writes_name_the_file_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (vm, _) = model(1);
    let path = dir.path().join("missing_folder").join("m.safetensors");
    let err = save_checkpoint(&path, &vm.named_vars().unwrap(), &meta())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing_folder"), "{err}");
    // A directory in the way of the sidecar: the weights land, the sidecar write fails cleanly.
    let path = dir.path().join("w.safetensors");
    std::fs::create_dir(dir.path().join("w.json")).unwrap();
    let err = save_checkpoint(&path, &vm.named_vars().unwrap(), &meta())
        .unwrap_err()
        .to_string();
    assert!(err.contains("w.json"), "{err}");
    assert_eq!(
        file_names(dir.path()),
        ["w.json", "w.safetensors"],
        "temporary files left behind"
    );
    // Duplicate names are refused.
    let mut twice = vm.named_vars().unwrap();
    twice.push(twice[0].clone());
    assert!(save_checkpoint(dir.path().join("d.safetensors"), &twice, &meta()).is_err());
}
