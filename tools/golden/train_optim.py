"""Golden fixtures for canopy-train's optimizers, LR schedules and gradient clipping, computed by
PyTorch in float64.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/train_optim.py
Writes crates/canopy-train/tests/fixtures/train_optim.safetensors:

- `problem.x` (8, 4), `problem.y` (8, 3), `init.weight` (3, 4), `init.bias` (3,): a linear
  regression, loss = mean((x @ weight.T + bias - y) ** 2).
- `<opt>.weight` (20, 3, 4), `<opt>.bias` (20, 3): the parameters after each of 20 optimizer
  steps taken on that loss, for every optimizer configuration listed in OPTIMIZERS below.
- `clip.g0`, `clip.g1`, `clip.g2`: gradients; `clip.<case>.norm` (1,) the total norm returned by
  clip_grad_norm_ / the clipped gradients `clip.<case>.g*`; `clip.value.g*` after
  clip_grad_value_(0.5).
- `sched.<name>` (40,): the learning rate in force at steps 0..39 for every schedule in
  SCHEDULES below (read from param_groups[0]["lr"] before each optimizer step).
Pinned: torch 2.15.0, safetensors 0.7 (the versions the fixture was produced with).
"""
import math
import os

import torch
from torch.optim import SGD, Adam, AdamW
from torch.optim import lr_scheduler as S
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
out = {}

# ---- optimizers on a linear regression ------------------------------------------------------
x = torch.randn(8, 4)
y = torch.randn(8, 3)
w0 = torch.randn(3, 4) * 0.5
b0 = torch.randn(3) * 0.5
out["problem.x"], out["problem.y"] = x, y
out["init.weight"], out["init.bias"] = w0, b0

OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.1),
    "sgd_momentum": lambda p: SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    "sgd_nesterov": lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: Adam(p, lr=1e-2),
    "adam_l2": lambda p: Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "adamw": lambda p: AdamW(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "adamw_default": lambda p: AdamW(p, lr=1e-2),
}
for name, make in OPTIMIZERS.items():
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = make([w, b])
    ws, bs = [], []
    for _ in range(20):
        opt.zero_grad()
        loss = ((x @ w.T + b - y) ** 2).mean()
        loss.backward()
        opt.step()
        ws.append(w.detach().clone())
        bs.append(b.detach().clone())
    out[f"{name}.weight"] = torch.stack(ws)
    out[f"{name}.bias"] = torch.stack(bs)

# ---- gradient clipping ------------------------------------------------------------------------
grads = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)]
for i, g in enumerate(grads):
    out[f"clip.g{i}"] = g
for case, max_norm, norm_type in (("l2", 1.0, 2.0), ("l2_big", 100.0, 2.0), ("inf", 0.5, math.inf), ("l1", 2.0, 1.0)):
    ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    out[f"clip.{case}.norm"] = total.reshape(1)
    for i, p in enumerate(ps):
        out[f"clip.{case}.g{i}"] = p.grad
ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
for p, g in zip(ps, grads):
    p.grad = g.clone()
torch.nn.utils.clip_grad_value_(ps, 0.5)
for i, p in enumerate(ps):
    out[f"clip.value.g{i}"] = p.grad


# ---- learning-rate schedules -----------------------------------------------------------------
def noam(d_model, warmup):
    def f(t):
        s = t + 1
        return d_model ** -0.5 * min(s ** -0.5, s * warmup ** -1.5)
    return f


SCHEDULES = {
    "step": (0.1, lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": (0.1, lambda o: S.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3)),
    "exponential": (0.1, lambda o: S.ExponentialLR(o, gamma=0.95)),
    "cosine": (0.1, lambda o: S.CosineAnnealingLR(o, T_max=30, eta_min=1e-3)),
    "cyclic_triangular": (0.1, lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, cycle_momentum=False)),
    "cyclic_triangular2": (0.1, lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=6,
                                                    mode="triangular2", cycle_momentum=False)),
    "cyclic_exp_range": (0.1, lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range",
                                                  gamma=0.97, cycle_momentum=False)),
    "onecycle": (0.1, lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=40, cycle_momentum=False)),
    "onecycle_linear3": (0.1, lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=40, pct_start=0.25,
                                                    anneal_strategy="linear", three_phase=True,
                                                    cycle_momentum=False)),
    "linear": (0.1, lambda o: S.LinearLR(o, start_factor=0.1, total_iters=8)),
    "noam": (1.0, lambda o: S.LambdaLR(o, noam(64, 10))),
    "warmup_cosine": (0.1, lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=5),
                                                        S.CosineAnnealingLR(o, T_max=35)], milestones=[5])),
}
for name, (lr, make) in SCHEDULES.items():
    p = torch.zeros(1, requires_grad=True)
    opt = SGD([p], lr=lr)
    sched = make(opt)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out[f"sched.{name}"] = torch.tensor(lrs)

out = {k: v.detach().contiguous() for k, v in out.items()}
path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-train", "tests", "fixtures",
                    "train_optim.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path, metadata={"torch": torch.__version__, "script": "tools/golden/train_optim.py"})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
