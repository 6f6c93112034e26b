"""What a run tells its user: per-section verdicts, exemplar pools that say what they are, an end of run that
answers."""

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, write_st_sample

from histexpr.data.folds import fold_plan, make_folds
from histexpr.errors import ConfigError
from histexpr.io.sheet import build_her2st_sheet
from histexpr.retrieval.pools import check_pools, describe_pool, pool_report

TINY_EXTRACTOR = {"kind": "stylegan", "input_px": 16, "dim": 16, "width": 8, "cap": 32, "epochs": 1,
                  "batch_size": 32}


def _sheet(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"sample": [s for s, _ in rows], "patient": [p for _, p in rows], "split": ""})


def test_fold_plan_is_the_split_make_folds_makes():
    """The parse-time plan names the same train/val/test sections as the folds job, for every layout of
    validation (whole patients, sections of the one training patient, a band of the one training section)."""
    for rows in ([("a1", "A"), ("b1", "B"), ("c1", "C"), ("d1", "D")],
                 [("a1", "A"), ("c1", "C"), ("c2", "C"), ("c3", "C")],
                 [("a1", "A"), ("b1", "B")]):
        sheet = _sheet(rows)
        spots = pd.DataFrame([{"sample": s, "patient": p, "spot": f"{i}", "obs_name": f"{s}_{i}", "array_y": i}
                              for s, p in rows for i in range(10)])
        cfg = {"level": "patient", "k": "loo", "val_fraction": 0.2, "seed": 3}
        table = make_folds(sheet, spots, cfg)
        for f in fold_plan(sheet, cfg):
            t = table[table["fold"] == f["fold"]]
            for split in ("train", "val", "test"):
                assert sorted(set(t.loc[t["split"] == split, "sample"])) == f[split], (rows, f)


def test_pools_that_would_leave_training_windows_without_exemplars_are_refused():
    two = _sheet([("A1", "A"), ("A2", "A"), ("A3", "A"), ("B1", "B"), ("B2", "B"), ("B3", "B")])
    cfg = {"level": "patient", "k": "loo", "val_fraction": 0.2, "seed": 0}
    with pytest.raises(ConfigError, match=r"my.yaml: fold 1: the train windows of patient B have no eligible "
                                          r"exemplar: .* exemplars.exclude: patient rules out; egn would train "
                                          r"without exemplars and test with them. Fix: exemplars.exclude: sample"):
        check_pools(two, fold_plan(two, cfg), "patient", ["egn", "vit"], "my.yaml")
    check_pools(two, fold_plan(two, cfg), "sample", ["egn"], "my.yaml")  # the other sections of the patient
    two_each = _sheet([("A1", "A"), ("A2", "A"), ("B1", "B"), ("B2", "B")])  # one validates, one trains
    with pytest.raises(ConfigError, match=r"train windows of section .* Fix: more patients or sections"):
        check_pools(two_each, fold_plan(two_each, cfg), "sample", ["egn"], "my.yaml")
    check_pools(two, fold_plan(two, cfg), "patient", ["vit", "knn"], "my.yaml")  # nobody trains on exemplars
    one_each = _sheet([("A1", "A"), ("B1", "B")])  # a single training section: nothing outside it
    with pytest.raises(ConfigError, match=r"the train windows of section [AB]1 .* Fix: more patients or sections"):
        check_pools(one_each, fold_plan(one_each, cfg), "sample", ["retro"], "my.yaml")
    three = _sheet([("A1", "A"), ("B1", "B"), ("C1", "C")])  # a whole patient validates: one trains
    with pytest.raises(ConfigError, match=r"vitexp would train without exemplars"):
        check_pools(three, fold_plan(three, cfg), "patient", ["vitexp"], "my.yaml")
    four = _sheet([("A1", "A"), ("B1", "B"), ("C1", "C"), ("D1", "D")])
    check_pools(four, fold_plan(four, cfg), "patient", ["egn"], "my.yaml")


