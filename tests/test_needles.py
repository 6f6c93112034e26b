"""The synthetic megapixel task: the class is in a few small objects that the view locates but cannot name."""

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from PIL import Image

from histexpr.data.megapixel import build_image_sheet
from histexpr.data.needles import CELL, OBJECT, S_TETROMINO, UNIT, NeedleSpec, needle_image, object_pattern, write_needle_study


def test_s_and_z_objects_are_mirror_images_with_the_same_dark_pixels_in_every_cell():
    for d in (22, 44, 66):
        s, z = object_pattern("s", d, np.random.default_rng(3)), object_pattern("z", d, np.random.default_rng(3))
        assert np.array_equal(z, s[:, ::-1]) and not np.array_equal(s, z)
        n = d // CELL
        assert s.sum() == n * n * 4 * UNIT * UNIT  # one tetromino of four 3-px squares per cell
        for obj in (s, z):  # the same darkness in every cell (what the view sees)
            off = (d - n * CELL) // 2
            cells = obj[off:off + n * CELL, off:off + n * CELL].reshape(n, CELL, n, CELL).sum((1, 3))
            assert (cells == 4 * UNIT * UNIT).all()
    lying = np.kron(S_TETROMINO, np.ones((UNIT, UNIT), bool))
    assert not any(np.array_equal(np.rot90(lying, k), lying[:, ::-1]) for k in range(4))  # no turn makes an S a Z
    a, b = (object_pattern("s", 44, np.random.default_rng(k)) for k in (0, 1))
    assert not np.array_equal(a, b)  # which cells stand is drawn
    with pytest.raises(ValueError):
        object_pattern("rings", 44)


def test_the_view_shows_where_the_objects_are_but_not_which():
    spec = NeedleSpec(size=512, objects=3, object_px=44)
    views = {}
    for label in ("s", "z"):
        img, corners = needle_image(np.random.default_rng(1), label, spec)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and len(corners) == 3
        for t, left in corners:  # each object is its tetrominoes in the object colour on the background
            window = img[t:t + 44, left:left + 44].astype(float)
            dark = np.abs(window - OBJECT).max(-1) < 30
            assert dark.sum() == object_pattern(label, 44).sum()
        view = np.asarray(Image.fromarray(img).resize((32, 32), Image.BOX)).sum(-1).astype(float)  # 1/16
        for t, left in corners:  # some view cell over every object is among the darkest of the image
            cells = view[t // 16:(t + 44) // 16 + 1, left // 16:(left + 44) // 16 + 1]
            assert cells.min() <= np.sort(view.ravel())[5], (label, t, left)
        views[label] = np.stack([view[t // 16:t // 16 + 4, left // 16:left // 16 + 4] for t, left in corners])
    # the same background and places (one seed), only the handedness differs: every view cell around every
    # object is the same to within a few grey levels (a mirrored tetromino moves its pixels by under 11 px)
    diff = np.abs(views["s"] - views["z"]).max()
    assert diff < 3 * 40, diff


def test_a_study_is_written_in_the_train_test_layout_and_reproducible(tmp_path):
    spec = NeedleSpec(n_train=3, n_test=2, size=256, objects=2, object_px=32, seed=4)
    sheet = write_needle_study(tmp_path / "a", spec)
    write_needle_study(tmp_path / "b", spec)
    read = build_image_sheet(tmp_path / "a")
    assert read.groupby(["split", "label"]).size().to_dict() == {
        ("test", "s"): 2, ("test", "z"): 2, ("train", "s"): 3, ("train", "z"): 3}
    assert len(sheet) == 10
    for p in read["image"]:
        other = str(p).replace(str(tmp_path / "a"), str(tmp_path / "b"))
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(other)))
    objects = pd.read_csv(tmp_path / "a" / "objects.tsv", sep="\t")
    assert len(objects) == 10 * 2 and (objects["diameter"] == 32).all()
    assert not objects["image"].str.startswith("/").any()  # relative to the study folder


@pytest.mark.workflow
def test_the_synthetic_study_is_drawn_by_the_workflow_as_one_fixed_test_fold(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "megapixel.yaml").read_text())
    cfg["synthetic"].update(n_train=2, n_test=1, size=384)
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
    assert "do not fit" in NeedleSpec(size=256, objects=40, object_px=40).problem()
    with pytest.raises(ValueError, match="do not fit"):
        needle_image(np.random.default_rng(0), "s", NeedleSpec(size=256, objects=40, object_px=40))
