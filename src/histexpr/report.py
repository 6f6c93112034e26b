"""What `snakemake --report` shows for an expression study: tables, per-gene PCC, spatial maps, curves.

The ``report_figures`` rule calls :func:`write_report_figures` once a study's metrics are aggregated.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .data.expression import expression_unit, undo_minmax
from .metrics import EVALUATION_NAMES, display_blocks, display_groups, display_sections, verdicts
from .models.catalog import ORACLES
from .plots import metrics_html, pcc_distribution_figure, spatial_maps_figure, training_curves_figure
from .utils import atomic_dir

log = logging.getLogger(__name__)

RUN_PATH = re.compile(r"(?P<model>[^/]+)/(?P<protocol>[^/]+)/fold_(?P<fold>\d+)/[^/]+$")


def parse_run(path: str) -> tuple[str, str, int]:
    """``.../<model>/<protocol>/fold_<k>/<file>`` -> (model, protocol, k)."""
    m = RUN_PATH.search(Path(path).as_posix())
    if m is None:
        raise ValueError(f"{path}: not a per-fold result path (<model>/<protocol>/fold_<k>/<file>)")
    return m["model"], m["protocol"], int(m["fold"])


def choose_models(metrics: pd.DataFrame, protocol: str, reference: str | None, wanted: list[str] | None,
                  n_best: int = 2) -> list[str]:
    """The models drawn on the spatial maps: ``wanted``, or the ``n_best`` by pooled PCC@M plus the reference."""
    rows = metrics[(metrics["protocol"] == protocol) & (metrics["evaluation"] == "pooled")]
    if wanted:
        return [m for m in wanted if m in set(rows["model"])]
    methods = rows[(rows["model"] != reference) & ~rows["model"].isin(ORACLES)]
    ranked = methods.sort_values("PCC@M", ascending=False)["model"].tolist()
    return ranked[:n_best] + ([reference] if reference in set(rows["model"]) else [])


def choose_genes(genes: pd.DataFrame, model: str, protocol: str, n: int, among) -> list[str]:
    """The ``n`` genes of ``among`` (a fold's genes: top-N selection is per fold) that ``model`` predicts
    best (per-gene PCC, mean over folds) under ``protocol``."""
    part = genes[(genes["model"] == model) & (genes["protocol"] == protocol)].dropna(subset=["pcc"])
    allowed = set(among)
    return [g for g in part.sort_values("pcc", ascending=False)["gene"] if g in allowed][:n]


def _slide_image(adata: ad.AnnData, sample: str) -> tuple[np.ndarray | None, float, float | None]:
    spatial = adata.uns.get("spatial", {}).get(sample, {})
    image = spatial.get("images", {}).get("hires")
    sf = spatial.get("scalefactors", {})
    return image, float(sf.get("tissue_hires_scalef", 1.0)), sf.get("spot_diameter_fullres")


def write_report_figures(metrics: str, genes: str, by_group: str | None, predictions: list[str],
                         histories: list[str], out_tables: str, out_pcc: str, out_spatial: str, out_curves: str,
                         study: str, reference: str | None = None, models: list[str] | None = None,
                         n_genes: int = 3, by_section: str | None = None, gene_groups: str | None = None) -> None:
    """Write the report's HTML tables, the per-gene PCC figure, spatial maps per test slide and protocol
    (``<out_spatial>/<protocol>/<slide>.png``), and training curves per neural model and protocol
    (``<out_curves>/<protocol>/<model>.png``; names may hold underscores, so the protocol is a folder)."""
    metrics_df = pd.read_csv(metrics, sep="\t")
    genes_df = pd.read_csv(genes, sep="\t")
    sections = [(f"{protocol} targets, {EVALUATION_NAMES.get(evaluation, evaluation)}" if protocol else evaluation,
                 block) for protocol, evaluation, block in display_blocks(metrics_df)]
    notes = verdicts(metrics_df) + [
        "per section: each test section scored on its own spots, mean ± sd over the study's test sections (the "
        "verdict); pooled: all test spots of a fold at once, mean ± sd over folds (it also scores differences "
        "between sections). Models by PCC@M, the best (bold) first. ΔPCC@M: margin over the floor on the same "
        "windows, 95% paired bootstrap interval (metrics.tsv's resampled column says over what); ahead: test "
        "sections where the model beats the floor. Every number with its sd is in metrics.tsv."]
    if by_section and os.path.exists(by_section):
        per = pd.read_csv(by_section, sep="\t")
        if len(per) and per.groupby("fold")["section"].nunique().max() > 1:
            table = display_sections(per)
            sections += [(f"{protocol} targets, each test section", part.drop(columns=["protocol"]), False)
                         for protocol, part in table.groupby("protocol", sort=False)]
    if by_group and os.path.exists(by_group):
        groups = display_groups(pd.read_csv(by_group, sep="\t"))
        sections += [(f"{protocol} targets, gene group {group} (pooled)", part.drop(columns=["protocol", "group"]))
                     for (protocol, group), part in groups.groupby(["protocol", "group"], sort=False)]
    metrics_html(sections, out_tables, f"{study}: metrics", notes)
    groups = None
    if gene_groups and os.path.exists(gene_groups):
        table = pd.read_csv(gene_groups, sep="\t", dtype=str, keep_default_na=False)
        groups = dict(zip(table["gene"], table["group"]))
    pcc_distribution_figure(genes_df, out_pcc, groups)

    runs: dict[tuple[str, str, int], str] = {parse_run(p): p for p in predictions}
    with atomic_dir(out_spatial) as spatial_tmp:
        _spatial_maps(runs, metrics_df, genes_df, spatial_tmp, study, reference, models, n_genes)
    with atomic_dir(out_curves) as curves_tmp:
        _training_curves(histories, curves_tmp, study)


def _spatial_maps(runs, metrics_df, genes_df, spatial_tmp: Path, study, reference, models, n_genes) -> None:
    for protocol in dict.fromkeys(p for _, p, _ in runs):
        chosen = choose_models(metrics_df, protocol, reference, models)
        if not chosen:
            continue
        folds = sorted({f for m, p, f in runs if p == protocol and m == chosen[0]})
        for fold in folds:
            preds = {m: ad.read_h5ad(runs[(m, protocol, fold)]) for m in chosen if (m, protocol, fold) in runs}
            first = next(iter(preds.values()))
            gene_list = choose_genes(genes_df, chosen[0], protocol, n_genes, first.var_names)
            for sample in first.obs["sample"].unique():
                spots = first.obs_names[first.obs["sample"] == sample]
                truth = first[spots, gene_list]
                image, scale, spot_px = _slide_image(first, sample)
                # back from the fold's min-max scale (the same for every model: one fold, one expression file)
                units = "min" in truth.var and "max" in truth.var
                unit = expression_unit(first.uns.get("normalisation"), protocol) if units else "target (0-1 scale)"
                spatial_maps_figure(
                    np.asarray(truth.obsm["spatial"]), _in_units(truth.layers["truth"], truth.var, units),
                    {m: _in_units(a[spots, gene_list].X, truth.var, units) for m, a in preds.items()}, gene_list,
                    str(spatial_tmp / protocol / f"{sample}.png"),
                    f"{study}: slide {sample}, a test slide of fold {fold} ({protocol} targets): measured and "
                    f"predicted expression of the {len(gene_list)} genes {chosen[0]} predicts best",
                    image=image, scale=scale, spot_px=spot_px, unit=unit)
                log.info("spatial map: %s, %s, fold %d, models %s, genes %s", sample, protocol, fold, chosen, gene_list)


def _in_units(values, var: pd.DataFrame, units: bool) -> np.ndarray:
    return undo_minmax(values, var) if units else np.asarray(values)


def _training_curves(histories: list[str], curves_tmp: Path, study: str) -> None:
    grouped: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    for path in histories:
        model, protocol, fold = parse_run(path)
        h = pd.read_csv(path, sep="\t")
        if "train_loss" in h and len(h) > 0:  # fitted models (knn, ridges) have no curve
            grouped.setdefault((model, protocol), {})[fold] = h
    for (model, protocol), hs in grouped.items():
        training_curves_figure(hs, str(curves_tmp / protocol / f"{model}.png"),
                               f"{study} · {model} · targets {protocol}")
    log.info("training curves: %d model × protocol figures", len(grouped))
