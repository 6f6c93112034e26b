"""A convolutional autoencoder: the first unsupervised extractor.

``E`` maps a window ``X`` (``3 x S x S``, ``S`` a power of two ≥ 16) through
stride-2 conv blocks down to ``4 x 4``, then a linear layer to the code
``e ∈ R^D`` (the window's "global view"); ``G`` mirrors it back to an image.
Trained with ``L1 = ||X - G(E(X))||_1``. EGN's StyleGAN-style extractor
replaces it later behind the same interface (``encode``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _block(cin: int, cout: int, down: bool) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1) if down else nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1))
    return nn.Sequential(conv, nn.GroupNorm(min(8, cout), cout), nn.LeakyReLU(0.2, inplace=True))


class ConvAutoencoder(nn.Module):
    """Args: ``input_px`` (S), ``dim`` (D), ``width`` (channels of the first block, doubling to 256)."""

    def __init__(self, input_px: int = 64, dim: int = 64, width: int = 32):
        super().__init__()
        n = int(math.log2(input_px)) - 2
        if 2 ** (n + 2) != input_px or n < 2:
            raise ValueError(f"extractor input_px must be a power of two >= 16, got {input_px}")
        chans = [min(256, width * 2**i) for i in range(n)]
        enc, cin = [], 3
        for c in chans:
            enc.append(_block(cin, c, down=True))
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.to_code = nn.Linear(chans[-1] * 16, dim)
        self.from_code = nn.Linear(dim, chans[-1] * 16)
        dec = []
        for c in reversed(chans[:-1]):
            dec.append(_block(cin, c, down=False))
            cin = c
        dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.input_px, self.dim, self.top = input_px, dim, chans[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] → ``(B, D)``."""
        return self.to_code(self.encoder(x * 2 - 1).flatten(1))

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` → ``(B, 3, S, S)`` in [0, 1]."""
        h = self.from_code(e).view(-1, self.top, 4, 4)
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
