//! Inference and training-step timing of the BreizhCrops LSTM and Transformer classifiers at the
//! reference benchmark settings (batch 256, T = 45, 13 bands, 9 classes, f32), with an optional
//! breakdown of where the time goes.
//!
//! ```text
//! cargo run --release -p canopy-temporal --example rnn_profile -- [--model lstm|transformer] [--quick] [--breakdown]
//! ```
//!
//! Training step = forward (train mode) + cross-entropy + backward + Adam step. Each number is
//! the median over several runs after a warm-up. Compare with
//! `tools/bench_rnn_models_vs_torch.py` on the same machine in the same session.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use canopy_nn::attention::MultiheadAttention;
use canopy_nn::ops::LayerNorm;
use canopy_nn::rnn::{Lstm, LstmConfig};
use canopy_nn::{linear, SeededVarMap};
use canopy_temporal::{
    LstmClassifier, LstmClassifierConfig, SeriesClassifier, TransformerClassifier,
    TransformerClassifierConfig,
};
use canopy_train::loss::{cross_entropy, CrossEntropyConfig};
use canopy_train::optim::{param_groups, Adam, AdamConfig, Optimizer};
use rand::rngs::StdRng;
use rand::SeedableRng;

const BATCH: usize = 256;
const T: usize = 45;
const C: usize = 13;
const K: usize = 9;

/// Median wall time in milliseconds of `runs` calls after `warm` warm-up calls.
fn median_ms(warm: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

fn input(dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::randn(0f32, 1f32, (BATCH, T, C), dev)?;
    let y: Vec<u32> = (0..BATCH as u32).map(|i| (i * 7 + 3) % K as u32).collect();
    Ok((x, Tensor::from_vec(y, BATCH, dev)?))
}

fn bench_model(name: &str, warm: usize, runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let vm = SeededVarMap::new(0);
    let vb = vm.var_builder(DType::F32, &dev);
    let model: Box<dyn SeriesClassifier> = match name {
        "lstm" => Box::new(LstmClassifier::new(
            &LstmClassifierConfig::breizhcrops(C, K),
            vb,
        )?),
        _ => Box::new(TransformerClassifier::new(
            &TransformerClassifierConfig::breizhcrops(C, K),
            vb,
        )?),
    };
    let (x, y) = input(&dev)?;
    let mut rng = StdRng::seed_from_u64(0);
    let infer = median_ms(warm, runs, || {
        let l = model.forward_t(&x, false, &mut rng)?;
        l.to_vec2::<f32>()?;
        Ok(())
    })?;
    let mut opt = Adam::new(param_groups(vm.named_vars()?, &[])?, AdamConfig::adam(1e-3))?;
    let ce = CrossEntropyConfig::default();
    let train = median_ms(warm, runs, || {
        let logits = model.forward_t(&x, true, &mut rng)?;
        let loss = cross_entropy(&logits, &y, &ce)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        Ok(())
    })?;
    println!(
        "{name:<12} inference {infer:8.2} ms {:9.1} samples/s | train step {train:8.2} ms {:9.1} samples/s",
        BATCH as f64 / infer * 1e3,
        BATCH as f64 / train * 1e3
    );
    Ok(())
}

/// Forward and forward+backward time of `f` (the backward of the sum of its output).
fn fwd_bwd(
    label: &str,
    warm: usize,
    runs: usize,
    repeat: usize,
    mut f: impl FnMut() -> Result<Tensor>,
) -> Result<(f64, f64)> {
    let fwd = median_ms(warm, runs, || {
        f()?;
        Ok(())
    })?;
    let both = median_ms(warm, runs, || {
        let y = f()?;
        y.sum_all()?.backward()?;
        Ok(())
    })?;
    let r = repeat as f64;
    println!(
        "  {label:<40} fwd {:8.2} ms  bwd {:8.2} ms  (x{repeat}: fwd {:8.2}, bwd {:8.2})",
        fwd,
        both - fwd,
        fwd * r,
        (both - fwd) * r
    );
    Ok((fwd * r, (both - fwd) * r))
}

fn breakdown_lstm(warm: usize, runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    println!(
        "LSTM breakdown (B {BATCH}, T {T}, hidden 128, bidirectional, layers as 1-layer stacks):"
    );
    let (x, _) = input(&dev)?;
    let vm = SeededVarMap::new(0);
    let vb = vm.var_builder(DType::F32, &dev);
    let norm = LayerNorm::new(C, 1e-5, true, vb.pp("in"))?;
    let xv = candle_core::Var::from_tensor(&x)?;
    fwd_bwd("input layer norm (13)", warm, runs, 1, || {
        Ok(norm.forward(xv.as_tensor())?)
    })?;
    let mut rng = StdRng::seed_from_u64(0);
    for (k, c) in [(0usize, C), (1, 256), (2, 256), (3, 256)] {
        let lstm = Lstm::new(
            &LstmConfig {
                input_size: c,
                hidden_size: 128,
                num_layers: 1,
                bias: false,
                dropout: 0.0,
                bidirectional: true,
            },
            vb.pp(format!("l{k}")),
        )?;
        let xin = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1f32, (BATCH, T, c), &dev)?)?;
        fwd_bwd(&format!("lstm layer {k} (in {c})"), warm, runs, 1, || {
            let out = lstm.forward_t(xin.as_tensor(), None, true, &mut rng)?;
            // the classifier uses the final cell states and the last layer's outputs
            let c_n = out.c_n.ok_or_else(|| anyhow::anyhow!("no cell state"))?;
            Ok((out.output.sum_all()? + c_n.sum_all()?)?)
        })?;
    }
    let head_norm = LayerNorm::new(1024, 1e-5, true, vb.pp("cn"))?;
    let head = linear(1024, K, true, vb.pp("head"))?;
    let hin = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1f32, (BATCH, 1024), &dev)?)?;
    fwd_bwd("head (layer norm 1024 + linear)", warm, runs, 1, || {
        Ok(candle_core::Module::forward(
            &head,
            &head_norm.forward(hin.as_tensor())?,
        )?)
    })?;
    Ok(())
}

