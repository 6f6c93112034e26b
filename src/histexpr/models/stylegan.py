"""EGN's extractor (Sec. 3.1): encoder E, StyleGAN2-style generator G, discriminator F.

E maps a window to a style code, the window's *global view* ``e = E(X) ∈ R^D``.
G rebuilds the window from that code alone: every convolution is modulated by
``e`` and demodulated (StyleGAN2, Karras et al. 2020),

    s   = A(e)                                  per-layer affine, one scale per input channel
    w'  = w_{o,i,k} · s_i                        modulation
    w'' = w' / sqrt(Σ_{i,k} w'^2 + ε)            demodulation (per output channel o)

starting from a learned 4 × 4 constant, doubling the resolution per stage, with
per-pixel noise and a skip ``toRGB`` path. F is a residual convolutional
discriminator. Trained jointly (see :mod:`histexpr.train.extractor`) with

    L = ||X - G(E(X))||_1 + LPIPS(X, G(E(X))) + [softplus(F(X)) + softplus(-F(G(E(X))))]

as a min over E, G and max over F (non-saturating form). After training only E
is kept; its codes index the FAISS exemplar search.

As in StyleGAN, every weight uses the equalised learning rate (stored as
N(0, 1), scaled by ``1/sqrt(fan_in)`` at run time), so Adam's steps are the
same size relative to every layer's weights; without it, training at
StyleGAN's learning rates diverges. Simplifications against StyleGAN2,
stated: no mapping network (E produces the code directly, which is what EGN's
encoder replaces) and no path-length regulariser; F gets lazy R1
regularisation.
Images are in ``[-1, 1]``; shapes in docstrings use ``B`` batch, ``D`` code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _channels(px: int, input_px: int, width: int, cap: int) -> int:
    """Channels at resolution ``px``: ``width`` at full resolution, doubling per halving, at most ``cap``."""
    return min(cap, width * (input_px // px))


def _check_px(input_px: int) -> int:
    stages = int(round(math.log2(input_px))) - 2
    if input_px < 8 or 2 ** (stages + 2) != input_px:
        raise ValueError(f"extractor input_px must be a power of two >= 8, not {input_px}")
    return stages


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate (weights N(0, 1), scaled by ``1/sqrt(fan_in)``)."""

    def __init__(self, din: int, dout: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din))
        self.bias = nn.Parameter(torch.full((dout,), float(bias_init)))
        self.scale = 1 / math.sqrt(din)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualConv2d(nn.Module):
    """Convolution with the equalised learning rate."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.pad = 1 / math.sqrt(cin * k * k), k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


class ModulatedConv(nn.Module):
    """``k × k`` convolution whose weights are scaled per sample by a style code (and demodulated)."""

    def __init__(self, cin: int, cout: int, dim: int, k: int = 3, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1 / math.sqrt(cin * k * k)  # equalised learning rate
        self.affine = EqualLinear(dim, cin, bias_init=1.0)  # styles start near 1: a plain convolution
        self.bias = nn.Parameter(torch.zeros(cout))
        self.demodulate, self.pad = demodulate, k // 2

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """x ``(B, Cin, H, W)``, code ``(B, D)`` → ``(B, Cout, H, W)``."""
        b, cin, h, w = x.shape
        s = self.affine(code)  # (B, Cin)
        weight = self.scale * self.weight[None] * s[:, None, :, None, None]  # (B, Cout, Cin, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        # one grouped convolution: each sample convolved with its own weights
        out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(-1, cin, *weight.shape[-2:]), padding=self.pad,
                       groups=b)
        return out.reshape(b, -1, h, w) + self.bias[None, :, None, None]


class StyleLayer(nn.Module):
    """Modulated 3 × 3 conv, per-pixel noise with a learned per-channel strength, leaky ReLU."""

    def __init__(self, cin: int, cout: int, dim: int):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, dim)
        self.noise_strength = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, code)
        if self.training:
            x = x + self.noise_strength * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return F.leaky_relu(x, 0.2)


class Generator(nn.Module):
    """G: style code ``(B, D)`` → image ``(B, 3, P, P)`` (``P = input_px``)."""

    def __init__(self, input_px: int = 64, dim: int = 64, width: int = 32, cap: int = 256):
        super().__init__()
        stages = _check_px(input_px)
        c4 = _channels(4, input_px, width, cap)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.first = StyleLayer(c4, c4, dim)
        self.to_rgb = nn.ModuleList([ModulatedConv(c4, 3, dim, k=1, demodulate=False)])
        self.blocks = nn.ModuleList()
        px, cin = 4, c4
        for _ in range(stages):
            px *= 2
            cout = _channels(px, input_px, width, cap)
            self.blocks.append(nn.ModuleList([StyleLayer(cin, cout, dim), StyleLayer(cout, cout, dim)]))
            self.to_rgb.append(ModulatedConv(cout, 3, dim, k=1, demodulate=False))
            cin = cout

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.first(self.const.expand(code.shape[0], -1, -1, -1), code)
        rgb = self.to_rgb[0](x, code)
        for (a, b), to_rgb in zip(self.blocks, self.to_rgb[1:]):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = b(a(x, code), code)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + to_rgb(x, code)
        return rgb


class DownBlock(nn.Module):
    """Residual 2× downsampling block of E and F."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = EqualConv2d(cin, cin, 3)
        self.conv2 = EqualConv2d(cin, cout, 3)
        self.skip = EqualConv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + F.avg_pool2d(self.skip(x), 2)) / math.sqrt(2)


