"""PyTorch reference for canopy's time-series studies: trains the BreizhCrops reference models with
the recipe and the data splits canopy's examples use, and prints accuracy and kappa.

Run with the peer environment (../shared/peers/setup.sh), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py ucr \
        [--models lstm,transformer,tempcnn,msresnet] [--epochs 30] [--seeds 0,1,2] [--json out.json]
    ~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py eopatch \
        [--variants raw,preprocessed] [--train-limit 2000] ...
    ~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py eopatch --models convlstm \
        --variants raw [--epochs 20] [--seeds 0,1,2]
    ~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py replay \
        --trace DIR/convlstm-seed0   # DIR from cloud_robustness --convlstm-preset port --trace DIR
    ~/.cache/canopy-peers/venv/bin/python tools/sits_reference_train.py replay \
        --trace DIR/msresnet-seed0   # DIR from examples/ucr_crop.rs --trace DIR

Data (../shared/data/sits, see PROVENANCE.md):
- `ucr`: UCR Crop TRAIN (7,200 NDVI series, 46 dates, labels 1..24 -> 0..23). Split rule
  (identical in examples/ucr_crop.rs): within each class, in file order, every 5th series
  (k % 5 == 4) is validation, the rest training.
- `eopatch`: the eo-learn Sentinel-2 test patch, one sample per pixel: NDVI over 68 dates,
  label LULC (0 = no label, dropped; {1, 2, 3, 4, 8} -> 0..4). Spatial split (identical in
  examples/cloud_robustness.rs): 20 x 20 pixel blocks, block (br, bc) is test when
  (5 br + bc) % 4 == 0. Variant `raw` uses every date as observed (clouds included);
  `preprocessed` replaces each pixel's cloudy dates (CLM = 1) by linear interpolation in time
  between its clear dates (constant beyond the first/last clear date; a pixel without a clear
  date stays raw). `--train-limit N` thins the training pixels evenly to N (pixel k of the
  N kept is training pixel floor(k * len / N) in row-major order; the same for every seed).
- `eopatch --models convlstm`: the PyTorch MTLCC port (`PortClassifier`, 32 wide) on the raw
  patch cut into 20 x 20 tiles (the same test-block rule), class 0 ignored per pixel; canopy's
  side is `cargo run --release --example cloud_robustness -- --models --convlstm
  --convlstm-preset port`.
Both: z-score normalisation with the training mean/std; input (B, T, 1).

Recipe (the hyper-parameters BreizhCrops' pretrained models were trained with, from the file
names in breizhcrops/models/pretrained.py; InceptionTime has no published tuned values: lr 1e-3,
weight decay 1e-6): Adam with coupled L2 weight decay, batch 256, cross-entropy on the logits,
shuffled batches, evaluation after the last epoch in eval mode. The reference LSTM normalises its
input over the band axis, which turns a 1-band series into zeros; as canopy's 1-band preset
does, its input LayerNorm is replaced by the identity here (the head's LayerNorm stays).
"""
import argparse
import json
import os
import sys
import time
import types

import numpy as np

sys.modules.setdefault("h5py", types.ModuleType("h5py"))
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from breizhcrops.models import LSTM, InceptionTime, MSResNet, TempCNN, TransformerModel  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden"))
from temporal_mtlcc import Encoder  # noqa: E402

IGNORE = 255
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sits")

RECIPES = {
    "lstm": dict(lr=0.009880117756170353, weight_decay=5.256755602421856e-07),
    "transformer": dict(lr=0.00017369201853408445, weight_decay=3.5156458637523697e-06),
    "tempcnn": dict(lr=0.00023892874563871753, weight_decay=5.181869707846283e-05),
    "msresnet": dict(lr=0.0006271686393146093, weight_decay=4.750234747127917e-06),
    "inceptiontime": dict(lr=1e-3, weight_decay=1e-6),
}


