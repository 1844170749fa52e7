"""Golden fixtures for canopy-segment's models: small PyTorch reference implementations of
Maggiori et al.'s FCN (TGRS 2017, large-scale) and its two-scale variant, the multi-scale MLP
network (Maggiori et al., TGRS 2017, high-resolution labelling), a plain U-Net (the layout of
../shared/peers/bench_unet.py, with or without batch norm), TernausNet's UNet11 (VGG11
encoder; Iglovikov & Shvets 2018, github.com/ternaus/TernausNet ternausnet/models.py) and the
U-Net with a ResNet encoder of segmentation_models_pytorch (smp 0.6.0, `smp.Unet`), written
with any widths and checked here against smp itself at the ResNet-18 defaults (same keys,
same logits) before the small case is exported.

Run with the peer environment (../shared/peers/setup.sh) from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/golden/segment_models.py [--only NAME,...]
Pinned: torch 2.15.0, torchvision 0.29.2, segmentation-models-pytorch 0.6.0. `--only` writes
just the named cases (and their defaults), leaving the other fixtures as they are.

For every small case NAME it writes into crates/canopy-segment/tests/fixtures/:
  NAME.safetensors     the model's state_dict (float64; batch-norm running statistics made
                       non-trivial by a few train-mode passes, num_batches_tracked int64)
  NAME_io.safetensors  `x` (B, C, H, W) float64 input and `y` the eval-mode logits
For the default (full-size) configurations it writes NAME_defaults.json: the parameter count
and the sorted [key, shape] list of the state_dict, so the Rust tests compare key sets without
committing megabytes of weights.

Inputs whose size is not a multiple of a model's total stride are zero-padded at the bottom
and right and the output is cropped back, exactly as the Rust models do. Everything is seeded.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.vgg import make_layers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "canopy-segment", "tests", "fixtures")
torch.set_default_dtype(torch.float64)


def pad_to(x, multiple):
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)), (h, w)


# ----------------------------------------------------------------------------- FCN
class MaggioriFcn(nn.Module):
    """conv 12x12/4 -> conv 4x4 -> conv 3x3 -> score conv 9x9 -> learned x4 deconvolution.
    Padding keeps the output at the input size for sizes that are multiples of 4."""

    def __init__(self, cin, k, widths=(64, 112, 80)):
        super().__init__()
        a, b, c = widths
        self.conv1 = nn.Conv2d(cin, a, 12, stride=4, padding=4)
        self.conv2 = nn.Conv2d(a, b, 4, padding=2)
        self.conv3 = nn.Conv2d(b, c, 3, padding=1)
        self.score = nn.Conv2d(c, k, 9, padding=4)
        self.deconv = nn.ConvTranspose2d(k, k, 8, stride=4, padding=4)

    def features(self, x):
        return F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))

    def forward(self, x):
        x, (h, w) = pad_to(x, 4)
        return self.deconv(self.score(self.features(x)))[..., :h, :w]


class FcnBranch(nn.Module):
    def __init__(self, cin, widths):
        super().__init__()
        a, b, c = widths
        self.conv1 = nn.Conv2d(cin, a, 12, stride=4, padding=4)
        self.conv2 = nn.Conv2d(a, b, 4, padding=2)
        self.conv3 = nn.Conv2d(b, c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))


class TwoScaleFcn(nn.Module):
    """Full-resolution branch + branch on the 2x average-pooled image; the coarse features are
    bilinearly resized onto the fine grid and concatenated before the score layer."""

    def __init__(self, cin, k, widths=(64, 112, 80)):
        super().__init__()
        self.fine = FcnBranch(cin, widths)
        self.coarse = FcnBranch(cin, widths)
        self.score = nn.Conv2d(2 * widths[2], k, 9, padding=4)
        self.deconv = nn.ConvTranspose2d(k, k, 8, stride=4, padding=4)

    def forward(self, x):
        x, (h, w) = pad_to(x, 8)
        fine = self.fine(x)
        coarse = self.coarse(F.avg_pool2d(x, 2))
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.deconv(self.score(torch.cat([fine, coarse], 1)))[..., :h, :w]


# ----------------------------------------------------------------------------- MLP net
class MlpNet(nn.Module):
    """Base FCN (conv + ReLU, 2x2 max-pool between levels); the features of every level are
    bilinearly resized to the input size, concatenated and classified per pixel by a
    two-layer MLP (1x1 convolutions), with or without a ReLU between its layers."""

    def __init__(self, cin, k, widths, kernels, hidden, relu):
        super().__init__()
        self.convs = nn.ModuleList()
        c = cin
        for wd, ks in zip(widths, kernels):
            self.convs.append(nn.Conv2d(c, wd, ks, padding=ks // 2))
            c = wd
        self.mlp_hidden = nn.Conv2d(sum(widths), hidden, 1)
        self.mlp_out = nn.Conv2d(hidden, k, 1)
        self.relu = relu
        self.levels = len(widths)

    def forward(self, x):
        x, (h, w) = pad_to(x, 2 ** (self.levels - 1))
        size = x.shape[-2:]
        feats = []
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = F.relu(conv(x))
            feats.append(x if i == 0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        z = self.mlp_hidden(torch.cat(feats, 1))
        if self.relu:
            z = F.relu(z)
        return self.mlp_out(z)[..., :h, :w]


# ----------------------------------------------------------------------------- U-Net
def double_conv(cin, cout, bn):
    if bn:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        )
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(),
    )


class UNet(nn.Module):
    """bench_unet.py's PlainUNet generalised: depth levels of width base * 2^i, 2x2 max-pool,
    2x2 stride-2 transposed convolutions, skip concatenation, 1x1 head."""

    def __init__(self, cin, k, base, depth, bn):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth)]
        self.downs = nn.ModuleList()
        c = cin
        for wd in widths:
            self.downs.append(double_conv(c, wd, bn))
            c = wd
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for wd in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(c, wd, 2, stride=2))
            self.up_convs.append(double_conv(2 * wd, wd, bn))
            c = wd
        self.head = nn.Conv2d(c, k, 1)
        self.depth = depth

    def forward(self, x):
        x, (h, w) = pad_to(x, 2 ** (self.depth - 1))
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x)
            if i < len(self.downs) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips)):
            x = conv(torch.cat([up(x), skip], 1))
        return self.head(x)[..., :h, :w]


# ----------------------------------------------------------------------------- TernausNet
class ConvRelu(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


class DecoderBlock(nn.Module):
    def __init__(self, cin, mid, cout):
        super().__init__()
        self.block = nn.Sequential(
            ConvRelu(cin, mid),
            nn.ConvTranspose2d(mid, cout, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.block(x)


class UNet11(nn.Module):
    """TernausNet's UNet11 with the VGG11 widths as a parameter (VGG11: 64, 128, 256, 512, 512)
    and the decoder's input widths computed from them (the reference writes them for
    num_filters = 32 only). The shared conv aliases (conv1 = encoder[0], ...) are registered
    as in the reference, so the state_dict holds both names."""

    def __init__(self, cin, k, nf=32, vgg=(64, 128, 256, 512, 512)):
        super().__init__()
        a, b, c, d, e = vgg
        self.encoder = make_layers([a, "M", b, "M", c, c, "M", d, d, "M", e, e, "M"])
        if cin != 3:
            self.encoder[0] = nn.Conv2d(cin, a, 3, padding=1)
        self.conv1, self.conv2 = self.encoder[0], self.encoder[3]
        self.conv3s, self.conv3 = self.encoder[6], self.encoder[8]
        self.conv4s, self.conv4 = self.encoder[11], self.encoder[13]
        self.conv5s, self.conv5 = self.encoder[16], self.encoder[18]
        self.center = DecoderBlock(e, nf * 16, nf * 8)
        self.dec5 = DecoderBlock(nf * 8 + e, nf * 16, nf * 8)
        self.dec4 = DecoderBlock(nf * 8 + d, nf * 16, nf * 4)
        self.dec3 = DecoderBlock(nf * 4 + c, nf * 8, nf * 2)
        self.dec2 = DecoderBlock(nf * 2 + b, nf * 4, nf)
        self.dec1 = ConvRelu(nf + a, nf)
        self.final = nn.Conv2d(nf, k, 1)

    def forward(self, x):
        x, (h, w) = pad_to(x, 32)
        p = lambda t: F.max_pool2d(t, 2)  # noqa: E731
        c1 = F.relu(self.conv1(x))
        c2 = F.relu(self.conv2(p(c1)))
        c3 = F.relu(self.conv3(F.relu(self.conv3s(p(c2)))))
        c4 = F.relu(self.conv4(F.relu(self.conv4s(p(c3)))))
        c5 = F.relu(self.conv5(F.relu(self.conv5s(p(c4)))))
        center = self.center(p(c5))
        d5 = self.dec5(torch.cat([center, c5], 1))
        d4 = self.dec4(torch.cat([d5, c4], 1))
        d3 = self.dec3(torch.cat([d4, c3], 1))
        d2 = self.dec2(torch.cat([d3, c2], 1))
        d1 = self.dec1(torch.cat([d2, c1], 1))
        return self.final(d1)[..., :h, :w]


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock with any widths."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Module):
    def __init__(self, cin, widths, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for s in range(4):
            layer = [BasicBlock(widths[s] if j == 0 else widths[s + 1], widths[s + 1],
                                (1 if s == 0 else 2) if j == 0 else 1) for j in range(blocks[s])]
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))

    def forward(self, x):
        f = [x, self.relu(self.bn1(self.conv1(x)))]
        y = self.maxpool(f[-1])
        for s in range(4):
            y = getattr(self, f"layer{s + 1}")(y)
            f.append(y)
        return f


def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmpDecoderBlock(nn.Module):
    def __init__(self, cin, skip, cout):
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x, size, skip):
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class SmpDecoder(nn.Module):
    def __init__(self, enc, dec):
        super().__init__()
        ins = [enc[4]] + list(dec[:-1])
        skips = [enc[3], enc[2], enc[1], enc[0], 0]
        self.blocks = nn.ModuleList(SmpDecoderBlock(i, s, o) for i, s, o in zip(ins, skips, dec))

    def forward(self, f):
        sizes = [t.shape[2:] for t in f][::-1]
        feats = f[1:][::-1]
        x = feats[0]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], feats[i + 1] if i + 1 < len(feats) else None)
        return x


class ResNetUNet(nn.Module):
    """smp.Unet with a ResNet encoder of any widths (smp 0.6.0 module names); pads to 32."""

    def __init__(self, cin, k, widths=(64, 64, 128, 256, 512), blocks=(2, 2, 2, 2), dec=(256, 128, 64, 32, 16)):
        super().__init__()
        self.encoder = ResNetEncoder(cin, widths, blocks)
        self.decoder = SmpDecoder(widths, dec)
        self.segmentation_head = nn.Sequential(nn.Conv2d(dec[-1], k, 3, padding=1))

    def forward(self, x):
        xp, (h, w) = pad_to(x, 32)
        return self.segmentation_head(self.decoder(self.encoder(xp)))[..., :h, :w]


def check_against_smp():
    """The reference above at the ResNet-18 defaults is smp.Unet("resnet18"): same state_dict
    keys and shapes (strict load both ways), same logits."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(11)
    theirs = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2).double()
    ours = ResNetUNet(3, 2)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    randomize_bn(theirs, (2, 3, 64, 64))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        d = (theirs(x) - ours(x)).abs().max().item()
    assert d < 1e-10, f"reference differs from smp by {d}"
    print(f"resnet_unet reference equals smp {smp.__version__} Unet(resnet18): max |diff| {d:.1e}")
    return theirs


