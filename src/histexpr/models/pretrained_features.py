"""Fixed ImageNet feature spaces for EGN's exemplar-retrieval ablation (Table 2).

Two "extractors" that need no training, only torchvision's ImageNet weights
from the torch hub cache (never downloaded; a clear error names the file when
it is absent — use ``extractor.kind: autoencoder`` then):

* ``resnet50``: the global-average-pooled output of ResNet-50's last stage,
  ``(B, 2048)``, on ImageNet-normalised windows;
* ``alexnet_lpips``: AlexNet features laid out so that squared Euclidean
  distance *is* the LPIPS distance. LPIPS computes, over layers ``l`` with
  channel-normalised features ``n_l`` and its learned non-negative channel
  weights ``w_l``,

      LPIPS(x, y) = Σ_l 1/(H_l W_l) Σ_{h,w} Σ_c w_{l,c} (n_l(x) - n_l(y))²_{c,h,w}
                  = || φ(x) - φ(y) ||²,   φ(x) = concat_l sqrt(w_{l,c} / (H_l W_l)) · n_l(x)

  so a flat L2 index over ``φ`` retrieves LPIPS nearest neighbours exactly.
  ``φ`` is large (about 32 000 dimensions at 64 px).
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch
from torch import nn

from ..errors import ConfigError

IMAGENET_FILES = {"resnet50": "resnet50-0676ba61.pth", "alexnet": "alexnet-owt-7be5be79.pth"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_weights(arch: str) -> str:
    """Path of torchvision's ImageNet weights for ``arch`` in the torch hub cache; raises when absent."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", IMAGENET_FILES[arch])
    if not os.path.exists(path):
        raise ConfigError(None, f"extractor.kind needs torchvision's ImageNet {arch} weights at {path} (no download "
                                f"is attempted); copy them there, or use extractor.kind: stylegan or autoencoder")
    return path


class ResNet50Features(nn.Module):
    """``encode``: windows ``(B, 3, P, P)`` in ``[0, 1]`` → ``(B, 2048)``."""

    kind = "resnet50"

    def __init__(self, input_px: int = 224, pretrained: bool = True):
        super().__init__()
        from torchvision.models import resnet50

        self.input_px, self.dim = input_px, 2048
        self.net = resnet50()
        if pretrained:
            self.net.load_state_dict(torch.load(imagenet_weights("resnet50"), map_location="cpu", weights_only=True))
        self.net.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return self.net((x01 - self.mean) / self.std)


class LPIPSFeatures(nn.Module):
    """``encode``: windows in ``[0, 1]`` → ``φ(x)`` with ``||φ(x) - φ(y)||² = LPIPS(x, y)`` (AlexNet)."""

    kind = "alexnet_lpips"

    def __init__(self, input_px: int = 64, pretrained: bool = True):
        super().__init__()
        import lpips

        if input_px < 32:
            raise ValueError("alexnet_lpips needs input_px >= 32")
        if pretrained:
            imagenet_weights("alexnet")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lpips = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=not pretrained, verbose=False).eval()
        self.input_px = input_px
        with torch.no_grad():
            self.dim = int(self.encode(torch.zeros(1, 3, input_px, input_px)).shape[1])

    @torch.no_grad()
    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        m = self.lpips
        feats = m.net.forward(m.scaling_layer(x01 * 2 - 1))
        parts = []
        for f, lin in zip(feats, m.lins):
            n = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # lpips.normalize_tensor
            w = lin.model[-1].weight.view(1, -1, 1, 1).clamp(min=0)  # the 1x1 conv's channel weights
            parts.append((n * w.sqrt() / math.sqrt(f.shape[2] * f.shape[3])).flatten(1))
        return torch.cat(parts, 1)


class TimmFeatures(nn.Module):
    """``encode``: windows ``(B, 3, P, P)`` in ``[0, 1]`` → ``(B, D)``, the pooled features of any timm
    architecture with weights from a local file: a pathology foundation model (UNI:
    ``vit_large_patch16_224`` with ``init_values: 1e-5``; Virchow2, H-optimus, GigaPath have timm names too)
    or any other. The encoder's own input size and normalisation come from timm's pretrained config unless
    ``input_px`` / ``mean`` / ``std`` are set. Every tensor must load (a frozen encoder is never trained).
    ``prefix`` picks the encoder out of a larger checkpoint: CONCH's image trunk is a timm ViT-B/16 at 448 px
    under ``visual.trunk.`` (its text tower and attention pooler are left unread)."""

    kind = "timm"
    POOLS = ("default", "cls_mean")

    def __init__(self, arch: str, checkpoint: str | None, input_px: int | None = None, mean=None, std=None,
                 kwargs: dict | None = None, pretrained: bool = True, pool: str = "default", prefix: str = ""):
        super().__init__()
        import timm
        from timm.data import resolve_data_config

        from .weights import load_pretrained

        if not arch:
            raise ConfigError(None, "extractor.kind: timm needs extractor.timm.arch (a timm model name)")
        if pretrained and not checkpoint:
            raise ConfigError(None, "extractor.kind: timm needs extractor.timm.checkpoint, a local weights file "
                                    "(nothing is downloaded)")
        if pool not in self.POOLS:
            raise ConfigError(None, f"extractor.timm.pool: {pool!r} is not one of {', '.join(self.POOLS)}")
        self.pool = pool
        try:
            self.net = timm.create_model(arch, pretrained=False, num_classes=0, **_layer_options(kwargs or {}))
        except (RuntimeError, TypeError) as err:
            raise ConfigError(None, f"extractor.timm: cannot build {arch!r} ({err})") from None
        if pretrained:
            load_pretrained(self.net, checkpoint, f"extractor timm {arch}", skip=("head.", "fc.", "classifier."),
                            prefix=prefix, strict=True)
        data = resolve_data_config({}, model=self.net)
        self.input_px = int(input_px or data["input_size"][-1])
        self.register_buffer("mean", torch.tensor(list(mean or data["mean"]), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std or data["std"]), dtype=torch.float32).view(1, 3, 1, 1))
        self.dim = int(self.net.num_features) * (2 if pool == "cls_mean" else 1)

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        x = (x01 - self.mean) / self.std
        if self.pool == "default":
            return self.net(x)
        # Virchow2's embedding: the class token beside the mean of the patch tokens (registers left out)
        tokens = self.net.forward_features(x)
        return torch.cat([tokens[:, 0], tokens[:, self.net.num_prefix_tokens:].mean(1)], dim=-1)


def _layer_options(kwargs: dict) -> dict:
    """``create_model`` options whose YAML value names a layer class (``mlp_layer: SwiGLUPacked``,
    ``act_layer: SiLU``, as Virchow2's model card passes them) get the class, looked up by name in
    ``timm.layers`` then ``torch.nn`` only: a config names a class, it never runs code."""
    import timm.layers

    out = dict(kwargs)
    for key, value in kwargs.items():
        if key.endswith("_layer") and isinstance(value, str):
            cls = getattr(timm.layers, value, None) or getattr(nn, value, None)
            if not (isinstance(cls, type) or isinstance(cls, functools.partial) and isinstance(cls.func, type)):
                raise ConfigError(None, f"extractor.timm.kwargs.{key}: {value!r} is not a layer of timm.layers "
                                        f"or torch.nn")
            out[key] = cls
    return out
