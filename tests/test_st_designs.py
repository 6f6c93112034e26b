"""Legacy ST comes in two array designs: 1k (square grid, 200 um a step) and 2k (staggered, 100 um a step).

The 2k layout is built on a real H&E image (HER2ST A1) at a known pixel size: spots where x + y is even,
100 um apart per array unit, synthetic counts, some spots unselected."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HER2ST_SPOTS, run_snakemake

from histexpr.data.section import tile_section
from histexpr.data.tiling import (
    SPOT_PITCH_UM,
    detect_st_design,
    estimate_grid,
    estimate_um_per_px_from_array,
    tissue_mask,
)
from histexpr.errors import InputError
from histexpr.io import open_image, read_st_sample

TRUE_UM_PER_PX = 3.2  # what the synthetic 2k spot file is laid out at on A1's downscaled image
A1_IMAGE = "app/www/imgs/A1_HE_image_dark.png"
TILING = {"window_um": 112.0, "window_px": 32, "min_tissue": 0.1, "spot_pitch_um": dict(SPOT_PITCH_UM),
          "thumbnail_px": 1000, "min_spots_on_tissue": 0.75}


def write_2k_sample(her2st_root: Path, folder: Path, um_per_px: float = TRUE_UM_PER_PX, seed: int = 0) -> dict:
    """A 2k array over A1's image: x 1..67, y 1..64 where x + y is even, 100 um a unit, slightly rotated and
    jittered as a spot detector leaves it; spots on tissue selected (one in ten of those left unselected),
    counts for every spot of the array (the ST pipeline's all-spot matrix)."""
    rng = np.random.default_rng(seed)
    image = her2st_root / A1_IMAGE
    with open_image(image) as slide:
        thumb, scale = slide.thumbnail(500)
        w, h = slide.width, slide.height
    mask = tissue_mask(thumb)
    xs, ys = np.meshgrid(np.arange(1, 68), np.arange(1, 65))
    xs, ys = xs.ravel(), ys.ravel()
    keep = (xs + ys) % 2 == 0
    xs, ys = xs[keep], ys[keep]
    unit = 100.0 / um_per_px
    theta = np.deg2rad(0.6)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    px = (np.column_stack([xs, ys]) * unit) @ rot.T + np.array([-40.0, -20.0]) + rng.normal(0, 0.4, (len(xs), 2))
    on_image = (px[:, 0] > 0) & (px[:, 1] > 0) & (px[:, 0] < w - 1) & (px[:, 1] < h - 1)
    xs, ys, px = xs[on_image], ys[on_image], px[on_image]
    t = np.round(px * scale).astype(int)
    on_tissue = mask[np.clip(t[:, 1], 0, mask.shape[0] - 1), np.clip(t[:, 0], 0, mask.shape[1] - 1)]
    selected = on_tissue & (rng.random(len(xs)) > 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    spots = pd.DataFrame({"x": xs, "y": ys, "new_x": xs + rng.normal(0, 0.02, len(xs)),
                          "new_y": ys + rng.normal(0, 0.02, len(ys)), "pixel_x": px[:, 0], "pixel_y": px[:, 1],
                          "selected": selected.astype(int)})
    spots_path = folder / "S2K_selection.tsv"
    spots.to_csv(spots_path, sep="\t", index=False)
    genes = [f"G{i}" for i in range(8)]
    counts = pd.DataFrame(rng.poisson(6.0, (len(xs), len(genes))), columns=genes,
                          index=[f"{x}x{y}" for x, y in zip(xs, ys)])
    counts_path = folder / "S2K.tsv.gz"
    with gzip.open(counts_path, "wt") as fh:
        counts.to_csv(fh, sep="\t")
    return {"image": image, "spots": spots_path, "counts": counts_path, "n_selected": int(selected.sum()),
            "n_unselected": int((~selected).sum())}


def row_for(s: dict, platform: str | None = None) -> dict:
    return {"sample": "S2K", "patient": "P", "image": str(s["image"]), "counts": str(s["counts"]),
            "spots": str(s["spots"]), "format": "st", "platform": platform, "um_per_px": None, "pixel_scale": 1.0}


def test_2k_layout_is_detected_and_sized_from_its_diagonal_neighbours(her2st_root, tmp_path):
    s = write_2k_sample(her2st_root, tmp_path / "s2k")
    assert s["n_selected"] > 150 and s["n_unselected"] > 50
    sec = tile_section(row_for(s), TILING)
    t = sec.adata.uns["tiling"]
    assert t["platform"] == "st_2k" and t["platform_source"].startswith("detected")
    assert t["um_per_px_source"].startswith("array grid (st_2k")
    assert t["um_per_px"] == pytest.approx(TRUE_UM_PER_PX, rel=0.03)
    # the windows cover window_um of tissue at the true pixel size
    assert t["window_size_level0_px"] * TRUE_UM_PER_PX == pytest.approx(TILING["window_um"], rel=0.03)
    assert t["unselected"] > 50 and t["input"] == s["n_selected"]
    # the x and y scales agree (an unstretched grid), and both are near the truth
    assert t["grid_x_um_per_px"] == pytest.approx(TRUE_UM_PER_PX, rel=0.03)
    assert t["grid_y_um_per_px"] == pytest.approx(TRUE_UM_PER_PX, rel=0.03)
    # the spot diameter drawn in the QC figure and stored for scanpy is 100 um at the corrected scale
    sf = sec.adata.uns["spatial"]["S2K"]["scalefactors"]
    assert sf["spot_diameter_fullres"] * TRUE_UM_PER_PX == pytest.approx(100.0, rel=0.03)
    # the same spots read as a 1k array would be sized twice too coarse: the bug this design table fixes
    a = read_st_sample(s["counts"], s["spots"])
    as_1k = estimate_um_per_px_from_array(a.obs["array_x"], a.obs["array_y"], a.obsm["spatial"], "st", 200.0)
    assert as_1k == pytest.approx(2 * TRUE_UM_PER_PX, rel=0.05)


def test_a_given_platform_is_checked_against_the_coordinates(her2st_root, tmp_path):
    s = write_2k_sample(her2st_root, tmp_path / "s2k")
    assert tile_section(row_for(s, "st_2k"), TILING).adata.uns["tiling"]["platform_source"] == "sample sheet"
    with pytest.raises(InputError, match=r"row of sample 'S2K': platform 'st_1k', but the array coordinates .* "
                                         r"are a 2k design") as err:
        tile_section(row_for(s, "st_1k"), TILING, sheet=str(tmp_path / "samples.tsv"))
    assert err.value.path == str(tmp_path / "samples.tsv")
    a1 = her2st_root / "data" / "ST-spotfiles" / "A1_selection.tsv"
    a = read_st_sample(her2st_root / "data" / "ST-cnts" / "A1.tsv.gz", a1)
    assert detect_st_design(a.obs["array_x"], a.obs["array_y"]).platform == "st_1k"


def test_her2st_sections_are_1k_and_their_estimates_unchanged(her2st_root):
    """HER2ST is a 1k array: its pixel size is 200 um over the median pixel distance of spots one array step
    apart, as before the 2k design was known; its grid is not stretched."""
    for name in HER2ST_SPOTS:
        a = read_st_sample(her2st_root / "data" / "ST-cnts" / f"{name}.tsv.gz",
                           her2st_root / "data" / "ST-spotfiles" / f"{name}_selection.tsv")
        ax, ay, xy = a.obs["array_x"].to_numpy(), a.obs["array_y"].to_numpy(), a.obsm["spatial"]
        d = detect_st_design(ax, ay)
        assert d.platform == "st_1k" and d.axis_pairs > 100 and d.parity_share < 0.6
        at = {(x, y): i for i, (x, y) in enumerate(zip(ax, ay))}
        steps = [np.hypot(*(xy[at[(x + dx, y + dy)]] - xy[i])) for (x, y), i in at.items()
                 for dx, dy in ((1, 0), (0, 1)) if (x + dx, y + dy) in at]
        g = estimate_grid(ax, ay, xy, "st_1k", 200.0)
        assert g.method == "neighbours" and g.um_per_px == pytest.approx(200.0 / np.median(steps), rel=1e-12)
        assert 0.6 < g.um_per_px < 1.0 and g.anisotropy < 0.05  # full-resolution pixels (A1 too)


def test_design_detection_on_small_and_stretched_grids():
    xs, ys = np.meshgrid(np.arange(1, 21), np.arange(1, 21))
    xs, ys = xs.ravel(), ys.ravel()
    assert detect_st_design(xs, ys).platform == "st_1k"
    even = (xs + ys) % 2 == 0
    assert detect_st_design(xs[even], ys[even]).platform == "st_2k"
    # a sparse 1k selection that happens to have one parity but no neighbours stays 1k
    assert detect_st_design([2, 5, 9], [2, 7, 3]).platform == "st_1k"
    # past the 1k array's extent with one parity: 2k even without neighbour pairs
    assert detect_st_design([40, 50, 60], [2, 10, 20]).platform == "st_2k"
    # a grid stretched 10% along y is reported as such
    px = np.column_stack([xs * 20.0, ys * 22.0])
    g = estimate_grid(xs, ys, px, "st_1k", 200.0)
    assert g.x_um_per_px == pytest.approx(10.0) and g.y_um_per_px == pytest.approx(200 / 22)
    assert g.anisotropy == pytest.approx(0.1, rel=1e-6)


def test_wrong_platform_values_stop_with_one_line_naming_the_sheet_row(her2st_root, tmp_path):
    s = write_2k_sample(her2st_root, tmp_path / "s2k")
    other = write_2k_sample(her2st_root, tmp_path / "other", seed=1)
    sheet = tmp_path / "samples.tsv"
    rows = [{**row_for(s, "st_1k"), "patient": "P1"},  # one patient: the two share A1's image
            {**row_for(other, ""), "sample": "S2K_b", "patient": "P1"}]
    pd.DataFrame(rows).drop(columns=["um_per_px", "pixel_scale"]).to_csv(sheet, sep="\t", index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"study": "twok", "samples": str(sheet), "tiling": {"window_px": 32},
                                   "models": ["knn"]}))
    res = run_snakemake(tmp_path, cfg, "results/twok/samples/S2K.h5ad")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("histexpr error:")]
    assert lines == [f"histexpr error: {sheet}: row of sample 'S2K': platform 'st_1k', but the array coordinates in "
                     f"{s['spots']} are a 2k design " + lines[0].split(" are a 2k design ", 1)[1]], out[-3000:]
    # the other row, left to detection, tiles as 2k
    res = run_snakemake(tmp_path, cfg, "results/twok/samples/S2K_b.h5ad")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "array design st_2k (detected" in (tmp_path / "results/twok/logs/tile/S2K_b.log").read_text()
    # a value that is no design, and a design of another format, stop at parse time naming the row
    for bad, says in (("st_3k", "row 1 (sample 'S2K'): platform: 'st_3k' is not one of"),
                      ("visium", "row 1 (sample 'S2K'): platform 'visium' is not a 'st' array design")):
        pd.DataFrame([{**rows[0], "platform": bad}, rows[1]]).drop(columns=["um_per_px", "pixel_scale"]).to_csv(
            sheet, sep="\t", index=False)
        res = run_snakemake(tmp_path, cfg, "-n", "results/twok/samples/S2K.h5ad")
        out = res.stdout + res.stderr
        assert res.returncode != 0 and f"histexpr error: {sheet}: {says}" in out, out[-2000:]


