"""Draw a trained attention-sampling model's attention over a few test images per class (the draw the accuracy
table counted first), and its concentration over every test image of the fold (largest cell / mean cell,
entropy / log K), from the evaluation's predictions."""
from pathlib import Path

import pandas as pd

from histexpr.data.megapixel import ArrayImage
from histexpr.plots import attention_concentration_figure, attention_figure
from histexpr.train.classify import load_classifier, redraw
from histexpr.utils import setup_logging, write_table

log = setup_logging(snakemake.log[0])

model, classes, view_scale = load_classifier(snakemake.input.model)
pred = pd.read_csv(snakemake.input.predictions, sep="\t", keep_default_na=False)
if "draw" not in pred:  # predictions written before draws were kept
    pred["draw"] = 0
test = pred[pred["split"] == "test"]
first = test[test["draw"] == 0].reset_index(drop=True)
draws = int(test["draw"].max()) + 1
correct = (test["pred"] == test["label"]).groupby(test["index"]).sum()
chosen = set(pd.concat([g.head(snakemake.params.per_class) for _, g in first.groupby("label")])["image"])
items = []
for _, row in first[first["image"].isin(chosen)].iterrows():
    img = ArrayImage.open(row["image"])
    out = redraw(model, img.array, int(row["index"]), view_scale, snakemake.params.eval_seed, draw=0)
    label = classes[int(out["probs"].argmax())]
    if label != row["pred"]:
        log.warning("%s: the redrawn draw predicts %s, the table's draw 0 %s", row["image"], label, row["pred"])
    items.append({"image": img.array, "attention": out["attention"], "corners": out["corners"],
                  "patch": model.patch_px,
                  "title": f"{Path(row['image']).name}: {row['label']}, predicted {label} "
                           f"({100 * out['probs'].max():.0f}%; right in {correct[row['index']]} of {draws} draws)"})
    log.info("%s: true %s, predicted %s in draw 0", row["image"], row["label"], label)
stats = first[["image", "label"]].assign(max_over_mean=first["attention_max_over_mean"].astype(float),
                                         entropy_ratio=first["attention_entropy_ratio"].astype(float))
log.info("attention over %d test images: largest cell %.1fx the mean (median; min %.1fx), entropy %.2f of uniform",
         len(stats), stats["max_over_mean"].median(), stats["max_over_mean"].min(), stats["entropy_ratio"].median())
attention_figure(items, snakemake.output.maps)
attention_concentration_figure(stats, snakemake.output.concentration_figure,
                               f"{snakemake.wildcards.setting}: attention on {len(stats)} test images (fold 1)")
write_table(stats, snakemake.output.concentration)
