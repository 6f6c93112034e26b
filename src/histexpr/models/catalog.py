"""What each registered model needs as input, importable without torch.

The workflow reads this at parse time to wire only the files a model uses;
a test checks it against the registry.
"""

MODEL_NEEDS: dict[str, tuple[str, ...]] = {
    "colour_ridge": ("windows",),
    "knn": ("exemplars",),
    "vit": ("windows",),
    "egn": ("windows", "embeddings", "exemplars"),
    "egn_backbone_only": ("windows",),
    "egn_no_eb_block": ("windows", "embeddings"),
    "egn_no_projector": ("windows", "embeddings", "exemplars"),
    "egn_pretrained_e_linear": ("embeddings",),
    "tcgn": ("windows",),
    "stnet": ("windows",),
    "nsl": ("windows",),
    "cyclemlp": ("windows",),
    "mpvit": ("windows",),
    "retro": ("windows", "embeddings", "exemplars"),
    "vitexp": ("windows", "embeddings", "exemplars"),
    "ridge": ("embeddings",),
    "depth_oracle": (),
    "probe": ("embeddings",),
}

# Models fitted in closed form on the CPU (no network, no gradient steps): their train jobs ask for no GPU.
FITTED: frozenset[str] = frozenset({"colour_ridge", "knn", "ridge", "depth_oracle", "probe"})

# Reference rows that read the test spots' measured data (not methods): tables mark them, never rank them best.
ORACLES: frozenset[str] = frozenset({"depth_oracle"})

# Extractor kinds that are frozen encoders (nothing to train): every window is embedded once per study.
FROZEN_EXTRACTORS: tuple[str, ...] = ("resnet50", "alexnet_lpips", "timm")

# Models whose settings live under another model's model_params key (EGN's ablations share EGN's).
PARAMS_KEY: dict[str, str] = {name: "egn" for name in MODEL_NEEDS if name.startswith("egn_")}


def split_run(name: str) -> tuple[str, dict]:
    """A run name, ``<model>`` or a sweep point ``<model>-<param>-<value>``, as (model, overrides)."""
    if "-" not in name:
        return name, {}
    base, param, value = name.split("-", 2)
    number = float(value)
    return base, {param: int(number) if number.is_integer() and "." not in value else number}


def sweep_name(model: str, param: str, value) -> str:
    return f"{model}-{param}-{value}"


def uses_gpu(run: str) -> bool:
    """Whether a run's train job wants a GPU (every neural model; not the fitted ones)."""
    return split_run(run)[0] not in FITTED


def params_key(model: str) -> str:
    """The ``model_params`` key a model (or a sweep point) reads."""
    base = split_run(model)[0]
    return PARAMS_KEY.get(base, base)
