"""Windows are centred on spots, cover the configured physical size, and bad windows are dropped."""

import numpy as np
import pytest

from histexpr.data.demo import write_pyramid_tiff
from histexpr.data.tiling import estimate_um_per_px, tile_spots, tissue_fraction
from histexpr.io import open_image


def test_um_per_px_from_square_and_hexagonal_grids():
    xs, ys = np.meshgrid(np.arange(6), np.arange(5))
    square = np.column_stack([xs.ravel(), ys.ravel()]) * 271.0 + 40
    assert estimate_um_per_px(square, 200.0) == pytest.approx(200 / 271)
    hexa = np.column_stack([xs.ravel() * 1.0 + (ys.ravel() % 2) * 0.5, ys.ravel() * np.sqrt(3) / 2]) * 138.0
    assert estimate_um_per_px(hexa, 100.0) == pytest.approx(100 / 138)


def test_windows_centre_on_spots_at_physical_size(tmp_path):
    # white image with a 20x20 um coloured square centred on each spot, 0.5 um/px
    img = np.full((1200, 1200, 3), 245, np.uint8)
    centres = np.array([[300.0, 300.0], [700.0, 500.0], [900.0, 900.0]])
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for (x, y), c in zip(centres, colours):
        img[int(y) - 20 : int(y) + 20, int(x) - 20 : int(x) + 20] = c
    path = tmp_path / "s.tif"
    write_pyramid_tiff(str(path), img, 0.5)
    with open_image(path) as slide:
        res = tile_spots(slide, centres, um_per_px=0.5, window_um=40.0, window_px=32, min_tissue=0.0)
    assert res.windows.shape == (3, 32, 32, 3) and res.window_size_px == pytest.approx(80.0)
    for w, c in zip(res.windows, colours):
        # the square (40 px = 20 um) fills the middle half of the 40 um window
        np.testing.assert_allclose(w[10:22, 10:22].mean(axis=(0, 1)), c, atol=3)
        assert w[:4, :4].mean() > 240 and w[-4:, -4:].mean() > 240


def test_edge_and_background_windows_are_dropped(tmp_path):
    img = np.full((800, 800, 3), 242, np.uint8)  # blank glass
    img[:400] = (200, 120, 170)  # tissue on the top half
    path = tmp_path / "s.tif"
    write_pyramid_tiff(str(path), img, 1.0)
    spots = np.array([[200.0, 200.0], [10.0, 200.0], [400.0, 700.0], [600.0, 390.0]])
    with open_image(path) as slide:
        res = tile_spots(slide, spots, um_per_px=1.0, window_um=100.0, window_px=16, min_tissue=0.25)
    assert res.status.tolist() == ["kept", "edge", "background", "kept"]
    assert res.counts == {"kept": 2, "edge": 1, "background": 1, "input": 4}
    assert len(res.windows) == 2


def test_windows_too_large_for_memory_are_cut_into_a_temporary_file_with_the_same_pixels(tmp_path, monkeypatch):
    """Above IN_MEMORY_WINDOW_BYTES the windows are a memory map (a Visium HD slide's 150,000 windows of 224 px
    are 22.6 GB); the kept windows are the same, in the same order, as when they are cut in memory."""
    from histexpr.data import tiling
    from histexpr.data.windows import open_windows, write_windows

    img = np.full((800, 800, 3), 242, np.uint8)
    img[:400] = (200, 120, 170)
    img[100:140, 180:220] = (60, 40, 120)  # a mark in the first window only
    path = tmp_path / "s.tif"
    write_pyramid_tiff(str(path), img, 1.0)
    spots = np.array([[200.0, 120.0], [10.0, 200.0], [400.0, 700.0], [600.0, 300.0], [300.0, 250.0]])
    with open_image(path) as slide:
        in_memory = tile_spots(slide, spots, um_per_px=1.0, window_um=100.0, window_px=16, min_tissue=0.25)
        monkeypatch.setattr(tiling, "IN_MEMORY_WINDOW_BYTES", 16 * 16 * 3)  # more than one window spills
        spilled = tile_spots(slide, spots, um_per_px=1.0, window_um=100.0, window_px=16, min_tissue=0.25)
    assert not isinstance(in_memory.windows, np.memmap) and isinstance(spilled.windows, np.memmap)
    assert spilled.status.tolist() == ["kept", "edge", "background", "kept", "kept"]
    np.testing.assert_array_equal(spilled.windows, in_memory.windows)
    assert spilled.windows.shape == (3, 16, 16, 3) and spilled.windows[0].mean() < in_memory.windows[1].mean()
    write_windows(spilled.windows, tmp_path / "w.npy", "npy")
    np.testing.assert_array_equal(open_windows(tmp_path / "w.npy")[:], in_memory.windows)


def test_tissue_fraction_ignores_glass_and_black_background():
    w = np.zeros((10, 10, 3), np.uint8)  # A1-style blacked-out background
    w[:5] = (240, 240, 240)  # glass
    w[5:, :5] = (180, 100, 160)  # tissue
    assert tissue_fraction(w) == pytest.approx(0.25)


def test_spot_qc_drops_low_count_spots_before_tiling(tmp_path):
    """expression.min_counts: the tile rule drops and lists spots below it; a section with none left is named."""
    import gzip

    import anndata as ad
    import pandas as pd
    import yaml
    from conftest import run_snakemake, write_st_sample

    samples = [write_st_sample(tmp_path / f"s{i}", f"S{i}", seed=i) for i in range(2)]
    for i, low in ((0, ["1x1", "2x3", "4x4"]), (1, None)):  # S0: three shallow spots; S1: every spot shallow
        counts = pd.read_csv(samples[i]["counts"], sep="\t", index_col=0)
        counts.loc[low if low else counts.index] = 1  # 5 genes x 1 count
        with gzip.open(samples[i]["counts"], "wt") as fh:
            counts.to_csv(fh, sep="\t")
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": f"S{i}", "patient": f"P{i}", "image": str(s["image"]), "counts": str(s["counts"]),
                   "spots": str(s["spots"])} for i, s in enumerate(samples)]).to_csv(sheet, sep="\t", index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"study": "qc", "samples": str(sheet), "tiling": {"window_px": 32},
                                   "expression": {"min_counts": 10}}))
    res = run_snakemake(tmp_path, cfg, "results/qc/samples/S0.h5ad")
    assert res.returncode == 0, res.stderr[-3000:]
    a = ad.read_h5ad(tmp_path / "results/qc/samples/S0.h5ad")
    t = a.uns["tiling"]
    assert t["input"] == 16 and t["low_counts"] == 3 and t["kept"] == a.n_obs == 13 and t["min_counts"] == 10
    assert not {"S0_1x1", "S0_2x3", "S0_4x4"} & set(a.obs_names)
    assert (np.asarray(a.X.sum(axis=1)).ravel() >= 10).all()
    log = (tmp_path / "results/qc/logs/tile/S0.log").read_text()
    assert "16 spots, 13 kept, 3 dropped (3 below 10 counts" in log and "1x1, 2x3, 4x4" in log
    res = run_snakemake(tmp_path, cfg, "results/qc/samples/S1.h5ad")
    assert res.returncode != 0
    assert f"{samples[1]['counts']}: every spot has fewer than 10 counts" in res.stdout + res.stderr
    assert not (tmp_path / "results/qc/samples/S1.h5ad").exists()
