"""``cyclemlp``: CycleMLP (Chen et al. 2021), an MLP-like backbone, regressing expression.

Feature maps ``X`` are ``(B, H, W, C)``. The token mixer of every block is a
weighted sum of three channel FCs, two of them *cycle* FCs::

    CycleFC_w(X)[h, w, c] = Σ_c' W[c, c'] · X[h, w + δ(c'), c'],    δ(c') = ((c' + 1) mod 3) − 1
    H = CycleFC_w(X),  V = CycleFC_h(X),  C = X W_c                 (1×3 and 3×1 pseudo-kernels)
    a = softmax over the 3 branches of MLP(mean_hw(H + V + C))      (per channel)
    Mix(X) = W_p (a_1 ⊙ H + a_2 ⊙ V + a_3 ⊙ C)

so each channel reads one neighbouring position, cycling through the
pseudo-kernel along the channel axis (out-of-image positions read zero): a
receptive field at the cost of a 1×1 layer. Block: ``X + Mix(LN X)`` then
``X + MLP(LN X)``. Four stages (overlapping 7×7 stride-4 patch embedding,
3×3 stride-2 convs between stages), average pooling, a linear head.
CycleMLP-B2: dims 64/128/320/512, depths 2/3/10/3, MLP ratio 4 (26.8 M
parameters with an ImageNet head); our defaults are a small CPU preset.
The paper's CycleFC is a deformable convolution with fixed offsets; shifting
each channel group and applying a linear layer computes the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from . import register_model
from .weights import init_weights, load_pretrained

DEFAULTS = dict(embed_dims=[32, 64, 128, 192], depths=[1, 1, 2, 1], mlp_ratio=4.0, drop_path=0.1,
                pretrained_checkpoint=None)
B2 = dict(embed_dims=[64, 128, 320, 512], depths=[2, 3, 10, 3], mlp_ratio=4.0)


def cycle_shift(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Shift channel ``c`` of ``(B, H, W, C)`` by ``δ(c) = ((c + 1) mod 3) − 1`` along ``axis`` (1 = H, 2 = W),
    reading zeros beyond the border: ``out[..., p, c] = x[..., p + δ(c), c]``."""
    delta = (torch.arange(x.shape[-1], device=x.device) + 1) % 3 - 1
    out = torch.zeros_like(x)
    n = x.shape[axis]
    for d in (-1, 0, 1):
        ch = (delta == d).nonzero().squeeze(1)
        src = x.index_select(-1, ch).narrow(axis, max(d, 0), n - abs(d))
        out.index_copy_(-1, ch, F.pad(src, _pad(axis, d)) if d else src)
    return out


def _pad(axis: int, d: int) -> tuple[int, ...]:
    """F.pad amounts restoring length after reading ``p + d`` (zeros where it falls outside)."""
    before, after = (0, 1) if d == 1 else (1, 0)
    # F.pad's tuple runs from the last dimension backwards: (C, C, W, W, H, H)
    return (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)


class CycleMixer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc_w, self.fc_h, self.fc_c = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.reweight = nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 3 * dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        """``(B, H, W, C)`` → ``(B, H, W, C)``."""
        b, _, _, c = x.shape
        h, v, ch = self.fc_w(cycle_shift(x, 2)), self.fc_h(cycle_shift(x, 1)), self.fc_c(x)
        a = self.reweight((h + v + ch).mean((1, 2))).view(b, c, 3).softmax(-1)  # (B, C, 3)
        a = a.permute(2, 0, 1)[:, :, None, None, :]  # (3, B, 1, 1, C)
        return self.proj(a[0] * h + a[1] * v + a[2] * ch)


class CycleBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1, self.mix = nn.LayerNorm(dim), CycleMixer(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


    def forward(self, x):
        x = x + self.drop_path(self.mix(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CycleMLP(nn.Module):
    """``(B, 3, S, S)`` → ``(B, M)``."""

    def __init__(self, n_genes: int, embed_dims, depths, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.stem = nn.Conv2d(3, embed_dims[0], 7, 4, 2)  # overlapping patch embedding
        self.down = nn.ModuleList([nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, 2, 1) for i in range(3)])
        dpr = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages, k = nn.ModuleList(), 0
        for dim, depth in zip(embed_dims, depths):
            self.stages.append(nn.Sequential(*[CycleBlock(dim, mlp_ratio, dpr[k + j]) for j in range(depth)]))
            k += depth
        self.norm, self.head = nn.LayerNorm(embed_dims[-1]), nn.Linear(embed_dims[-1], n_genes)
        self.apply(init_weights)


    def features(self, batch: dict) -> torch.Tensor:
        """Average-pooled last-stage features ``(B, C_4)``."""
        x = self.stem(batch["image"]).permute(0, 2, 3, 1)  # (B, S/4, S/4, C_1)
        for i, stage in enumerate(self.stages):
            if i:
                x = self.down[i - 1](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            x = stage(x)
        return self.norm(x).mean((1, 2))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))


@register_model("cyclemlp", kind="neural", needs=("windows",), description="CycleMLP (B2 in the EGN paper)")
def build_cyclemlp(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    model = CycleMLP(n_genes, p["embed_dims"], p["depths"], p["mlp_ratio"], p["drop_path"])
    load_pretrained(model, p["pretrained_checkpoint"], "cyclemlp")
    return model
