//! Times the 2-D or 1-D convolutions of a network one layer at a time (forward, or forward +
//! backward with the weight gradient and, unless the layer is marked as the first, the input
//! gradient), and prints one tab-separated line per layer: its description and the median
//! milliseconds.
//!
//! ```sh
//! cargo run --release -p canopy-nn --example conv_layers -- --preset resnet18-unet
//! cargo run --release -p canopy-nn --example conv_layers -- --preset fcn --forward-only
//! cargo run --release -p canopy-nn --example conv_layers -- --preset msresnet --forward-only
//! cargo run --release -p canopy-nn --example conv_layers -- --layers my_layers.txt [--conv1d]
//! ```
//!
//! A layer is `C_in C_out K stride padding size [first]` (square kernel and input for 2-D, a
//! series of `size` steps for 1-D; batch `--batch`, by default 4 for 2-D and 256 for 1-D);
//! `first` drops the input gradient, as for a network's first layer. `--print-layers` prints
//! the list instead of timing it, after a `# conv2d batch 4` (or `# conv1d ...`) header line.
//! `tools/bench_conv_layers_vs_torch.py` times the same list with PyTorch and prints the ratios
//! per layer.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use canopy_nn::ops::{conv1d, conv2d, Axis1, Conv1dConfig, Conv2dConfig};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Built-in layer list: resnet18-unet (smp.Unet("resnet18") on 256 x 256, each distinct
    /// convolution once), fcn (Maggiori et al.'s FCN on 256 x 256) or msresnet (every 1-D
    /// convolution of BreizhCrops' MS-ResNet on a series stretched to 512 steps, in the order
    /// the model runs them) or inceptiontime (the distinct 1-D convolutions of BreizhCrops'
    /// InceptionTime on 45 steps).
    #[arg(long, default_value = "resnet18-unet")]
    preset: String,
    /// A file of layers instead of a preset (one per line, `#` starts a comment).
    #[arg(long)]
    layers: Option<String>,
    /// The layers of `--layers` are 1-D convolutions.
    #[arg(long)]
    conv1d: bool,
    /// Batch size (default: 4 for 2-D layers, 256 for 1-D ones).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed repetitions per layer (median reported; one untimed run before).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Time the forward pass only.
    #[arg(long)]
    forward_only: bool,
    /// For 1-D layers: time each layer with and without the direct f32 kernel
    /// (`canopy_nn::ops::set_direct_conv1d_enabled`), the two alternated run by run, and print
    /// both medians (without, then with).
    #[arg(long)]
    ab_direct: bool,
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

/// MS-ResNet (hidden 32, 13 bands): the stem, then for kernels 3, 5 and 7 the three stages'
/// stride-2 convolution, stride-1 convolution and pointwise stride-2 shortcut.
const MSRESNET: &str = "\
13 32 7 2 3 512 first
32 32 3 2 1 128
32 32 3 1 1 64
32 32 1 2 0 128
32 64 3 2 1 64
64 64 3 1 1 32
32 64 1 2 0 64
64 128 3 2 1 32
128 128 3 1 1 16
64 128 1 2 0 32
32 32 5 2 1 128
32 32 5 1 1 63
32 32 1 2 0 128
32 64 5 2 1 61
64 64 5 1 1 30
32 64 1 2 0 61
64 128 5 2 1 28
128 128 5 1 1 13
64 128 1 2 0 28
32 32 7 2 1 128
32 32 7 1 1 62
32 32 1 2 0 128
32 64 7 2 1 58
64 64 7 1 1 27
32 64 1 2 0 58
64 128 7 2 1 23
128 128 7 1 1 10
64 128 1 2 0 23
";

/// InceptionTime (BreizhCrops preset, 13 bands, 45 steps): the distinct convolutions of its
/// modules (the first module's bottleneck and pool convolution read the 13 bands).
const INCEPTIONTIME: &str = "\
13 32 1 1 0 45 first
128 32 1 1 0 45
32 32 41 1 20 45
32 32 21 1 10 45
32 32 11 1 5 45
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

fn time_layer(
    l: &Layer,
    one_d: bool,
    batch: usize,
    repeat: usize,
    forward_only: bool,
    ab: bool,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let (x_shape, w_shape): (Vec<usize>, Vec<usize>) = if one_d {
        (vec![batch, l.c_in, l.size], vec![l.c_out, l.c_in, l.k])
    } else {
        (
            vec![batch, l.c_in, l.size, l.size],
            vec![l.c_out, l.c_in, l.k, l.k],
        )
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, x_shape, &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, w_shape, &dev)?)?;
    let cfg = Conv2dConfig::square(l.stride, l.padding, 1, 1);
    let cfg1 = Conv1dConfig {
        axis: Axis1 {
            stride: l.stride,
            padding: l.padding,
            dilation: 1,
        },
        groups: 1,
    };
    let input = if l.first {
        x.as_tensor().detach()
    } else {
        x.as_tensor().clone()
    };
    let mut times = Vec::with_capacity(repeat);
    let mut times_b = Vec::with_capacity(repeat);
    for i in 0..=repeat * (1 + usize::from(ab)) + usize::from(ab) {
        let second = ab && i % 2 == 1;
        canopy_nn::ops::set_direct_conv1d_enabled(!ab || second);
        let t0 = Instant::now();
        let y = if one_d {
            conv1d(&input, w.as_tensor(), None, cfg1)?
        } else {
            conv2d(&input, w.as_tensor(), None, cfg)?
        };
        if forward_only {
            y.dims();
        } else {
            let grads = y.sum_all()?.backward()?;
            if grads.get(w.as_tensor()).is_none() {
                bail!("no weight gradient");
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if i > usize::from(ab) {
            if second {
                times_b.push(ms);
            } else {
                times.push(ms);
            }
        }
    }
    canopy_nn::ops::set_direct_conv1d_enabled(true);
    Ok((median(times), if ab { median(times_b) } else { 0.0 }))
}

fn main() -> Result<()> {
    canopy_nn::keep_freed_memory();
    canopy_nn::use_calling_thread();
    let args = Args::parse();
    let (text, one_d) = match &args.layers {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
            args.conv1d,
        ),
        None => match args.preset.as_str() {
            "resnet18-unet" => (RESNET18_UNET.to_string(), false),
            "fcn" => (FCN.to_string(), false),
            "msresnet" => (MSRESNET.to_string(), true),
            "inceptiontime" => (INCEPTIONTIME.to_string(), true),
            other => bail!(
                "unknown preset {other:?}; available: resnet18-unet, fcn, msresnet, inceptiontime"
            ),
        },
    };
    let batch = args.batch.unwrap_or(if one_d { 256 } else { 4 });
    let layers = parse(&text)?;
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let (mut total, mut total_b) = (0.0, 0.0);
    let ab = args.ab_direct && !args.print_layers;
    if ab && !one_d {
        bail!("--ab-direct compares 1-D kernels; choose a 1-D preset or --conv1d");
    }
    if args.print_layers {
        println!("# conv{}d batch {batch}", if one_d { 1 } else { 2 });
    }
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
        let (ms, ms_b) = time_layer(l, one_d, batch, args.repeat, args.forward_only, ab)?;
        total += ms;
        total_b += ms_b;
        if ab {
            println!("{desc}\t{ms:.3}\t{ms_b:.3}");
        } else {
            println!("{desc}\t{ms:.3}");
        }
    }
    if ab {
        println!("total\t{total:.3}\t{total_b:.3}");
    } else if !args.print_layers {
        println!("total\t{total:.3}");
    }
    Ok(())
}
