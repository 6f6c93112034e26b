"""Draw a trained attention-sampling model's attention over a few test images per class, and measure how
concentrated it is over every test image of the fold (largest cell / mean cell, entropy / log K)."""
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histexpr.data.megapixel import ArrayImage
from histexpr.plots import attention_concentration_figure, attention_figure
from histexpr.train.classify import classify_image, load_classifier
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

model, classes, view_scale = load_classifier(snakemake.input.model)
pred = pd.read_csv(snakemake.input.predictions, sep="\t", keep_default_na=False)
test = pred[pred["split"] == "test"].reset_index(drop=True)
chosen = set(pd.concat([g.head(snakemake.params.per_class) for _, g in test.groupby("label")])["image"])
items, stats = [], []
for i, row in test.iterrows():
    img = ArrayImage.open(row["image"])
    out = classify_image(model, img, classes, view_scale, generator=torch.Generator().manual_seed(i))
    a = out["attention"].ravel().astype(np.float64)
    stats.append({"image": row["image"], "label": row["label"], "max_over_mean": float(a.max() * a.size),
                  "entropy_ratio": float(-(a * np.log(np.maximum(a, 1e-30))).sum() / np.log(a.size))})
    if row["image"] in chosen:
        items.append({"image": img.array, "attention": out["attention"], "corners": out["corners"],
                      "patch": model.patch_px, "title": f"{Path(row['image']).name}: {row['label']}, predicted "
                                                        f"{out['label']} ({100 * out['probs'].max():.0f}%)"})
        log.info("%s: true %s, predicted %s", row["image"], row["label"], out["label"])
stats = pd.DataFrame(stats)
log.info("attention over %d test images: largest cell %.1fx the mean (median; min %.1fx), entropy %.2f of uniform",
         len(stats), stats["max_over_mean"].median(), stats["max_over_mean"].min(), stats["entropy_ratio"].median())
attention_figure(items, snakemake.output.maps)
attention_concentration_figure(stats, snakemake.output.concentration_figure,
                               f"{snakemake.wildcards.setting}: attention on {len(stats)} test images (fold 1)")
write_table(stats, snakemake.output.concentration)
