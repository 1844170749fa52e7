"""Golden fixtures for canopy-train's losses, computed by PyTorch in float64.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/train_losses.py
Writes crates/canopy-train/tests/fixtures/train_losses.safetensors. For every case NAME it
stores the differentiable inputs (NAME.x, and NAME.b for two-input losses), the fixed inputs
(NAME.t class labels as int64, NAME.y float targets, NAME.w / NAME.pw weights), a probe NAME.r,
the output NAME.out and the gradients of sum(out * r) (NAME.gx, NAME.gb).
The loss settings of each case are written next to it below and repeated in
crates/canopy-train/tests/losses.rs.
Cross-entropy, NLL, BCE and MSE are PyTorch's own functions; soft IoU, Dice and focal losses
are the plain formulas of the papers (focal: torchvision's sigmoid_focal_loss, written out).
Pinned: torch 2.15.0, safetensors 0.8 (the versions the fixture was produced with).
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
out = {}
IGNORE = 255


def case(name, fn, grads, **inputs):
    """fn(**inputs) -> loss; the inputs named in `grads` are differentiated."""
    grads = set(grads)
    ts = {k: (v.clone().requires_grad_(True) if k in grads else v) for k, v in inputs.items()}
    y = fn(**ts)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in ts.items():
        out[f"{name}.{k}"] = v.detach().clone().contiguous()
        if k in grads:
            out[f"{name}.g{k}"] = v.grad.contiguous()
    out[f"{name}.r"] = r.contiguous()
    out[f"{name}.out"] = y.detach().contiguous()


def labels(shape, k, ignore_frac=0.0):
    t = torch.randint(0, k, shape)
    if ignore_frac > 0:
        t[torch.rand(shape) < ignore_frac] = IGNORE
    return t


rn = torch.randn
W4 = torch.tensor([0.5, 2.0, 1.0, 1.5])
W3 = torch.tensor([0.2, 1.0, 3.0])

# Cross-entropy and NLL (PyTorch's functions).
case("ce_2d_mean", lambda x, t: F.cross_entropy(x, t), "x", x=rn(6, 4) * 2, t=labels((6,), 4))
case("ce_2d_weight_none", lambda x, t, w: F.cross_entropy(x, t, weight=w, reduction="none"), "x",
     x=rn(6, 4) * 2, t=labels((6,), 4), w=W4)
case("ce_2d_smooth_weight_ignore_mean",
     lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=IGNORE, label_smoothing=0.2), "x",
     x=rn(8, 4) * 2, t=labels((8,), 4, 0.3), w=W4)
case("ce_dense_weight_ignore_smooth_mean",
     lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=IGNORE, label_smoothing=0.1), "x",
     x=rn(2, 3, 4, 5) * 2, t=labels((2, 4, 5), 3, 0.25), w=W3)
case("ce_dense_ignore_sum",
     lambda x, t: F.cross_entropy(x, t, ignore_index=IGNORE, reduction="sum"), "x",
     x=rn(2, 3, 4, 5), t=labels((2, 4, 5), 3, 0.25))
case("ce_dense_smooth_weight_ignore_none",
     lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=IGNORE, label_smoothing=0.3,
                                     reduction="none"), "x",
     x=rn(2, 3, 4, 5), t=labels((2, 4, 5), 3, 0.25), w=W3)
case("ce_1_trailing_smooth_mean", lambda x, t: F.cross_entropy(x, t, label_smoothing=0.15), "x",
     x=rn(3, 4, 7), t=labels((3, 7), 4))
case("ce_3_trailing_weight_sum",
     lambda x, t, w: F.cross_entropy(x, t, weight=w, reduction="sum"), "x",
     x=rn(2, 3, 2, 3, 4), t=labels((2, 2, 3, 4), 3), w=W3)
case("nll_2d_weight_ignore_mean",
     lambda x, t, w: F.nll_loss(x, t, weight=w, ignore_index=IGNORE), "x",
     x=rn(8, 4), t=labels((8,), 4, 0.3), w=W4)
case("nll_dense_none", lambda x, t: F.nll_loss(x, t, reduction="none"), "x",
     x=F.log_softmax(rn(2, 3, 4, 5), 1), t=labels((2, 4, 5), 3))

# Binary cross-entropy with logits (PyTorch's function).
case("bce_mean", lambda x, y: F.binary_cross_entropy_with_logits(x, y), "x",
     x=rn(4, 5) * 3, y=torch.randint(0, 2, (4, 5)).double())
case("bce_soft_pos_weight_sum",
     lambda x, y, pw: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="sum"), "x",
     x=rn(4, 3) * 3, y=torch.rand(4, 3), pw=torch.tensor([0.5, 2.0, 4.0]))
case("bce_dense_weight_pos_weight_mean",
     lambda x, y, w, pw: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw), "x",
     x=rn(2, 2, 3, 4) * 3, y=torch.randint(0, 2, (2, 2, 3, 4)).double(), w=torch.rand(2, 1, 3, 4),
     pw=torch.tensor([3.0, 0.25]).view(2, 1, 1))
extreme = torch.tensor([-100.0, -40.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 40.0, 100.0]).repeat(3)
case("bce_extreme_none", lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none"), "x",
     x=extreme, y=torch.tensor([0.0] * 9 + [1.0] * 9 + [0.3] * 9))
case("bce_extreme_pos_weight_none",
     lambda x, y, pw: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none"), "x",
     x=extreme, y=torch.tensor([0.0] * 9 + [1.0] * 9 + [0.3] * 9), pw=torch.tensor([2.5]))


# Overlap losses (plain formulas; sums over the whole batch).
def soft_iou_binary(x, y, s=1.0):
    p = torch.sigmoid(x)
    i = (p * y).sum()
    u = (p + y - p * y).sum()
    return 1 - (i + s) / (u + s)


def dice_binary(x, y, s=1.0, squared=False):
    p = torch.sigmoid(x)
    den = (p * p).sum() + (y * y).sum() if squared else p.sum() + y.sum()
    return 1 - (2 * (p * y).sum() + s) / (den + s)


def onehot_valid(x, t):
    k = x.shape[1]
    valid = (t != IGNORE)
    y = F.one_hot(torch.where(valid, t, 0), k).movedim(-1, 1).double() * valid.unsqueeze(1)
    return y, valid.unsqueeze(1).double()


def class_sum(z):
    return z.transpose(0, 1).reshape(z.shape[1], -1).sum(1)


def soft_iou_multi(x, t, s=1.0):
    y, v = onehot_valid(x, t)
    p = F.softmax(x, 1) * v
    i = class_sum(p * y)
    u = class_sum(p) + class_sum(y) - i
    return 1 - ((i + s) / (u + s)).mean()


def dice_multi(x, t, s=1.0, squared=False):
    y, v = onehot_valid(x, t)
    p = F.softmax(x, 1) * v
    den = class_sum(p * p) + class_sum(y) if squared else class_sum(p) + class_sum(y)
    return 1 - ((2 * class_sum(p * y) + s) / (den + s)).mean()


ybin = (torch.rand(2, 1, 5, 6) < 0.4).double()
ybin[0, 0, 0, :3] = torch.tensor([0.25, 0.5, 0.75])
case("iou_binary", lambda x, y: soft_iou_binary(x, y), "x", x=rn(2, 1, 5, 6) * 2, y=ybin)
case("iou_binary_s0", lambda x, y: soft_iou_binary(x, y, 0.0), "x", x=rn(3, 7) * 2, y=(torch.rand(3, 7) < 0.5).double())
case("iou_multi_ignore", lambda x, t: soft_iou_multi(x, t), "x", x=rn(2, 3, 4, 5) * 2, t=labels((2, 4, 5), 3, 0.2))
case("iou_multi_2d_s05", lambda x, t: soft_iou_multi(x, t, 0.5), "x", x=rn(7, 4) * 2, t=labels((7,), 4))
case("dice_binary", lambda x, y: dice_binary(x, y), "x", x=rn(2, 1, 5, 6) * 2, y=ybin)
case("dice_binary_squared", lambda x, y: dice_binary(x, y, 0.5, True), "x", x=rn(2, 1, 5, 6) * 2, y=ybin)
case("dice_multi_ignore", lambda x, t: dice_multi(x, t), "x", x=rn(2, 3, 4, 5) * 2, t=labels((2, 4, 5), 3, 0.2))
case("dice_multi_squared", lambda x, t: dice_multi(x, t, 1.0, True), "x", x=rn(2, 4, 3, 3) * 2, t=labels((2, 3, 3), 4))
case("ce_iou_weight_ignore",
     lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=IGNORE) + 0.7 * soft_iou_multi(x, t, 1.0), "x",
     x=rn(2, 3, 4, 5) * 2, t=labels((2, 4, 5), 3, 0.2), w=W3)


# Focal losses (torchvision's sigmoid_focal_loss written out; the multi-class form likewise).
def focal_binary(x, y, gamma, alpha, reduction):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


def focal_multi(x, t, gamma, alpha, reduction):
    valid = t != IGNORE
    tt = torch.where(valid, t, 0)
    lp_t = F.log_softmax(x, 1).gather(1, tt.unsqueeze(1)).squeeze(1)
    a = alpha[tt] if alpha is not None else torch.ones_like(lp_t)
    loss = -a * (1 - lp_t.exp()) ** gamma * lp_t * valid
    return {"mean": loss.sum() / valid.sum(), "sum": loss.sum(), "none": loss}[reduction]


case("focal_binary_default", lambda x, y: focal_binary(x, y, 2.0, 0.25, "mean"), "x",
     x=rn(3, 2, 4) * 3, y=(torch.rand(3, 2, 4) < 0.3).double())
case("focal_binary_g15_noalpha_sum", lambda x, y: focal_binary(x, y, 1.5, None, "sum"), "x",
     x=rn(4, 5) * 3, y=torch.rand(4, 5))
case("focal_binary_g0_none", lambda x, y: focal_binary(x, y, 0.0, 0.6, "none"), "x",
     x=rn(4, 5) * 3, y=(torch.rand(4, 5) < 0.5).double())
case("focal_multi_alpha_ignore_mean", lambda x, t, w: focal_multi(x, t, 2.0, w, "mean"), "x",
     x=rn(2, 3, 4, 5) * 2, t=labels((2, 4, 5), 3, 0.2), w=W3)
case("focal_multi_g05_none", lambda x, t: focal_multi(x, t, 0.5, None, "none"), "x",
     x=rn(6, 4) * 2, t=labels((6,), 4))

# Squared errors.
case("mse_mean", lambda x, b: F.mse_loss(x, b), "xb", x=rn(2, 3, 4), b=rn(2, 3, 4))
case("mse_sum", lambda x, b: F.mse_loss(x, b, reduction="sum"), "xb", x=rn(2, 3, 4), b=rn(2, 3, 4))
case("mse_none", lambda x, b: F.mse_loss(x, b, reduction="none"), "xb", x=rn(2, 3, 4), b=rn(2, 3, 4))
case("wmse_disp", lambda x, b, w: (w * (x - b) ** 2).sum() / w.expand_as(x).sum(), "xb",
     x=rn(2, 2, 4, 5), b=rn(2, 2, 4, 5), w=torch.rand(2, 1, 4, 5) * (torch.rand(2, 1, 4, 5) < 0.6))

path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-train", "tests", "fixtures",
                    "train_losses.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path, metadata={"torch": torch.__version__, "script": "tools/golden/train_losses.py"})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
