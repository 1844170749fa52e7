"""Golden fixtures for canopy-temporal's MTLCC convolutional recurrent encoder, PyTorch float64.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/temporal_mtlcc.py
Writes crates/canopy-temporal/tests/fixtures/mtlcc.safetensors. For each case NAME: its
state_dict under `NAME.sd.<key>`, the input `NAME.x` (B, T, C, H, W), the per-pixel logits
`NAME.logits` (before the port's Softmax2d), the forward hidden/cell state sequences
`NAME.h` / `NAME.c` (B, T, hidden, H, W), optionally `NAME.lengths`, and the gradient of
sum(logits * NAME.r) w.r.t. the input (`NAME.gx`) and w.r.t. every parameter
(`NAME.grad.<key>`).

Case `port` is the structure of TUM-LMF/MTLCC-pytorch `LSTMSequentialEncoder` (Conv3d (1,3,3)
input convolution after zero padding, ndrplz-style ConvLSTM cell with one conv over [x, h]
giving the i, f, o, g gates, no cell bias, 3x3 head on the padded final *cell* state), written
out here because the port is not a pip package. The other cases extend it the way the
TensorFlow MTLCC model does (backward reading with separate or shared weights, sequence
lengths, ConvGRU cells as in pytorch_convgru); their semantics are canopy's, cross-checked by an
independent PyTorch implementation. Case `tf_layer_norm` is the TensorFlow MTLCC cell
(MarcCoru/tensorflow-convlstm-cell `ConvLSTMCell`, normalize=True, peephole=False: layer norm
with epsilon 1e-12 on every gate and on the new cell state, forget bias 1), read both ways with
shared weights; `tf_gru_layer_norm` its layer-normalised ConvGRU (ConvGRUCell, normalize=True),
read both ways with separate weights. Pinned: torch 2.15.0.

`Encoder` is also imported by tools/sits_reference_train.py (the PyTorch side of the ConvLSTM
comparison), so the fixtures are written only when this file runs as a script.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class LstmCell(nn.Module):
    def __init__(self, c, hidden, k, bias):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(c + hidden, 4 * hidden, k, padding=k // 2, bias=bias)

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden, 1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c2), c2


class ChannelNorm(nn.Module):
    """tf.contrib.layers.layer_norm on an NCHW map: statistics per sample over (C, H, W), biased
    variance, epsilon 1e-12; gain and shift per channel."""

    def __init__(self, hidden):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        y = (x - mean) / torch.sqrt(var + 1e-12)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LnLstmCell(nn.Module):
    """The TensorFlow MTLCC cell (MarcCoru/tensorflow-convlstm-cell ConvLSTMCell, normalize=True,
    peephole=False) with canopy's i, f, o, g block order: no conv bias, every gate and the new
    cell state layer-normalised, forget bias 1 added after the forget gate's normalisation."""

    def __init__(self, c, hidden, k, bias):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(c + hidden, 4 * hidden, k, padding=k // 2, bias=False)
        for n in ("i", "f", "o", "g", "c"):
            setattr(self, f"ln_{n}", ChannelNorm(hidden))

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden, 1)
        f = torch.sigmoid(self.ln_f(f) + 1.0)
        c2 = self.ln_c(f * c + torch.sigmoid(self.ln_i(i)) * torch.tanh(self.ln_g(g)))
        return torch.sigmoid(self.ln_o(o)) * torch.tanh(c2), c2


class GruCell(nn.Module):
    def __init__(self, c, hidden, k, bias):
        super().__init__()
        p = k // 2
        self.reset_gate = nn.Conv2d(c + hidden, hidden, k, padding=p, bias=bias)
        self.update_gate = nn.Conv2d(c + hidden, hidden, k, padding=p, bias=bias)
        self.out_gate = nn.Conv2d(c + hidden, hidden, k, padding=p, bias=bias)

    def norm(self, name, y):
        return y

    def forward(self, x, h, c):
        xh = torch.cat([x, h], 1)
        r = torch.sigmoid(self.norm("r", self.reset_gate(xh)))
        z = torch.sigmoid(self.norm("z", self.update_gate(xh)))
        n = torch.tanh(self.norm("n", self.out_gate(torch.cat([x, h * r], 1))))
        return h * (1 - z) + n * z, c


