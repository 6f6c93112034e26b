"""Expression targets per fold: gene selection and per-gene min-max, fitted on training spots.

For every fold: genes measured in every sample; the top-N genes by mean raw
count over the fold's ``train`` spots (or a gene list); then one of two
target *protocols*:

* ``raw`` (EGN): ``log1p`` of the raw counts;
* ``library_size`` (ST-Net, TCGN): counts per ``target_sum`` (10 000) of the
  spot's total count, then ``log1p``.

Either way each gene is then min-max scaled with the minimum and maximum of its
``train`` spots. Validation and test spots are transformed with those training
statistics and are not clipped, so nothing about them leaks into the targets.
The same genes are chosen under both protocols, so their metrics compare gene
by gene.

Why both: under ``raw`` every high-mean gene carries the spot's total count
(cellularity, visible as colour), so a model can score well by predicting one
number per spot; ``library_size`` removes that shared factor.
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

log = logging.getLogger(__name__)

PROTOCOLS = {
    "raw": "log1p of raw counts, then train-fold min-max (EGN)",
    "library_size": "counts per target_sum of the spot total, log1p, then train-fold min-max (ST-Net, TCGN)",
}


def total_counts(adata: ad.AnnData) -> np.ndarray:
    """Each spot's total count over all its genes, ``(n_spots,)`` float64."""
    return np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()


def low_count_spots(adata: ad.AnnData, min_counts: float) -> np.ndarray:
    """Spot QC (as ``scanpy.pp.filter_cells(min_counts=...)``): ``True`` for spots with fewer
    than ``min_counts`` counts in all. Such spots are mostly zeros; under ``library_size`` their
    zeros keep a depth signal that log1p of counts per 10k cannot divide out."""
    if min_counts <= 0:
        return np.zeros(adata.n_obs, dtype=bool)
    return total_counts(adata) < min_counts


def read_gene_list(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "gene list not found")
    with open(path) as fh:
        genes = [g.strip() for g in fh if g.strip() and not g.startswith("#")]
    if not genes:
        raise InputError(path, "gene list is empty")
    return list(dict.fromkeys(genes))


def common_genes(adatas: dict[str, ad.AnnData], sources: dict[str, str] | None = None) -> list[str]:
    """Genes present in every sample, in the first sample's order."""
    names = list(adatas)
    index = {n: (a.var_names if hasattr(a, "var_names") else a) for n, a in adatas.items()}
    common = set(index[names[0]])
    for name in names[1:]:
        common &= set(index[name])
    if not common:
        where = sources or {n: n for n in names}
        raise InputError(where[names[0]], "no gene is measured in every sample (empty gene overlap across "
                                          + ", ".join(where[n] for n in names) + ")")
    return [g for g in index[names[0]] if g in common]


def check_gene_overlap(genes: dict[str, list[str]], sources: dict[str, str], gene_list: str | None = None,
                       top_n: int | None = None) -> list[str]:
    """Before any tiling: the genes every sample measures, from their headers; errors name the user's files.

    Args:
        genes: ``{sample: gene names}``; sources: ``{sample: counts file}``.
    Raises InputError when no gene is shared, or none of ``gene_list`` is; warns when the samples share less
    than half of the smallest one's genes (mixed symbols and Ensembl ids?) or fewer than ``top_n``.
    """
    common = common_genes({n: pd.Index(g) for n, g in genes.items()}, sources)
    smallest = min(genes, key=lambda n: len(genes[n]))
    if len(common) < 0.5 * len(genes[smallest]) or (top_n and len(common) < top_n and len(common) < len(genes[smallest])):
        log.warning("the samples share only %d gene(s) (%s has %d): check that every counts file names genes the "
                    "same way (symbols vs Ensembl ids, same reference)%s", len(common), sources[smallest],
                    len(genes[smallest]), "" if not top_n or len(common) >= top_n else
                    f"; expression.top_n = {top_n} will keep all {len(common)}")
    if gene_list:
        listed = read_gene_list(gene_list)
        select_genes(np.zeros((1, len(common))), common, None, listed, gene_list)
    return common


def transform_counts(counts: np.ndarray, library_size: np.ndarray | None, target_sum: float | None,
                     log1p: bool) -> np.ndarray:
    """``log1p(counts / library_size * target_sum)`` with each step optional."""
    x = counts.astype(np.float64)
    if target_sum:
        lib = np.maximum(library_size.astype(np.float64), 1.0)
        x = x / lib[:, None] * float(target_sum)
    if log1p:
        x = np.log1p(x)
    return x


def select_genes(train_counts: np.ndarray, genes: list[str], top_n: int | None,
                 gene_list: list[str] | None, gene_list_path: str | None = None) -> list[str]:
    """The target genes: a list (those measured), else the top-N by mean training count."""
    if gene_list is not None:
        present = set(genes)
        chosen = [g for g in gene_list if g in present]
        missing = len(gene_list) - len(chosen)
        if not chosen:
            raise InputError(gene_list_path, f"none of the {len(gene_list)} listed genes is measured in every "
                                             f"sample (empty gene overlap)")
        if missing:
            log.warning("%s: %d of %d listed genes are not measured in every sample and are skipped",
                        gene_list_path, missing, len(gene_list))
        return chosen
    means = np.asarray(train_counts.mean(axis=0)).ravel()
    n = min(int(top_n), len(genes))
    order = np.argsort(-means, kind="stable")[:n]
    return [genes[i] for i in sorted(order)]


