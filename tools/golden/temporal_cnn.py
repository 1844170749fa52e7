"""Golden fixtures for canopy-temporal's convolutional classifiers (TempCNN, MS-ResNet,
InceptionTime) against the BreizhCrops reference implementations.

Run with the peer environment (../shared/peers/setup.sh) from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/golden/temporal_cnn.py
Pinned: torch 2.15.0, breizhcrops 0.0.4.1 (the reference code, unchanged except that
InceptionTime's plain Python lists of sub-modules are wrapped in nn.ModuleList, exactly as
../shared/peers/bench_breizhcrops.py does, so its state_dict holds every weight).

For every small case NAME it writes into crates/canopy-temporal/tests/fixtures/:
  NAME.safetensors     the model's state_dict (float64 weights, BatchNorm buffers with
                       non-trivial running statistics from a few train-mode passes,
                       num_batches_tracked as int64)
  NAME_io.safetensors  `x` (B, T, C) float64 input and `logp` (B, K) eval-mode log-probabilities
  NAME_grad.safetensors (dropout-free models: MS-ResNet, InceptionTime) one training step's
                       gradients from the state above: labels `y` (B,) int64, `loss` the mean
                       cross-entropy of a train-mode pass (batch statistics) on `x`, and
                       `grad.KEY` the gradient of that loss for every parameter KEY that the
                       forward pass uses (InceptionTime's reference leaves some unused); after the
                       pass, `after.KEY` the updated running statistics
For the default (BreizhCrops benchmark) configurations it writes only MODEL_defaults.json:
the number of parameters and the sorted list of [key, shape] of the state_dict, so the Rust
tests compare key sets and counts without committing megabytes of weights.
Everything is seeded (torch.manual_seed per case).
"""
import json
import os
import sys
import types

sys.modules.setdefault("h5py", types.ModuleType("h5py"))  # breizhcrops.datasets imports it

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from breizhcrops.models import InceptionTime, MSResNet, TempCNN  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "canopy-temporal", "tests", "fixtures")
torch.set_default_dtype(torch.float64)


def fix_inceptiontime(m):
    """Register InceptionTime's sub-modules (breizhcrops 0.0.4.1 keeps them in plain lists)."""
    for mod in m.inception_modules_list:
        mod.convolutions = nn.ModuleList(mod.convolutions)
    m.inception_modules_list = nn.ModuleList(m.inception_modules_list)
    m.shortcut_layer_list = nn.ModuleList(m.shortcut_layer_list)
    return m


def randomize(model, t, c):
    """Non-trivial BatchNorm affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(1.0 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
        model.train()
        for _ in range(3):
            model(1.5 * torch.randn(8, t, c) + 0.3)
    model.eval()


def export_case(name, model, batch, t, c, grads=False):
    randomize(model, t, c)
    x = torch.randn(batch, t, c)
    with torch.no_grad():
        logp = model(x)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    save_file({"x": x.contiguous(), "logp": logp.contiguous()}, os.path.join(OUT, f"{name}_io.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, {len(sd)} state_dict entries, logp {tuple(logp.shape)}")
    if grads:
        export_step(name, model, x, logp.shape[-1])


def export_step(name, model, x, classes):
    """The gradients of one training step (see the module docs), drawn after everything else
    of the case so that the case's other fixtures do not change."""
    y = torch.randint(0, classes, (x.shape[0],))
    model.train()
    model.zero_grad()
    # forward returns log-probabilities; nll of those is the cross-entropy of the logits
    loss = nn.functional.nll_loss(model(x), y)
    loss.backward()
    out = {"y": y, "loss": loss.detach().reshape(1)}
    out.update({f"grad.{k}": p.grad.detach().clone().contiguous()
                for k, p in model.named_parameters() if p.grad is not None})
    out.update({f"after.{k}": v.detach().clone().contiguous()
                for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))})
    model.eval()
    save_file(out, os.path.join(OUT, f"{name}_grad.safetensors"))
    print(f"{name}: train-mode loss {loss.item():.6f}, {len(out) - 2} gradients and statistics")


def export_defaults(name, model, registered=None):
    sd = model.state_dict()
    doc = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_dict": sorted([k, list(v.shape)] for k, v in sd.items()),
    }
    if registered is not None:
        doc["parameters_registered_upstream"] = registered
    with open(os.path.join(OUT, f"{name}_defaults.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{name} defaults: {doc['parameters']} parameters")


def main():
    os.makedirs(OUT, exist_ok=True)

    # TempCNN: kernel 7 'same' convolutions, dense 4 * hidden over the flattened sequence.
    torch.manual_seed(1)
    export_case("tempcnn", TempCNN(input_dim=13, num_classes=9, sequencelength=16, kernel_size=7,
                                   hidden_dims=12, dropout=0.2), batch=3, t=16, c=13)
    torch.manual_seed(2)
    export_case("tempcnn_k5", TempCNN(input_dim=4, num_classes=5, sequencelength=10, kernel_size=5,
                                      hidden_dims=8, dropout=0.5), batch=3, t=10, c=4)

    # MS-ResNet: the input is stretched to length 512 inside forward, whatever T is.
    torch.manual_seed(3)
    export_case("msresnet", MSResNet(input_dim=13, num_classes=9, hidden_dims=4,
                                     layers=[1, 1, 1, 1]), batch=3, t=24, c=13, grads=True)
    torch.manual_seed(4)
    # longer than 512: the nearest-neighbour stretch drops time steps instead of repeating them
    export_case("msresnet_long", MSResNet(input_dim=5, num_classes=4, hidden_dims=6),
                batch=2, t=700, c=5, grads=True)

    # InceptionTime, with all sub-modules registered.
    torch.manual_seed(5)
    export_case("inceptiontime", fix_inceptiontime(
        InceptionTime(input_dim=13, num_classes=9, num_layers=6, hidden_dims=8)), batch=3, t=24, c=13,
        grads=True)
    torch.manual_seed(6)
    export_case("inceptiontime_bias", fix_inceptiontime(
        InceptionTime(input_dim=3, num_classes=4, num_layers=4, hidden_dims=8, use_bias=True)),
        batch=2, t=7, c=3, grads=True)

    # 16 channels: the width from which canopy-nn runs stride-1 convolutions as Winograd
    # F(2, 7) products (odd length: the last tile has one output).
    torch.manual_seed(7)
    export_case("tempcnn_wide", TempCNN(input_dim=13, num_classes=9, sequencelength=9,
                                        kernel_size=7, hidden_dims=16, dropout=0.2),
                batch=3, t=9, c=13)

    # Default configurations of the BreizhCrops benchmark (13 bands, 9 classes, T = 45).
    torch.manual_seed(0)
    export_defaults("tempcnn", TempCNN(input_dim=13, num_classes=9, sequencelength=45))
    export_defaults("tempcnn_pelletier2019", TempCNN(input_dim=13, num_classes=9, sequencelength=45,
                                                     kernel_size=5, hidden_dims=64, dropout=0.5))
    export_defaults("msresnet", MSResNet(input_dim=13, num_classes=9))
    it = InceptionTime(input_dim=13, num_classes=9)
    registered = sum(p.numel() for p in it.parameters())
    export_defaults("inceptiontime", fix_inceptiontime(it), registered)


if __name__ == "__main__":
    main()
