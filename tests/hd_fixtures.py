"""A Visium HD output built from a real HER2ST section: C2's image and spots, its counts spread over 8 um bins.

Every legacy-ST spot's counts go, one molecule at a time, to random bins inside a 100 um circle centred on the
spot's block of ``K x K`` bins (``K * 8 um`` = the 200 um ST pitch), so pooling the bins into 200 um pseudo-spots
gives back the real spot counts exactly. Every bin of a spot's block is under tissue (``in_tissue`` 1, in the
filtered matrix, most with no count); bins elsewhere are in ``tissue_positions.parquet`` only. The bin grid is
the ST array's affine fit, so the blocks sit on the real spots. Written in Space Ranger 3's layout
(``outs/binned_outputs/square_008um/...``, ``outs/feature_slice.h5``) so spatialdata-io reads it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

BIN_UM = 8
K = 25  # bins a side of one ST spot's block: 25 x 8 um = 200 um, the ST 1k pitch


def write_10x_h5(path: Path, X: sp.csr_matrix, barcodes, genes) -> None:
    """A 10x feature-barcode matrix: genes x barcodes in CSC, i.e. the CSR arrays of ``X`` (barcodes x genes)."""
    m = sp.csr_matrix(X)
    m.sort_indices()
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array([b.encode() for b in barcodes])
        g["data"] = m.data.astype(np.int32)
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array([len(genes), len(barcodes)], np.int32)
        ft = g.create_group("features")
        ft["_all_tag_keys"] = np.array([b"genome"])
        ft["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        ft["genome"] = np.array([b"GRCh38"] * len(genes))
        ft["id"] = np.array([f"ENSG{i:011d}".encode() for i in range(len(genes))])
        ft["name"] = np.array([str(n).encode() for n in genes])


def write_hd_from_st(st, image_um_per_px: float, out: Path, n_genes: int = 120, seed: int = 0,
                     genes: list | None = None) -> dict:
    """Write ``out/binned_outputs/square_008um/`` from an ST AnnData (``obsm["spatial"]`` in image px,
    ``obs`` array_x/array_y); returns the truth: per spot ``(array_y, array_x)`` block, counts and genes.
    ``genes`` (names in ``st.var_names``) replaces the ``n_genes`` most counted ones."""
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(st.X)
    top = (st.var_names.get_indexer(genes) if genes is not None
           else np.argsort(-np.asarray(X.sum(0)).ravel())[:n_genes])
    genes = st.var_names[top]
    X = X[:, top].toarray().astype(np.int64)
    ax, ay = st.obs["array_x"].to_numpy(int), st.obs["array_y"].to_numpy(int)
    xy = np.asarray(st.obsm["spatial"], np.float64)
    # the ST array's affine fit: array (x, y) -> image px; one bin is a K-th of an array step
    A, *_ = np.linalg.lstsq(np.column_stack([ax, ay, np.ones(len(ax))]), xy, rcond=None)
    x0, y0 = ax.min() - 1, ay.min() - 1
    n_cols, n_rows = (ax.max() - x0 + 1) * K, (ay.max() - y0 + 1) * K
    rows, cols = np.mgrid[:n_rows, :n_cols]
    rows, cols = rows.ravel(), cols.ravel()
    # bin (r, c) centre: array coordinate x0 + (c + 0.5) / K - 0.5 (a spot's block is centred on the spot)
    arr = np.column_stack([x0 + (cols + 0.5) / K - 0.5, y0 + (rows + 0.5) / K - 0.5, np.ones(len(rows))])
    px = arr @ A
    block_of = {(y - y0, x - x0): i for i, (x, y) in enumerate(zip(ax, ay))}
    spot = np.array([block_of.get((r // K, c // K), -1) for r, c in zip(rows, cols)])
    in_tissue = spot >= 0
    barcodes = np.array([f"s_008um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)])
    # molecules to bins inside the 100 um circle of their spot's block
    centre = np.column_stack([(cols // K) * K + (K - 1) / 2, (rows // K) * K + (K - 1) / 2])
    in_circle = np.hypot(cols - centre[:, 0], rows - centre[:, 1]) * BIN_UM <= 50
    tissue_idx = np.flatnonzero(in_tissue)
    pos_in_matrix = np.full(len(rows), -1)
    pos_in_matrix[tissue_idx] = np.arange(len(tissue_idx))
    r_i, c_i, v = [], [], []
    for s in range(len(ax)):
        bins = np.flatnonzero((spot == s) & in_circle)
        for g in np.flatnonzero(X[s]):
            hits = np.bincount(rng.integers(0, len(bins), X[s, g]), minlength=len(bins))
            nz = hits > 0
            r_i += list(pos_in_matrix[bins[nz]])
            c_i += [g] * int(nz.sum())
            v += list(hits[nz])
    M = sp.csr_matrix((v, (r_i, c_i)), shape=(len(tissue_idx), len(genes)), dtype=np.int64)
    M.sum_duplicates()

    folder = out / "binned_outputs" / f"square_{BIN_UM:03d}um"
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", M, barcodes[tissue_idx], genes)
    pd.DataFrame({"barcode": barcodes, "in_tissue": in_tissue.astype(np.int32), "array_row": rows.astype(np.int32),
                  "array_col": cols.astype(np.int32), "pxl_row_in_fullres": px[:, 1],
                  "pxl_col_in_fullres": px[:, 0]}).to_parquet(folder / "spatial" / "tissue_positions.parquet")
    sf = {"microns_per_pixel": image_um_per_px, "bin_size_um": float(BIN_UM),
          "spot_diameter_fullres": BIN_UM / image_um_per_px, "tissue_hires_scalef": 0.2,
          "tissue_lowres_scalef": 0.05, "fiducial_diameter_fullres": 100.0, "regist_target_img_scalef": 0.2}
    for d in (folder / "spatial", out / "spatial"):
        d.mkdir(parents=True, exist_ok=True)
        (d / "scalefactors_json.json").write_text(json.dumps(sf))
    with h5py.File(out / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps({"file_format": "1.0"})})
    truth = pd.DataFrame({"array_row_block": ay - y0, "array_col_block": ax - x0, "x": xy[:, 0], "y": xy[:, 1]},
                         index=st.obs_names)
    return {"counts": pd.DataFrame(X, index=st.obs_names, columns=genes), "blocks": truth, "genes": list(genes),
            "bin_px": BIN_UM / image_um_per_px, "n_bins": len(rows), "n_tissue": len(tissue_idx)}


def write_hd_study(her2st_root, out: Path, sections=("A1", "C2"), n_genes: int = 60) -> Path:
    """A Visium HD study of several HER2ST sections (one per patient): each section's real image and counts
    spread over 8 um bins (:func:`write_hd_from_st`), the genes most counted in all of them; returns the sample
    sheet (``format`` visium_hd, ``counts`` the ``outs/`` folder)."""
    from histexpr.data.tiling import estimate_um_per_px_from_array
    from histexpr.io.sheet import build_her2st_sheet
    from histexpr.io.st import read_st_sample

    rows = build_her2st_sheet(her2st_root).set_index("sample")
    sts = {s: read_st_sample(rows.loc[s, "counts"], rows.loc[s, "spots"], float(rows.loc[s, "pixel_scale"]))
           for s in sections}
    common = sorted(set.intersection(*(set(st.var_names) for st in sts.values())))
    total = sum(np.asarray(st[:, common].X.sum(0)).ravel() for st in sts.values())
    genes = [common[i] for i in np.argsort(-total, kind="stable")[:n_genes]]
    lines = ["sample\tpatient\timage\tcounts\tformat"]
    for s, st in sts.items():
        um = estimate_um_per_px_from_array(st.obs["array_x"], st.obs["array_y"], np.asarray(st.obsm["spatial"]),
                                           "st", 200.0)
        write_hd_from_st(st, um, out / s / "outs", genes=genes)
        lines.append(f"{s}\t{rows.loc[s, 'patient']}\t{rows.loc[s, 'image']}\t{out / s / 'outs'}\tvisium_hd")
    sheet = out / "samples.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet
