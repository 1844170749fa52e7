"""Golden fixtures for canopy-temporal's LSTM and Transformer classifiers, from BreizhCrops.

Run with the peer environment (../shared/peers/setup.sh installs torch and breizhcrops):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/temporal_rnn.py
Pinned: torch 2.15.0, breizhcrops 0.0.4.1. Seeded (torch.manual_seed(0)), float64, eval mode.

Writes to crates/canopy-temporal/tests/fixtures/:
  {lstm,transformer,transformer_pe}_small.safetensors      the reference model's state_dict, as is
  {lstm,transformer,transformer_pe}_small_io.safetensors   `input` (B, T, C), `logits` (the values
      entering log_softmax, captured by calling `LSTM.logits` or hooking `outlinear`),
      `log_probs` (the reference's forward output) and per-model extras:
        lstm: `output` (last layer's hidden states, (B, T, 2H)), `c_n`, `h_n`
        transformer: `attn_l0`, the per-head attention weights of encoder layer 0, (B, heads, T, T)
  lstm_transformer_small.json   the small configurations used
  lstm_transformer_keys.json    for the DEFAULT configurations (13 bands, 9 classes) of LSTM,
      TransformerModel and PETransformerModel: parameter count and sorted (key, shape) list of
      the state_dict, so the Rust test checks key sets without committing megabytes of weights.

Every LayerNorm weight/bias and every bias is perturbed from its default (ones/zeros) so that a
key swapped between two norms cannot go unnoticed.
"""
import json
import os
import sys
import types

sys.modules.setdefault("h5py", types.ModuleType("h5py"))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from breizhcrops.models import LSTM, TransformerModel, PETransformerModel  # noqa: E402

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "crates", "canopy-temporal", "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)

B, T, C, K = 3, 12, 13, 5
SMALL = {
    "lstm": dict(input_dim=C, num_classes=K, hidden_dims=16, num_layers=2, dropout=0.3,
                 bidirectional=True, use_layernorm=True),
    "transformer": dict(input_dim=C, num_classes=K, d_model=16, n_head=2, n_layers=2,
                        d_inner=32, dropout=0.1),
    "petransformer": dict(input_dim=C, num_classes=K, d_model=16, n_head=2, n_layers=2,
                          d_inner=32, dropout=0.1, max_len=200),
}


def perturb(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def save_sd(name, model):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}_small.safetensors"))


def save_io(name, tensors):
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, f"{name}_small_io.safetensors"))


def capture_outlinear(model, x):
    seen = {}
    handle = model.outlinear.register_forward_hook(lambda m, i, o: seen.setdefault("y", o))
    log_probs = model(x)
    handle.remove()
    return seen["y"], log_probs


# LSTM
lstm = LSTM(**SMALL["lstm"])
perturb(lstm)
lstm.eval()
x = torch.randn(B, T, C)
with torch.no_grad():
    logits = lstm.logits(x)
    log_probs = lstm(x)
    output, (h_n, c_n) = lstm.lstm(lstm.inlayernorm(x))
save_sd("lstm", lstm)
save_io("lstm", dict(input=x, logits=logits, log_probs=log_probs, output=output, h_n=h_n,
                     c_n=c_n))

# TransformerModel (no positional encoding)
tr = TransformerModel(**SMALL["transformer"])
perturb(tr)
tr.eval()
x = torch.randn(B, T, C)
with torch.no_grad():
    logits, log_probs = capture_outlinear(tr, x)
    h = tr.relu(tr.inlinear(x)).transpose(0, 1)  # (T, B, D), the input of layer 0
    _, attn = tr.transformerencoder.layers[0].self_attn(
        h, h, h, need_weights=True, average_attn_weights=False)
save_sd("transformer", tr)
save_io("transformer", dict(input=x, logits=logits, log_probs=log_probs, attn_l0=attn))

# PETransformerModel (sinusoidal positions by time-step index)
pe = PETransformerModel(**SMALL["petransformer"])
perturb(pe)
pe.eval()
x = torch.randn(B, T, C)
with torch.no_grad():
    logits, log_probs = capture_outlinear(pe, x)
save_sd("transformer_pe", pe)
save_io("transformer_pe", dict(input=x, logits=logits, log_probs=log_probs))

with open(os.path.join(OUT, "lstm_transformer_small.json"), "w") as f:
    json.dump(dict(batch=B, time=T, **SMALL), f, indent=1, sort_keys=True)

# Default configurations: keys, shapes and parameter counts only.
keys = {}
for name, model in [("lstm", LSTM(13, 9)), ("transformer", TransformerModel(13, 9)),
                    ("petransformer", PETransformerModel(13, 9))]:
    keys[name] = dict(
        parameters=sum(p.numel() for p in model.parameters()),
        state_dict=sorted([k, list(v.shape)] for k, v in model.state_dict().items()),
    )
with open(os.path.join(OUT, "lstm_transformer_keys.json"), "w") as f:
    json.dump(keys, f, indent=1)
print("wrote", sorted(os.listdir(OUT)))
