"""Golden fixtures for canopy-nn's operators, computed by PyTorch in float64.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/nn_ops.py
Writes crates/canopy-nn/tests/fixtures/nn_ops.safetensors. For every case NAME it stores the
inputs (NAME.x, NAME.w, NAME.b where used), a probe NAME.r, the output NAME.y and the gradients
of sum(y * r) with respect to each input (NAME.gx, NAME.gw, NAME.gb).
Pinned: torch 2.15.0, safetensors 0.7 (the versions the fixture was produced with).
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
out = {}


def case(name, fn, **inputs):
    ts = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = fn(**ts)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in ts.items():
        out[f"{name}.{k}"] = v.detach().contiguous()
        out[f"{name}.g{k}"] = v.grad.contiguous()
    out[f"{name}.r"] = r.contiguous()
    out[f"{name}.y"] = y.detach().contiguous()


rn = torch.randn
case("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2),
     x=rn(2, 4, 11), w=rn(6, 2, 3), b=rn(6))
case("conv2d_s2", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), x=rn(2, 4, 9, 8), w=rn(6, 4, 3, 3), b=rn(6))
case("conv2d_mixed", lambda x, w: F.conv2d(x, w, None, stride=(2, 3), padding=(1, 0), dilation=(2, 1), groups=2),
     x=rn(2, 4, 7, 10), w=rn(4, 2, 3, 2))
case("max_pool1d", lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), x=rn(2, 3, 10))
case("avg_pool1d", lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True), x=rn(2, 3, 10))
case("max_pool2d", lambda x: F.max_pool2d(x, (3, 2), (2, 1), (1, 1), ceil_mode=True), x=rn(2, 3, 9, 8))
case("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), x=rn(2, 3, 9, 8))
case("max_pool2d_k2", lambda x: F.max_pool2d(x, 2), x=rn(2, 3, 8, 6))
case("bilinear_up", lambda x: F.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False), x=rn(2, 3, 5, 7))
case("bilinear_up_ac", lambda x: F.interpolate(x, size=(8, 12), mode="bilinear", align_corners=True), x=rn(2, 3, 5, 7))
case("bilinear_down", lambda x: F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=False), x=rn(2, 3, 5, 7))
case("nearest_up", lambda x: F.interpolate(x, size=(8, 11), mode="nearest"), x=rn(2, 3, 5, 7))
case("nearest_down", lambda x: F.interpolate(x, size=(3, 4), mode="nearest"), x=rn(2, 3, 5, 7))
case("adaptive_avg", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), x=rn(2, 3, 5, 7))
case("linear1d", lambda x: F.interpolate(x, size=17, mode="linear", align_corners=False), x=rn(2, 3, 6))
case("softmax", lambda x: F.softmax(x, dim=1), x=rn(3, 5, 4))
case("log_softmax", lambda x: F.log_softmax(x, dim=-1), x=rn(3, 5, 4))
case("layer_norm", lambda x, w, b: F.layer_norm(x, (6,), w, b, eps=1e-5), x=rn(3, 4, 6), w=rn(6), b=rn(6))

grid = (torch.rand(2, 4, 5, 2) * 2.4 - 1.2)
for pad in ("zeros", "border"):
    for ac in (False, True):
        case(f"grid_sample_{pad}_{int(ac)}",
             lambda x, g: F.grid_sample(x, g, mode="bilinear", padding_mode=pad, align_corners=ac),
             x=rn(2, 3, 6, 7), g=grid.clone())

case("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2),
     x=rn(2, 4, 5, 6), w=rn(4, 3, 3, 3), b=rn(6))
case("conv_transpose2d_mixed", lambda x, w: F.conv_transpose2d(x, w, None, stride=(1, 3), padding=(2, 0), output_padding=(0, 2), dilation=(2, 1)),
     x=rn(1, 3, 6, 4), w=rn(3, 2, 3, 2))
case("conv_transpose1d", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=3, padding=2, output_padding=1, dilation=2),
     x=rn(2, 3, 7), w=rn(3, 5, 4), b=rn(5))
# 3x3, unit stride, >= 16 channels: canopy's Winograd F(2x2, 3x3) path (odd output sizes, and
# zero padding on one axis only)
case("conv2d_3x3_winograd", lambda x, w, b: F.conv2d(x, w, b, padding=(1, 0)),
     x=rn(2, 16, 9, 8), w=rn(17, 16, 3, 3), b=rn(17))

path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-nn", "tests", "fixtures", "nn_ops.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path, metadata={"torch": torch.__version__, "script": "tools/golden/nn_ops.py"})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
