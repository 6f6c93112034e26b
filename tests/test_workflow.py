"""The whole rule graph, end to end, on the real HER2ST subset and on a small synthetic demo."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HER2ST_SPOTS, LYMPHOMA, REPO, run_snakemake, write_st_sample

from histexpr.data.megapixel import build_image_sheet

pytestmark = pytest.mark.workflow

TINY_TRAINING = {
    "extractor": {"kind": "stylegan", "input_px": 16, "dim": 16, "width": 8, "cap": 32, "epochs": 2,
                  "batch_size": 32},
    "train": {"epochs": 2, "batch_size": 32, "patience": 2},
    "model_params": {"vit": {"patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2},
                     "egn": {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "eb_heads": 2,
                             "eb_head_dim": 8, "frequency": 1, "n_exemplars": 9}},
}
EGN_FAMILY = ["egn", "egn_backbone_only", "egn_no_eb_block", "egn_no_projector", "egn_pretrained_e_linear"]
# The HER2ST subset has two patients (A: one section; C: four). Leaving one out leaves one training patient, so
# exclude: patient (or sample, when A1 trains alone) would leave EGN's training windows no exemplar, which the
# workflow refuses; exclude: none keeps only the window itself out. Test windows still never see their own patient
# (the pool is the training windows), which is what these tests check.
TWO_PATIENTS = {"k": 9, "metric": "l2", "exclude": "none"}


def run_her2st(work: Path, root: Path, *targets: str, **overrides) -> Path:
    """The HER2ST config on ``root`` at 64-px windows with ``overrides``; runs the workflow (its ``targets``, or
    everything), returns its config."""
    cfg = yaml.safe_load((REPO / "config" / "her2st.yaml").read_text())
    cfg["samples"]["root"] = str(root)
    cfg["tiling"]["window_px"] = 64
    cfg["tiling"].update(overrides.pop("tiling", {}))
    cfg.update(overrides)
    path = work / "her2st.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(work, path, *targets)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-8000:]
    return path


@pytest.fixture(scope="module")
def her2st_run(her2st_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("her2st")
    path = run_her2st(work, her2st_root, **TINY_TRAINING, models=["knn", "vit"] + EGN_FAMILY,
                      sweeps=[{"model": "egn", "param": "n_exemplars", "values": [1, 5]}], exemplars=TWO_PATIENTS)
    return work, path, work / "results" / "her2st"


def test_every_sample_tiled_with_expected_spot_counts(her2st_run):
    _, _, out = her2st_run
    for sample, n in HER2ST_SPOTS.items():
        a = ad.read_h5ad(out / "samples" / f"{sample}.h5ad")
        t = a.uns["tiling"]
        assert t["input"] == n and t["low_counts"] == 0 and t["kept"] + t["edge"] + t["background"] == n
        assert a.n_obs == t["kept"] == len(np.load(out / "tiles" / f"{sample}.npy", mmap_mode="r"))
        assert t["kept"] >= 0.95 * n
        log = (out / "logs" / "tile" / f"{sample}.log").read_text()
        assert f"{n} spots, {t['kept']} kept, {t['edge'] + t['background']} dropped" in log
        # array neighbours are ~290 px apart in the full-resolution JPEGs, ~63 px in A1's downscaled PNG
        assert t["um_per_px"] == pytest.approx(200 / 63 if sample == "A1" else 200 / 290, rel=0.03)
        assert t["spots_on_tissue"] > 0.95 and (out / "qc" / f"{sample}.png").stat().st_size > 10_000


def test_fold_table_never_shares_a_patient_between_train_and_test(her2st_run):
    _, _, out = her2st_run
    folds = pd.read_csv(out / "folds.tsv", sep="\t")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]  # leave one patient out: A, C; fold 0 trains on both
    final = folds[folds["fold"] == 0]
    assert set(final["split"]) == {"train", "val"} and set(final["patient"]) == {"A", "C"}
    assert len(final) == sum(HER2ST_SPOTS.values())
    for _, f in folds[folds["fold"] > 0].groupby("fold"):
        test = set(f.loc[f.split == "test", "patient"])
        assert test and not test & set(f.loc[f.split != "test", "patient"])
        assert (f.split == "val").any()
        assert len(f) == sum(HER2ST_SPOTS.values()) - 0  # every kept spot, once per fold


def test_exemplars_never_share_the_query_patient(her2st_run):
    _, _, out = her2st_run
    for fold in (1, 2):
        ex = pd.read_csv(out / f"fold_{fold}" / "exemplars.tsv", sep="\t")
        obs = ad.read_h5ad(out / f"fold_{fold}" / "raw" / "expression.h5ad", backed="r").obs
        test = ex[ex["query_split"] == "test"]
        assert len(test) and (test["query_patient"] != test["exemplar_patient"]).all()
        assert (ex["query"] != ex["exemplar"]).all()  # exclude: none keeps the window itself out
        assert set(ex["exemplar"]) <= set(obs.index[obs["split"] == "train"])  # pool = training windows only
        log = (out / "logs" / "exemplars" / f"fold_{fold}.log").read_text()
        assert "exemplar pool: " in log and "largest share" in log
        assert test.groupby("query").size().eq(9).all() and test["query"].nunique() == (obs["split"] == "test").sum()


def test_normalisation_fitted_on_training_sections_only(her2st_run):
    _, _, out = her2st_run
    for fold in (1, 2):
        e = ad.read_h5ad(out / f"fold_{fold}" / "raw" / "expression.h5ad")
        train = (e.obs["split"] == "train").to_numpy()
        logged = np.log1p(np.asarray(e.layers["counts"], dtype=np.float64))
        np.testing.assert_allclose(e.var["min"], logged[train].min(axis=0), rtol=1e-6)
        np.testing.assert_allclose(e.var["max"], logged[train].max(axis=0), rtol=1e-6)
        assert not np.allclose(e.var["max"], logged.max(axis=0))  # statistics over all spots would differ
        np.testing.assert_allclose(e.X, (logged - e.var["min"].to_numpy()) / (e.var["max"] - e.var["min"]).to_numpy(),
                                   rtol=1e-4, atol=1e-5)
        assert e.n_vars == 250


def test_library_size_targets_use_training_statistics_and_the_same_genes(her2st_run):
    _, _, out = her2st_run
    for fold in (1, 2):
        raw = ad.read_h5ad(out / f"fold_{fold}" / "raw" / "expression.h5ad")
        lib = ad.read_h5ad(out / f"fold_{fold}" / "library_size" / "expression.h5ad")
        assert lib.var_names.tolist() == raw.var_names.tolist() and (lib.obs_names == raw.obs_names).all()
        train = (lib.obs["split"] == "train").to_numpy()
        values = np.log1p(np.asarray(lib.layers["counts"], dtype=np.float64)
                          / lib.obs["library_size"].to_numpy()[:, None] * 1e4)
        np.testing.assert_allclose(lib.var["min"], values[train].min(axis=0), rtol=1e-6)
        np.testing.assert_allclose(lib.var["max"], values[train].max(axis=0), rtol=1e-6)


MODELS = ("knn", "vit", "colour_ridge", "depth_oracle", *EGN_FAMILY, "egn-n_exemplars-1", "egn-n_exemplars-5")
PROTOCOLS = ("raw", "library_size")


def test_metrics_table_lists_every_model_under_both_protocols_with_its_margin(her2st_run):
    _, _, out = her2st_run
    m = pd.read_csv(out / "metrics.tsv", sep="\t")
    print("\n" + (out / "logs" / "aggregate.log").read_text())
    assert set(zip(m["model"], m["protocol"], m["evaluation"])) == {
        (a, p, e) for a in MODELS for p in PROTOCOLS for e in ("pooled", "per_slide")}
    values = m[["MSE", "MAE", "PCC@F", "PCC@S", "PCC@M", "pPCC@M", "PCC@M_sd"]].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (m["n_folds"] == 2).all() and (m["margin_over"] == "colour_ridge").all()
    others = m[m["model"] != "colour_ridge"]
    assert np.isfinite(others[["dPCC@M", "dPCC@M_lo", "dPCC@M_hi"]].to_numpy(dtype=float)).all()
    assert (others["dPCC@M_lo"] <= others["dPCC@M"]).all() and (others["dPCC@M"] <= others["dPCC@M_hi"]).all()
    assert m.loc[m["model"] == "colour_ridge", "dPCC@M"].isna().all()
    # the margin is the difference of the table's own PCC@M
    ref = m[m["model"] == "colour_ridge"].set_index(["protocol", "evaluation"])["PCC@M"]
    for _, row in others.iterrows():
        assert row["dPCC@M"] == pytest.approx(row["PCC@M"] - ref[(row["protocol"], row["evaluation"])], abs=1e-9)
    genes = pd.read_csv(out / "genes.tsv", sep="\t")
    assert len(genes) == len(MODELS) * len(PROTOCOLS) * genes["gene"].nunique()
    assert {"pcc", "partial_pcc", "pcc_other_protocol", "other_protocol"} <= set(genes.columns)
    both = genes.set_index(["model", "protocol", "gene"])
    row = genes.iloc[0]
    assert row["pcc_other_protocol"] == both.loc[(row["model"], row["other_protocol"], row["gene"]), "pcc"]
    pred = ad.read_h5ad(out / "vit" / "raw" / "fold_1" / "predictions.h5ad")
    assert set(pred.obs["sample"]) == {"A1"} and "A1" in pred.uns["spatial"] and pred.obsm["spatial"].shape[1] == 2


def test_egn_ablation_and_sweep_tables_and_figures(her2st_run):
    _, _, out = her2st_run
    ab = pd.read_csv(out / "ablations.tsv", sep="\t")
    assert sorted(ab["model"].unique()) == sorted(EGN_FAMILY) and len(ab) == len(EGN_FAMILY) * 2 * 2
    assert ab["setting"].notna().all() and np.isfinite(ab["PCC@M"]).all()
    sw = pd.read_csv(out / "sweeps.tsv", sep="\t")
    assert set(sw["param"]) == {"n_exemplars"} and sorted(sw["value"].unique()) == [1, 5]
    assert (sw["base_model"] == "egn").all()
    assert (out / "figures" / "sweeps.png").stat().st_size > 10_000
    assert (out / "figures" / "latent_fold1_raw.png").stat().st_size > 10_000
    latent = pd.read_csv(out / "figures" / "latent_fold1_raw.tsv", sep="\t")
    assert set(latent["model"]) == {"egn", "egn_backbone_only", "egn_no_projector"}
    pred = ad.read_h5ad(out / "egn" / "raw" / "fold_1" / "predictions.h5ad")
    assert pred.obsm["X_latent"].shape == (pred.n_obs, 2 * 32)  # [h^T, AttPool(Z^T)] at embed_dim 32
    log = (out / "logs" / "train" / "egn-n_exemplars-1" / "raw" / "fold_1.log").read_text()
    assert "1 exemplars" in log
    ex = (out / "logs" / "train_extractor" / "fold_1.log").read_text()
    assert "LPIPS: RANDOM alex trunk" in ex  # labelled as such, not silently


def test_report_has_tables_spatial_maps_of_every_test_slide_and_training_curves(her2st_run):
    work, cfg, out = her2st_run
    html = work / "report.html"
    res = run_snakemake(work, cfg, "--report", str(html))
    assert res.returncode == 0, res.stderr[-3000:]
    text = html.read_text()
    for category in ("Metrics", "Per-gene PCC", "Spatial maps", "Training curves", "Spot QC"):
        assert f'"{category}"' in text, category
    samples = pd.read_csv(out / "samples.tsv", sep="\t")["sample"]
    maps = sorted(p.relative_to(out / "report" / "spatial").as_posix()
                  for p in (out / "report" / "spatial").glob("*/*.png"))
    assert maps == sorted(f"{p}/{s}.png" for s in samples for p in ("raw", "library_size"))  # each slide is tested once
    curves = sorted(p.relative_to(out / "report" / "curves").as_posix()
                    for p in (out / "report" / "curves").glob("*/*.png"))
    trained = {f"{h.parts[-3]}/{h.parts[-4]}.png" for h in out.glob("*/*/fold_1/history.tsv")
               if "train_loss" in pd.read_csv(h, sep="\t")}
    assert curves == sorted(trained) and {"raw/vit.png", "library_size/egn_no_projector.png"} <= trained
    assert "raw/knn.png" not in trained and "raw/colour_ridge.png" not in trained  # fitted, not trained
    # the report labels every figure by its slide (or model) and protocol, whole names with underscores
    assert '"library_size"' in text and '"egn_no_projector"' in text and '"C2"' in text
    assert (out / "report" / "spatial" / maps[0]).stat().st_size > 30_000
    tables = (out / "report" / "metrics.html").read_text()
    # a table per protocol and evaluation, and per protocol and gene group (here one group, all genes);
    # each names its models, the best row first and marked, and the margin over the floor
    # and, since fold 2 tests four sections (C2-C5), one table per protocol of every test section, unranked
    assert tables.count("<table") == 2 * 2 + 2 + 2 and tables.count("<tr class='best'>") == 6
    assert "raw targets, each test section" in tables and "<td class=text>C5</td>" in tables
    assert all(f"<td class=text>{m}</td>" in tables for m in ("knn", "vit", "egn", "colour_ridge"))
    assert tables.count("<th>ΔPCC@M [95% CI]</th>") == 8 and "library_size: best " in tables
    # the depth oracle is a row of each protocol's pooled and per-sample tables, marked as reading test data
    assert tables.count("<td class=text>depth_oracle (oracle)</td>") >= 4


@pytest.mark.parametrize("model", ["vit", "knn", "egn"])
def test_predicting_a_folds_test_windows_as_a_new_slide_gives_its_test_predictions(her2st_run, model):
    """The predict path (new windows appended to the fold, exemplars searched in the fold's FAISS pool)
    reproduces what the train rule predicted for the same windows."""
    from histexpr.data.fold import FoldData
    from histexpr.predict import predict_windows

    work, cfg_path, out = her2st_run
    cfg = yaml.safe_load(cfg_path.read_text())
    fold_dir, run = out / "fold_1", out / model / "raw" / "fold_1"
    expected = ad.read_h5ad(run / "predictions.h5ad")
    tiles = {p.stem: str(p) for p in (out / "tiles").glob("*.npy")}
    fold = FoldData.load(fold_dir / "raw" / "expression.h5ad", window_paths=tiles,
                         embeddings=fold_dir / "embeddings.npy", exemplars=fold_dir / "exemplars.npz")
    test_rows = fold.index("test")
    assert list(fold.adata.obs_names[test_rows]) == list(expected.obs_names)
    pred = predict_windows(str(run / "model.pt"), fold, fold.windows[test_rows], 64, cfg["train"],
                           extractor=str(fold_dir / "extractor" / "model.pt"),
                           faiss_index=str(fold_dir / "exemplars.faiss"),
                           exemplar_pool=np.load(fold_dir / "exemplars.npz")["pool"], k=cfg["exemplars"]["k"])
    np.testing.assert_allclose(pred, expected.X, atol=1e-4)


def test_predict_target_maps_every_tissue_window_of_a_slide(her2st_run, her2st_root):
    import scanpy as sc

    from histexpr.data.tiling import tile_spots
    from histexpr.io import open_image

    work, cfg_path, out = her2st_run
    cfg = yaml.safe_load(cfg_path.read_text())
    folds = pd.read_csv(out / "folds.tsv", sep="\t")
    fold = int(folds.loc[(folds["sample"] == "C2") & (folds["split"] == "test"), "fold"].iloc[0])
    um_per_px = ad.read_h5ad(out / "samples" / "C2.h5ad").uns["tiling"]["um_per_px"]
    image = next((her2st_root / "data" / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    cfg["predict"] = {"slides": {"slideC2": {"image": str(image), "um_per_px": um_per_px}}, "model": "egn",
                      "fold": fold, "n_genes": 2}
    path = work / "her2st_predict.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(work, path, "predict")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    assert "rule train:" not in res.stdout + res.stderr and "rule fit:" not in res.stdout + res.stderr  # reused

    pred = sc.read_h5ad(out / "predict" / "slideC2" / "egn" / "raw" / f"fold_{fold}" / "predictions.h5ad")
    assert pred.obs_names.is_unique and np.isfinite(pred.X).all() and pred.n_vars == 250
    side = cfg["tiling"]["window_um"] / um_per_px
    xy = pred.obsm["spatial"]
    with open_image(image) as slide:  # one row per tissue window: every row's window is tissue (the tile test) ...
        sampled = tile_spots(slide, xy[:: max(1, len(xy) // 25)], um_per_px, cfg["tiling"]["window_um"],
                             cfg["tiling"]["window_px"], min_tissue=0.0)
        assert (sampled.tissue >= 0.5).all() and (sampled.status == "kept").all()
    steps = np.diff(np.unique(np.round(xy[:, 0])))
    assert np.allclose(steps[steps < 1.5 * side], side, atol=1.0)  # ... on a grid one window apart
    # ... and the windows line up with the tissue: the measured spots of C2 (all on tissue) fall inside them.
    spots = ad.read_h5ad(out / "samples" / "C2.h5ad").obsm["spatial"]
    inside = (np.abs(spots[:, None, :] - xy[None, :, :]) <= side / 2 + 1).all(-1).any(1)
    assert inside.mean() > 0.8, inside.mean()
    maps = sorted((out / "predict" / "slideC2" / "egn" / "raw" / f"fold_{fold}" / "heatmaps").glob("*.png"))
    assert len(maps) == 2 and all(m.stat().st_size > 20_000 for m in maps)


def test_predict_with_fold_all_trains_on_every_patient(her2st_run, her2st_root):
    """predict.fold: all trains the run's whole chain (targets, extractor, exemplar pool, model) on fold 0,
    every patient in training, and draws the genes the run predicts best across the cross-validation folds."""
    work, cfg_path, out = her2st_run
    cfg = yaml.safe_load(cfg_path.read_text())
    image = next((her2st_root / "data" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    um_per_px = ad.read_h5ad(out / "samples" / "C3.h5ad").uns["tiling"]["um_per_px"]
    cfg["predict"] = {"slides": {"newC3": {"image": str(image), "um_per_px": um_per_px}}, "model": "egn",
                      "fold": "all", "n_genes": 3}
    path = work / "her2st_predict_all.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(work, path, "predict")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", res.stdout + res.stderr, re.M))
    assert {"expression", "train_extractor", "embed", "exemplars", "train", "predict_slide"} <= ran, ran
    assert not ran & {"evaluate", "aggregate"}  # fold 0 has no test slide and is never scored

    final = ad.read_h5ad(out / "fold_0" / "raw" / "expression.h5ad")
    assert set(final.obs["split"]) == {"train", "val"}
    assert set(final.obs.loc[final.obs["split"] == "train", "sample"]) == set(HER2ST_SPOTS)  # every section trains
    train = final.obs["split"].to_numpy() == "train"
    assert np.allclose(np.asarray(final.X[train]).min(0), 0) and np.allclose(np.asarray(final.X[train]).max(0), 1)
    pool = final.obs.iloc[np.load(out / "fold_0" / "exemplars.npz")["pool"]]
    assert set(pool["patient"]) == {"A", "C"} and (pool["split"] == "train").all()
    assert ad.read_h5ad(out / "egn" / "raw" / "fold_0" / "predictions.h5ad").n_obs == 0
    history = pd.read_csv(out / "egn" / "raw" / "fold_0" / "history.tsv", sep="\t")
    assert history["selected"].sum() == 1  # selected on fold 0's validation windows

    pred = ad.read_h5ad(out / "predict" / "newC3" / "egn" / "raw" / "fold_all" / "predictions.h5ad")
    assert pred.n_obs > 50 and np.isfinite(pred.X).all() and list(pred.var_names) == list(final.var_names)
    assert int(pred.uns["prediction"]["fold"]) == 0
    cv = pd.concat([pd.read_csv(out / "egn" / "raw" / f"fold_{k}" / "genes.tsv", sep="\t") for k in (1, 2)])
    pooled = cv[(cv["scope"] == "pooled") & cv["gene"].isin(final.var_names)].groupby("gene")["pcc"]
    best = pooled.mean()[pooled.count() == 2].sort_values(ascending=False).index[:3]  # scored in both CV folds
    heatmaps = out / "predict" / "newC3" / "egn" / "raw" / "fold_all" / "heatmaps"
    assert sorted(p.stem for p in heatmaps.glob("*.png")) == sorted(best)
    assert (out / "metrics.tsv").exists() and (pd.read_csv(out / "metrics.tsv", sep="\t")["n_folds"] == 2).all()


def test_gpu_runner_bundles_and_runs_a_study(her2st_run, tmp_path):
    import sys

    _, _, out = her2st_run
    script = REPO / "benchmarks" / "egn_her2st.py"
    bundle = tmp_path / "b.npz"
    res = subprocess.run([sys.executable, str(script), "bundle", str(out), str(bundle), "--level", "sample",
                          "--max-windows", "24"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([sys.executable, str(script), "run", str(bundle), "--preset", "tiny", "--folds", "2", "3",
                          "--protocols", "raw", "--bootstrap", "20", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(tmp_path / "run" / "table.tsv", sep="\t")
    assert set(table["model"]) == {"colour_ridge", "knn", "vit", "egn"} and (table["n_folds"] == 2).all()


def test_single_fold_reruns_by_target(her2st_run):
    work, cfg, out = her2st_run
    target = out / "vit" / "raw" / "fold_1" / "metrics.tsv"
    before = pd.read_csv(target, sep="\t")
    shutil.rmtree(out / "vit" / "raw" / "fold_1")
    res = run_snakemake(work, cfg, str(target.relative_to(work)))
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = res.stderr  # the jobs that ran (stdout ends with the study's verdict lines, every protocol's)
    assert "rule train:" in jobs and "rule tile:" not in jobs and "fold_2" not in jobs and "library_size" not in jobs
    pd.testing.assert_frame_equal(pd.read_csv(target, sep="\t"), before)  # seeded: the same numbers again


def test_demo_graph_runs_and_reports_gene_groups(tiny_demo_run):
    """The catalog's .test study (the demo shrunk: 3 one-section patients, 2-epoch networks), found as
    config/config.yaml of the working directory as `snakemake -d .test` finds it."""
    tmp_path, res = tiny_demo_run
    path = tmp_path / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["demo"]["patients"] == 3 and cfg["models"] == ["knn", "vit"]
    # the quiet terminal: the plan in a line, a line per finished rule, no job blocks, no library chatter
    said = res.stderr.splitlines() + res.stdout.splitlines()
    assert re.match(r"\d+ jobs to run: make_demo 1, sample_sheet 1, tile 3, ", said[0]), "\n".join(said)
    assert re.search(r"^\[ *\d+%\] tile: all 3 jobs done \(\d+", res.stderr, re.M)
    assert re.search(r"^\[100%\] all: the job done", res.stderr, re.M)
    assert not any(s.startswith(("Select jobs", "Finished jobid", "    input:", "... storing")) for s in said)
    assert len(said) < 100, "\n".join(said)
    out = tmp_path / "results" / "demo"
    groups = pd.read_csv(out / "metrics_by_group.tsv", sep="\t")
    assert set(zip(groups["model"], groups["protocol"], groups["group"])) == {
        (m, "raw", g) for m in ("knn", "vit", "colour_ridge", "depth_oracle") for g in ("image", "noise")}
    assert "SYNTHETIC" in (tmp_path / "resources" / "demo" / "logs" / "make_demo.log").read_text()
    for sample in pd.read_csv(out / "samples.tsv", sep="\t")["sample"]:  # a spot-QC figure per sample
        assert (out / "qc" / f"{sample}.png").stat().st_size > 10_000
    # progress in the terminal, not only in the logs: a line per epoch of every network, one per fitted model
    epochs = cfg["train"]["epochs"]
    for fold in (1, 2, 3):
        lines = re.findall(rf"^\[train/vit/raw/fold_{fold}\] epoch (\d+)/{epochs}: val PCC@M -?[\d.]+ .*ETA .*$",
                           res.stderr, re.M)
        assert lines and [int(e) for e in lines] == list(range(1, len(lines) + 1)), res.stderr[-3000:]
        assert re.search(rf"^\[train/vit/raw/fold_{fold}\] kept epoch \d+ of {len(lines)} ", res.stderr, re.M)
        assert re.search(rf"^\[train/knn/raw/fold_{fold}\] fitted on \d+ windows", res.stderr, re.M)
    # the tables answer the question: a verdict line, models best first, at most 120 columns
    shown = subprocess.run([sys.executable, "-m", "histexpr.show", "results/demo"], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    verdict = next(line for line in lines if line.lstrip().startswith("raw: best "))
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    per_section = metrics[metrics["evaluation"] == "per_slide"].sort_values("PCC@M", ascending=False)
    methods = per_section[per_section["model"] != "depth_oracle"]  # the oracle reads test counts: never "best"
    assert verdict.lstrip().startswith(f"raw: best {methods['model'].iloc[0]}, PCC@M {methods['PCC@M'].iloc[0]:.3f}")
    assert "(3 test sections)" in verdict
    assert ("the floor itself" in verdict) == (methods["model"].iloc[0] == "colour_ridge")
    assert any(line.strip().startswith("(depth_oracle, which reads each test spot's total count") for line in lines)
    assert "beats the floor" in verdict or "does not beat" in verdict or "the floor itself" in verdict
    block = lines[lines.index("raw targets, per section") + 2:][:len(per_section)]
    assert [row.split()[0] for row in block] == methods["model"].tolist() + ["depth_oracle"]  # best first
    assert "raw targets, pooled over each fold's sections" in lines
    # the run itself ended with the same verdict lines and the table's path
    ran = [line for line in res.stdout.splitlines() if line.strip()]
    end = ran[ran.index("demo: results/demo/metrics.tsv"):]
    said = [line for line in lines if line.strip() and not line.startswith("NOTE:")]
    assert end[:-1] == said[:len(end) - 1] and verdict in end  # show begins with what the run ended with
    assert end[-1] == "  every model and number: python -m histexpr.show results/demo"
    # gene groups first, each with its verdict, and PCC@M defined
    assert end[1] == "  by gene group (metrics_by_group.tsv; pooled over each fold's sections):"
    assert end[2].startswith("    image genes (24): best ") and end[3].startswith("    noise genes (24): best ")
    assert "  PCC@M: the mean over genes of each gene's Pearson r between predicted and measured expression." in end
    groups = pd.read_csv(out / "metrics_by_group.tsv", sep="\t")
    assert groups.loc[groups["model"] != "colour_ridge", "dPCC@M_lo"].notna().all()  # each group's margin
    page = (out / "report" / "metrics.html").read_text()
    assert "<th>ΔPCC@M [95% CI]</th>" in page and "<tr class='best'>" in page and "raw: best " in page
    # the same settings with every section's keys in reverse order: nothing to replan
    reordered = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in reversed(list(cfg.items()))}
    again = tmp_path / "demo_reordered.yaml"
    again.write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert again.read_text() != path.read_text()
    res = run_snakemake(tmp_path, again, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:]
    # more epochs retrain the networks only: the fitted models read no training setting but the seed
    res = run_snakemake(tmp_path, path, "-n", "--config", f"train={{epochs: {epochs + 1}}}")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "rule train:" in res.stdout and "rule fit:" not in res.stdout, res.stdout[-3000:]


def _train_resources(dry_run: str) -> dict[str, set[tuple]]:
    """{run: {(rule, gpu, mem_mb, runtime, cpus_per_task)} of its train/fit jobs} from a dry run's listing."""
    out: dict[str, set[tuple]] = {}
    for block in re.split(r"\n(?=\[|rule )", dry_run):
        if block.startswith(("rule train:", "rule fit:")):
            run = re.search(r"output: results/demo/([^/]+)/", block).group(1)
            res = dict(re.findall(r"\b(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))
            out.setdefault(run, set()).add((block.split(":")[0][5:], int(res["gpu"]), res.get("mem_mb"),
                                            res.get("runtime"), res.get("cpus_per_task")))
    return out


def test_train_jobs_ask_for_a_gpu_only_for_networks(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["demo"].update({"patients": 4, "sections_per_patient": 1, "image_px": 600})  # egn: 2 training patients
    cfg["models"] = ["knn", "vit", "egn"]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for profile in ("local", "slurm"):
        for device, network_gpus in (("auto", 1), ("cpu", 0)):
            cfg["train"] = {**cfg.get("train", {}), "device": device}
            path.write_text(yaml.safe_dump(cfg))
            res = run_snakemake(tmp_path, path, "-n", "--profile", str(REPO / "profiles" / profile),
                                "results/demo/metrics.tsv", one_thread=False)
            assert res.returncode == 0, res.stderr[-3000:]
            jobs = _train_resources(res.stdout)
            assert {run: {(rule, gpu) for rule, gpu, *_ in v} for run, v in jobs.items()} == {
                "knn": {("fit", 0)}, "colour_ridge": {("fit", 0)}, "depth_oracle": {("fit", 0)},
                "vit": {("train", network_gpus)},
                "egn": {("train", network_gpus)}}, (profile, device)
            if profile == "slurm":  # a fitted model asks for one CPU, <= 4 GB and <= 30 minutes; networks more
                for run in ("knn", "colour_ridge", "depth_oracle"):
                    for _, _, mem_mb, runtime, cpus in jobs[run]:
                        assert int(mem_mb) <= 4000 and int(runtime) <= 30 and int(cpus) == 1, jobs[run]
                assert all(int(mem) >= 32000 for _, _, mem, _, _ in jobs["vit"]), jobs["vit"]


TABLE1 = ["knn", "ridge", "nsl", "stnet", "vit", "cyclemlp", "mpvit", "retro", "vitexp", "egn", "tcgn"]


@pytest.fixture(scope="module")
def table1_run(her2st_root, tmp_path_factory):
    """Every method of the seeds (EGN's Table 1, TCGN, the floors) on the real sections, raw targets, tiny."""
    from test_baselines import TINY

    work = tmp_path_factory.mktemp("her2st_table1")
    params = {**TINY_TRAINING["model_params"], **{m: TINY[m] for m in ("tcgn", "cyclemlp", "mpvit")},
              **{m: {**TINY[m], "n_exemplars": 9} for m in ("retro", "vitexp")}}
    tiny = {**TINY_TRAINING, "model_params": params, "train": {"epochs": 1, "batch_size": 64}}
    run_her2st(work, her2st_root, "results/her2st/metrics.tsv", **tiny,
               expression={"top_n": 250, "log1p": True, "protocols": ["raw"]}, models=TABLE1, exemplars=TWO_PATIENTS)
    return work / "results" / "her2st"


def test_every_method_lands_in_one_table(table1_run):
    out = table1_run
    m = pd.read_csv(out / "metrics.tsv", sep="\t")
    print("\n" + (out / "logs" / "aggregate.log").read_text())
    pooled = m[m["evaluation"] == "pooled"].set_index("model")
    assert sorted(pooled.index) == sorted(TABLE1 + ["colour_ridge", "depth_oracle"])
    cols = ["MSE", "MAE", "PCC@F", "PCC@S", "PCC@M"]
    assert np.isfinite(pooled[cols + [c + "_sd" for c in cols]].to_numpy(dtype=float)).all()
    assert (pooled["n_folds"] == 2).all() and (pooled["protocol"] == "raw").all()
    # each model trained on the same folds and genes: one predictions file per fold, same spots and genes
    ref = ad.read_h5ad(out / "colour_ridge" / "raw" / "fold_1" / "predictions.h5ad")
    for model in TABLE1:
        p = ad.read_h5ad(out / model / "raw" / "fold_1" / "predictions.h5ad")
        assert list(p.obs_names) == list(ref.obs_names) and list(p.var_names) == list(ref.var_names)
    log = (out / "logs" / "train" / "tcgn" / "raw" / "fold_1.log").read_text()
    assert "no pretrained weights configured" in log and "parameters" in log


def test_colour_ridge_floor_on_her2st_sections(her2st_run):
    """colour_ridge alone, leave-one-section-out over A1, C2-C5, both protocols, on the tile rule's windows of
    the HER2ST run, through the library calls the folds/expression/train/evaluate scripts make."""
    from histexpr.data.expression import build_fold_expression
    from histexpr.data.fold import FoldData
    from histexpr.data.folds import make_folds
    from histexpr.metrics import evaluate
    from histexpr.models import get_model

    _, _, out = her2st_run
    sheet = pd.read_csv(out / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    adatas = {s: ad.read_h5ad(out / "samples" / f"{s}.h5ad") for s in sheet["sample"]}
    spots = pd.concat([a.obs.assign(obs_name=a.obs_names) for a in adatas.values()], ignore_index=True)
    folds = make_folds(sheet, spots, {"level": "sample", "k": "loo", "val_fraction": 0.2, "seed": 0})
    tiles = {s: str(out / "tiles" / f"{s}.npy") for s in adatas}
    rows = []
    for protocol in PROTOCOLS:
        for _fold, table in folds.groupby("fold"):
            e = build_fold_expression(adatas, table, {"top_n": 250, "log1p": True, "target_sum": 1e4},
                                      protocol=protocol)
            data = FoldData.load(e, window_paths=tiles)
            test = data.index("test")
            pred = get_model("colour_ridge").factory({}).fit(data).predict(data, test)
            summary, _ = evaluate(data.targets[test], pred, e.obs["sample"].to_numpy()[test], data.genes,
                                  log_total=np.log1p(e.obs["library_size"].to_numpy()[test]))
            pooled = summary[summary["scope"] == "pooled"].iloc[0]
            section = summary.loc[summary["scope"] == "slide", "slide"].item()
            rows.append({"section": section, "protocol": protocol, "PCC@M": pooled["PCC@M"], "pPCC@M": pooled["pPCC@M"]})
    table = pd.DataFrame(rows).pivot(index="section", columns="protocol", values=["PCC@M", "pPCC@M"])
    print("\ncolour_ridge, leave-one-section-out:\n", table.round(3))
    assert sorted(table.index) == ["A1", "C2", "C3", "C4", "C5"]
    assert (table.loc[["C3", "C4", "C5"], ("PCC@M", "raw")] >= 0.35).all()
    assert (table.loc[["C3", "C4", "C5"], ("PCC@M", "library_size")] <= 0.25).all()


def test_her2st_defaults_to_cloning_the_repository(tmp_path):
    """Without a copy, the run says how to clone one; the clone is its own first step (the sample table is
    read when the workflow starts, so it must be there before the run)."""
    res = run_snakemake(tmp_path, REPO / "config" / "her2st.yaml", "-n")
    assert res.returncode != 0
    assert "histexpr error: HER2ST is not in resources/her2st yet" in res.stderr + res.stdout
    assert "fetch_her2st" in res.stderr + res.stdout
    res = run_snakemake(tmp_path, REPO / "config" / "her2st.yaml", "-n", "fetch_her2st")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rule fetch_her2st:" in res.stdout and "resources/her2st" in res.stdout


def test_snakemake_lint_is_clean():
    res = run_snakemake(REPO, None, "--lint")
    assert res.returncode == 0 and "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


def _rules(configfile: Path, overrides: dict | None = None):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    settings = ConfigSettings(configfiles=[configfile], config=overrides or {})
    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=settings,
                          snakefile=REPO / "Snakefile", workdir=REPO)
        return [(r.name, r.conda_env, r.snakefile, r.script) for r in wf._workflow.rules]


# Import names of the heavy packages an environment may leave out.
_IMPORTS_CHECKED: dict = {}
HEAVY = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "lpips": "lpips", "faiss-cpu": "faiss"}


@pytest.mark.parametrize("configfile", ["config.yaml", "her2st.yaml", "tcgn.yaml", "lymphoma.yaml", "megapixel.yaml"])
def test_every_rule_has_a_real_conda_env_with_the_pinned_versions(configfile, tmp_path):
    import ast
    import subprocess
    import sys

    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    envs = set()
    # a classification study stops at parse time without its images folder: give it an (empty) one
    overrides = {"images": {"root": str(tmp_path)}} if configfile == "lymphoma.yaml" else None
    for name, env, snakefile, script in _rules(REPO / "config" / configfile, overrides):
        if script is None:  # target rules (all, predict) run nothing
            continue
        assert env, f"rule {name} has no conda: directive"
        path = (Path(snakefile).parent / env).resolve()
        assert path.parent == REPO / "envs" and path.exists(), f"rule {name}: {path} missing"
        envs.add(path.name)
        spec = yaml.safe_load(path.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for req in pip:
            pkg, version = req.split("==")
            assert pins.get(pkg) == version, f"{path.name}: {req} differs from requirements.txt ({pins.get(pkg)})"
        # The script's imports work with only its environment's heavy packages (the others blocked).
        blocked = [mod for pkg, mod in HEAVY.items() if pkg not in {r.split("==")[0] for r in pip}]
        key = ((Path(snakefile).parent / script).resolve(), tuple(blocked))
        if key not in _IMPORTS_CHECKED:  # the same script under the same env is checked once per session
            tree = ast.parse(key[0].read_text())
            imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            code = "\n".join([f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})"]
                             + [f"sys.modules[{m!r}] = None" for m in blocked] + imports)
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            _IMPORTS_CHECKED[key] = (res.returncode, res.stderr.strip().splitlines()[-1:] or [""])
        code, err = _IMPORTS_CHECKED[key]
        assert code == 0, f"rule {name} in {path.name}: {err[0]}"
    assert "data.yaml" in envs  # the CPU rules do not pull PyTorch


@pytest.mark.skipif(shutil.which("conda") is None and shutil.which("mamba") is None,
                    reason="conda is not installed on this machine; snakemake's conda dry run needs it "
                           "(the env wiring is checked by test_every_rule_has_a_real_conda_env_with_the_pinned_versions)")
@pytest.mark.parametrize("configfile", ["config.yaml", "her2st.yaml", "tcgn.yaml", "lymphoma.yaml", "megapixel.yaml"])
def test_conda_dry_run(tmp_path, configfile):
    (tmp_path / "resources" / "lymphoma").mkdir(parents=True)  # the classification study's images folder
    res = run_snakemake(tmp_path, REPO / "config" / configfile, "-n", "--sdm", "conda")
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def lymphoma_run(lymphoma_root, tmp_path_factory):
    """The attention-sampling branch on the real lymphoma images: one grid point, both baselines, 2 folds."""
    work = tmp_path_factory.mktemp("lymphoma")
    cfg = yaml.safe_load((REPO / "config" / "lymphoma.yaml").read_text())
    cfg.update(images={"root": str(lymphoma_root)}, grid={"patch_px": [15], "n_patches": [5]}, seeds=[0],
               folds={"k": 2, "val_fraction": 0.2, "seed": 0}, attention_maps={"per_class": 1},
               evaluation={"draws": 3, "seed": 1234}, train={**cfg["train"], "epochs": 2, "patience": 2})
    path = work / "lymphoma.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(work, path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work / "results" / "lymphoma"


def test_lymphoma_branch_writes_accuracy_confusion_and_attention_maps(lymphoma_run):
    out = lymphoma_run
    acc = pd.read_csv(out / "accuracy.tsv", sep="\t")
    print("\n" + (out / "logs" / "aggregate_classification.log").read_text())
    ats = "ats-p15-n5-expectation"  # the estimator is in the name (grid.estimators, default [ats.estimator])
    assert acc["setting"].tolist() == [ats, "uniform-p15-n5", "cnn", "colour_hist"]  # the floor last
    assert (acc["runs"] == 2).all() and acc.set_index("setting")["draws"].to_dict() == {
        ats: 3, "uniform-p15-n5": 3, "cnn": 1, "colour_hist": 1}  # only the samplers are drawn again
    # the table's accuracy is the mean over the stored per-draw predictions
    for setting, row in acc.set_index("setting").iterrows():
        pred = pd.concat(pd.read_csv(p, sep="\t") for p in sorted((out / setting).glob("seed_0/fold_*/predictions.tsv")))
        test = pred[pred["split"] == "test"]
        assert len(test) == row["draws"] * len(list(LYMPHOMA.glob("*/*.png")))
        assert row["test_acc"] == pytest.approx((test["pred"] == test["label"]).mean()), setting
    a = acc.set_index("setting").loc[ats]
    assert a["duni_lo"] <= a["duni"] <= a["duni_hi"] and a["attention_max_over_mean"] >= 1
    assert 0 < a["attention_entropy_ratio"] <= 1 and a["timer"] == "cpu"
    floor = acc.set_index("setting").loc["colour_hist"]
    assert floor["test_acc"] > 0.6 and floor["dacc"] == 0  # histograms tell the subtypes apart; its own margin 0
    assert (acc["dacc_lo"] <= acc["dacc"]).all() and (acc["dacc"] <= acc["dacc_hi"]).all()
    conc = pd.read_csv(out / "attention" / f"{ats}.tsv", sep="\t")
    fold1 = pd.read_csv(out / "folds.tsv", sep="\t").query("fold == 1 and split == 'test'")
    assert sorted(conc["image"]) == sorted(fold1["image"])  # every test image of fold 1
    assert (conc["max_over_mean"] >= 1).all() and conc["entropy_ratio"].between(0, 1 + 1e-9).all()
    assert acc[["train_acc", "test_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    view = 104 * 78  # the 417 x 312 images at view_scale 0.25
    assert acc.set_index("setting")["pixels_per_image"].to_dict() == {
        ats: view + 5 * 15 * 15, "uniform-p15-n5": view + 5 * 15 * 15, "cnn": view, "colour_hist": 417 * 312}
    conf = pd.read_csv(out / "confusion.tsv", sep="\t")
    per_setting = conf.groupby("setting")["count"].sum()
    assert (per_setting == len(list(LYMPHOMA.glob("*/*.png")))).all()  # every image tested once (2 folds)
    for png in (out / "figures" / "confusion.png", out / "figures" / "attention" / f"{ats}.png",
                out / "figures" / "attention" / f"{ats}_concentration.png"):
        assert png.stat().st_size > 10_000
    folds = pd.read_csv(out / "folds.tsv", sep="\t")
    for _, f in folds.groupby("fold"):  # no test image in training or model selection
        assert not set(f.loc[f.split == "test", "image"]) & set(f.loc[f.split != "test", "image"])


def _job_counts(dry_run: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run: {rule: jobs}, with "total"."""
    table = dry_run[dry_run.index("Job stats:"):].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_a_dry_run_lists_every_job_before_anything_has_run(tmp_path):
    """The user's sheet is read when the workflow is parsed: tile, folds, expression, train and evaluate jobs
    are all in the first dry run of a fresh copy, with the total of the real run."""
    samples = [write_st_sample(tmp_path / f"s{i}", f"S{i}", seed=i) for i in range(3)]
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": f"S{i}", "patient": f"P{i}", "image": str(s["image"]), "counts": str(s["counts"]),
                   "spots": str(s["spots"])} for i, s in enumerate(samples)]).to_csv(sheet, sep="\t", index=False)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"study": "mine", "samples": str(sheet), "models": ["knn", "vit"],
                                   "expression": {"protocols": ["raw"]}}))
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "results").exists()  # nothing has run
    jobs = _job_counts(res.stdout)
    runs, folds = 4, 3  # knn, vit, the colour_ridge floor and the depth oracle; leave one patient out of three
    assert {k: jobs.get(k) for k in ("sample_sheet", "tile", "folds", "expression", "fit", "train", "evaluate")} == {
        "sample_sheet": 1, "tile": 3, "folds": 1, "expression": folds, "fit": 3 * folds, "train": 1 * folds,
        "evaluate": runs * folds}, jobs  # fit: knn, colour_ridge, depth_oracle; train: vit
    assert jobs["total"] == sum(v for k, v in jobs.items() if k != "total")
    assert "checkpoint" not in res.stdout  # nothing is decided later: the count is the run's
    # a fixed test set is one fold; a split that puts one patient on both sides stops the dry run
    table = pd.read_csv(sheet, sep="\t").assign(split=["train", "train", "test"])
    table.to_csv(sheet, sep="\t", index=False)
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    assert _job_counts(res.stdout)["evaluate"] == runs * 1
    table.assign(patient=["P0", "P1", "P1"]).to_csv(sheet, sep="\t", index=False)
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode != 0 and "patient(s) P1 have sections in both train and test" in res.stderr + res.stdout


def test_a_timm_encoder_from_a_local_checkpoint_embeds_once_for_all_folds(her2st_root, tmp_path):
    """extractor.kind: timm with a saved (random) vit_small_patch16_224 in the published format: the whole
    graph runs, one embedding job for the study, the probe and knn on its space, the oracle in the table.
    The same run stores its windows as JPEG (tiling.store) and searches fold 1's exemplars with ivf."""
    import timm
    import torch

    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict(), ckpt)
    timm_cfg = {"arch": "vit_small_patch16_224", "checkpoint": str(ckpt), "input_px": 32,
                "kwargs": {"dynamic_img_size": True}}
    run_her2st(tmp_path, her2st_root, "all", "results/her2st/fold_1/exemplars.tsv",
               extractor={"kind": "timm", "timm": timm_cfg}, models=["knn", "probe"],
               expression={"top_n": 50, "log1p": True, "protocols": ["raw"]},
               model_params={"probe": {"n_components": 512}},  # more than the 384 the encoder gives
               exemplars={"index": "ivf", "nprobe": 2}, tiling={"store": "jpeg"})
    out = tmp_path / "results" / "her2st"
    # the JPEG store: every sample's windows in one file, its cost in the tile log, read by embed and fit
    assert sorted(p.name for p in (out / "tiles").iterdir()) == [f"{s}.jpg.h5" for s in sorted(HER2ST_SPOTS)]
    log = (out / "logs" / "tile" / "C2.log").read_text()
    assert re.search(r"windows stored as jpeg: .*JPEG quality 90, PSNR \d+\.\d dB", log), log
    # ivf exemplars: recall logged, the exclusion rule exact (never the own patient, never a test patient)
    ex_log = (out / "logs" / "exemplars" / "fold_1.log").read_text()
    assert "ivf search:" in ex_log and re.search(r"ivf recall@9 against exact search on \d+ random queries", ex_log)
    ex = pd.read_csv(out / "fold_1" / "exemplars.tsv", sep="\t")
    assert len(ex) and (ex["query_patient"] != ex["exemplar_patient"]).all()
    folds = pd.read_csv(out / "folds.tsv", sep="\t")
    test_patients = set(folds.loc[(folds["fold"] == 1) & (folds["split"] == "test"), "patient"])
    assert test_patients and not (set(ex["exemplar_patient"]) & test_patients)
    bench = out / "benchmarks"
    assert (bench / "embed_study.tsv").exists() and not (bench / "embed").exists()  # once, not per fold
    assert not (bench / "train_extractor").exists()
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (sum(HER2ST_SPOTS.values()), 384) and np.isfinite(emb).all()
    log = (out / "logs" / "frozen_extractor.log").read_text()
    assert f"loaded {len(torch.load(ckpt, weights_only=True))} tensors from {ckpt}" in log
    m = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert set(m["model"]) == {"knn", "probe", "colour_ridge", "depth_oracle"} and (m["n_folds"] == 2).all()
    # a probe whose PCA keeps every direction is ridge: the table and show say so, not only the fit log
    note = ("probe = ridge on the standardised embedding here: n_components (512) is no fewer than the directions "
            "the training embeddings span, so PCA keeps them all")
    assert set(m.loc[m["model"] == "probe", "note"]) == {note} and m.loc[m["model"] != "probe", "note"].isna().all()
    shown = subprocess.run([sys.executable, "-m", "histexpr.show", str(out)], capture_output=True, text=True,
                           check=True).stdout
    assert f"notes\n  probe (raw): {note}" in shown


def test_a_split_column_trains_only_on_train_images_and_tests_only_on_test_images(lymphoma_root, tmp_path):
    """An image sheet with split: train|test is one fold, known when the workflow is parsed: every run (the
    networks and the floor) fits on train images, selects on some of them, and is tested on exactly the rest."""
    sheet = build_image_sheet(lymphoma_root).iloc[::5].reset_index(drop=True)
    sheet["split"] = np.where(np.arange(len(sheet)) % 4 == 0, "test", "train")
    sheet.to_csv(tmp_path / "images.tsv", sep="\t", index=False)
    cfg = yaml.safe_load((REPO / "config" / "lymphoma.yaml").read_text())
    cfg.update(images=str(tmp_path / "images.tsv"), grid={"patch_px": [15], "n_patches": [5]}, baselines=["cnn"],
               seeds=[0], evaluation={"draws": 2, "seed": 0}, attention_maps={"per_class": 0},
               train={**cfg["train"], "epochs": 1, "warmup_epochs": 0})
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(tmp_path, path, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _job_counts(res.stdout)
    assert (jobs["train_classifier"], jobs["classification_floor"]) == (2, 1), jobs  # ats + cnn, one fold
    res = run_snakemake(tmp_path, path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    out = tmp_path / "results" / "lymphoma"
    train, test = (set(sheet.loc[sheet["split"] == s, "image"]) for s in ("train", "test"))
    folds = pd.read_csv(out / "folds.tsv", sep="\t")
    assert set(folds["fold"]) == {1}
    assert set(folds.loc[folds.split == "test", "image"]) == test
    assert set(folds.loc[folds.split != "test", "image"]) == train and (folds.split == "val").any()
    for setting in ("ats-p15-n5-expectation", "cnn", "colour_hist"):
        pred = pd.read_csv(out / setting / "seed_0" / "fold_1" / "predictions.tsv", sep="\t")
        assert set(pred.loc[pred.split == "test", "image"]) == test, setting
        assert set(pred.loc[pred.split != "test", "image"]) <= train, setting
    assert pd.read_csv(out / "accuracy.tsv", sep="\t")["runs"].eq(1).all()
