"""``vit``: a timm Vision Transformer regressing expression, trained from scratch.

The window ``X`` (``B x 3 x H x W``) is cut into ``P x P`` patches, embedded,
passed through ``depth`` transformer blocks, pooled, and mapped by a linear
head to the ``M`` genes: ``ŷ = W · pool(ViT(X)) + b``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .weights import load_pretrained

DEFAULTS = dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, drop_path=0.1,
                global_pool="avg", pretrained_checkpoint=None)


class ViTRegressor(nn.Module):
    def __init__(self, n_genes: int, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, drop_path: float, global_pool: str):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.backbone = VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=n_genes,
                                          embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                          mlp_ratio=mlp_ratio, drop_path_rate=drop_path,
                                          global_pool=global_pool, class_token=global_pool == "token")

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch["image"]``: ``(B, 3, H, W)`` normalised → ``(B, n_genes)``."""
        return self.backbone(batch["image"])


@register_model("vit", kind="neural", needs=("windows",), description="timm ViT trained from scratch")
def build_vit(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    model = ViTRegressor(n_genes, img_size, p["patch_size"], p["embed_dim"], p["depth"], p["num_heads"],
                         p["mlp_ratio"], p["drop_path"], p["global_pool"])
    load_pretrained(model.backbone, p.get("pretrained_checkpoint"), "vit")
    return model