class _Pyramid(nn.Module):
    """fromRGB, then residual down blocks to 4 × 4, flatten: the trunk E and F share in shape (not weights)."""

    def __init__(self, input_px: int, width: int, cap: int):
        super().__init__()
        stages = _check_px(input_px)
        self.from_rgb = EqualConv2d(3, _channels(input_px, input_px, width, cap), 1)
        blocks, px = [], input_px
        for _ in range(stages):
            blocks.append(DownBlock(_channels(px, input_px, width, cap), _channels(px // 2, input_px, width, cap)))
            px //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out_features = _channels(4, input_px, width, cap) * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.leaky_relu(self.from_rgb(x), 0.2)).flatten(1)


class Encoder(nn.Module):
    """E: image ``(B, 3, P, P)`` in ``[-1, 1]`` → style code / global view ``(B, D)``."""

    def __init__(self, input_px: int = 64, dim: int = 64, width: int = 32, cap: int = 256):
        super().__init__()
        self.trunk = _Pyramid(input_px, width, cap)
        self.head = nn.Sequential(EqualLinear(self.trunk.out_features, 4 * dim), nn.LeakyReLU(0.2),
                                  EqualLinear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class Discriminator(nn.Module):
    """F: image ``(B, 3, P, P)`` → realness logit ``(B,)``."""

    def __init__(self, input_px: int = 64, width: int = 32, cap: int = 256):
        super().__init__()
        self.trunk = _Pyramid(input_px, width, cap)
        self.head = nn.Sequential(EqualLinear(self.trunk.out_features, 128), nn.LeakyReLU(0.2), EqualLinear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)


class StyleExtractor(nn.Module):
    """E and G together (F trains beside them): ``encode`` gives the global view, ``forward`` the reconstruction.

    Images enter ``encode``/``forward`` in ``[0, 1]`` (as the window store gives them) and are mapped to
    ``[-1, 1]`` inside; ``forward`` returns the reconstruction in ``[-1, 1]``.
    """

    kind = "stylegan"

    def __init__(self, input_px: int = 64, dim: int = 64, width: int = 32, cap: int = 256):
        super().__init__()
        self.input_px, self.dim = input_px, dim
        self.encoder = Encoder(input_px, dim, width, cap)
        self.generator = Generator(input_px, dim, width, cap)

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return self.encoder(x01 * 2 - 1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encode(x01))
