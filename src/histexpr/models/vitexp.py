"""``vitexp``: the EGN paper's ViTExp baseline — exemplars as extra ViT tokens.

Patch tokens ``z_l`` (with position embeddings) and the ``k`` exemplars'
global views ``e_j`` (the extractor's output, projected to the ViT width) are
concatenated and passed through the same transformer; a learned *type
embedding* tells the two apart::

    X⁰ = [z_1 + t_patch, ..., z_L + t_patch,  W_e e_1 + t_ex, ..., W_e e_k + t_ex]     (B, L + k, C)
    X^T = ViT blocks(X⁰)              missing exemplars are masked out as keys
    ŷ  = W · mean_l LN(X^T)_l + b     pooled over the patch tokens only

ViT-B in the paper (``patch_size 16, embed_dim 768, depth 12, num_heads 12``);
the defaults are the small CPU preset the other ViTs here use.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .weights import load_pretrained

DEFAULTS = dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, drop_path=0.1, n_exemplars=9,
                pretrained_checkpoint=None)


def key_mask(valid: torch.Tensor, n_always: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``(B, 1, 1, n_always + k)``: 0 for the ``n_always`` tokens and valid exemplars,
    a large negative number for missing exemplars (``valid`` ``(B, k)`` bool)."""
    keep = torch.cat([valid.new_ones(valid.shape[0], n_always), valid], 1)
    return torch.zeros(keep.shape, dtype=dtype, device=valid.device).masked_fill(~keep, torch.finfo(dtype).min)[:, None, None]


class ViTExp(nn.Module):
    def __init__(self, n_genes: int, img_size: int, d_code: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, drop_path: float, n_exemplars: int):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.k = n_exemplars
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=0, embed_dim=embed_dim,
                                     depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                     drop_path_rate=drop_path, class_token=False, global_pool="")
        self.exemplar_proj = nn.Linear(d_code, embed_dim)  # W_e
        self.type_embed = nn.Parameter(torch.zeros(2, embed_dim))  # t_patch, t_ex
        nn.init.trunc_normal_(self.type_embed, std=0.02)
        self.head = nn.Linear(embed_dim, n_genes)

    def features(self, batch: dict) -> torch.Tensor:
        """Mean of the patch tokens after the transformer, ``(B, C)``."""
        vit = self.vit
        z = vit.norm_pre(vit._pos_embed(vit.patch_embed(batch["image"]))) + self.type_embed[0]  # (B, L, C)
        ex = self.exemplar_proj(batch["exemplar_embedding"][:, :self.k]) + self.type_embed[1]  # (B, k, C)
        mask = key_mask(batch["exemplar_mask"][:, :self.k], z.shape[1], z.dtype)
        x = torch.cat([z, ex], 1)
        for block in vit.blocks:
            x = block(x, attn_mask=mask)
        return vit.norm(x)[:, :z.shape[1]].mean(1)

    def forward(self, batch: dict) -> torch.Tensor:
        """``image (B, 3, S, S)``, ``exemplar_embedding (B, K, D)``, ``exemplar_mask (B, K)`` → ``(B, M)``."""
        return self.head(self.features(batch))


@register_model("vitexp", kind="neural", needs=("windows", "embeddings", "exemplars"),
                description="ViTExp: exemplar global views as extra ViT tokens")
def build_vitexp(n_genes: int, params: dict, img_size: int, d_code: int | None = None) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    if d_code is None:
        raise ValueError("vitexp reads the exemplars' global views and needs the extractor's code dimension (d_code)")
    model = ViTExp(n_genes, img_size, d_code, p["patch_size"], p["embed_dim"], p["depth"], p["num_heads"],
                   p["mlp_ratio"], p["drop_path"], int(p["n_exemplars"]))
    load_pretrained(model.vit, p["pretrained_checkpoint"], "vitexp")
    return model
