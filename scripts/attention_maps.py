"""Draw a trained attention-sampling model's attention over a few test images per class."""
from pathlib import Path

import pandas as pd
import torch

from histexpr.data.megapixel import ArrayImage
from histexpr.plots import attention_figure
from histexpr.train.classify import classify_image, load_classifier
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

model, classes, view_scale = load_classifier(snakemake.input.model)
pred = pd.read_csv(snakemake.input.predictions, sep="\t", keep_default_na=False)
test = pred[pred["split"] == "test"]
chosen = pd.concat([g.head(snakemake.params.per_class) for _, g in test.groupby("label")])
items = []
for _, row in chosen.iterrows():
    img = ArrayImage.open(row["image"])
    out = classify_image(model, img, classes, view_scale, generator=torch.Generator().manual_seed(len(items)))
    items.append({"image": img.array, "attention": out["attention"], "corners": out["corners"], "patch": model.patch_px,
                  "title": f"{Path(row['image']).name}: {row['label']}, predicted {out['label']} "
                           f"({100 * out['probs'].max():.0f}%)"})
    log.info("%s: true %s, predicted %s", row["image"], row["label"], out["label"])
attention_figure(items, snakemake.output[0])
