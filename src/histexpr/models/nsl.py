"""``nsl``: Neural Stain Learning (Dawood et al. 2021), expression from colour by one convolution.

Every gene ``g`` owns a learned stain: a 1×1 convolution over the RGB pixel
``x_p`` (ImageNet-normalised), squashed per pixel, averaged over the window,
then scaled::

    ŷ_g = a_g · mean_p σ(w_gᵀ x_p + b_g) + c_g          w_g ∈ R³

so ``ŷ_g`` is an affine function of the *fraction of the window stained like
``w_g``*. No spatial kernel, no depth: what colour alone gives away. Dawood et
al. describe the model as a single convolution on colour intensity; the
per-pixel sigmoid and the per-gene affine output are our reading of it.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model


class NSL(nn.Module):
    def __init__(self, n_genes: int):
        super().__init__()
        self.stain = nn.Conv2d(3, n_genes, kernel_size=1)  # w_g, b_g
        self.scale = nn.Parameter(torch.ones(n_genes))  # a_g
        self.shift = nn.Parameter(torch.zeros(n_genes))  # c_g

    def features(self, batch: dict) -> torch.Tensor:
        """Per-gene stained fraction ``mean_p σ(w_gᵀ x_p + b_g)``, ``(B, M)``."""
        return torch.sigmoid(self.stain(batch["image"])).mean((2, 3))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.scale * self.features(batch) + self.shift


@register_model("nsl", kind="neural", needs=("windows",), description="NSL: per-gene stain by a 1x1 convolution")
def build_nsl(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    return NSL(n_genes)