def undo_minmax(values: np.ndarray, var: pd.DataFrame) -> np.ndarray:
    """Targets (or predictions) on a fold's min-max scale back in expression units, by the training spots'
    ``var["min"]`` and ``var["max"]`` (a constant gene was shifted, not scaled, and is shifted back).

    Args:
        values: ``(N, G)`` in ``[0, 1]`` over the training spots; ``var``: the ``G`` genes' rows."""
    lo = var["min"].to_numpy(dtype=np.float64)
    span = var["max"].to_numpy(dtype=np.float64) - lo
    return np.asarray(values, dtype=np.float64) * np.where(span > 0, span, 1.0) + lo


def expression_unit(normalisation: dict | None = None, protocol: str | None = None) -> str:
    """What :func:`undo_minmax` gives, in words: ``log(1 + count)`` under ``raw`` targets, ``log(1 + count per
    10,000)`` under ``library_size`` (``normalisation`` is the expression file's ``uns["normalisation"]``)."""
    norm = dict(normalisation or {})
    protocol = norm.get("protocol") or protocol or "raw"
    per = f"count per {float(norm.get('target_sum') or 1e4):,.0f}" if protocol == "library_size" else "count"
    return f"log(1 + {per})" if bool(norm.get("log1p", True)) else per


def build_fold_expression(adatas: dict[str, ad.AnnData], folds: pd.DataFrame, cfg: dict,
                          sources: dict[str, str] | None = None, protocol: str = "raw") -> ad.AnnData:
    """The fold's normalised targets for every spot.

    Args:
        adatas: per-sample raw counts (``obs_names`` as in ``folds.obs_name``),
            in study order.
        folds: this fold's rows of the fold table.
        cfg: ``top_n``, ``gene_list``, ``target_sum`` (of ``library_size``), ``log1p``.
        protocol: ``raw`` or ``library_size`` (see the module docstring).

    Returns:
        AnnData with ``X`` the normalised targets (float32), ``layers["counts"]``
        the raw counts of the chosen genes, ``obs`` the fold table columns plus
        ``library_size`` (the spot's total count over all genes),
        ``obsm["spatial"]``, and ``var`` with ``min``,
        ``max`` (training statistics) and ``mean_train_count``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown target protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    genes = common_genes(adatas, sources)
    parts = []
    for _name, a in adatas.items():
        sub = a[:, genes]
        X = sub.X.toarray() if sp.issparse(sub.X) else np.asarray(sub.X)
        lib = total_counts(a)
        parts.append((sub.obs_names.to_numpy(), X, lib, np.asarray(sub.obsm["spatial"])))
    obs_names = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts]).astype(np.float32)
    libsize = np.concatenate([p[2] for p in parts])
    spatial = np.concatenate([p[3] for p in parts])
    table = folds.set_index("obs_name")
    missing = pd.Index(obs_names).difference(table.index)
    if len(missing):
        raise ValueError(f"{len(missing)} spot(s) are not in the fold table, e.g. {list(missing[:3])}")
    table = table.loc[obs_names]
    train = (table["split"] == "train").to_numpy()
    if not train.any():
        raise ValueError("the fold has no training spots")
    gene_list = read_gene_list(cfg["gene_list"]) if cfg.get("gene_list") else None
    chosen = select_genes(counts[train], genes, cfg.get("top_n"), gene_list, cfg.get("gene_list"))
    idx = [genes.index(g) for g in chosen]
    raw = counts[:, idx]
    target_sum = float(cfg.get("target_sum") or 1e4) if protocol == "library_size" else None
    values = transform_counts(raw, libsize, target_sum, cfg.get("log1p", True))
    lo = values[train].min(axis=0)
    hi = values[train].max(axis=0)
    span = hi - lo
    const = span <= 0
    if const.any():
        log.warning("%d gene(s) are constant over the training spots; their targets are shifted, not scaled: %s",
                    int(const.sum()), ", ".join(np.asarray(chosen)[const][:10]))
    scaled = (values - lo) / np.where(const, 1.0, span)
    obs = table.reset_index()[["obs_name", "fold", "split", "patient", "sample", "spot"]].set_index("obs_name")
    obs.index.name = None
    out = ad.AnnData(X=scaled.astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(chosen, name=None)))
    out.layers["counts"] = raw
    out.obs["library_size"] = libsize.astype(np.float64)
    out.obsm["spatial"] = spatial
    out.var["min"] = lo
    out.var["max"] = hi
    out.var["mean_train_count"] = raw[train].mean(axis=0)
    out.uns["normalisation"] = {"protocol": protocol, "log1p": bool(cfg.get("log1p", True)),
                                "target_sum": target_sum or 0,
                                "minmax_fitted_on": "train", "n_train_spots": int(train.sum())}
    return out