def test_pool_report_names_sections_windows_and_the_largest_share():
    obs = pd.DataFrame({"split": ["train"] * 6 + ["test"] * 3, "patient": list("AAAABB") + ["C"] * 3,
                        "sample": ["A1", "A1", "A1", "A2", "B1", "B1", "C1", "C1", "C1"]})
    rows = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [2, 4], [5, -1]])
    pool, sources = pool_report(obs, np.arange(6), rows)
    assert pool["sample"].tolist() == ["A1", "B1", "A2"] and pool["windows"].tolist() == [3, 2, 1]
    assert describe_pool(pool) == "6 windows from 3 sections of 2 patients (A: A1 3, A2 1; B: B1 2); largest share A1 50%"
    s = sources.iloc[0]
    assert (s["sample"], s["queries"], s["exemplars"], s["top_source"]) == ("C1", 3, 5, "A1")
    assert s["top_share"] == pytest.approx(3 / 5) and s["no_exemplar"] == 0


def _two_patient_study(tmp_path: Path, exclude: str) -> Path:
    samples = [write_st_sample(tmp_path / f"s{i}", f"S{i}", grid=6, seed=i) for i in range(6)]
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": f"S{i}", "patient": "PA" if i < 3 else "PB", "image": str(s["image"]),
                   "counts": str(s["counts"]), "spots": str(s["spots"]), "um_per_px": 1.0}
                  for i, s in enumerate(samples)]).to_csv(sheet, sep="\t", index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"study": "two", "samples": str(sheet), "models": ["egn"],
                                   "tiling": {"window_um": 60, "window_px": 16, "min_tissue": 0.0},
                                   "extractor": TINY_EXTRACTOR, "exemplars": {"k": 3, "exclude": exclude}}))
    return cfg


def test_a_two_patient_egn_study_stops_before_anything_runs_with_exclude_patient(tmp_path):
    cfg = _two_patient_study(tmp_path, "patient")
    res = run_snakemake(tmp_path, cfg)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("histexpr error:")]
    assert len(errors) == 1 and errors[0].startswith(f"histexpr error: {cfg}: fold 1: the train windows of "
                                                     f"patient PB have no eligible exemplar"), out[-2000:]
    assert "exemplars.exclude: sample" in errors[0]
    assert not (tmp_path / "results").exists()  # nothing ran


def test_with_exclude_sample_it_runs_and_prints_each_folds_pool(tmp_path):
    cfg = _two_patient_study(tmp_path, "sample")
    res = run_snakemake(tmp_path, cfg, "results/two/fold_1/exemplars.tsv", "results/two/fold_2/exemplars.tsv")
    assert res.returncode == 0, res.stderr[-3000:]
    for fold, train in ((1, ("S3", "S4", "S5")), (2, ("S0", "S1", "S2"))):
        line = re.search(rf"^\[exemplars/fold_{fold}\] exemplar pool: (.*)$", res.stderr, re.M)
        assert line, res.stderr[-3000:]
        folds = pd.read_csv(tmp_path / "results/two/folds.tsv", sep="\t")
        in_pool = sorted(set(folds.loc[(folds["fold"] == fold) & (folds["split"] == "train"), "sample"]))
        assert line.group(1).startswith(f"{36 * len(in_pool)} windows from {len(in_pool)} section") and \
            set(in_pool) <= set(train) and all(s in line.group(1) for s in in_pool)
        # the log gives each test section's largest source; the terminal warns, in one line, for those above half
        log = (tmp_path / f"results/two/logs/exemplars/fold_{fold}.log").read_text()
        shares = {s: (int(p), t) for s, p, t in re.findall(r"test section (S\d): \d+ exemplars of \d+ queries, (\d+)% "
                                                           r"from (S\d)", log)}
        assert sorted(shares) == sorted({"S0", "S1", "S2", "S3", "S4", "S5"} - set(train))
        assert all(t in in_pool for _, t in shares.values())
        leaning = {s: v for s, v in shares.items() if v[0] > 50}
        warned = re.search(rf"^\[exemplars/fold_{fold}\] WARNING: (\d) of 3 test section\(s\) draw more than half "
                           rf"their exemplars from one section \(exemplars.exclude: sample\): (.*); their", res.stderr,
                           re.M)
        assert (warned is not None) == bool(leaning), res.stderr[-3000:]
        if warned:
            assert int(warned.group(1)) == len(leaning)
            assert warned.group(2) == ", ".join(f"{s} {p}% from {t}" for s, (p, t) in sorted(leaning.items()))


