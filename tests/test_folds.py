"""Folds never put a patient in both training and test; validation comes from training patients."""

import pandas as pd
import pytest
from conftest import REPO

from histexpr.data.folds import final_fold, make_folds, n_folds
from histexpr.errors import ConfigError, InputError
from histexpr.io import load_sample_sheet

SHEET_SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"


def study(patients=("A", "B", "C", "D", "E"), sections=2, spots=20):
    rows, sheet = [], []
    for p in patients:
        for s in range(sections):
            name = f"{p}{s + 1}"
            sheet.append({"sample": name, "patient": p})
            for i in range(spots):
                rows.append({"sample": name, "patient": p, "spot": f"{i}x1", "obs_name": f"{name}_{i}x1",
                             "array_y": i})
    return pd.DataFrame(sheet), pd.DataFrame(rows)


@pytest.mark.parametrize("k", ["loo", 2, 3])
def test_patient_folds_are_disjoint_and_cover_everyone(k):
    sheet, spots = study()
    cfg = {"level": "patient", "k": k, "val_fraction": 0.25, "seed": 0}
    table = make_folds(sheet, spots, cfg)
    assert table["fold"].nunique() == n_folds(sheet, cfg) == (5 if k == "loo" else k)
    tested = set()
    for _f, t in table.groupby("fold"):
        assert len(t) == len(spots)
        test_p = set(t.loc[t.split == "test", "patient"])
        assert not test_p & set(t.loc[t.split != "test", "patient"])
        assert not set(t.loc[t.split == "val", "patient"]) & set(t.loc[t.split == "train", "patient"])
        assert (t.split == "val").any() and (t.split == "train").any()
        tested |= test_p
    assert tested == set("ABCDE")


def test_fold_zero_trains_on_every_patient_with_whole_patients_for_validation():
    sheet, spots = study()
    cfg = {"level": "patient", "k": "loo", "val_fraction": 0.25, "seed": 0}
    final = final_fold(sheet, spots, cfg)
    assert (final["fold"] == 0).all() and len(final) == len(spots) and list(final.columns) == list(make_folds(
        sheet, spots, cfg).columns)
    assert set(final["split"]) == {"train", "val"} and set(final["patient"]) == set("ABCDE")
    val = set(final.loc[final.split == "val", "patient"])
    assert len(val) == 1 and not val & set(final.loc[final.split == "train", "patient"])  # round(0.25 * 5) patients
    pd.testing.assert_frame_equal(final, final_fold(sheet, spots, cfg))
    # two patients (HER2ST's A and C): whole-patient validation would leave one to train, so a band of every
    # section validates and every patient and section trains
    sheet, spots = study(patients=("A", "B"), sections=2)
    final = final_fold(sheet, spots, cfg)
    for _, sec in final.groupby("sample"):
        assert (sec.split == "train").sum() == 15 and (sec.split == "val").sum() == 5
        assert sec.loc[sec.split == "val", "spot"].str.split("x").str[0].astype(int).min() >= 15


def test_folds_are_seeded():
    sheet, spots = study()
    cfg = {"level": "patient", "k": 2, "val_fraction": 0.3, "seed": 5}
    pd.testing.assert_frame_equal(make_folds(sheet, spots, cfg), make_folds(sheet, spots, cfg))


def test_section_level_folds_hold_out_sections():
    sheet, spots = study(patients=("A", "B"), sections=3)
    table = make_folds(sheet, spots, {"level": "sample", "k": "loo", "val_fraction": 0.2, "seed": 0})
    assert table["fold"].nunique() == 6
    for _f, t in table.groupby("fold"):
        assert t.loc[t.split == "test", "sample"].nunique() == 1


def test_single_training_patient_uses_a_section_then_a_spatial_band():
    sheet, spots = study(patients=("A", "B"), sections=1)  # her2st-like: one section per training patient
    table = make_folds(sheet, spots, {"level": "patient", "k": "loo", "val_fraction": 0.25, "seed": 0})
    f1 = table[table.fold == 1]
    val = f1[f1.split == "val"]
    assert set(val["patient"]) == {"B"} and len(val) == 5
    assert val["spot"].str.split("x").str[0].astype(int).min() >= 15  # a contiguous band of rows
    sheet, spots = study(patients=("A", "B"), sections=3)
    f1 = make_folds(sheet, spots, {"level": "patient", "k": "loo", "val_fraction": 0.34, "seed": 0})
    f1 = f1[f1.fold == 1]
    assert f1.loc[f1.split == "val", "sample"].nunique() == 1 and set(f1.loc[f1.split == "val", "patient"]) == {"B"}


def test_one_patient_cannot_be_cross_validated():
    sheet, spots = study(patients=("A",), sections=3)
    with pytest.raises(ConfigError, match="needs at least two patients"):
        make_folds(sheet, spots, {"level": "patient", "k": "loo", "val_fraction": 0.2, "seed": 0})
    with pytest.raises(ConfigError, match="folds.k = 6"):
        n_folds(*study()[:1], {"level": "patient", "k": 6, "val_fraction": 0.2, "seed": 0})


def test_a_split_column_fixes_the_test_sections(tmp_path, st_sample):
    """An external test cohort: one fold whose test part is exactly the sheet's test rows, validation from the
    training patients, no patient on both sides (and a sheet that would leak is refused)."""
    sheet, spots = study()
    sheet["split"] = ["test" if p in ("B", "E") else "train" for p in sheet["patient"]]
    cfg = {"level": "patient", "k": "loo", "val_fraction": 0.25, "seed": 0}
    table = make_folds(sheet, spots, cfg)
    assert n_folds(sheet, cfg) == 1 and set(table["fold"]) == {1}
    assert set(table.loc[table.split == "test", "sample"]) == {"B1", "B2", "E1", "E2"}
    assert not set(table.loc[table.split != "test", "patient"]) & {"B", "E"}
    assert (table.split == "val").any() and set(table.loc[table.split == "val", "patient"]).isdisjoint(
        set(table.loc[table.split == "train", "patient"]))
    # fold 0 (predict) still trains on everyone
    assert set(final_fold(sheet, spots, cfg)["patient"]) == set("ABCDE")
    leaky = sheet.assign(split=["test" if s == "B1" else "train" for s in sheet["sample"]])
    with pytest.raises(ConfigError, match=r"patient\(s\) B have sections in both train and test"):
        make_folds(leaky, spots, cfg)
    assert n_folds(leaky, {**cfg, "level": "sample"}) == 1  # section level: the user's choice
    # in the sheet: every row or none, at least one of each
    path = tmp_path / "samples.tsv"
    rows = [{"sample": s, "patient": p, "image": str(st_sample["image"]), "counts": str(st_sample["counts"]),
             "spots": str(st_sample["spots"]), "split": sp} for s, p, sp in (("S1", "P1", "train"), ("S2", "P2", ""))]
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"column 'split' is empty for sample\(s\) S2"):
        load_sample_sheet(path, schema=SHEET_SCHEMA)
    pd.DataFrame([{**rows[0]}, {**rows[1], "split": "train"}]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="at least one train and one test"):
        load_sample_sheet(path, schema=SHEET_SCHEMA)
    pd.DataFrame([{**rows[0]}, {**rows[1], "split": "test"}]).to_csv(path, sep="\t", index=False)
    assert load_sample_sheet(path, schema=SHEET_SCHEMA)["split"].tolist() == ["train", "test"]
