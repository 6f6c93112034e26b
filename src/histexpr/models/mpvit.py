"""``mpvit``: MPViT, the Multi-Path Vision Transformer (Lee et al. 2022), regressing expression.

Stem (two 3×3 stride-2 conv-BN-Hardswish) to ``S/4``, then four stages; stage
``i`` with ``P`` paths::

    multi-scale patch embedding   E_1 = DWConvBN(X) (stride 2 after stage 1), E_p = DWConvBN(E_{p-1})
                                  → receptive fields 3, 5, 7, ... at one resolution
    per path p                    L MHCA blocks on the tokens of E_p:
                                      X ← X + DWConv3×3(X)                         conv position encoding
                                      X ← X + W_o FA(LN X),  FA = (Q/√d)(softmax_N(K)ᵀ V) + Q ⊙ DWConv(V)
                                      X ← X + MLP(LN X)
    local path                    X + 1×1 conv → DW 3×3 → 1×1 conv (BN, Hardswish) on E_1
    aggregation                   1×1 conv-BN-Hardswish of [local, path_1, ..., path_P] → next stage width

``FA`` is CoaT's factorised attention, linear in the number of tokens, with a
convolutional relative position term whose depth-wise kernels are 3, 5 and 7
over head groups (2, 3, 3 of 8 heads). Head: global average pool, linear.
MPViT-Base: widths 128/224/368/480, layers 1/3/8/3, paths 2/3/3/3, 8 heads,
MLP ratio 4 (74.8 M parameters with an ImageNet head); the defaults below
are a small CPU preset.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from . import register_model
from .weights import init_weights, load_pretrained

DEFAULTS = dict(embed_dims=[32, 48, 64, 96], depths=[1, 1, 1, 1], paths=[2, 2, 2, 2], num_heads=8, mlp_ratio=2,
                drop_path=0.0, pretrained_checkpoint=None)
BASE = dict(embed_dims=[128, 224, 368, 480], depths=[1, 3, 8, 3], paths=[2, 3, 3, 3], num_heads=8, mlp_ratio=4)
CRPE_WINDOWS = {3: 2, 5: 3, 7: 3}  # kernel size: heads (of 8)


def conv_bn(cin, cout, k=1, stride=1, act=True, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.Hardswish() if act else nn.Identity())


def dw_conv_bn(dim, stride=1):
    """Depth-wise separable 3×3: DW conv, point-wise conv, BN, Hardswish."""
    return nn.Sequential(nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False), nn.Conv2d(dim, dim, 1, bias=False),
                         nn.BatchNorm2d(dim), nn.Hardswish())


class ConvRelPos(nn.Module):
    """``Q ⊙ DWConv(V)`` with one depth-wise kernel size per group of heads."""

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        split = _head_split(heads)
        self.channels = [h * head_dim for h in split.values()]
        self.convs = nn.ModuleList([nn.Conv2d(c, c, k, 1, k // 2, groups=c) for k, c in zip(split, self.channels)])

    def forward(self, q, v, hw):
        b, h, n, d = q.shape
        img = v.transpose(2, 3).reshape(b, h * d, *hw)
        conv = torch.cat([c(x) for c, x in zip(self.convs, img.split(self.channels, 1))], 1)
        return q * conv.reshape(b, h, d, n).transpose(2, 3)


def _head_split(heads: int) -> dict[int, int]:
    if heads == 8:
        return dict(CRPE_WINDOWS)
    return {3: heads}  # other head counts: one 3×3 kernel for all


class FactorisedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, crpe: ConvRelPos):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.crpe = crpe  # shared by the blocks of a path

    def forward(self, x, hw):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, N, d) each
        context = k.softmax(dim=2).transpose(2, 3) @ v  # softmax_N(K)ᵀ V  (B, h, d, d)
        out = self.scale * (q @ context) + self.crpe(q, v, hw)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MHCABlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop_path, cpe: nn.Module, crpe: ConvRelPos):
        super().__init__()
        self.cpe = cpe  # shared by the blocks of a path
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), FactorisedAttention(dim, heads, crpe)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


    def forward(self, x, hw):
        b, n, c = x.shape
        g = x.transpose(1, 2).reshape(b, c, *hw)
        x = (self.cpe(g) + g).flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Path(nn.Module):
    """``depth`` MHCA blocks on one scale's tokens: ``(B, C, H, W)`` → ``(B, C, H, W)``."""

    def __init__(self, dim, depth, heads, mlp_ratio, drop_paths):
        super().__init__()
        cpe, crpe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), ConvRelPos(dim // heads, heads)
        self.blocks = nn.ModuleList([MHCABlock(dim, heads, mlp_ratio, dp, cpe, crpe) for dp in drop_paths])

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


class MPStage(nn.Module):
    def __init__(self, dim, out_dim, depth, paths, heads, mlp_ratio, downsample, drop_paths):
        super().__init__()
        self.embeds = nn.ModuleList([dw_conv_bn(dim, 2 if downsample and i == 0 else 1) for i in range(paths)])
        self.paths = nn.ModuleList([Path(dim, depth, heads, mlp_ratio, drop_paths) for _ in range(paths)])
        self.local = nn.Sequential(conv_bn(dim, dim), nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False),
                                   nn.BatchNorm2d(dim), nn.Hardswish(), conv_bn(dim, dim, act=False))
        self.aggregate = conv_bn(dim * (paths + 1), out_dim)

    def forward(self, x):
        scales = []
        for embed in self.embeds:  # E_p = DWConvBN(E_{p-1}): receptive fields 3, 5, 7
            x = embed(x)
            scales.append(x)
        outs = [scales[0] + self.local(scales[0])] + [path(e) for path, e in zip(self.paths, scales)]
        return self.aggregate(torch.cat(outs, 1))


class MPViT(nn.Module):
    """``(B, 3, S, S)`` → ``(B, M)``."""

    def __init__(self, n_genes, embed_dims, depths, paths, num_heads, mlp_ratio, drop_path):
        super().__init__()
        d = embed_dims
        self.stem = nn.Sequential(conv_bn(3, d[0] // 2, 3, 2), conv_bn(d[0] // 2, d[0], 3, 2))
        dpr = torch.linspace(0, drop_path, sum(depths)).tolist()
        offsets = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList([
            MPStage(d[i], d[min(i + 1, 3)], depths[i], paths[i], num_heads, mlp_ratio, i > 0,
                    dpr[offsets[i]:offsets[i] + depths[i]]) for i in range(4)])
        self.head = nn.Linear(d[-1], n_genes)
        self.apply(init_weights)

    def features(self, batch: dict) -> torch.Tensor:
        """Average-pooled last-stage features ``(B, C_4)``."""
        x = self.stem(batch["image"])
        for stage in self.stages:
            x = stage(x)
        return x.mean((2, 3))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))


@register_model("mpvit", kind="neural", needs=("windows",), description="MPViT (Base in the EGN paper)")
def build_mpvit(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    if any(dim % p["num_heads"] for dim in p["embed_dims"]):
        raise ValueError(f"mpvit: every embed_dim must be divisible by num_heads ({p['num_heads']})")
    model = MPViT(n_genes, p["embed_dims"], p["depths"], p["paths"], p["num_heads"], p["mlp_ratio"], p["drop_path"])
    load_pretrained(model, p["pretrained_checkpoint"], "mpvit")
    return model
