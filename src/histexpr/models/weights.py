"""Opt-in pretrained weights for the image backbones (never downloaded).

Every backbone trains from scratch unless ``model_params.<model>.pretrained_checkpoint``
names a local ``state_dict`` file (timm's, torchvision's or the authors'); the
log says which happened, so a table never hides whether ImageNet weights were
used.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)


def read_state_dict(path: str) -> dict:
    """A checkpoint's tensors: ``.safetensors``, or a torch file read with ``weights_only`` (no code runs)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_pretrained(module: nn.Module, path: str | None, name: str, skip: tuple[str, ...] = ("head.",),
                    prefix: str = "", strict: bool = False) -> None:
    """Load ``path`` into ``module`` (non-strict; keys starting with ``skip`` are the old task's head).

    ``prefix`` is stripped from the file's keys first (``"module."`` of a DataParallel checkpoint, say).
    Shape mismatches are skipped and reported, never silently reinitialised; ``strict`` (a frozen encoder,
    which is never trained) makes any tensor of the module left unloaded an error.
    """
    if not path:
        log.info("%s: no pretrained weights configured; random initialisation", name)
        return
    if not os.path.exists(path):
        raise ConfigError(path, f"{name}: pretrained_checkpoint does not exist")
    state = read_state_dict(path)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    read_keys = list(state)
    state = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in state.items()}
    own = module.state_dict()
    keep = {k: v for k, v in state.items()
            if not k.startswith(skip) and k in own and tuple(v.shape) == tuple(own[k].shape)}
    wrong_shape = [k for k in state if k in own and k not in keep and not k.startswith(skip)]
    missing, _ = module.load_state_dict(keep, strict=False)
    log.info("%s: loaded %d tensors from %s (%d of the model's left at initialisation, %d with another shape "
             "skipped)", name, len(keep), path, len(missing), len(wrong_shape))
    if not keep:
        if prefix and not any(k.startswith(prefix) for k in read_keys):
            raise ConfigError(path, f"{name}: no key of this checkpoint starts with the prefix {prefix!r} "
                                    f"(its keys start e.g. {', '.join(sorted(read_keys)[:3])})")
        raise ConfigError(path, f"{name}: no tensor of this checkpoint matches the model; is it the right architecture?")
    if strict and (missing or wrong_shape):
        bad = sorted(missing) + sorted(wrong_shape)
        raise ConfigError(path, f"{name}: {len(missing)} of the encoder's tensors are not in this checkpoint and "
                                f"{len(wrong_shape)} have another shape (e.g. {', '.join(bad[:3])}); a frozen "
                                f"encoder must load whole: check the architecture and its options")


def init_weights(m: nn.Module) -> None:
    """The usual transformer initialisation (``module.apply(init_weights)``): truncated normal (σ 0.02) for
    linear layers, He (fan-out) for convolutions, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
        nn.init.zeros_(m.bias)


# --- run outputs: saved and loaded without unpickling code -------------------------------------------------------

def load_checkpoint(path: str | os.PathLike) -> dict:
    """A histexpr checkpoint (trained model, extractor, fitted model), loaded with ``weights_only=True``.

    Only tensors and plain values (dicts, lists, strings, numbers) are accepted, so a crafted file cannot
    run code; anything else is one :class:`~histexpr.errors.InputError` naming the file.
    """
    from ..errors import InputError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for disallowed globals, RuntimeError for a non-torch file
        raise InputError(path, f"not a loadable histexpr checkpoint: it is not a torch file, or it holds objects "
                               f"other than tensors and plain values and is refused unread, since unpickling "
                               f"them could run code ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict):
        raise InputError(path, f"not a histexpr checkpoint (a {type(ckpt).__name__}, expected a mapping)")
    return ckpt


def fitted_state(model) -> dict:
    """A fitted (non-gradient) model's attributes as tensors and plain values, for ``torch.save``;
    :func:`restore_fitted` reverses it. NumPy arrays become tensors, NumPy scalars Python numbers."""
    import numpy as np

    arrays, values = {}, {}
    for k, v in vars(model).items():
        if k == "targets":  # knn's exemplar targets come from the fold at prediction time
            continue
        if isinstance(v, np.ndarray):
            arrays[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif isinstance(v, np.generic):
            values[k] = v.item()
        else:
            values[k] = v
    return {"arrays": arrays, "values": values}


def restore_fitted(model, state: dict):
    """Set the attributes saved by :func:`fitted_state` on a freshly built fitted model."""
    model.__dict__.update(state["values"])
    model.__dict__.update({k: v.numpy() for k, v in state["arrays"].items()})
    return model