@pytest.fixture(scope="module")
def her2st_split(her2st_root, tmp_path_factory):
    """Train on A1, C4, C5 and test on C2 and C3 (a split column, folds.level: sample): one fold, two test
    sections."""
    work = tmp_path_factory.mktemp("her2st_split")
    sheet = build_her2st_sheet(her2st_root)
    sheet["split"] = np.where(sheet["sample"].isin(["C2", "C3"]), "test", "train")
    path = work / "samples.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    cfg = yaml.safe_load((REPO / "config" / "her2st.yaml").read_text())
    cfg.update({"samples": str(path), "models": ["ridge"], "folds": {"level": "sample"},
                "expression": {"top_n": 100, "log1p": True, "protocols": ["raw"]},
                "extractor": TINY_EXTRACTOR, "evaluation": {"bootstrap": 200}})
    cfg["tiling"]["window_px"] = 32
    cfg_path = work / "her2st.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(work, cfg_path, "results/her2st/metrics.tsv")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work, work / "results" / "her2st", res


def test_a_split_testing_two_sections_gives_a_per_section_verdict(her2st_split):
    import subprocess
    import sys

    work, out, _ = her2st_split
    m = pd.read_csv(out / "metrics.tsv", sep="\t")
    sections = pd.read_csv(out / "metrics_by_section.tsv", sep="\t")
    assert sorted(set(sections["section"])) == ["C2", "C3"] and (sections["fold"] == 1).all()
    shown = subprocess.run([sys.executable, "-m", "histexpr.show", str(out)], capture_output=True, text=True,
                           timeout=120, cwd=work)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    verdict = next(line for line in lines if line.startswith("  raw: best "))
    best, value = re.match(r"  raw: best (\S+), PCC@M (-?\d\.\d+)", verdict).groups()
    # the verdict's PCC@M is the mean of the best model's two per-section values, and its row says so
    per = sections[sections["model"] == best]
    assert len(per) == 2 and float(value) == pytest.approx(per["PCC@M"].mean(), abs=5e-4)
    assert "(2 test sections)" in verdict
    row = m[(m["model"] == best) & (m["evaluation"] == "per_slide")].iloc[0]
    assert row["PCC@M"] == pytest.approx(per["PCC@M"].mean()) and row["n_sections"] == 2
    # the interval resamples what the table says: windows within each of the 2 sections (too few to resample)
    ridge = m[(m["model"] == "ridge") & (m["evaluation"] == "per_slide")].iloc[0]
    assert ridge["resampled"] == "windows within sections" and ridge["n_units"] == 2
    assert ridge["dPCC@M"] == pytest.approx(sections.loc[sections["model"] == "ridge", "dPCC@M"].mean())
    if best != "colour_ridge":
        assert "(windows resampled within each of 2 sections)" in verdict
    # per-section rows in show and in the report
    i = lines.index(next(line for line in lines if line.startswith("each test section")))
    block = lines[i + 2:]
    assert any(line.split()[:3] == ["raw", "1", "C2"] for line in block)
    assert any(line.split()[:3] == ["raw", "1", "C3"] for line in block)
    assert "pooled over each fold's sections" in shown.stdout  # pooled stays, as a secondary block
    page = (out / "report" / "metrics.html").read_text() if (out / "report" / "metrics.html").exists() else ""
    if page:
        assert "each test section" in page


def test_a_successful_run_ends_with_its_verdict_lines(her2st_split):
    work, out, res = her2st_split
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    start = lines.index("her2st: results/her2st/metrics.tsv")
    tail = lines[start:]
    assert tail[1].startswith("  raw: best ") and "(2 test sections)" in tail[1]
    assert all(line.startswith("  ") for line in tail[1:]) and len(tail) <= 6, res.stdout[-2000:]
    assert tail[-1] == "  every model and number: python -m histexpr.show results/her2st"
    assert ad.read_h5ad(out / "ridge" / "raw" / "fold_1" / "predictions.h5ad").obs["sample"].nunique() == 2