fn breakdown_transformer(warm: usize, runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let (d, heads, inner, layers) = (64usize, 2usize, 128usize, 5usize);
    println!("Transformer breakdown (B {BATCH}, T {T}, d_model {d}, {heads} heads, d_inner {inner}; x{layers} = per model):");
    let vm = SeededVarMap::new(0);
    let vb = vm.var_builder(DType::F32, &dev);
    let h = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1f32, (BATCH, T, d), &dev)?)?;
    let mut rng = StdRng::seed_from_u64(0);
    let dropout = TransformerClassifierConfig::breizhcrops(C, K).dropout;
    let mha = MultiheadAttention::new(d, heads, dropout, vb.pp("mha"))?;
    let mut tot = (0.0, 0.0);
    let mut add = |a: (f64, f64)| {
        tot.0 += a.0;
        tot.1 += a.1;
    };
    add(fwd_bwd(
        "self-attention (eval: fused)",
        warm,
        runs,
        layers,
        || {
            let x = h.as_tensor();
            Ok(mha.forward_t(x, x, x, None, true, false, &mut rng)?.0)
        },
    )?);
    let mut rng2 = StdRng::seed_from_u64(1);
    fwd_bwd(
        "self-attention (train, dropout)",
        warm,
        runs,
        layers,
        || {
            let x = h.as_tensor();
            Ok(mha.forward_t(x, x, x, None, true, true, &mut rng2)?.0)
        },
    )?;
    let l1 = linear(d, inner, true, vb.pp("l1"))?;
    let l2 = linear(inner, d, true, vb.pp("l2"))?;
    add(fwd_bwd(
        "feed-forward (linear-relu-linear)",
        warm,
        runs,
        layers,
        || {
            let y = candle_core::Module::forward(&l1, h.as_tensor())?.relu()?;
            Ok(candle_core::Module::forward(&l2, &y)?)
        },
    )?);
    let n = LayerNorm::new(d, 1e-5, true, vb.pp("n"))?;
    add(fwd_bwd(
        "layer norm + residual add (x2 per layer)",
        warm,
        runs,
        2 * layers,
        || Ok(n.forward(&(h.as_tensor() + h.as_tensor())?)?),
    )?);
    println!(
        "  sum of parts (eval attention): fwd {:.2} ms, bwd {:.2} ms",
        tot.0, tot.1
    );
    Ok(())
}

fn main() -> Result<()> {
    // as the training examples and the CLI do: freed tensor buffers stay in the process
    canopy_nn::allocator::keep_freed_memory();
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let breakdown = args.iter().any(|a| a == "--breakdown");
    let model = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1).cloned());
    let (warm, runs) = if quick { (1, 5) } else { (2, 11) };
    println!(
        "batch {BATCH}, T {T}, C {C}, K {K}, f32, cores {}, RAYON_NUM_THREADS={:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::var("RAYON_NUM_THREADS").ok()
    );
    let models: Vec<&str> = match model.as_deref() {
        Some("lstm") => vec!["lstm"],
        Some("transformer") => vec!["transformer"],
        Some(other) => anyhow::bail!("unknown model {other} (lstm|transformer)"),
        None => vec!["lstm", "transformer"],
    };
    for m in models {
        bench_model(m, warm, runs)?;
        if breakdown {
            match m {
                "lstm" => breakdown_lstm(warm, runs)?,
                _ => breakdown_transformer(warm, runs)?,
            }
        }
    }
    Ok(())
}