# ----------------------------------------------------------------------------- export
def randomize_bn(model, shape):
    with torch.no_grad():
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.weight.copy_(1.0 + 0.3 * torch.randn_like(m.weight))
            m.bias.copy_(0.2 * torch.randn_like(m.bias))
        if bns:
            model.train()
            for _ in range(3):
                model(1.5 * torch.randn(*shape) + 0.3)
    model.eval()


def export_case(name, model, x):
    randomize_bn(model, (4,) + tuple(x.shape[1:]))
    with torch.no_grad():
        y = model(x)
    sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(OUT, f"{name}_io.safetensors"))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, y {tuple(y.shape)}")


def export_defaults(name, model):
    sd = model.state_dict()
    keys = sorted([k, list(v.shape)] for k, v in sd.items())
    # parameters() deduplicates the shared aliases, as a parameter count should
    n = sum(p.numel() for p in model.parameters())
    with open(os.path.join(OUT, f"{name}_defaults.json"), "w") as f:
        json.dump({"parameters": n, "state_dict": keys}, f, indent=0)
        f.write("\n")
    print(f"{name}_defaults: {n} params, {len(keys)} keys")


def main():
    import sys

    only = None
    if "--only" in sys.argv:
        only = set(sys.argv[sys.argv.index("--only") + 1].split(","))
    global export_case, export_defaults
    all_case, all_defaults = export_case, export_defaults

    def export_case(name, model, x):
        if only is None or name in only:
            all_case(name, model, x)

    def export_defaults(name, model):
        if only is None or name in only:
            all_defaults(name, model)

    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    export_case("fcn", MaggioriFcn(3, 2, widths=(8, 12, 10)), torch.randn(2, 3, 38, 50))
    torch.manual_seed(1)
    export_case("fcn_two_scale", TwoScaleFcn(4, 3, widths=(6, 8, 5)), torch.randn(2, 4, 44, 36))
    torch.manual_seed(2)
    export_case("mlpnet_relu", MlpNet(3, 3, (6, 8, 10, 12), (5, 5, 3, 3), 9, True), torch.randn(2, 3, 30, 26))
    torch.manual_seed(3)
    export_case("mlpnet_linear", MlpNet(3, 2, (6, 8, 10, 12), (5, 5, 3, 3), 7, False), torch.randn(1, 3, 24, 40))
    torch.manual_seed(4)
    export_case("unet_bn", UNet(3, 2, 4, 3, True), torch.randn(2, 3, 22, 29))
    torch.manual_seed(5)
    export_case("unet_plain", UNet(5, 3, 3, 4, False), torch.randn(1, 5, 32, 24))
    torch.manual_seed(6)
    export_case("ternaus", UNet11(3, 2, nf=2, vgg=(4, 6, 8, 8, 10)), torch.randn(1, 3, 40, 33))
    torch.manual_seed(7)
    export_defaults("fcn", MaggioriFcn(3, 2))
    export_defaults("fcn_two_scale", TwoScaleFcn(3, 2))
    export_defaults("mlpnet", MlpNet(3, 2, (32, 64, 96, 128), (5, 5, 3, 3), 100, True))
    export_defaults("unet_half", UNet(3, 2, 32, 5, False))
    export_defaults("unet_bench", UNet(3, 2, 32, 5, True))
    export_defaults("unet_original", UNet(3, 2, 64, 5, False))
    export_defaults("ternaus", UNet11(3, 1))
    if only is None or "resnet_unet" in only:
        smp_model = check_against_smp()
        torch.manual_seed(8)
        export_case("resnet_unet", ResNetUNet(3, 2, (4, 4, 6, 8, 10), (2, 1, 2, 1), (10, 8, 6, 4, 4)),
                    torch.randn(2, 3, 40, 70))
        export_defaults("resnet_unet", smp_model)


if __name__ == "__main__":
    main()
