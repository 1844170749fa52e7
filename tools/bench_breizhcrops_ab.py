"""canopy-temporal vs PyTorch on the BreizhCrops models, interleaved on the same CPU, ratios printed.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/bench_breizhcrops_ab.py [--models msresnet,tempcnn] [--rounds N] [--threads N]

Why: `cargo run --release -p canopy-temporal --example throughput` divides canopy's figures by
PyTorch's from the peers' results JSON, measured at another time. On a shared machine whose
outside load changes by the minute that ratio moves by +-0.2. Here each round times canopy
(the throughput example with --quick, one model per process) and then PyTorch (same process as
this script) for one model, so both sides see the same load; the table gives the median over
rounds of the per-round ratios and the ratio of the best rounds.

Settings are those of ../shared/peers/bench_breizhcrops.py: batch 256, T = 45, 13 bands,
9 classes, f32; inference in eval mode (torch.inference_mode()), training step = forward +
negative log-likelihood + backward + Adam(1e-3) step (canopy: cross-entropy on logits, the same
quantity). PyTorch runs a warm-up and at least 3 timed runs within 3 s, like --quick, and
reports the median. Threads: torch.set_num_threads and RAYON_NUM_THREADS (default 2).
"""
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers"))
from bench_breizhcrops import build_models  # noqa: E402  (breizhcrops models, InceptionTime fixed)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# canopy model name -> name in bench_breizhcrops.build_models
PEER = {
    "tempcnn": "TempCNN",
    "msresnet": "MSResNet",
    "inceptiontime": "InceptionTime",
    "lstm": "LSTM",
    "transformer": "TransformerModel",
}
B, T, D, K = 256, 45, 13, 9


def median_ms(fn):
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < 3.0 and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def torch_times(model, x, y):
    model.eval()

    def infer():
        with torch.inference_mode():
            model(x)

    inf = median_ms(infer)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        F.nll_loss(model(x), y).backward()
        opt.step()

    return inf, median_ms(step)


def canopy_times(exe, name, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([exe, "--models", name, "--quick"], env=env, check=True,
                         capture_output=True, text=True).stdout
    inf = re.search(rf"{name}: .*inference ([0-9.]+) ms/batch", out)
    train = re.search(rf"{name}: training step ([0-9.]+) ms/batch", out)
    if not inf or not train:
        sys.exit(f"could not read the throughput example's output for {name}:\n{out}")
    return float(inf.group(1)), float(train.group(1))


def main():
    args = sys.argv[1:]
    models, rounds, threads = list(PEER), 3, 2
    for i, a in enumerate(args):
        if a == "--models":
            models = args[i + 1].split(",")
        if a == "--rounds":
            rounds = int(args[i + 1])
        if a == "--threads":
            threads = int(args[i + 1])
    unknown = [m for m in models if m not in PEER]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; available: {','.join(PEER)}")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "canopy-temporal", "--example",
                    "throughput"], check=True)
    exe = os.path.join("target", "release", "examples", "throughput")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    y = torch.randint(0, K, (B,))
    built, _ = build_models()
    rows = []
    for name in models:
        ours, theirs = [], []
        for r in range(rounds):
            ours.append(canopy_times(exe, name, threads))
            theirs.append(torch_times(built[PEER[name]][0], x, y))
            print(f"{name} round {r + 1}: canopy {ours[-1][0]:.1f} / {ours[-1][1]:.1f} ms, "
                  f"PyTorch {theirs[-1][0]:.1f} / {theirs[-1][1]:.1f} ms (inference / training step)",
                  flush=True)
        row = [name]
        for j in range(2):
            per_round = [t[j] / o[j] for o, t in zip(ours, theirs)]
            best = min(t[j] for t in theirs) / min(o[j] for o in ours)
            row += [min(o[j] for o in ours), min(t[j] for t in theirs), statistics.median(per_round),
                    min(per_round), max(per_round), best]
        rows.append(row)
    print()
    print(f"{threads} thread(s), {rounds} rounds; ratio = PyTorch time / canopy time (> 1: canopy faster)")
    print("| model | inference canopy / PyTorch ms (best) | ratio median (range) | ratio of bests "
          "| training step canopy / PyTorch ms (best) | ratio median (range) | ratio of bests |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, oi, ti, mi, lo_i, hi_i, bi, ot, tt, mt, lo_t, hi_t, bt in rows:
        print(f"| {n} | {oi:.1f} / {ti:.1f} | {mi:.2f}x ({lo_i:.2f}-{hi_i:.2f}) | {bi:.2f}x "
              f"| {ot:.1f} / {tt:.1f} | {mt:.2f}x ({lo_t:.2f}-{hi_t:.2f}) | {bt:.2f}x |")


if __name__ == "__main__":
    main()