def build(name, input_dim, num_classes, t):
    if name == "lstm":
        m = LSTM(input_dim=input_dim, num_classes=num_classes)
        if input_dim == 1:
            m.inlayernorm = nn.Identity()
        return m
    if name == "transformer":
        return TransformerModel(input_dim=input_dim, num_classes=num_classes)
    if name == "tempcnn":
        return TempCNN(input_dim=input_dim, num_classes=num_classes, sequencelength=t)
    if name == "msresnet":
        return MSResNet(input_dim=input_dim, num_classes=num_classes)
    if name == "inceptiontime":
        m = InceptionTime(input_dim=input_dim, num_classes=num_classes)
        for mod in m.inception_modules_list:
            mod.convolutions = nn.ModuleList(mod.convolutions)
        m.inception_modules_list = nn.ModuleList(m.inception_modules_list)
        m.shortcut_layer_list = nn.ModuleList(m.shortcut_layer_list)
        return m
    raise ValueError(name)


def load_ucr():
    rows = np.loadtxt(os.path.join(DATA, "ucr-crop", "Crop_TRAIN.tsv"), delimiter="\t")
    y = rows[:, 0].astype(np.int64) - 1
    x = rows[:, 1:].astype(np.float32)[:, :, None]
    val = np.zeros(len(y), dtype=bool)
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        val[idx[np.arange(len(idx)) % 5 == 4]] = True
    return {"data": (x[~val], y[~val], x[val], y[val]), "classes": 24}


def interpolate_clouds(ndvi, cloudy, days):
    out = ndvi.copy()
    for p in range(ndvi.shape[1]):
        clear = ~cloudy[:, p]
        if clear.any() and not clear.all():
            out[:, p] = np.interp(days, days[clear], ndvi[clear, p])
    return out


