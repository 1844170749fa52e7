//! Times canopy-nn's operators and blocks on the CPU, forward and forward+backward, on the
//! shapes issue 3 names (the time-series and segmentation workloads), printing one JSON line per
//! case with median and best times.
//!
//! ```sh
//! cargo run --release -p canopy-nn --example nn_bench -- --repeat 7
//! cargo run --release -p canopy-nn --example nn_bench -- --cases lstm,attention
//! ```
//! `tools/bench_nn_vs_torch.py` runs this next to the same PyTorch code and prints the ratios.
//!
//! Cases (f32; "loss" = sum of the output, so backward computes every input/weight gradient):
//! - `conv2d`: 64->64 3x3 pad 1 on 4x64x256x256 (`--quick`: 2x32x128x128)
//! - `conv1d`: 128->128 k7 pad 3 on (256, 128, 45)
//! - `lstm`: one LSTM layer, 128 -> 128 hidden, on (256, 45, 128)
//! - `attention`: self-attention, embed 64, 2 heads, on (256, 45, 64)
//! - `convlstm`: one ConvLSTM step, 13 -> 64 hidden, 3x3, on (16, 13, 24, 24)
//! - `batchnorm`: batch normalisation in training mode + ReLU on (256, 32, 256) (MS-ResNet's
//!   stem; not in the default list)

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::attention::MultiheadAttention;
use canopy_nn::conv_rnn::ConvLstmCell;
use canopy_nn::ops::{conv1d, conv2d, Axis1, Conv1dConfig, Conv2dConfig};
use canopy_nn::rnn::{Lstm, LstmConfig};
use canopy_nn::SeededVarMap;
use clap::Parser;
use rand::SeedableRng;

#[derive(Parser, Debug)]
struct Args {
    /// Timed repetitions per case (median and best reported).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Cases to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "conv2d,conv1d,lstm,attention,convlstm"
    )]
    cases: Vec<String>,
    /// Smaller conv2d shape (2x32x128x128).
    #[arg(long)]
    quick: bool,
    /// Keep glibc's default allocator settings instead of calling
    /// `canopy_nn::allocator::keep_freed_memory` (as the training examples and the CLI do).
    #[arg(long)]
    default_allocator: bool,
    /// Time the forward passes only (for profiling a forward kernel).
    #[arg(long)]
    forward_only: bool,
    /// Run LSTM layers on the portable path (`gemm` + gate pass) instead of the fused AVX-512
    /// kernel, for a comparison in one build (`canopy_nn::ops::set_fused_lstm_enabled`).
    #[arg(long)]
    no_fused_lstm: bool,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

/// Times `f` (forward) and `f` + backward of the summed output; gradients of `vars` are read so
/// nothing is skipped.
fn time_case(
    name: &str,
    (repeat, forward_only): (usize, bool),
    vars: &[&Var],
    f: &dyn Fn() -> Result<Tensor>,
) -> Result<()> {
    f()?.sum_all()?.to_scalar::<f32>()?; // warm-up
    let (mut fwd, mut both) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let t = Instant::now();
        f()?.sum_all()?.to_scalar::<f32>()?;
        fwd.push(t.elapsed().as_secs_f64());
        if forward_only {
            continue;
        }
        let t = Instant::now();
        let g = f()?.sum_all()?.backward()?;
        for v in vars {
            if let Some(gv) = g.get(v.as_tensor()) {
                gv.sum_all()?.to_scalar::<f32>()?;
            }
        }
        both.push(t.elapsed().as_secs_f64());
    }
    let (mf, bf) = stats(fwd);
    if forward_only {
        println!("{{\"case\":\"{name}\",\"fwd_s\":{mf:.5},\"fwd_min_s\":{bf:.5}}}");
        return Ok(());
    }
    let (mb, bb) = stats(both);
    println!(
        "{{\"case\":\"{name}\",\"fwd_s\":{mf:.5},\"fwd_min_s\":{bf:.5},\"fwd_bwd_s\":{mb:.5},\"fwd_bwd_min_s\":{bb:.5}}}"
    );
    Ok(())
}

