"""PyTorch reference for canopy's building-segmentation example: trains the U-Net of
examples/buildings.rs with the same recipe on the same tiles, and prints the same per-area table
(building IoU and pixel accuracy, Inria protocol) so the two implementations can be compared.

Run with the peer environment (../shared/peers/setup.sh), from the repository root, after the
Rust example has exported its tiles (`cargo run --release --example buildings -- \
--export-tiles /work/runs/tiles.safetensors ...`):
    ~/.cache/canopy-peers/venv/bin/python tools/train_buildings_torch.py \
        [--tiles /work/runs/tiles.safetensors] [--epochs 20] [--width 16] [--patch 128] \
        [--batch 8] [--patches 256] [--seed 0] [--schedule exp|cyclic] [--lr-decay 0.8] \
        [--eval-batch 8] [--threads 2] [--out DIR]
    ~/.cache/canopy-peers/venv/bin/python tools/train_buildings_torch.py --replay DIR
Writes DIR/metrics.json (rows {area, role, iou, accuracy}, as the example's) and DIR/model.pt
(the state_dict; its key names are those of canopy's UNet, so it also converts to safetensors).

Data: the export, not a second loader. `tiles.safetensors` holds `image.{i}` (u8, (3, H, W),
raw RGB) and `mask.{i}` (u8, (H, W); 0 background, 1 building, 255 ignored: blank alpha or
nodata); `tiles.json` beside it gives each tile's area and role (the held-out area is "val").

What is the same as the Rust example (source files named for each step):
- Normalisation (canopy-segment src/data/stats.rs, BandStats): per-band mean and population
  standard deviation (divisor n, no epsilon) over the non-ignored pixels of the training tiles;
  applied as (x - mean) / std after augmentation, both in training and evaluation.
- Patches (src/data/patch.rs, PatchDataset with patches_per_epoch patches of patch x patch):
  a tile is drawn with probability proportional to its number of patch positions, then the
  top-left corner uniformly; a draw with fewer than ceil(0.5 h w) non-ignored pixels is
  redrawn (tile and position), at most 100 times. Each patch has its own generator seeded by
  (seed, epoch, index), so every epoch sees new patches and batches are consecutive indices.
- Augmentation (src/data/augment.rs, AugmentConfig::default()): on the raw values, before
  normalisation: left-right flip (p 1/2), then top-bottom flip (p 1/2), then k counter-
  clockwise quarter turns (k uniform in 0..4, numpy's rot90); then per band
  x -> (x - m) c + m b with m the band's mean over the whole patch (ignored pixels included),
  b and c uniform in [0.9, 1.1], one draw each per patch, shared by the bands.
- Model (src/unet.rs, UNetConfig{3 bands, 2 classes, base width, depth 4, batch norm}): per
  level two 3x3 convolutions without bias, each followed by BatchNorm (eps 1e-5, momentum 0.1)
  and ReLU; 2x2 max-pooling; 2x2 stride-2 transposed convolutions (with bias), skip
  concatenation [upsampled, skip], the same double convolution; a 1x1 head. Names
  downs.{i}.{0,1,3,4}, ups.{j}, up_convs.{j}.{..}, head, as in ../shared/peers/bench_unet.py.
  Inputs are zero-padded at the bottom/right to a multiple of 2^(depth-1) and the logits
  cropped back. PyTorch default initialisation.
- Loss (canopy-train src/loss/overlap.rs, ce_soft_iou_loss with ignore_index 255, weight 0.5,
  smoothing 1): mean cross-entropy over the non-ignored pixels, plus 0.5 x the multi-class soft
  IoU loss: softmax probabilities and one-hot targets, both zeroed at ignored pixels, summed
  over the batch and all pixels per class, IoU_k = (I_k + 1) / (U_k + 1) with
  U_k = sum p + sum y - I_k, loss = 1 - mean over both classes (background and building).
- Optimiser (src/optim/adam.rs, AdamConfig::default()): Adam, betas (0.9, 0.999), eps 1e-8, no
  weight decay, over every parameter (not the BatchNorm running statistics). The learning rate
  is set before every step: `exp` = 1e-3 x d^epoch (d = `--lr-decay`, 0.8); `cyclic` =
  triangular2 cycles (src/schedule.rs, CyclicLr, Smith 2017) between 1e-4 and 2e-3, 2 epochs
  of steps up and 2 down, amplitude halved every cycle.
- Training: batches of `--batch` consecutive patches (the last one may be shorter), BatchNorm
  in training mode; the printed epoch loss is the mean of the step losses.
- Evaluation: every tile of every area, whole, in eval mode, in batches of tiles of one shape;
  a pixel is building when its softmax probability exceeds 0.5; confusion counts pooled per area
  over the non-ignored pixels; IoU = tp / (tp + fp + fn), accuracy = (tp + tn) / all.

Replay (`--replay DIR`, DIR written by the example's `--trace-steps N`): no random streams at
all. PyTorch starts from canopy's initial weights and takes the same N steps on the same
batches with the same learning rates; the script prints both losses per step and how far the
final weights are apart, then compares canopy's initial weights with PyTorch's default
initialisation of the same model (bound and standard deviation per tensor). It exits with 1
when the first step's losses differ by more than 1e-5 or a later step's by more than
--replay-tol (relative, 5e-3), or when an initialisation's standard deviation is off by more
than 20 % (or a constant one is not equal).

What cannot be the same: the random streams. canopy seeds rand's StdRng per patch and its own
initialisers; here numpy's PCG64 (seeded with (seed, epoch, index)) draws the patches and the
augmentation, and torch.manual_seed(seed) the weights. The distributions are the same, the draws
are not, so runs of the two differ by about what two seeds of one implementation differ by.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

IGNORE = 255


def load_tiles(path):
    """Images (u8 numpy (3, H, W)), masks (u8 (H, W)) and the tile list of the export."""
    meta_path = os.path.splitext(path)[0] + ".json"
    with open(meta_path) as f:
        meta = json.load(f)
    tensors = load_file(path)
    images, masks = [], []
    for row in meta:
        i = row["index"]
        images.append(tensors[f"image.{i}"].numpy())
        masks.append(tensors[f"mask.{i}"].numpy())
    return images, masks, meta


def band_stats(images, masks):
    """Mean and population std per band over the non-ignored pixels (exact: integer sums)."""
    bands = images[0].shape[0]
    n = 0
    s = [0] * bands
    ss = [0] * bands
    for img, m in zip(images, masks):
        valid = m != IGNORE
        nb = int(valid.sum())
        if nb == 0:
            continue
        n += nb
        for b in range(bands):
            v = img[b][valid].astype(np.int64)
            s[b] += int(v.sum())
            ss[b] += int((v * v).sum())
    if n == 0:
        raise ValueError("every training pixel is ignored (mask 255): no statistics")
    mean = [s[b] / n for b in range(bands)]
    std = [math.sqrt((n * ss[b] - s[b] * s[b]) / (n * n)) for b in range(bands)]
    return np.array(mean), np.array(std), n


def normalise(img, mean, std):
    """(x - mean) / std per band, computed in float64 and stored as float32."""
    out = (img.astype(np.float64) - mean[:, None, None]) * (1.0 / std)[:, None, None]
    return out.astype(np.float32)


class Patches:
    """Random augmented, normalised patches (see the module docs for the rules)."""

    def __init__(self, images, masks, size, count, seed, mean, std, min_valid=0.5, attempts=100):
        self.images, self.masks = images, masks
        self.size, self.count, self.seed = size, count, seed
        self.mean, self.std = mean, std
        self.need = math.ceil(min_valid * size * size)
        self.attempts = attempts
        for img in images:
            if img.shape[1] < size or img.shape[2] < size:
                raise ValueError(f"a tile of {img.shape} is smaller than the {size} patch")
        positions = np.array([(img.shape[1] - size + 1) * (img.shape[2] - size + 1)
                              for img in images], dtype=np.int64)
        self.cumulative = np.cumsum(positions)

    def patch(self, epoch, index):
        rng = np.random.default_rng([self.seed, epoch, index])
        h = w = self.size
        total = int(self.cumulative[-1])
        for _ in range(self.attempts):
            pick = int(rng.integers(0, total))
            k = int(np.searchsorted(self.cumulative, pick, side="right"))
            img, mask = self.images[k], self.masks[k]
            r = int(rng.integers(0, img.shape[1] - h + 1))
            c = int(rng.integers(0, img.shape[2] - w + 1))
            m = mask[r:r + h, c:c + w]
            if int((m != IGNORE).sum()) < self.need:
                continue
            x = img[:, r:r + h, c:c + w].astype(np.float32)
            if rng.random() < 0.5:
                x, m = x[:, :, ::-1], m[:, ::-1]
            if rng.random() < 0.5:
                x, m = x[:, ::-1, :], m[::-1, :]
            turns = int(rng.integers(0, 4))
            x = np.rot90(x, turns, axes=(1, 2))
            m = np.rot90(m, turns, axes=(0, 1))
            brightness = 1.0 + rng.uniform(-0.1, 0.1)
            contrast = 1.0 + rng.uniform(-0.1, 0.1)
            x = np.ascontiguousarray(x)
            band_mean = x.astype(np.float64).mean(axis=(1, 2)).astype(np.float32)[:, None, None]
            x = (x - band_mean) * np.float32(contrast) + band_mean * np.float32(brightness)
            return normalise(x, self.mean, self.std), np.ascontiguousarray(m)
        raise RuntimeError(f"no {h} x {w} patch with {self.need} valid pixels in "
                           f"{self.attempts} draws (epoch {epoch}, patch {index})")

    def batch(self, epoch, start, end):
        items = [self.patch(epoch, i) for i in range(start, end)]
        x = torch.from_numpy(np.stack([a for a, _ in items]))
        y = torch.from_numpy(np.stack([b for _, b in items]).astype(np.int64))
        return x, y


def double_conv(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class UNet(nn.Module):
    """canopy's UNet with batch norm (same structure and key names)."""

    def __init__(self, in_ch=3, classes=2, base=16, depth=4):
        super().__init__()
        widths = [base << i for i in range(depth)]
        self.multiple = 1 << (depth - 1)
        self.downs = nn.ModuleList()
        c = in_ch
        for w in widths:
            self.downs.append(double_conv(c, w))
            c = w
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.up_convs.append(double_conv(2 * w, w))
            c = w
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        ph = (-h) % self.multiple
        pw = (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x)
            if i + 1 < len(self.downs):
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


