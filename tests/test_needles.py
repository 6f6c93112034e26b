"""The synthetic megapixel task: the class is in a few small objects that the view locates but cannot name."""

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from PIL import Image

from histexpr.data.megapixel import build_image_sheet
from histexpr.data.needles import OBJECT, NeedleSpec, dot_centres, dot_size, needle_image, object_pattern, write_needle_study
from histexpr.models.histogram_floor import histogram_features


def test_square_and_diamond_are_the_same_dots_turned_so_only_their_arrangement_differs():
    for d in (32, 40, 48):
        square, diamond = object_pattern("square", d), object_pattern("diamond", d)
        assert not np.array_equal(square, diamond)
        assert abs(int(square.sum()) - int(diamond.sum())) == 0  # the same four dots
        for a in (square, diamond):  # unchanged by 90-degree turns and flips (the training augmentations)
            assert np.array_equal(a, np.rot90(a)) and np.array_equal(a, a[::-1]) and np.array_equal(a, a[:, ::-1])
        for kind in ("square", "diamond"):  # neighbouring dots at least 2 of the floor's largest (4 px) scale apart
            c = dot_centres(kind, d)
            gaps = [np.hypot(*(c[i] - c[j])) - dot_size(d) for i in range(4) for j in range(i)]
            assert min(gaps) >= 8, (kind, d, gaps)
        radii = {k: np.hypot(*dot_centres(k, d).T) for k in ("square", "diamond")}
        assert np.allclose(radii["square"], radii["diamond"], atol=0.75)  # on one circle (up to whole pixels)
    with pytest.raises(ValueError):
        object_pattern("rings", 32)


def test_the_view_shows_where_the_objects_are_but_not_which():
    spec = NeedleSpec(size=512, objects=3, object_px=40)
    views = {}
    for label in ("square", "diamond"):
        img, corners = needle_image(np.random.default_rng(1), label, spec)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and len(corners) == 3
        for t, left in corners:  # each object is its dots in the object colour on the background
            window = img[t:t + 40, left:left + 40].astype(float)
            dark = np.abs(window - OBJECT).max(-1) < 30
            assert np.array_equal(dark, object_pattern(label, 40))
        view = np.asarray(Image.fromarray(img).resize((32, 32), Image.BOX)).sum(-1).astype(float)  # 1/16
        for t, left in corners:  # some view cell over every object is among the darkest of the image
            cells = view[t // 16:(t + 40) // 16 + 1, left // 16:(left + 40) // 16 + 1]
            assert cells.min() <= np.sort(view.ravel())[11], (label, t, left)
        views[label] = np.stack([view[t // 16:t // 16 + 3, left // 16:left // 16 + 3] for t, left in corners])
    # the same background and places (one seed), only the arrangement differs: every view cell around every
    # object is the same to within a fraction of one dot's darkness
    diff = np.abs(views["square"] - views["diamond"]).max()
    assert diff < 3 * 60, diff


def test_whole_image_colour_and_gradient_histograms_do_not_tell_the_classes_apart():
    """The colour_hist floor's features (histograms of colour, and of gradient orientation and magnitude at 1,
    2 and 4 px) of a square image and a diamond image drawn from the same random stream differ only by the
    objects' arrangement: far less than two images of the same class differ from each other."""
    spec = NeedleSpec(size=384, objects=3, object_px=40)
    same_draw = [histogram_features(needle_image(np.random.default_rng(5), k, spec)[0]) for k in ("square", "diamond")]
    other = histogram_features(needle_image(np.random.default_rng(6), "square", spec)[0])
    between_classes = np.abs(same_draw[0] - same_draw[1]).sum()
    within_class = np.abs(same_draw[0] - other).sum()
    assert between_classes < 0.1 * within_class, (between_classes, within_class)


def test_a_study_is_written_in_the_train_test_layout_and_reproducible(tmp_path):
    spec = NeedleSpec(n_train=3, n_test=2, size=256, objects=2, object_px=32, seed=4)
    sheet = write_needle_study(tmp_path / "a", spec)
    write_needle_study(tmp_path / "b", spec)
    read = build_image_sheet(tmp_path / "a")
    assert read.groupby(["split", "label"]).size().to_dict() == {
        ("test", "diamond"): 2, ("test", "square"): 2, ("train", "diamond"): 3, ("train", "square"): 3}
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
    cfg["synthetic"].update(size=128, objects=50, object_px=32)
    path.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(tmp_path, path, "-n")
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "histexpr error" in ln]
    assert res.returncode != 0 and len(lines) == 1 and "synthetic: 50 objects of 32 px do not fit" in lines[0], lines


def test_objects_that_cannot_fit_are_refused_before_drawing():
    assert NeedleSpec().problem() is None
    assert "do not fit" in NeedleSpec(size=256, objects=40, object_px=40).problem()
    with pytest.raises(ValueError, match="do not fit"):
        needle_image(np.random.default_rng(0), "square", NeedleSpec(size=256, objects=40, object_px=40))
