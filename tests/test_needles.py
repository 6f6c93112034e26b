"""The synthetic megapixel task: the class is in a few small objects that the view locates but cannot name."""

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from PIL import Image

from histexpr.data.megapixel import build_image_sheet
from histexpr.data.needles import OBJECT, PALE, NeedleSpec, needle_image, object_mask, object_pattern, write_needle_study


def test_stripes_and_checks_are_half_dark_so_every_view_cell_over_them_looks_the_same():
    for d in (24, 48):
        stripes, vertical, checks = (object_pattern("stripes", d), object_pattern("stripes", d, vertical=True),
                                     object_pattern("checks", d))
        assert not np.array_equal(stripes, checks) and np.array_equal(vertical, stripes.T)
        for a in (stripes, checks):  # half dark in every 6 x 6 block (two periods): the same mean at any coarser scale
            blocks = a[:d // 6 * 6, :d // 6 * 6].reshape(d // 6, 6, d // 6, 6).mean((1, 3))
            assert np.allclose(blocks, 0.5)
    assert object_mask(24).sum() == pytest.approx(np.pi * 144, rel=0.03)
    with pytest.raises(ValueError):
        object_pattern("rings", 8)


def test_the_view_shows_where_the_objects_are_but_not_which():
    spec = NeedleSpec(size=512, objects=3, object_px=24)
    views = {}
    for label in ("stripes", "checks"):
        img, corners = needle_image(np.random.default_rng(1), label, spec)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and len(corners) == 3
        for t, left in corners:  # each object is drawn half in the dark, half in the pale colour
            patch = img[t:t + 24, left:left + 24][object_mask(24)].astype(float)
            dark, pale = (np.abs(patch - c).max(1) < 30 for c in (OBJECT, PALE))
            assert (dark | pale).all() and abs(dark.mean() - 0.5) < 0.1
        view = np.asarray(Image.fromarray(img).resize((32, 32), Image.BOX)).sum(-1).astype(float)  # 1/16
        centres = [(int((t + 12) // 16), int((left + 12) // 16)) for t, left in corners]
        darkest = np.sort(view.ravel())[:12]
        assert all(view[c] <= darkest[-1] for c in centres), (label, centres)  # objects are among the darkest cells
        views[label] = np.stack([view[r - 1:r + 2, c - 1:c + 2] for r, c in centres])
    # the same background and places (one seed), only the pattern differs: the view is the same to within a few
    # grey levels in every cell around every object
    assert np.abs(views["stripes"] - views["checks"]).max() < 3 * 12, np.abs(views["stripes"] - views["checks"]).max()


def test_a_study_is_written_in_the_train_test_layout_and_reproducible(tmp_path):
    spec = NeedleSpec(n_train=3, n_test=2, size=256, objects=2, object_px=16, seed=4)
    sheet = write_needle_study(tmp_path / "a", spec)
    write_needle_study(tmp_path / "b", spec)
    read = build_image_sheet(tmp_path / "a")
    assert read.groupby(["split", "label"]).size().to_dict() == {
        ("test", "checks"): 2, ("test", "stripes"): 2, ("train", "checks"): 3, ("train", "stripes"): 3}
    assert len(sheet) == 10
    for p in read["image"]:
        other = str(p).replace(str(tmp_path / "a"), str(tmp_path / "b"))
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(other)))
    objects = pd.read_csv(tmp_path / "a" / "objects.tsv", sep="\t")
    assert len(objects) == 10 * 2 and (objects["diameter"] == 16).all()
    assert not objects["image"].str.startswith("/").any()  # relative to the study folder


@pytest.mark.workflow
def test_the_synthetic_study_is_drawn_by_the_workflow_as_one_fixed_test_fold(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "megapixel.yaml").read_text())
    cfg["synthetic"].update(n_train=2, n_test=1, size=256)
    path = tmp_path / "mp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(tmp_path, path, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "make_synthetic_images" in res.stdout and "results/megapixel/ats-p48-n5-reinforce/seed_2/fold_1" in res.stdout
    assert "fold_2" not in res.stdout
    res = run_snakemake(tmp_path, path, "resources/megapixel")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(build_image_sheet(tmp_path / "resources" / "megapixel")) == 6
    # objects that cannot be placed stop at parse time in one line naming the key (not an endless loop)
    cfg["synthetic"].update(size=128, objects=50, object_px=24)
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(tmp_path, path, "-n")
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "histexpr error" in ln]
    assert res.returncode != 0 and len(lines) == 1 and "synthetic: 50 objects of 24 px do not fit" in lines[0], lines


def test_objects_that_cannot_fit_are_refused_before_drawing():
    assert NeedleSpec().problem() is None
    assert "do not fit" in NeedleSpec(size=256, objects=40, object_px=24).problem()
    with pytest.raises(ValueError, match="do not fit"):
        needle_image(np.random.default_rng(0), "checks", NeedleSpec(size=256, objects=40, object_px=24))
