"""canopy-segment vs PyTorch on the same CPU, one run, ratios printed.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/bench_segment_vs_torch.py [--rounds N] [--repeat N] [--models bench,half,fcn,mlpnet,resnet18]

Shapes and steps are ../shared/peers/bench_unet.py's: batch 4 x 3 x 256 x 256, f32, 2 threads;
inference = eval-mode forward (Mpx/s); training step = train-mode forward, cross-entropy over 2
classes, backward, Adam lr 1e-3 (ms). "bench" is bench_unet.py's plain U-Net (32-512, batch
norm); "half" the same widths without batch norm; "fcn" Maggiori's FCN; "mlpnet" the MLP net —
each built in PyTorch from tools/golden/segment_models.py, the reference the golden tests use;
"resnet18" is bench_unet.py's smp-style model, `smp.Unet("resnet18", encoder_weights=None)`
from segmentation-models-pytorch itself, against canopy's ResNetUNet::resnet18.
Rounds alternate canopy (`cargo run --release -p canopy-segment --example unet_throughput`) and
PyTorch; the table shows medians over rounds of per-round medians and ratios torch_time /
canopy_time (> 1: canopy is faster).
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden"))
torch.set_default_dtype(torch.float32)
import segment_models as sm  # noqa: E402

torch.set_default_dtype(torch.float32)
args = sys.argv[1:]
rounds, repeat, models = 3, 5, ["bench", "half"]
for i, a in enumerate(args):
    if a == "--rounds":
        rounds = int(args[i + 1])
    if a == "--repeat":
        repeat = int(args[i + 1])
    if a == "--models":
        models = args[i + 1].split(",")
THREADS = 2
torch.set_num_threads(THREADS)
B, C, S = 4, 3, 256


def torch_model(name):
    torch.manual_seed(0)
    if name == "bench":
        return sm.UNet(3, 2, 32, 5, True)
    if name == "half":
        return sm.UNet(3, 2, 32, 5, False)
    if name == "fcn":
        return sm.MaggioriFcn(3, 2)
    if name == "mlpnet":
        return sm.MlpNet(3, 2, (32, 64, 96, 128), (5, 5, 3, 3), 100, True)
    if name == "resnet18":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2)
    raise SystemExit(f"unknown model {name}")


def torch_round(name):
    model = torch_model(name).float()
    x = torch.randn(B, C, S, S)
    y = torch.randint(0, 2, (B, S, S))
    model.eval()
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        with torch.inference_mode():
            model(x)
        if i:
            times.append(time.perf_counter() - t)
    inf = statistics.median(times)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return inf, statistics.median(times)


def canopy_round(name):
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    cmd = ["cargo", "run", "-q", "--release", "-p", "canopy-segment", "--example", "unet_throughput",
           "--", "--model", name, "--repeat", str(repeat)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    got = {r["what"]: r["seconds"] for r in rows}
    return got["inference"], got["train_step"]


subprocess.run(["cargo", "build", "-q", "--release", "-p", "canopy-segment", "--example", "unet_throughput"], check=True)
mpx = B * S * S / 1e6
def cpu_line():
    """CPU model, family/model numbers and widest SIMD: ratios differ a lot between CPUs."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return "cpu: unknown"
    flags = info.get("flags", "").split()
    simd = "avx512f" if "avx512f" in flags else ("avx2+fma" if "avx2" in flags and "fma" in flags else "sse")
    return (f"cpu: {info.get('model name', '?')} (family {info.get('cpu family', '?')}, model "
            f"{info.get('model', '?')}), {os.cpu_count()} logical CPUs, widest SIMD {simd}; torch {torch.__version__}")


print(cpu_line())
print(f"| model | canopy inference Mpx/s | torch inference Mpx/s | ratio | canopy train ms/step | torch train ms/step | ratio |")
print("|---|---|---|---|---|---|---|")
for name in models:
    ci, ct, ti, tt = [], [], [], []
    for _ in range(rounds):
        a, b = canopy_round(name)
        ci.append(a)
        ct.append(b)
        a, b = torch_round(name)
        ti.append(a)
        tt.append(b)
    ci, ct, ti, tt = (statistics.median(v) for v in (ci, ct, ti, tt))
    print(f"| {name} | {mpx / ci:.3f} | {mpx / ti:.3f} | {ti / ci:.2f}x | {ct * 1e3:.0f} | {tt * 1e3:.0f} | {tt / ct:.2f}x |",
          flush=True)
