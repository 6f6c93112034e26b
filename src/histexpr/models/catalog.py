"""What each registered model needs as input, importable without torch.

The workflow reads this at parse time to wire only the files a model uses;
a test checks it against the registry.
"""

MODEL_NEEDS: dict[str, tuple[str, ...]] = {
    "colour_ridge": ("windows",),
    "knn": ("exemplars",),
    "vit": ("windows",),
}
