"""Golden fixtures for canopy-nn's blocks (attention, Transformer layers, LSTM), PyTorch float64.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/nn_blocks.py
Writes crates/canopy-nn/tests/fixtures/nn_blocks.safetensors: for each block NAME its state_dict
under `NAME.sd.<key>`, the inputs, the outputs, and the gradient of sum(out * NAME.r) w.r.t. the
input (`NAME.gx`). Modules run in eval mode (dropout off). Pinned: torch 2.15.0.
"""
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
out = {}


def put(name, **ts):
    for k, v in ts.items():
        out[f"{name}.{k}"] = v.detach().clone().contiguous()


def sd(name, module):
    for k, v in module.state_dict().items():
        out[f"{name}.sd.{k}"] = v.detach().clone().contiguous()


# MultiheadAttention, self-attention with a key padding mask, per-head weights
mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
with torch.no_grad():
    mha.in_proj_bias.normal_()
    mha.out_proj.bias.normal_()
x = torch.randn(3, 5, 8, requires_grad=True)
mask = torch.zeros(3, 5, dtype=torch.bool)
mask[1, 3:] = True
mask[2, 4] = True
y, w = mha(x, x, x, key_padding_mask=mask, need_weights=True, average_attn_weights=False)
r = torch.randn_like(y)
(y * r).sum().backward()
sd("mha", mha)
put("mha", x=x, mask=mask.to(torch.uint8), y=y, w=w, r=r, gx=x.grad)

for name, act, first in (("enc_post_relu", "relu", False), ("enc_pre_gelu", "gelu", True)):
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, activation=act,
                                             batch_first=True, norm_first=first).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 6, 8, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 5] = True
    # the fast path would skip autograd-free checks; gradients need the regular path
    y = layer(x, src_key_padding_mask=mask)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    sd(name, layer)
    put(name, x=x, mask=mask.to(torch.uint8), y=y, r=r, gx=x.grad)

# stacked bidirectional LSTM, with and without packed lengths
lstm = torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3).eval()
x = torch.randn(3, 6, 5, requires_grad=True)
y, (hn, cn) = lstm(x)
r = torch.randn_like(y)
(y * r).sum().backward()
sd("lstm", lstm)
put("lstm", x=x, y=y, hn=hn, cn=cn, r=r, gx=x.grad)
x2 = x.detach().clone().requires_grad_(True)
lengths = torch.tensor([6, 4, 1])
packed = torch.nn.utils.rnn.pack_padded_sequence(x2, lengths, batch_first=True, enforce_sorted=False)
yp, (hn2, cn2) = lstm(packed)
y2, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=6)
r2 = torch.randn_like(y2)
(y2 * r2).sum().backward()
put("lstm_packed", x=x2, lengths=lengths.to(torch.int64), y=y2, hn=hn2, cn=cn2, r=r2, gx=x2.grad)

# stacked bidirectional GRU with packed lengths
gru = torch.nn.GRU(5, 3, num_layers=2, bidirectional=True, batch_first=True).eval()
x3 = torch.randn(3, 6, 5, requires_grad=True)
packed = torch.nn.utils.rnn.pack_padded_sequence(x3, torch.tensor([6, 2, 5]), batch_first=True, enforce_sorted=False)
yp, hn3 = gru(packed)
y3, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=6)
r3 = torch.randn_like(y3)
(y3 * r3).sum().backward()
sd("gru", gru)
put("gru", x=x3, y=y3, hn=hn3, r=r3, gx=x3.grad)

# BatchNorm2d: one training step (batch statistics, running-stat update), then evaluation
bn = torch.nn.BatchNorm2d(3)
with torch.no_grad():
    bn.weight.normal_()
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
sd("bn", bn)
bn.train()
x = torch.randn(4, 3, 5, 6, requires_grad=True)
y = bn(x)
r = torch.randn_like(y)
(y * r).sum().backward()
put("bn", x=x, y=y, r=r, gx=x.grad, running_mean=bn.running_mean, running_var=bn.running_var)
bn.eval()
put("bn", y_eval=bn(x).detach())

# ConvLSTM (ndrplz layout: one conv over [x, h] -> i, f, o, g) and ConvGRU (pytorch_convgru
# layout), each run bidirectionally over a sequence with the cell shared between directions
class ConvLSTMCell(torch.nn.Module):
    def __init__(self, cin, hid, k):
        super().__init__()
        self.hid = hid
        self.conv = torch.nn.Conv2d(cin + hid, 4 * hid, k, padding=k // 2)

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hid, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvGRUCell(torch.nn.Module):
    def __init__(self, cin, hid, k):
        super().__init__()
        self.reset_gate = torch.nn.Conv2d(cin + hid, hid, k, padding=k // 2)
        self.update_gate = torch.nn.Conv2d(cin + hid, hid, k, padding=k // 2)
        self.out_gate = torch.nn.Conv2d(cin + hid, hid, k, padding=k // 2)

    def forward(self, x, h):
        xh = torch.cat([x, h], 1)
        r = torch.sigmoid(self.reset_gate(xh))
        z = torch.sigmoid(self.update_gate(xh))
        n = torch.tanh(self.out_gate(torch.cat([x, h * r], 1)))
        return h * (1 - z) + n * z


def run(cell, x, hid, reverse, lstm):
    b, t, _, hh, ww = x.shape
    h = torch.zeros(b, hid, hh, ww)
    c = torch.zeros_like(h)
    outs = [None] * t
    for s in (reversed(range(t)) if reverse else range(t)):
        if lstm:
            h, c = cell(x[:, s], h, c)
        else:
            h = cell(x[:, s], h)
        outs[s] = h
    return torch.stack(outs, 1)


for name, lstm in (("convlstm", True), ("convgru", False)):
    cell = ConvLSTMCell(3, 4, 3) if lstm else ConvGRUCell(3, 4, 3)
    x = torch.randn(2, 4, 3, 5, 6, requires_grad=True)
    y = torch.cat([run(cell, x, 4, False, lstm), run(cell, x, 4, True, lstm)], 2)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in cell.state_dict().items():
        out[f"{name}.sd.forward.{k}"] = v.detach().clone()
    put(name, x=x, y=y, r=r, gx=x.grad)

path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-nn", "tests", "fixtures", "nn_blocks.safetensors")
save_file(out, path, metadata={"torch": torch.__version__, "script": "tools/golden/nn_blocks.py"})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