def ce_soft_iou(logits, target, iou_weight=0.5, smooth=1.0):
    """Mean CE over valid pixels + iou_weight x (1 - mean per-class soft IoU over the batch)."""
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    k = logits.shape[1]
    valid = (target != IGNORE)
    p = F.softmax(logits, dim=1) * valid.unsqueeze(1)
    y = F.one_hot(torch.where(valid, target, torch.zeros_like(target)), k).permute(0, 3, 1, 2)
    y = y.to(p.dtype) * valid.unsqueeze(1)
    inter = (p * y).sum(dim=(0, 2, 3))
    union = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3)) - inter
    iou = (inter + smooth) / (union + smooth)
    return ce + iou_weight * (1.0 - iou.mean())


def learning_rate(schedule, step, steps_per_epoch, decay=0.8):
    if schedule == "exp":
        return 1e-3 * decay ** (step // steps_per_epoch)
    # triangular2 between 1e-4 and 2e-3, 2 epochs up, 2 down
    base, top = 1e-4, 2e-3
    half = 2 * steps_per_epoch
    total = 2 * half
    cycle = math.floor(1.0 + step / total)
    x = 1.0 + step / total - cycle
    scale = x / 0.5 if x <= 0.5 else (x - 1.0) / (0.5 - 1.0)
    return base + (top - base) * scale / 2.0 ** (cycle - 1)


@torch.no_grad()
def evaluate(model, images, masks, meta, mean, std, eval_batch):
    model.eval()
    counts = {}
    order = sorted(range(len(images)), key=lambda i: images[i].shape)
    groups = {}
    for i in order:
        groups.setdefault(images[i].shape, []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), eval_batch):
            part = idx[s:s + eval_batch]
            x = torch.from_numpy(np.stack([normalise(images[i], mean, std) for i in part]))
            prob = F.softmax(model(x), dim=1)[:, 1].numpy()
            for i, p in zip(part, prob):
                m = masks[i]
                valid = m != IGNORE
                pred = p > 0.5
                gt = m == 1
                c = counts.setdefault(meta[i]["group"], np.zeros(4, dtype=np.int64))
                c[0] += int((pred & gt & valid).sum())
                c[1] += int((pred & ~gt & valid).sum())
                c[2] += int((~pred & gt & valid).sum())
                c[3] += int((~pred & ~gt & valid).sum())
    return counts


