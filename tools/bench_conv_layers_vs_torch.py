"""canopy's 2-D and 1-D convolutions vs PyTorch's, one layer at a time, on the same CPU.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/bench_conv_layers_vs_torch.py \
        [--preset resnet18-unet|fcn|msresnet] [--layers FILE [--conv1d]] [--forward-only] \
        [--rounds N] [--threads N]

The layer list comes from `cargo run --release -p canopy-nn --example conv_layers --
--print-layers` (a preset: every distinct convolution of smp.Unet("resnet18") or of Maggiori's
FCN on 256 x 256 inputs, batch 4, or every 1-D convolution of BreizhCrops' MS-ResNet, batch
256; or a file of `C_in C_out K stride padding size [first]` lines). The example's header line
gives the dimensionality and the batch. Rounds alternate that example (canopy) and the same
convolutions in PyTorch (no bias,
f32, 2 threads by default; forward, sum, backward for the weight and, except for a layer marked
`first`, the input). Prints per layer the median over rounds of each side's median
milliseconds and the ratio torch / canopy (> 1: canopy is faster); the last row sums the layers.
"""
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

args = sys.argv[1:]
preset, layers_file, forward_only, rounds, threads, repeat = "resnet18-unet", None, False, 3, 2, 7
conv1d_file = False
for i, a in enumerate(args):
    if a == "--conv1d":
        conv1d_file = True
    if a == "--preset":
        preset = args[i + 1]
    if a == "--layers":
        layers_file = args[i + 1]
    if a == "--rounds":
        rounds = int(args[i + 1])
    if a == "--threads":
        threads = int(args[i + 1])
    if a == "--forward-only":
        forward_only = True
torch.set_num_threads(threads)

subprocess.run(["cargo", "build", "-q", "--release", "-p", "canopy-nn", "--example", "conv_layers"],
               check=True)
exe = os.path.join("target", "release", "examples", "conv_layers")
select = ["--layers", layers_file] + (["--conv1d"] if conv1d_file else []) if layers_file \
    else ["--preset", preset]
env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
listed = subprocess.run([exe, *select, "--print-layers"], check=True, capture_output=True,
                        text=True, env=env).stdout.split("\n")
header = listed[0].split()  # "# conv2d batch 4"
one_d, batch = header[1] == "conv1d", int(header[3])
layers = [line.strip() for line in listed[1:] if line.strip()]


def canopy_round():
    cmd = [exe, *select, "--repeat", str(repeat)] + (["--forward-only"] if forward_only else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    times = {}
    for line in out.splitlines():
        if "\t" in line:
            desc, ms = line.split("\t")
            times[desc] = float(ms)
    return times


def torch_layer(desc):
    words = desc.split()
    ci, co, k, s, p, size = map(int, words[:6])
    first = len(words) > 6
    torch.manual_seed(0)
    spatial = (size,) if one_d else (size, size)
    conv = F.conv1d if one_d else F.conv2d
    x = torch.randn(batch, ci, *spatial, requires_grad=not first and not forward_only)
    w = (torch.randn(co, ci, *((k,) if one_d else (k, k))) * 0.1).requires_grad_(not forward_only)
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        if forward_only:
            with torch.no_grad():
                conv(x, w, None, s, p)
        else:
            conv(x, w, None, s, p).sum().backward()
            w.grad = None
            x.grad = None
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


ours = {d: [] for d in layers}
theirs = {d: [] for d in layers}
for r in range(rounds):
    c = canopy_round()
    for d in layers:
        ours[d].append(c[d])
        theirs[d].append(torch_layer(d))
    print(f"round {r + 1} done", file=sys.stderr)

what = "forward" if forward_only else "forward + backward"
print(f"{what}, conv{1 if one_d else 2}d, f32, batch {batch}, {threads} thread(s), {rounds} rounds "
      f"x {repeat} runs, torch {torch.__version__}")
print("| layer (C_in C_out K stride pad size) | canopy ms | torch ms | ratio |")
print("|---|---:|---:|---:|")
tot_o = tot_t = 0.0
for d in layers:
    o, t = statistics.median(ours[d]), statistics.median(theirs[d])
    tot_o, tot_t = tot_o + o, tot_t + t
    print(f"| {d} | {o:.2f} | {t:.2f} | {t / o:.2f}x |")
print(f"| total | {tot_o:.2f} | {tot_t:.2f} | {tot_t / tot_o:.2f}x |")
