//! Inference and training-step time of a U-Net at the peer benchmark's shapes, printed as one
//! JSON line per measurement (read by `tools/bench_segment_vs_torch.py`, which runs the same
//! work in PyTorch and prints ratios).
//!
//! `cargo run --release -p canopy-segment --example unet_throughput -- [--repeat N] [--model bench|half|fcn|mlpnet|resnet18] [--size 256] [--batch 4] [--system-malloc] [--inference-only] [--no-winograd] [--no-kn2row]`
//!
//! Inference: eval mode, `(B, 3, S, S)` -> logits, Mpx/s. Training step: train mode forward,
//! cross-entropy over 2 classes, backward, Adam (lr 1e-3) — `bench_unet.py`'s step. Like the
//! `canopy` CLI, it first calls `canopy_nn::keep_freed_memory` unless `--system-malloc` is given.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_segment::{FcnConfig, MlpNetConfig, ModelConfig, ResNetUNetConfig, UNetConfig};
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use canopy_train::optim::{param_groups, Adam, AdamConfig, Optimizer};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // As the `canopy` CLI does; `--system-malloc` measures glibc's default behaviour instead.
    if !std::env::args().any(|a| a == "--system-malloc") {
        canopy_nn::keep_freed_memory();
    }
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    if std::env::args().any(|a| a == "--no-winograd") {
        canopy_nn::ops::set_winograd_enabled(false);
    }
    // score layers (<= 4 classes, large kernels) on im2col instead of kn2row
    if std::env::args().any(|a| a == "--no-kn2row") {
        canopy_nn::ops::set_kn2row_enabled(false);
    }
    let repeat: usize = arg("--repeat", "5").parse()?;
    let size: usize = arg("--size", "256").parse()?;
    let batch: usize = arg("--batch", "4").parse()?;
    let name = arg("--model", "bench");
    let cfg = match name.as_str() {
        "bench" => ModelConfig::Unet(UNetConfig::bench(3, 2)),
        "half" => ModelConfig::Unet(UNetConfig::half(3, 2)),
        "fcn" => ModelConfig::Fcn(FcnConfig::maggiori(3, 2)),
        "mlpnet" => ModelConfig::MlpNet(MlpNetConfig::maggiori(3, 2)),
        "resnet18" => ModelConfig::ResnetUnet(ResNetUNetConfig::resnet18(3, 2)),
        other => anyhow::bail!("unknown --model {other}"),
    };
    let dev = Device::Cpu;
    let vm = SeededVarMap::new(0);
    let model = cfg.build(vm.var_builder(DType::F32, &dev))?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &dev)?;
    let y = Tensor::rand(0f32, 2.0, (batch, size, size), &dev)?
        .floor()?
        .to_dtype(DType::U32)?;
    let mpx = (batch * size * size) as f64 / 1e6;

    let mut times = Vec::new();
    for i in 0..repeat + 1 {
        let t = Instant::now();
        let out = model.forward_t(&x, false)?;
        out.flatten_all()?.sum_all()?.to_scalar::<f32>()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let inf = median(times);
    println!(
        "{{\"model\":\"{name}\",\"what\":\"inference\",\"seconds\":{inf},\"mpx_per_s\":{}}}",
        mpx / inf
    );

    if std::env::args().any(|a| a == "--inference-only") {
        return Ok(());
    }
    let params: Vec<_> = vm
        .named_vars()?
        .into_iter()
        .filter(|(n, _)| !n.contains("running_") && !n.ends_with("num_batches_tracked"))
        .collect();
    let mut opt = Adam::new(param_groups(params, &[])?, AdamConfig::default())?;
    let ce = CrossEntropyConfig::default();
    let mut times = Vec::new();
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..repeat + 1 {
        let t = Instant::now();
        let logits = model.forward_t(&x, true)?;
        let loss = cross_entropy(&logits, &y, &ce)?;
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t_bwd = t.elapsed().as_secs_f64();
        opt.step(&grads)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
            phases[0].push(t_fwd);
            phases[1].push(t_bwd - t_fwd);
            phases[2].push(t.elapsed().as_secs_f64() - t_bwd);
        }
    }
    let [fwd, bwd, opt_step] = phases.map(median);
    eprintln!(
        "training step phases (medians, s): forward + loss {fwd:.3}, backward {bwd:.3}, optimiser {opt_step:.3}"
    );
    let step = median(times);
    println!(
        "{{\"model\":\"{name}\",\"what\":\"train_step\",\"seconds\":{step},\"mpx_per_s\":{}}}",
        mpx / step
    );
    Ok(())
}