fn randn(shape: &[usize], scale: f64, dev: &Device) -> Result<Var> {
    Ok(Var::from_tensor(
        &(Tensor::randn(0f32, 1.0, shape, dev)? * scale)?,
    )?)
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.no_fused_lstm {
        canopy_nn::ops::set_fused_lstm_enabled(false);
    }
    if !a.default_allocator {
        // as the training examples and the CLI do
        canopy_nn::allocator::keep_freed_memory();
    }
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for case in &a.cases {
        match case.as_str() {
            "conv2d" => {
                let (b, c, s) = if a.quick { (2, 32, 128) } else { (4, 64, 256) };
                let x = randn(&[b, c, s, s], 1.0, &dev)?;
                let w = randn(&[c, c, 3, 3], 0.05, &dev)?;
                let cfg = Conv2dConfig::square(1, 1, 1, 1);
                time_case(case, (a.repeat, a.forward_only), &[&x, &w], &|| {
                    Ok(conv2d(x.as_tensor(), w.as_tensor(), None, cfg)?)
                })?;
            }
            "conv1d" => {
                let x = randn(&[256, 128, 45], 1.0, &dev)?;
                let w = randn(&[128, 128, 7], 0.03, &dev)?;
                let bias = randn(&[128], 0.1, &dev)?;
                let cfg = Conv1dConfig {
                    axis: Axis1 {
                        stride: 1,
                        padding: 3,
                        dilation: 1,
                    },
                    groups: 1,
                };
                time_case(case, (a.repeat, a.forward_only), &[&x, &w, &bias], &|| {
                    Ok(conv1d(
                        x.as_tensor(),
                        w.as_tensor(),
                        Some(bias.as_tensor()),
                        cfg,
                    )?)
                })?;
            }
            "lstm" => {
                let store = SeededVarMap::new(0);
                let cfg = LstmConfig {
                    input_size: 128,
                    hidden_size: 128,
                    ..Default::default()
                };
                let lstm = Lstm::new(&cfg, store.var_builder(DType::F32, &dev))?;
                let x = randn(&[256, 45, 128], 1.0, &dev)?;
                let vars = store.all_vars()?;
                let mut refs: Vec<&Var> = vars.iter().collect();
                refs.push(&x);
                let rng = std::cell::RefCell::new(&mut rng);
                time_case(case, (a.repeat, a.forward_only), &refs, &|| {
                    Ok(lstm
                        .forward_t(x.as_tensor(), None, true, *rng.borrow_mut())?
                        .output)
                })?;
            }
            "attention" => {
                let store = SeededVarMap::new(1);
                let mha = MultiheadAttention::new(64, 2, 0.0, store.var_builder(DType::F32, &dev))?;
                let x = randn(&[256, 45, 64], 1.0, &dev)?;
                let vars = store.all_vars()?;
                let mut refs: Vec<&Var> = vars.iter().collect();
                refs.push(&x);
                let rng = std::cell::RefCell::new(&mut rng);
                time_case(case, (a.repeat, a.forward_only), &refs, &|| {
                    let xt = x.as_tensor();
                    Ok(mha
                        .forward_t(xt, xt, xt, None, false, true, *rng.borrow_mut())?
                        .0)
                })?;
            }
            "convlstm" => {
                let store = SeededVarMap::new(2);
                let cell = ConvLstmCell::new(13, 64, 3, true, store.var_builder(DType::F32, &dev))?;
                let x = randn(&[16, 13, 24, 24], 1.0, &dev)?;
                let h = randn(&[16, 64, 24, 24], 0.5, &dev)?;
                let c = randn(&[16, 64, 24, 24], 0.5, &dev)?;
                let vars = store.all_vars()?;
                let mut refs: Vec<&Var> = vars.iter().collect();
                refs.extend([&x, &h, &c]);
                time_case(case, (a.repeat, a.forward_only), &refs, &|| {
                    let (h2, c2) = cell.step(x.as_tensor(), h.as_tensor(), c.as_tensor())?;
                    Ok((h2 + c2)?)
                })?;
            }
            "batchnorm" => {
                let x = randn(&[256, 32, 256], 1.0, &dev)?;
                let w = randn(&[32], 0.5, &dev)?;
                let bias = randn(&[32], 0.1, &dev)?;
                time_case(case, (a.repeat, a.forward_only), &[&x, &w, &bias], &|| {
                    let (y, _, _) = canopy_nn::ops::batch_norm_train(
                        x.as_tensor(),
                        w.as_tensor(),
                        bias.as_tensor(),
                        1e-5,
                        true,
                    )?;
                    Ok(y)
                })?;
            }
            other => anyhow::bail!(
                "unknown case {other:?}: use conv2d, conv1d, lstm, attention, convlstm, batchnorm"
            ),
        }
    }
    Ok(())
}