def test_qc_circles_are_drawn_at_the_spot_diameter(tmp_path):
    """One spot of 120 level-0 px on a grey 400 x 300 thumbnail at scale 0.5: the drawn ring, measured in the
    saved PNG, is 60 thumbnail px across at the figure's thumbnail-to-PNG scale."""
    from PIL import Image

    from histexpr.plots import QC_COLOURS, spot_qc_figure

    thumb = np.full((300, 400, 3), 128, np.uint8)
    spots = pd.DataFrame({"x": [400.0], "y": [300.0], "status": ["background"]})
    path = tmp_path / "qc.png"
    spot_qc_figure(thumb, 0.5, spots, 120.0, 0.0, "one spot", str(path))
    png = np.asarray(Image.open(path).convert("RGB")).astype(int)
    grey = (np.abs(png - 128) <= 2).all(axis=-1)
    cols, rows = np.flatnonzero(grey.any(axis=0)), np.flatnonzero(grey.any(axis=1))
    png_per_thumb = (cols[-1] - cols[0] + 1) / 400
    red = np.array([int(QC_COLOURS["background"][i:i + 2], 16) for i in (1, 3, 5)])
    ring = (np.abs(png - red) < 40).all(axis=-1)
    ring[: rows[0]] = ring[rows[-1] + 1:] = False  # the legend's marker lies below the image
    rc = np.flatnonzero(ring.any(axis=0))
    assert len(rc) > 0
    measured = (rc[-1] - rc[0] + 1) / png_per_thumb  # outer edge to outer edge, in thumbnail px
    assert measured == pytest.approx(60.0, rel=0.08)