def load_eopatch(variant):
    root = os.path.join(DATA, "eolearn-testpatch")
    ndvi = np.load(os.path.join(root, "data", "NDVI.npy"))[..., 0]  # (T, H, W)
    clm = np.load(os.path.join(root, "mask", "CLM.npy"))[..., 0].astype(bool)
    lulc = np.load(os.path.join(root, "mask_timeless", "LULC.npy"))[..., 0]
    stamps = json.load(open(os.path.join(root, "timestamps.json")))
    days = np.array([np.datetime64(s[:10]).astype("datetime64[D]").astype(np.int64) for s in stamps],
                    dtype=np.float64)
    t, h, w = ndvi.shape
    flat = ndvi.reshape(t, h * w).astype(np.float64)
    if variant == "preprocessed":
        flat = interpolate_clouds(flat, clm.reshape(t, h * w), days)
    labels = lulc.reshape(-1)
    codes = [1, 2, 3, 4, 8]
    rr, cc = np.divmod(np.arange(h * w), w)
    test = ((rr // 20) * 5 + (cc // 20)) % 4 == 0
    keep = labels != 0
    y = np.array([codes.index(v) if v in codes else -1 for v in labels])
    x = flat.T.astype(np.float32)[:, :, None]
    tr, te = keep & ~test, keep & test
    return {"data": (x[tr], y[tr], x[te], y[te]), "classes": len(codes)}


class PortClassifier(nn.Module):
    """TUM-LMF/MTLCC-pytorch's LSTMSequentialEncoder for 1-band input: the `port` case of
    tools/golden/temporal_mtlcc.py (Conv3d (1, 3, 3) input convolution, forward ConvLSTM without
    cell bias, 3x3 head on the final cell state), which canopy's
    `ConvRnnConfig::mtlcc_pytorch` matches. Input (B, T, 1, H, W), logits (B, K, H, W)."""

    def __init__(self, hidden, classes):
        super().__init__()
        self.encoder = Encoder(1, hidden, 3, classes)

    def forward(self, x):
        lengths = torch.full((x.shape[0],), x.shape[1])
        return self.encoder(x, lengths)[0]


def load_eopatch_tiles(block=20):
    """Raw NDVI tiles (N, T, 1, block, block) and labels (N, block, block), 255 = class 0 (no
    data), split by the test-block rule: the data of examples/cloud_robustness.rs --convlstm."""
    root = os.path.join(DATA, "eolearn-testpatch")
    ndvi = np.load(os.path.join(root, "data", "NDVI.npy"))[..., 0]  # (T, H, W)
    lulc = np.load(os.path.join(root, "mask_timeless", "LULC.npy"))[..., 0]
    codes = [1, 2, 3, 4, 8]
    y = np.full(lulc.shape, IGNORE, dtype=np.int64)
    for i, v in enumerate(codes):
        y[lulc == v] = i
    t, h, w = ndvi.shape
    tiles = {False: ([], []), True: ([], [])}
    for r in range(0, (h // block) * block, block):
        for c in range(0, (w // block) * block, block):
            test = ((r // block) * 5 + c // block) % 4 == 0
            tiles[test][0].append(ndvi[:, None, r:r + block, c:c + block])
            tiles[test][1].append(y[r:r + block, c:c + block])
    xtr, ytr = np.stack(tiles[False][0]), np.stack(tiles[False][1])
    xte, yte = np.stack(tiles[True][0]), np.stack(tiles[True][1])
    # z-score over every value of the training tiles (clouds included), population std, f64
    v = xtr.astype(np.float64)
    mean, std = v.mean(), max(v.std(), 1e-6)
    norm = lambda a: ((a.astype(np.float64) - mean) / std).astype(np.float32)  # noqa: E731
    return norm(xtr), ytr, norm(xte), yte, len(codes)


def run_convlstm(epochs, seed, hidden=32, batch=4):
    """The port trained like canopy's fit_tiles: Adam lr 1e-3 with coupled L2 decay 1e-6,
    shuffled batches of 4 tiles, mean cross-entropy over the labelled pixels; evaluated after
    the last epoch over every labelled test pixel."""
    xtr, ytr, xte, yte, k = load_eopatch_tiles()
    torch.manual_seed(seed)
    model = PortClassifier(hidden, k)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=gen).split(batch):
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx], ignore_index=IGNORE)
            loss.backward()
            opt.step()
    train_s = time.time() - t0
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(b).argmax(1) for b in torch.from_numpy(xte).split(batch)]).numpy()
    valid = yte != IGNORE
    p, y = pred[valid], yte[valid]
    return dict(model="convlstm", seed=seed, accuracy=float((p == y).mean()),
                kappa=float(kappa(y, p, k)), n=int(valid.sum()), train_seconds=train_s)


def load_trace(stem):
    """The JSON and the tensors of a canopy trace (STEM.json, STEM.safetensors)."""
    from safetensors.torch import load_file
    for ext in (".json", ".safetensors"):
        if not os.path.isfile(stem + ext):
            raise SystemExit(f"{stem}{ext} not found: pass the stem of a trace written by "
                             "cloud_robustness --convlstm --trace DIR (DIR/convlstm-seed0) or "
                             "ucr_crop --trace DIR (DIR/msresnet-seed0)")
    with open(stem + ".json") as f:
        info = json.load(f)
    return info, load_file(stem + ".safetensors")


def load_init(module, t):
    """Loads canopy's initial weights (`init.*`) into `module`; the key sets must be equal."""
    state = module.state_dict()
    missing = sorted(set(state) ^ {n[5:] for n in t if n.startswith("init.")})
    if missing:
        raise SystemExit(f"key sets differ between the trace and the PyTorch model: {missing}")
    module.load_state_dict({n: t[f"init.{n}"].to(state[n].dtype) for n in state})


def compare_final(module, t):
    """Prints each tensor's relative difference between PyTorch's and canopy's final state."""
    for n, v in module.state_dict().items():
        c = t[f"final.{n}"].to(v.dtype)
        denom = c.double().norm().item()
        rel = (v - c).double().norm().item() / denom if denom > 0 else (v - c).abs().max().item()
        print(f"final {n}: relative difference {rel:.2e}")


def read_steps(stem):
    """Every step's training loss from the trainer's log `STEM/steps.jsonl` (empty if absent)."""
    path = os.path.join(stem, "steps.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def check_step(step, loss, steps, tol):
    """Prints the first three steps' losses side by side and fails (returns a message) when
    step 1 is off by more than `tol`, relative, or step 2 or 3 by more than 10 `tol`: step 1
    sees identical weights, steps 2 and 3 the weights after one and two updates from identical
    gradients up to rounding, which Adam's first steps amplify (UCR MS-ResNet, seeds 0-5: step 1
    at most 1.5e-7, steps 2-3 up to 5.4e-5; an lr x1.5 mutation: 4.2e-2 at step 2)."""
    if step >= 3 or step >= len(steps):
        return []
    rel = abs(loss - steps[step]) / abs(steps[step])
    print(f"  step {step + 1}: loss canopy {steps[step]:.7f}, PyTorch {loss:.7f} ({rel:.1e})")
    if rel > (tol if step == 0 else 10 * tol):
        return [f"step {step + 1}'s loss {loss:.7f} vs canopy's {steps[step]:.7f}"]
    return []


def replay_ucr(stem, info, t, tol, swap="none"):
    """A canopy UCR run (`examples/ucr_crop.rs --trace DIR`) re-run with the BreizhCrops
    reference model from canopy's initial weights, on canopy's normalised series, in canopy's
    batch order, with the same optimizer settings. Models with dropout draw other masks than
    canopy, so only a model without dropout (MS-ResNet) is an exact replay; for those the first
    three steps' losses (from canopy's `STEM/steps.jsonl`; without it the first epoch's mean)
    must agree within `tol`. Later steps drift apart by rounding alone: training is chaotic at the
    level of float32 rounding (PyTorch float32 vs float64 from the same start differ by ~4e-5
    after one epoch of MS-ResNet on UCR).

    `swap` separates the two random draws of a run: "init" trains PyTorch's own initial
    weights (those of `ucr --seeds S`) on canopy's batches, "order" canopy's initial weights on
    PyTorch's batches; neither is a replay, nothing is checked."""
    name = info["model"]
    xt, xv = t["train_x"], t["val_x"]
    yt, yv = torch.tensor(info["train_y"]), np.array(info["val_y"])
    xtr, ytr, _, yva = load_ucr()["data"]
    if not (np.array_equal(ytr, yt.numpy()) and np.array_equal(yva, yv)):
        raise SystemExit("the trace's labels are not this script's UCR split")
    mean, std = xtr.mean(), xtr.std()
    print(f"training series: canopy's vs this script's normalisation differ by at most "
          f"{(xt - torch.from_numpy((xtr - mean) / std)).abs().max().item():.2e}")
    torch.manual_seed(info["seed"])  # --swap init: the weights `ucr --seeds S` starts from
    model = build(name, xt.shape[2], 24, xt.shape[1])
    if swap != "init":
        load_init(model, t)
    batches_of = info["batches"]
    if swap == "order":  # the batches `ucr --seeds S` trains on
        gen = torch.Generator().manual_seed(info["seed"])
        batches_of = [[b.tolist() for b in torch.randperm(len(yt), generator=gen).split(256)]
                      for _ in info["batches"]]
    opt = torch.optim.Adam(model.parameters(), lr=info["lr"], weight_decay=info["weight_decay"])
    forward = model.logits if hasattr(model, "logits") else model
    exact = name == "msresnet" and swap == "none"
    if swap != "none":
        print(f"--swap {swap}: PyTorch's own {'initial weights' if swap == 'init' else 'batch order'}"
              f" (seed {info['seed']}) with canopy's {'batch order' if swap == 'init' else 'initial weights'}:"
              " not a replay, nothing is checked")

    def val_accuracy():
        model.eval()
        with torch.inference_mode():
            pred = torch.cat([model(b).argmax(-1) for b in xv.split(1024)]).numpy()
        return float((pred == yv).mean()), pred

    steps = read_steps(stem)
    print("epoch | train loss canopy | train loss PyTorch | rel. diff | val acc canopy | val acc PyTorch")
    failures, worst, step = [], 0.0, 0
    for e, batches in enumerate(batches_of):
        model.train()
        total, count = 0.0, 0
        for idx in batches:
            idx = torch.tensor(idx)
            opt.zero_grad()
            loss = F.cross_entropy(forward(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
            if exact:
                failures += check_step(step, loss.item(), steps, tol)
            step += 1
        ours, theirs = total / count, info["train_loss"][e]
        rel = abs(ours - theirs) / abs(theirs)
        worst = max(worst, rel)
        if exact and not steps and e == 0 and rel > tol:
            failures.append(f"epoch 1 training loss {ours:.6f} vs canopy's {theirs:.6f}")
        acc, _ = val_accuracy()
        print(f"{e + 1:5d} | {theirs:.6f} | {ours:.6f} | {rel:.1e} | "
              f"{info['val_accuracy'][e]:.4f} | {acc:.4f}", flush=True)
    if name != "msresnet":
        print(f"{name} has dropout: canopy and PyTorch draw different masks, the runs diverge")
    print(f"largest relative difference of an epoch's training loss: {worst:.1e}")
    acc, pred = val_accuracy()
    print(f"final validation accuracy: canopy {info['final_accuracy']:.4f}, PyTorch {acc:.4f} "
          f"(kappa {info['final_kappa']:.4f} / {kappa(yv, pred, 24):.4f})")
    compare_final(model, t)
    # canopy's trained weights (running statistics included) evaluated by the reference model
    model.load_state_dict({n: t[f"final.{n}"].to(v.dtype) for n, v in model.state_dict().items()})
    acc_c, _ = val_accuracy()
    print(f"canopy's final weights evaluated in PyTorch: accuracy {acc_c:.4f} "
          f"(canopy's own evaluation {info['final_accuracy']:.4f})")
    if swap == "none" and abs(acc_c - info["final_accuracy"]) > 1.5 / len(yv):
        failures.append(f"canopy's final weights score {acc_c:.4f} in PyTorch, "
                        f"{info['final_accuracy']:.4f} in canopy")
    return failures


def replay(stem, threads, tol, swap):
    """Replays a canopy trace in PyTorch (see replay_ucr and replay_convlstm)."""
    torch.set_num_threads(threads)
    info, t = load_trace(stem)
    if info.get("dataset") == "ucr":
        return replay_ucr(stem, info, t, tol, swap)
    if swap != "none":
        raise SystemExit("--swap applies to ucr_crop traces only")
    return replay_convlstm(stem, info, t, tol)


def replay_convlstm(stem, info, t, tol):
    """A canopy ConvLSTM run (`examples/cloud_robustness.rs --trace DIR`, files STEM.json and
    STEM.safetensors) re-run in PyTorch from canopy's initial weights, on canopy's normalised
    training tiles, in canopy's batch order, with the same optimizer settings: the only
    difference left is the implementation. Prints each epoch's mean training loss and test
    accuracy side by side and the final weights' relative differences; returns the failures
    (one of the first three steps' losses, from canopy's `STEM/steps.jsonl`, or without that
    file the first epoch's mean training loss, off by more than `tol`, relative)."""
    if info["preset"] != "port":
        raise SystemExit(f"preset {info['preset']!r}: only `port` has a PyTorch model")
    xtr, ytr, xte, yte, k = load_eopatch_tiles()
    xt = t["train_x"]
    print(f"training tiles: canopy's vs this script's normalisation differ by at most "
          f"{(xt - torch.from_numpy(xtr)).abs().max().item():.2e}")
    model = PortClassifier(32, k)
    load_init(model.encoder, t)  # canopy's keys are the encoder's
    opt = torch.optim.Adam(model.parameters(), lr=info["lr"], weight_decay=info["weight_decay"])
    yt, xe = torch.from_numpy(ytr), torch.from_numpy(xte)
    valid = yte != IGNORE

    def test_accuracy():
        with torch.inference_mode():
            pred = torch.cat([model(b).argmax(1) for b in xe.split(4)]).numpy()
        return float((pred[valid] == yte[valid]).mean()), pred

    steps = read_steps(stem)
    print("epoch | train loss canopy | train loss PyTorch | rel. diff | test acc canopy | test acc PyTorch")
    failures, worst, step = [], 0.0, 0
    for e, batches in enumerate(info["batches"]):
        total, count = 0.0, 0
        for idx in batches:
            idx = torch.tensor(idx)
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx], ignore_index=IGNORE)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
            failures += check_step(step, loss.item(), steps, tol)
            step += 1
        ours, theirs = total / count, info["train_loss"][e]
        rel = abs(ours - theirs) / abs(theirs)
        worst = max(worst, rel)
        if not steps and e == 0 and rel > tol:
            failures.append(f"epoch 1 training loss {ours:.6f} vs canopy's {theirs:.6f}")
        acc, pred = test_accuracy()
        print(f"{e + 1:5d} | {theirs:.6f} | {ours:.6f} | {rel:.1e} | "
              f"{info['val_accuracy'][e]:.4f} | {acc:.4f}")
    print(f"largest relative difference of an epoch's training loss: {worst:.1e}")
    acc, pred = test_accuracy()
    print(f"final test accuracy: canopy {info['test_accuracy']:.4f}, PyTorch {acc:.4f} "
          f"(kappa {info['test_kappa']:.4f} / {kappa(yte[valid], pred[valid], k):.4f})")
    compare_final(model.encoder, t)
    return failures


def kappa(y, p, k):
    cm = np.zeros((k, k))
    np.add.at(cm, (y, p), 1)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = (cm.sum(0) * cm.sum(1)).sum() / n**2
    return (po - pe) / (1 - pe) if pe < 1 else 0.0


def run(name, split, classes, epochs, seed, train_limit):
    xtr, ytr, xte, yte = split
    if train_limit and train_limit < len(ytr):
        keep = np.arange(train_limit) * len(ytr) // train_limit
        xtr, ytr = xtr[keep], ytr[keep]
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    torch.manual_seed(seed)
    model = build(name, 1, classes, xtr.shape[1])
    opt = torch.optim.Adam(model.parameters(), **RECIPES[name])
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=gen).split(256):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model.logits(xt[idx]) if hasattr(model, "logits")
                                               else model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    train_s = time.time() - t0
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(b).argmax(-1) for b in torch.from_numpy(xte).split(1024)]).numpy()
    return dict(model=name, seed=seed, accuracy=float((pred == yte).mean()),
                kappa=float(kappa(yte, pred, classes)), n=int(len(yte)), train_seconds=train_s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["ucr", "eopatch", "replay"])
    ap.add_argument("--trace", help="replay: STEM of a cloud_robustness or ucr_crop --trace "
                    "run (e.g. runs/trace/convlstm-seed0, runs/ucr/msresnet-seed0)")
    ap.add_argument("--replay-tol", type=float, default=1e-4,
                    help="replay: largest relative difference of the first epoch's loss")
    ap.add_argument("--swap", choices=["none", "init", "order"], default="none",
                    help="replay of a ucr_crop trace: train PyTorch's own initial weights on "
                    "canopy's batches (init) or canopy's weights on PyTorch's batches (order)")
    ap.add_argument("--models", default="lstm,transformer,tempcnn,msresnet")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="raw,preprocessed")
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "replay":
        if not args.trace:
            raise SystemExit("replay needs --trace STEM")
        failures = replay(args.trace, args.threads, args.replay_tol, args.swap)
        for f in failures:
            print("FAIL:", f)
        raise SystemExit(1 if failures else 0)
    variants = args.variants.split(",") if args.dataset == "eopatch" else ["-"]
    results = []
    for variant in variants:
        ds = load_ucr() if args.dataset == "ucr" else load_eopatch(variant)
        for name in args.models.split(","):
            if name == "convlstm" and (args.dataset != "eopatch" or variant != "raw"):
                continue  # the ConvLSTM trains on raw eo-learn tiles only
            for seed in map(int, args.seeds.split(",")):
                if name == "convlstm":
                    r = run_convlstm(args.epochs, seed)
                else:
                    r = run(name, ds["data"], ds["classes"], args.epochs, seed, args.train_limit)
                r["variant"] = variant
                results.append(r)
                print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(dataset=args.dataset, epochs=args.epochs, train_limit=args.train_limit,
                           torch=torch.__version__, results=results), f, indent=1)


if __name__ == "__main__":
    main()
