"""Train one setting (attention sampling, uniform sampling or the view CNN) on one fold and seed."""

import pandas as pd
import torch

from histexpr.train.classify import ClassifyConfig, run_fold
from histexpr.utils import atomic_path, resolve_device, set_threads, setup_logging, write_table

log = setup_logging(snakemake.log[0])

w = snakemake.wildcards
evaluation = snakemake.params.evaluation
cfg = ClassifyConfig.from_dict({**snakemake.params.train, "view_scale": snakemake.params.view_scale, "seed": int(w.seed),
                                "draws": evaluation["draws"], "eval_seed": evaluation["seed"]})
set_threads(snakemake.threads)
folds = pd.read_csv(snakemake.input.folds, sep="\t", keep_default_na=False)
model, history, predictions, classes = run_fold(folds, int(w.fold), w.setting, cfg, snakemake.params.ats,
                                                resolve_device(cfg.device))
with atomic_path(snakemake.output.model, suffix=".pt") as tmp:
    torch.save({"setting": w.setting, "classes": classes, "ats": snakemake.params.ats,
                "view_scale": cfg.view_scale, "eval_seed": cfg.eval_seed, "state_dict": model.state_dict()}, tmp)
write_table(history, snakemake.output.history)
write_table(predictions, snakemake.output.predictions)
