"""``stnet``: ST-Net (He et al. 2020), DenseNet-121 regressing expression.

``ŷ = W · GAP(DenseNet-121(X)) + b`` with timm's DenseNet-121 (1024 features).
The paper fine-tunes ImageNet weights: set ``model_params.stnet.pretrained_checkpoint``
to a local DenseNet-121 state dict (timm's or torchvision's names); without
one it trains from scratch and says so in the log.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .weights import load_pretrained

DEFAULTS = dict(drop_rate=0.0, pretrained_checkpoint=None)


class STNet(nn.Module):
    def __init__(self, n_genes: int, drop_rate: float = 0.0):
        super().__init__()
        import timm

        self.backbone = timm.create_model("densenet121", pretrained=False, num_classes=0, drop_rate=drop_rate)
        self.head = nn.Linear(self.backbone.num_features, n_genes)

    def features(self, batch: dict) -> torch.Tensor:
        """Globally pooled DenseNet features ``(B, 1024)``."""
        return self.backbone(batch["image"])

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch["image"]`` ``(B, 3, S, S)`` → ``(B, M)``."""
        return self.head(self.features(batch))


@register_model("stnet", kind="neural", needs=("windows",), description="ST-Net: DenseNet-121")
def build_stnet(n_genes: int, params: dict, img_size: int, **_) -> nn.Module:
    p = {**DEFAULTS, **(params or {})}
    model = STNet(n_genes, p["drop_rate"])
    load_pretrained(model.backbone, p["pretrained_checkpoint"], "stnet", skip=("classifier.", "fc."))
    return model
