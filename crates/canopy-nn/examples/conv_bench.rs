//! Times 2-D convolution forward and forward+backward on the CPU: canopy's im2col path, the
//! reference gather, and candle's own `conv2d`, printing JSON lines with GFLOP/s.
//!
//! ```sh
//! cargo run --release -p canopy-nn --example conv_bench -- --batch 4 --channels 64 --size 256 --repeat 5
//! ```
//! `tools/bench_nn_vs_torch.py` runs this next to PyTorch and prints the ratios.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::ops::{conv2d, conv2d_reference, Conv2dConfig};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Input and output channels.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Height and width.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Implementations to time: canopy, reference, candle.
    #[arg(long, value_delimiter = ',', default_value = "canopy,candle")]
    which: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // the ops' parallel loops start on this thread (see canopy_nn::parallel)
    canopy_nn::use_calling_thread();
    let a = Args::parse();
    let dev = Device::Cpu;
    let (b, c, s) = (a.batch, a.channels, a.size);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, s, s), &dev)?)?;
    let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (c, c, 3, 3), &dev)? * 0.05)?)?;
    let flops = 2.0 * (b * c * c * 9 * s * s) as f64;
    let cfg = Conv2dConfig::square(1, 1, 1, 1);
    for which in &a.which {
        let f = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            Ok(match which.as_str() {
                "canopy" => conv2d(x, w, None, cfg)?,
                "reference" => conv2d_reference(x, w, None, cfg)?,
                _ => x.conv2d(w, 1, 1, 1, 1)?,
            })
        };
        f(x.as_tensor(), w.as_tensor())?; // warm-up
        let (mut fwd, mut both) = (Vec::new(), Vec::new());
        for _ in 0..a.repeat {
            let t = Instant::now();
            let y = f(x.as_tensor(), w.as_tensor())?;
            y.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            fwd.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let y = f(x.as_tensor(), w.as_tensor())?;
            let g = y.sum_all()?.backward()?;
            g.get(x.as_tensor()).map(|t| t.sum_all()).transpose()?;
            both.push(t.elapsed().as_secs_f64());
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (bf, bb) = (min(&fwd), min(&both));
        let (mf, mb) = (median(fwd), median(both));
        println!(
            "{{\"impl\":\"{which}\",\"shape\":[{b},{c},{s},{s}],\"fwd_s\":{mf:.4},\"fwd_gflops\":{:.1},\"fwd_bwd_s\":{mb:.4},\"fwd_bwd_gflops\":{:.1},\"fwd_min_s\":{bf:.4},\"fwd_bwd_min_s\":{bb:.4}}}",
            flops / mf / 1e9,
            3.0 * flops / mb / 1e9
        );
    }
    Ok(())
}
