"""Model registry: every method of the benchmark is one entry, created by name.

Two kinds of entry:

* **neural** models are ``torch.nn.Module`` factories
  ``build(n_genes, params, img_size=, d_code=)`` (``d_code``: the extractor's
  code dimension, for models that read embeddings)
  whose ``forward(batch)`` takes a dict (``image``: normalised ``(B, 3, H, W)``;
  later models also read ``embedding``, ``exemplar_embedding``,
  ``exemplar_target``) and returns ``(B, n_genes)``; they share one training
  loop (:mod:`histexpr.train.loop`);
* **fitted** models (no gradient training, e.g. ``knn``) are classes with
  ``fit(data)`` / ``predict(data, index)``.

Each declares the inputs it needs (``windows``, ``embeddings``, ``exemplars``)
so the workflow wires only those files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "neural" | "fitted"
    factory: Callable
    needs: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""


def register_model(name: str, kind: str, needs: tuple[str, ...] = (), description: str = ""):
    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, kind, factory, tuple(needs), description)
        return factory
    return deco


def get_model(name: str) -> ModelSpec:
    if name not in _REGISTRY:  # import only the family's module: a job pays for its own imports, not cyclemlp's
        family = "egn" if name.startswith("egn_") else name
        if family in _BUILTIN:
            importlib.import_module(f"{__name__}.{family}")
        else:
            _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


_BUILTIN = ("colour_ridge", "cyclemlp", "egn", "knn", "mpvit", "nsl", "retro", "ridge", "stnet", "tcgn", "vit",
            "vitexp")  # one module a family; importing it registers its models


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"{__name__}.{module}")
