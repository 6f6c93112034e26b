"""Tissue windows of a slide with no spatial data (the predict target's tiling)."""

import numpy as np
import pytest
from conftest import he_like_image
from PIL import Image

from histexpr.io import open_image
from histexpr.predict import tile_tissue, tissue_mask


@pytest.fixture
def half_tissue(tmp_path):
    """1000 x 800 px at 1 um/px: tissue in a disc on the left, glass elsewhere."""
    rng = np.random.default_rng(0)
    img = np.full((800, 1000, 3), (242, 242, 240), np.uint8)
    yy, xx = np.mgrid[:800, :1000]
    disc = (xx - 300) ** 2 + (yy - 400) ** 2 < 280 ** 2
    img[disc] = he_like_image(rng, 800, 1000)[disc]
    path = tmp_path / "slide.png"
    Image.fromarray(img).save(path)
    return path, disc


def test_tissue_windows_cover_the_tissue_and_only_the_tissue(half_tissue):
    path, disc = half_tissue
    with open_image(path) as slide:
        windows, xy, grid = tile_tissue(slide, um_per_px=1.0, window_um=100, window_px=32, min_tissue=0.5,
                                        thumbnail_px=250)
    assert windows.shape == (len(xy), 32, 32, 3) and windows.dtype == np.uint8
    inside = disc[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    assert inside.all()  # every window centre on tissue
    # a window every 100 um: the disc (area pi * 280^2) holds about that many / 100^2, less its rim
    assert 0.7 * np.pi * 280 ** 2 / 100 ** 2 < len(xy) <= np.pi * 280 ** 2 / 100 ** 2
    assert np.allclose(np.diff(np.unique(xy[:, 0])), 100)
    assert grid.mask.shape == grid.thumbnail.shape[:2] and 0.2 < grid.mask.mean() < 0.35  # disc ~ 31% of the slide
    assert not tissue_mask(np.full((4, 4, 3), 245, np.uint8)).any()


def test_a_slide_without_tissue_is_a_clear_error(tmp_path):
    path = tmp_path / "glass.png"
    Image.fromarray(np.full((300, 300, 3), 245, np.uint8)).save(path)
    with open_image(path) as slide, pytest.raises(ValueError, match="no tissue window"):
        tile_tissue(slide, um_per_px=1.0, window_um=50, window_px=16)


def test_a_slide_given_on_the_command_line_is_accepted_and_a_missing_one_named(tmp_path):
    from conftest import run_snakemake

    Image.new("RGB", (64, 64), (230, 200, 220)).save(tmp_path / "x.jpg")
    ok = run_snakemake(tmp_path, None, "-n", "predict", "--config",
                       "predict={slides: {s: {image: x.jpg, um_per_px: 2}}}")
    assert ok.returncode == 0 and "predict_slide" in ok.stdout, ok.stderr[-2000:]
    missing = run_snakemake(tmp_path, None, "-n", "predict", "--config",
                            "predict={slides: {s: {image: y.jpg, um_per_px: 2}}}")
    errors = [line.strip() for line in (missing.stdout + missing.stderr).splitlines() if "histexpr error" in line]
    assert missing.returncode != 0 and errors == ["histexpr error: predict.slides.s.image: y.jpg not found"], errors
