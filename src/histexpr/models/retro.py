"""``retro``: the EGN paper's Retro baseline — RETRO's chunked cross-attention on a ViT.

RETRO (Borgeaud et al. 2022) splits a sequence into chunks; each chunk's
retrieved neighbours are encoded *conditioned on that chunk* and the chunk's
tokens cross-attend to them. Adapted to windows as the EGN paper says, the
retrieved representations are the exemplars' global views ``e_j`` (the
extractor's output)::

    chunks        patch tokens Z (B, L, C) → U chunks H_u of m tokens (default m = one row of patches)
    encoder       n⁰_{u,j} = W_e e_j + p_j                                  (B, U, k, C)
                  n_{u,j} ← n_{u,j} + CA(LN n_{u,j}, LN H_u);  n ← n + FFN(LN n)     × encoder_depth
                  (run once, at the first CCA layer, on that layer's activations H)
    CCA           Z_u ← Z_u + W_o CA(LN Z_u, N_u)   after every ``frequency``-th ViT block
    prediction    ŷ = W · mean_l LN(Z^T)_l + b

Differences from RETRO, forced by images: a window is not autoregressive, so
chunk ``u`` attends to its own neighbours rather than those of chunk ``u − 1``;
each neighbour is one token (``e_j``), so the encoder has no self-attention
within a neighbour; all chunks of a window share its ``k`` exemplars but
encode them differently. ViT-B in the paper; small CPU defaults here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import register_model
from .vitexp import key_mask
from .weights import load_pretrained

DEFAULTS = dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, drop_path=0.1, n_exemplars=9,
                frequency=2, chunk_size=0, encoder_depth=2, pretrained_checkpoint=None)


class CrossAttention(nn.Module):
    """Queries ``(..., n, C)`` attend to keys/values ``(..., k, C)``; ``mask`` additive, broadcastable."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x, ctx, mask=None):
        *lead, n, c = x.shape
        q = self.q(x).view(*lead, n, self.heads, -1).transpose(-2, -3)
        k, v = self.kv(ctx).view(*ctx.shape[:-1], 2, self.heads, -1).unbind(-3)
        out = F.scaled_dot_product_attention(q, k.transpose(-2, -3), v.transpose(-2, -3), attn_mask=mask)
        return self.proj(out.transpose(-2, -3).reshape(*lead, n, c))


class NeighbourEncoder(nn.Module):
    """``e_j (B, k, D)`` and chunk activations ``H (B, U, m, C)`` → neighbours per chunk ``(B, U, k, C)``."""

    def __init__(self, d_code: int, dim: int, heads: int, k: int, depth: int):
        super().__init__()
        self.embed, self.pos = nn.Linear(d_code, dim), nn.Parameter(torch.zeros(k, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList([nn.ModuleDict(dict(
            norm_n=nn.LayerNorm(dim), norm_h=nn.LayerNorm(dim), attn=CrossAttention(dim, heads),
            norm_f=nn.LayerNorm(dim), ffn=nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))))
            for _ in range(depth)])

    def forward(self, e, h):
        u = h.shape[1]
        n = (self.embed(e) + self.pos[: e.shape[1]])[:, None].expand(-1, u, -1, -1)  # (B, U, k, C)
        for layer in self.layers:
            n = n + layer["attn"](layer["norm_n"](n), layer["norm_h"](h))
            n = n + layer["ffn"](layer["norm_f"](n))
        return n


class Retro(nn.Module):
    def __init__(self, n_genes: int, img_size: int, d_code: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, drop_path: float, n_exemplars: int, frequency: int,
                 chunk_size: int, encoder_depth: int):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.k = n_exemplars
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=0, embed_dim=embed_dim,
                                     depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                     drop_path_rate=drop_path, class_token=False, global_pool="")
        side = img_size // patch_size
        self.chunk = chunk_size or side  # default: one row of patches per chunk
        self.cca_at = [i for i in range(depth) if (i + 1) % frequency == 0]
        if not self.cca_at:
            raise ValueError(f"retro: frequency {frequency} > depth {depth} leaves no chunked cross-attention layer")
        self.encoder = NeighbourEncoder(d_code, embed_dim, num_heads, n_exemplars, encoder_depth)
        self.cca_norm = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in self.cca_at])
        self.cca = nn.ModuleList([CrossAttention(embed_dim, num_heads) for _ in self.cca_at])
        self.head = nn.Linear(embed_dim, n_genes)

    def _chunks(self, z):
        """``(B, L, C)`` → ``(B, U, m, C)``, zero-padding the last chunk."""
        b, n, c = z.shape
        u = math.ceil(n / self.chunk)
        return F.pad(z, (0, 0, 0, u * self.chunk - n)).view(b, u, self.chunk, c)

    def features(self, batch: dict) -> torch.Tensor:
        """Mean of the patch tokens after the last block, ``(B, C)``."""
        vit = self.vit
        z = vit.norm_pre(vit._pos_embed(vit.patch_embed(batch["image"])))
        e = batch["exemplar_embedding"][:, :self.k]
        mask = key_mask(batch["exemplar_mask"][:, :self.k], 0, z.dtype)[:, None]  # (B, 1, 1, 1, k)
        neighbours = None
        for i, block in enumerate(vit.blocks):
            z = block(z)
            if i in self.cca_at:
                j = self.cca_at.index(i)
                n = z.shape[1]
                h = self._chunks(z)
                if neighbours is None:
                    neighbours = self.encoder(e, h)  # conditioned on the first CCA layer's chunks
                z = z + self.cca[j](self.cca_norm[j](h), neighbours, mask).flatten(1, 2)[:, :n]
        return vit.norm(z).mean(1)

    def forward(self, batch: dict) -> torch.Tensor:
        """``image (B, 3, S, S)``, ``exemplar_embedding (B, K, D)``, ``exemplar_mask (B, K)`` → ``(B, M)``."""
        return self.head(self.features(batch))


@register_model("retro", kind="neural", needs=("windows", "embeddings", "exemplars"),
                description="Retro: chunked cross-attention to the exemplars' global views")
def build_retro(n_genes: int, params: dict, img_size: int, d_code: int | None = None) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    if d_code is None:
        raise ValueError("retro reads the exemplars' global views and needs the extractor's code dimension (d_code)")
    model = Retro(n_genes, img_size, d_code, p["patch_size"], p["embed_dim"], p["depth"], p["num_heads"],
                  p["mlp_ratio"], p["drop_path"], int(p["n_exemplars"]), int(p["frequency"]), int(p["chunk_size"]),
                  int(p["encoder_depth"]))
    load_pretrained(model.vit, p["pretrained_checkpoint"], "retro")
    return model