def replay(trace_dir, tol, threads):
    """Canopy's first N steps (trace.safetensors) re-run in PyTorch; returns failures."""
    with open(os.path.join(trace_dir, "trace.json")) as f:
        info = json.load(f)
    t = load_file(os.path.join(trace_dir, "trace.safetensors"))
    if info.get("model", "unet") != "unet":
        raise SystemExit("--replay supports the U-Net traces only")
    torch.set_num_threads(threads)
    model = UNet(3, 2, info["width"], 4)
    state = model.state_dict()
    init = {}
    for k, v in state.items():
        if f"init.{k}" not in t:
            raise SystemExit(f"trace has no init.{k}: not a U-Net {info['width']} trace")
        init[k] = t[f"init.{k}"].to(v.dtype)
    extra = sorted(k[5:] for k in t if k.startswith("init.") and k[5:] not in state)
    if extra:
        raise SystemExit(f"trace has weights the PyTorch U-Net lacks: {extra}")
    failures = []

    # PyTorch's default initialisation of the same model against canopy's draws
    torch.manual_seed(0)
    fresh = UNet(3, 2, info["width"], 4).state_dict()
    print("initialisation (canopy vs PyTorch default): tensor, max |w|, std")
    for k, v in fresh.items():
        if v.dtype != torch.float32 or "running" in k:
            continue
        a, b = init[k], v
        if b.std().item() == 0.0:
            # a constant initialisation (batch-norm weight 1, bias 0): must be equal
            if not torch.equal(a, b):
                failures.append(f"init of {k}: canopy is not the constant {b.flatten()[0]}")
            continue
        if v.numel() < 64:
            continue
        ra = a.std().item() / max(b.std().item(), 1e-30)
        print(f"  {k:<28} {a.abs().max().item():.4f} / {b.abs().max().item():.4f}   "
              f"{a.std().item():.4f} / {b.std().item():.4f}  ({ra:.3f})")
        if not 0.8 <= ra <= 1.25:
            failures.append(f"init std of {k}: canopy {a.std().item():.4g}, "
                            f"PyTorch {b.std().item():.4g}")

    model.load_state_dict(init, strict=True)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=0.0)
    print("step  lr          canopy loss  PyTorch loss  relative difference")
    worst = 0.0
    for row in info["steps"]:
        s = row["step"]
        x, y = t[f"x.{s}"], t[f"y.{s}"].to(torch.int64)
        for g in opt.param_groups:
            g["lr"] = row["lr"]
        loss = ce_soft_iou(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ours, theirs = row["loss"], loss.item()
        rel = abs(ours - theirs) / max(abs(theirs), 1e-30)
        worst = max(worst, rel)
        print(f"{s:>4}  {row['lr']:.3e}  {ours:>11.6f}  {theirs:>12.6f}  {rel:.2e}")
        # step 0: the same weights and batch, only the summation order differs; later steps
        # drift apart as rounding differences compound through Adam
        if rel > (1e-5 if s == 0 else tol):
            failures.append(f"step {s}: loss {ours} (canopy) vs {theirs} (PyTorch)")
    print(f"largest relative loss difference over {len(info['steps'])} steps: {worst:.2e}")
    print("final weights: tensor, max |canopy - PyTorch| / max |change from init|")
    for k, v in model.state_dict().items():
        if f"final.{k}" not in t or v.dtype != torch.float32:
            continue
        fin = t[f"final.{k}"]
        moved = (v - init[k]).abs().max().item()
        diff = (fin - v).abs().max().item()
        if moved > 0 and k.endswith("weight"):
            print(f"  {k:<28} {diff / moved:.2e}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", default="/work/runs/tiles.safetensors")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schedule", choices=["exp", "cyclic"], default="exp")
    ap.add_argument("--lr-decay", type=float, default=0.8, help="per-epoch factor of `exp`")
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="buildings-torch")
    ap.add_argument("--replay", help="a --trace-steps output folder of the example")
    ap.add_argument("--replay-tol", type=float, default=5e-3,
                    help="largest relative loss difference of a replayed step after the first")
    args = ap.parse_args()
    if args.replay:
        failures = replay(args.replay, args.replay_tol, args.threads)
        for f in failures:
            print(f"FAIL {f}")
        raise SystemExit(1 if failures else 0)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    images, masks, meta = load_tiles(args.tiles)
    train = [i for i, row in enumerate(meta) if row["role"] == "train"]
    val_groups = sorted({row["group"] for row in meta if row["role"] == "val"})
    print(f"{len(train)} training tiles, {len(meta) - len(train)} validation tiles "
          f"({', '.join(val_groups)}), loaded in {time.time() - t0:.1f} s")
    mean, std, n = band_stats([images[i] for i in train], [masks[i] for i in train])
    print(f"band mean {np.round(mean, 4).tolist()}, std {np.round(std, 4).tolist()} "
          f"over {n} pixels")
    data = Patches([images[i] for i in train], [masks[i] for i in train], args.patch,
                   args.patches, args.seed, mean, std)

    model = UNet(3, 2, args.width, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=0.0)
    steps_per_epoch = -(-args.patches // args.batch)
    step = 0
    epoch_seconds = []
    for epoch in range(args.epochs):
        model.train()
        t = time.time()
        total, steps = 0.0, 0
        for start in range(0, args.patches, args.batch):
            x, y = data.batch(epoch, start, min(start + args.batch, args.patches))
            for g in opt.param_groups:
                g["lr"] = learning_rate(args.schedule, step, steps_per_epoch, args.lr_decay)
            step += 1
            loss = ce_soft_iou(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        secs = time.time() - t
        epoch_seconds.append(secs)
        print(f"epoch {epoch}: loss {total / max(steps, 1):.4f} ({steps} steps, {secs:.1f} s)",
              flush=True)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))

    t_eval = time.time()
    counts = evaluate(model, images, masks, meta, mean, std, max(args.eval_batch, 1))
    print(f"evaluated {len(images)} tiles in {time.time() - t_eval:.0f} s")
    rows = []
    print("area      role   building IoU  accuracy")
    for area in sorted(counts):
        tp, fp, fn, tn = (int(v) for v in counts[area])
        iou = tp / max(tp + fp + fn, 1)
        acc = (tp + tn) / max(tp + fp + fn + tn, 1)
        role = "val" if area in val_groups else "train"
        print(f"{area:<9} {role:<6} {iou:>12.4f}  {acc:>8.4f}")
        rows.append({"area": area, "role": role, "iou": iou, "accuracy": acc})
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(rows, f, indent=2)
    if epoch_seconds:
        print(f"mean epoch time {sum(epoch_seconds) / len(epoch_seconds):.1f} s "
              f"({args.threads} threads)")
    print(f"wrote {args.out} (model.pt, metrics.json) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
