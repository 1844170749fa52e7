//! Times the 2-D convolutions of a network one layer at a time (forward, or forward + backward
//! with the weight gradient and, unless the layer is marked as the first, the input gradient),
//! and prints one tab-separated line per layer: its description and the median milliseconds.
//!
//! ```sh
//! cargo run --release -p canopy-nn --example conv_layers -- --preset resnet18-unet
//! cargo run --release -p canopy-nn --example conv_layers -- --preset fcn --forward-only
//! cargo run --release -p canopy-nn --example conv_layers -- --layers my_layers.txt
//! ```
//!
//! A layer is `C_in C_out K stride padding size [first]` (square kernel and input, batch
//! `--batch`); `first` drops the input gradient, as for a network's first layer.
//! `--print-layers` prints the list instead of timing it. `tools/bench_conv_layers_vs_torch.py`
//! times the same list with PyTorch and prints the ratios per layer.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use canopy_nn::ops::{conv2d, Conv2dConfig};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Built-in layer list: resnet18-unet (smp.Unet("resnet18") on 256 x 256, each distinct
    /// convolution once) or fcn (Maggiori et al.'s FCN on 256 x 256).
    #[arg(long, default_value = "resnet18-unet")]
    preset: String,
    /// A file of layers instead of a preset (one per line, `#` starts a comment).
    #[arg(long)]
    layers: Option<String>,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Timed repetitions per layer (median reported; one untimed run before).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Time the forward pass only.
    #[arg(long)]
    forward_only: bool,
    /// Print the layer list and exit.
    #[arg(long)]
    print_layers: bool,
}

const RESNET18_UNET: &str = "\
3 64 7 2 3 256 first
64 64 3 1 1 64
64 128 3 2 1 64
128 128 3 1 1 32
64 128 1 2 0 64
128 256 3 2 1 32
256 256 3 1 1 16
128 256 1 2 0 32
256 512 3 2 1 16
512 512 3 1 1 8
256 512 1 2 0 16
768 256 3 1 1 16
384 128 3 1 1 32
192 64 3 1 1 64
128 32 3 1 1 128
32 32 3 1 1 128
32 16 3 1 1 256
16 16 3 1 1 256
16 2 3 1 1 256
";

const FCN: &str = "\
3 64 12 4 4 256 first
64 112 4 1 2 64
112 80 3 1 1 65
80 2 9 1 4 65
";

#[derive(Debug, Clone, Copy)]
struct Layer {
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    size: usize,
    first: bool,
}

fn parse(text: &str) -> Result<Vec<Layer>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let first = words.get(6) == Some(&"first");
        let nums: Vec<usize> = words
            .iter()
            .take(6)
            .map(|w| w.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("line {}: {line:?} is not six sizes", i + 1))?;
        if nums.len() != 6 || words.len() > 7 || (words.len() == 7 && !first) {
            bail!(
                "line {}: {line:?}: want `C_in C_out K stride padding size [first]`",
                i + 1
            );
        }
        out.push(Layer {
            c_in: nums[0],
            c_out: nums[1],
            k: nums[2],
            stride: nums[3],
            padding: nums[4],
            size: nums[5],
            first,
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_layer(l: &Layer, batch: usize, repeat: usize, forward_only: bool) -> Result<f64> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (batch, l.c_in, l.size, l.size), &dev)?;
    let x = Var::from_tensor(&x)?;
    let w = Var::from_tensor(&Tensor::randn(
        0f32,
        0.1,
        (l.c_out, l.c_in, l.k, l.k),
        &dev,
    )?)?;
    let cfg = Conv2dConfig::square(l.stride, l.padding, 1, 1);
    let input = if l.first {
        x.as_tensor().detach()
    } else {
        x.as_tensor().clone()
    };
    let mut times = Vec::with_capacity(repeat);
    for i in 0..=repeat {
        let t0 = Instant::now();
        let y = conv2d(&input, w.as_tensor(), None, cfg)?;
        if forward_only {
            y.dims();
        } else {
            let grads = y.sum_all()?.backward()?;
            if grads.get(w.as_tensor()).is_none() {
                bail!("no weight gradient");
            }
        }
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(times))
}

fn main() -> Result<()> {
    canopy_nn::keep_freed_memory();
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    let text = match &args.layers {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => match args.preset.as_str() {
            "resnet18-unet" => RESNET18_UNET.to_string(),
            "fcn" => FCN.to_string(),
            other => bail!("unknown preset {other:?}; available: resnet18-unet, fcn"),
        },
    };
    let layers = parse(&text)?;
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let mut total = 0.0;
    for l in &layers {
        let desc = format!(
            "{} {} {} {} {} {}{}",
            l.c_in,
            l.c_out,
            l.k,
            l.stride,
            l.padding,
            l.size,
            if l.first { " first" } else { "" }
        );
        if args.print_layers {
            println!("{desc}");
            continue;
        }
        let ms = time_layer(l, args.batch, args.repeat, args.forward_only)?;
        total += ms;
        println!("{desc}\t{ms:.3}");
    }
    if !args.print_layers {
        println!("total\t{total:.3}");
    }
    Ok(())
}
