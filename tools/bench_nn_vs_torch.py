"""canopy-nn vs PyTorch on the same CPU, one run, ratios printed.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/bench_nn_vs_torch.py [--quick] [--cases a,b] [--rounds N] [--threads N]

For each case it alternates rounds of `cargo run --release -p canopy-nn --example nn_bench`
(canopy) and the same computation in PyTorch, both with 2 threads (--threads: torch
set_num_threads and RAYON_NUM_THREADS; 1 thread is less sensitive to other load), then prints a markdown table of
medians (over rounds, of per-round medians) and ratios torch_time / canopy_time (> 1: canopy is
faster). Cases and shapes are those of issue 3 (see crates/canopy-nn/examples/nn_bench.rs):
conv2d 64->64 3x3 on 4x64x256x256 (--quick: 2x32x128x128), conv1d 128->128 k7 on (256,128,45),
one LSTM layer 128->128 on (256,45,128), self-attention d64 2 heads on (256,45,64), and one
ConvLSTM step 13->64 3x3 on (16,13,24,24). "fwd+bwd" = forward, sum, backward for every input
and weight. f32 everywhere.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

args = sys.argv[1:]
quick = "--quick" in args
threads = 2
cases = ["conv2d", "conv1d", "lstm", "attention", "convlstm"]
rounds = 3
for i, a in enumerate(args):
    if a == "--cases":
        cases = args[i + 1].split(",")
    if a == "--rounds":
        rounds = int(args[i + 1])
    if a == "--threads":
        threads = int(args[i + 1])
torch.set_num_threads(threads)
REPEAT = 7


def make(case):
    """Returns (forward closure, leaf tensors needing grad)."""
    torch.manual_seed(0)
    if case == "conv2d":
        b, c, s = (2, 32, 128) if quick else (4, 64, 256)
        x = torch.randn(b, c, s, s, requires_grad=True)
        w = (torch.randn(c, c, 3, 3) * 0.05).requires_grad_(True)
        return (lambda: torch.nn.functional.conv2d(x, w, padding=1)), [x, w]
    if case == "conv1d":
        x = torch.randn(256, 128, 45, requires_grad=True)
        w = (torch.randn(128, 128, 7) * 0.03).requires_grad_(True)
        bias = (torch.randn(128) * 0.1).requires_grad_(True)
        return (lambda: torch.nn.functional.conv1d(x, w, bias, padding=3)), [x, w, bias]
    if case == "lstm":
        lstm = torch.nn.LSTM(128, 128, batch_first=True)
        x = torch.randn(256, 45, 128, requires_grad=True)
        return (lambda: lstm(x)[0]), [x, *lstm.parameters()]
    if case == "attention":
        mha = torch.nn.MultiheadAttention(64, 2, batch_first=True)
        x = torch.randn(256, 45, 64, requires_grad=True)
        return (lambda: mha(x, x, x, need_weights=False)[0]), [x, *mha.parameters()]
    if case == "convlstm":
        conv = torch.nn.Conv2d(13 + 64, 4 * 64, 3, padding=1)
        x = torch.randn(16, 13, 24, 24, requires_grad=True)
        h = (torch.randn(16, 64, 24, 24) * 0.5).requires_grad_(True)
        c = (torch.randn(16, 64, 24, 24) * 0.5).requires_grad_(True)

        def step():
            g = conv(torch.cat([x, h], 1))
            i, f, o, gg = torch.split(g, 64, dim=1)
            c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h2 = torch.sigmoid(o) * torch.tanh(c2)
            return h2 + c2

        return step, [x, h, c, *conv.parameters()]
    if case == "batchnorm":
        x = torch.randn(256, 32, 256, requires_grad=True)
        w = (torch.randn(32) * 0.5).requires_grad_(True)
        bias = (torch.randn(32) * 0.1).requires_grad_(True)
        F = torch.nn.functional
        return (lambda: F.relu(F.batch_norm(x, None, None, w, bias, training=True))), [x, w, bias]
    raise SystemExit(f"unknown case {case}")


def torch_times(case):
    f, leaves = make(case)
    with torch.no_grad():
        f().sum().item()
    fwd, both = [], []
    for _ in range(REPEAT):
        t = time.perf_counter()
        with torch.no_grad():
            f().sum().item()
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        f().sum().backward()
        for p in leaves:
            p.grad.sum().item()
        both.append(time.perf_counter() - t)
        for p in leaves:
            p.grad = None
    return statistics.median(fwd), statistics.median(both)


def canopy_times(case):
    cmd = ["cargo", "run", "-q", "--release", "-p", "canopy-nn", "--example", "nn_bench", "--",
           "--repeat", str(REPEAT), "--cases", case] + (["--quick"] if quick else [])
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["fwd_s"], r["fwd_bwd_s"]


subprocess.run(["cargo", "build", "-q", "--release", "-p", "canopy-nn", "--example", "nn_bench"], check=True)
loads = []
rows = []
for case in cases:
    res = {"torch": [], "canopy": []}
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        res["torch"].append(torch_times(case))
        res["canopy"].append(canopy_times(case))
    med = {k: (statistics.median(v[0] for v in r), statistics.median(v[1] for v in r)) for k, r in res.items()}
    rows.append((case, med))

print(f"canopy-nn vs torch {torch.__version__}, f32, {threads} thread(s), {rounds} rounds x {REPEAT} runs, "
      f"load {min(loads):.2f}-{max(loads):.2f}{', quick' if quick else ''}")
print("| case | torch fwd | canopy fwd | fwd ratio | torch fwd+bwd | canopy fwd+bwd | fwd+bwd ratio |")
print("|---|---|---|---|---|---|---|")
for case, med in rows:
    tf, tb = med["torch"]
    cf, cb = med["canopy"]
    print(f"| {case} | {tf*1e3:.2f} ms | {cf*1e3:.2f} ms | {tf/cf:.2f}x | {tb*1e3:.2f} ms | {cb*1e3:.2f} ms | {tb/cb:.2f}x |")
