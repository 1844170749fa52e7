"""canopy-nn convolution vs PyTorch on the same CPU, one run, ratios printed.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/bench_nn_vs_torch.py [--quick]
Builds and runs `cargo run --release -p canopy-nn --example conv_bench` (canopy's im2col path
and candle's own conv2d) and times torch.nn.functional.conv2d with 2 threads on the same shape
(4x64x256x256, 64->64, 3x3, padding 1; --quick: 2x32x128x128), forward and forward+backward,
alternating the tools over rounds. Prints a markdown table of medians and ratios.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

torch.set_num_threads(2)
quick = "--quick" in sys.argv
B, C, S = (2, 32, 128) if quick else (4, 64, 256)
ROUNDS = 3
flops = 2.0 * B * C * C * 9 * S * S


def torch_times(repeat=5):
    x = torch.randn(B, C, S, S, requires_grad=True)
    w = (torch.randn(C, C, 3, 3) * 0.05).requires_grad_(True)
    torch.nn.functional.conv2d(x, w, padding=1)
    fwd, both = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, padding=1).sum().item()
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        y = torch.nn.functional.conv2d(x, w, padding=1)
        y.sum().backward()
        x.grad.sum().item()
        both.append(time.perf_counter() - t)
        x.grad = None
        w.grad = None
    return statistics.median(fwd), statistics.median(both)


def canopy_times():
    cmd = ["cargo", "run", "-q", "--release", "-p", "canopy-nn", "--example", "conv_bench", "--",
           "--batch", str(B), "--channels", str(C), "--size", str(S), "--repeat", "5", "--which", "canopy,candle"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["impl"]: (r["fwd_s"], r["fwd_bwd_s"]) for r in map(json.loads, out.strip().splitlines())}


res = {"torch": [], "canopy": [], "candle": []}
for _ in range(ROUNDS):
    res["torch"].append(torch_times())
    c = canopy_times()
    res["canopy"].append(c["canopy"])
    res["candle"].append(c["candle"])
med = {k: (statistics.median(v[0] for v in r), statistics.median(v[1] for v in r)) for k, r in res.items()}
load = os.getloadavg()[0]
print(f"conv2d {C}->{C} 3x3 pad 1 on {B}x{C}x{S}x{S} f32, 2 threads, {ROUNDS} rounds x 5 runs, load {load:.2f}, torch {torch.__version__}")
print("| impl | forward | GFLOP/s | fwd+bwd | GFLOP/s | fwd ratio vs torch | fwd+bwd ratio vs torch |")
print("|---|---|---|---|---|---|---|")
tf, tb = med["torch"]
for k in ("torch", "canopy", "candle"):
    f, b = med[k]
    print(f"| {k} | {f*1e3:.1f} ms | {flops/f/1e9:.1f} | {b*1e3:.1f} ms | {3*flops/b/1e9:.1f} | {tf/f:.2f}x | {tb/b:.2f}x |")