class LnGruCell(GruCell):
    """The TensorFlow MTLCC ConvGRU (MarcCoru/tensorflow-convlstm-cell ConvGRUCell,
    normalize=True): no conv biases, the reset, update and candidate pre-activations
    layer-normalised. TensorFlow's update gate u weighs the old state (h' = u h + (1 - u) n); this
    keeps z = 1 - u, the convention of the cell above, so h' = (1 - z) h + z n."""

    def __init__(self, c, hidden, k, bias):
        super().__init__(c, hidden, k, False)
        for n in ("r", "z", "n"):
            setattr(self, f"ln_{n}", ChannelNorm(hidden))

    def norm(self, name, y):
        return getattr(self, f"ln_{name}")(y)


class Encoder(nn.Module):
    def __init__(self, c, hidden, k, classes, gru=False, bias=False, direction="forward", head="cell",
                 layer_norm=False):
        super().__init__()
        self.hidden, self.direction, self.head, self.gru = hidden, direction, head, gru
        self.inconv = nn.Conv3d(c, hidden, (1, 3, 3))
        cell = {(False, False): LstmCell, (False, True): LnLstmCell, (True, False): GruCell,
                (True, True): LnGruCell}[(gru, layer_norm)]
        self.cell = cell(hidden, hidden, k, bias)
        if direction == "separate":
            self.cell_bw = cell(hidden, hidden, k, bias)
        d = 1 if direction == "forward" else 2
        self.final = nn.Conv2d(d * hidden, classes, (3, 3))

    def run(self, cell, x, lengths, reverse):
        b, _, t, hh, ww = x.shape
        h = torch.zeros(b, self.hidden, hh, ww)
        c = torch.zeros(b, self.hidden, hh, ww)
        hs, cs = [None] * t, [None] * t
        for s in (reversed(range(t)) if reverse else range(t)):
            h2, c2 = cell(x[:, :, s], h, c)
            m = (s < lengths).to(x.dtype).view(b, 1, 1, 1)
            h, c = m * h2 + (1 - m) * h, m * c2 + (1 - m) * c
            hs[s], cs[s] = h, c
        head = h if (self.gru or self.head == "hidden") else c
        return head, torch.stack(hs, 1), torch.stack(cs, 1)

    def forward(self, x, lengths):
        x = x.permute(0, 2, 1, 3, 4)
        x = self.inconv(F.pad(x, (1, 1, 1, 1)))
        head, h, c = self.run(self.cell, x, lengths, False)
        heads = [head]
        if self.direction != "forward":
            cell = self.cell_bw if self.direction == "separate" else self.cell
            heads.append(self.run(cell, x, lengths, True)[0])
        return self.final(F.pad(torch.cat(heads, 1), (1, 1, 1, 1))), h, c


def case(out, name, model, b=2, t=5, c=4, hw=(5, 4), lengths=None):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    x = torch.randn(b, t, c, *hw, requires_grad=True)
    lens = torch.tensor(lengths if lengths is not None else [t] * b)
    logits, h, cc = model(x, lens)
    r = torch.randn_like(logits)
    (logits * r).sum().backward()
    for k, v in model.state_dict().items():
        out[f"{name}.sd.{k}"] = v.detach().clone().contiguous()
    for k, p in model.named_parameters():
        out[f"{name}.grad.{k}"] = p.grad.detach().clone().contiguous()
    for k, v in dict(x=x, logits=logits, h=h, c=cc, r=r, gx=x.grad).items():
        out[f"{name}.{k}"] = v.detach().clone().contiguous()
    if lengths is not None:
        out[f"{name}.lengths"] = lens.to(torch.int64)


def main():
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    out = {}
    case(out, "port", Encoder(4, 6, 3, 3))
    case(out, "separate_lengths",
         Encoder(4, 5, 3, 3, bias=True, direction="separate", head="hidden"), b=3,
         lengths=[5, 3, 1])
    case(out, "gru_shared", Encoder(3, 4, 5, 2, gru=True, bias=True, direction="shared"), t=4,
         c=3, lengths=[2, 4])
    case(out, "tf_layer_norm", Encoder(3, 4, 3, 3, direction="shared", layer_norm=True), t=4, c=3,
         lengths=[4, 3])
    case(out, "tf_gru_layer_norm", Encoder(3, 4, 3, 2, gru=True, direction="separate",
                                           head="hidden", layer_norm=True), t=3, c=3)
    path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-temporal",
                        "tests", "fixtures", "mtlcc.safetensors")
    save_file(out, path)
    print("wrote", path, sum(v.numel() for v in out.values()), "values")


if __name__ == "__main__":
    main()
