"""Readers on the real HER2ST subset, the real Visium fixture, and generated images."""

import numpy as np
import pandas as pd
import pytest
from conftest import HER2ST_SPOTS
from PIL import Image

from histexpr.data.demo import write_pyramid_tiff
from histexpr.data.tiling import estimate_um_per_px
from histexpr.io import (
    build_her2st_sheet,
    load_sample_sheet,
    open_image,
    read_sample,
    read_st_sample,
    read_visium_sample,
)


def test_her2st_sheet_from_folder_layout(her2st_root):
    sheet = build_her2st_sheet(her2st_root)
    assert sheet["sample"].tolist() == ["A1", "C2", "C3", "C4", "C5"]
    assert sheet.set_index("sample")["patient"].to_dict() == {"A1": "A", "C2": "C", "C3": "C", "C4": "C", "C5": "C"}
    a1 = sheet.set_index("sample").loc["A1"]
    assert a1["image"].endswith("app/www/imgs/A1_HE_image_dark.png")
    assert a1["pixel_scale"] == pytest.approx(2000 / 6954)
    assert (sheet.set_index("sample").loc[["C2", "C3", "C4", "C5"], "pixel_scale"] == 1.0).all()


@pytest.mark.parametrize("section", sorted(HER2ST_SPOTS))
def test_her2st_counts_join_spot_positions(her2st_root, section):
    sheet = build_her2st_sheet(her2st_root).set_index("sample")
    row = sheet.loc[section]
    adata = read_st_sample(row["counts"], row["spots"], row["pixel_scale"])
    assert adata.n_obs == HER2ST_SPOTS[section]
    assert adata.n_vars > 15000
    # each count row sits at the pixel position its XxY id names in the spot file
    spots = pd.read_csv(row["spots"], sep="\t")
    spots.index = spots["x"].round().astype(int).astype(str) + "x" + spots["y"].round().astype(int).astype(str)
    expect = spots.loc[adata.obs_names, ["pixel_x", "pixel_y"]].to_numpy() * row["pixel_scale"]
    np.testing.assert_allclose(adata.obsm["spatial"], expect)
    counts = pd.read_csv(row["counts"], sep="\t", index_col=0)
    np.testing.assert_array_equal(adata.X.toarray(), counts.loc[adata.obs_names].to_numpy())
    with open_image(row["image"]) as slide:
        xy = adata.obsm["spatial"]
        assert (xy[:, 0] < slide.width).all() and (xy[:, 1] < slide.height).all()
        # legacy ST: 200 um pitch; spots ~271 px apart in the full-resolution JPEGs (~0.74 um/px),
        # ~58 px apart in A1's downscaled PNG (data README)
        um = estimate_um_per_px(xy, 200.0)
        assert um == pytest.approx(200.0 / (58.0 if section == "A1" else 271.0), rel=0.05)


def test_visium_reader_keeps_10x_columns_and_scales_positions(visium_dir):
    scalef = 0.045004502  # the fixture's tissue_lowres_scalef
    adata = read_visium_sample(visium_dir / "filtered_feature_bc_matrix.h5",
                               visium_dir / "spatial" / "tissue_positions_list.csv", image_scale=scalef)
    pos = pd.read_csv(visium_dir / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    assert adata.n_obs == 100 and adata.n_vars == 100
    assert (pos.loc[adata.obs_names, 1] == 1).all()  # in-tissue spots only
    np.testing.assert_allclose(adata.obsm["spatial"][:, 0], pos.loc[adata.obs_names, 5] * scalef)
    np.testing.assert_allclose(adata.obsm["spatial"][:, 1], pos.loc[adata.obs_names, 4] * scalef)
    # spot_diameter_fullres spans 65 um (10x's scale-factor convention); the 100 um array pitch agrees
    assert adata.uns["um_per_px"] == pytest.approx(65.0 / (89.42751063343188 * scalef))
    assert list(adata.var.columns) == ["gene_ids", "feature_types", "genome"]  # 10x's var columns kept
    assert (adata.var["feature_types"] == "Gene Expression").all()
    with Image.open(visium_dir / "spatial" / "tissue_lowres_image.png") as im:
        assert (adata.obsm["spatial"] < np.array(im.size)).all()


def test_visium_row_without_image_skips_the_blank_hires_placeholder(visium_dir, tmp_path):
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame([{"sample": "v1", "patient": "p1", "image": "", "format": "visium",
                   "counts": str(visium_dir / "filtered_feature_bc_matrix.h5"),
                   "spots": str(visium_dir / "spatial" / "tissue_positions_list.csv")}]).to_csv(sheet, sep="\t", index=False)
    row = load_sample_sheet(sheet).iloc[0]
    adata, image = read_sample(row)
    # the fixture's hires PNG is a blank placeholder: the reader falls back to the real lowres PNG
    assert image.endswith("tissue_lowres_image.png") and adata.uns["platform"] == "visium"
    assert adata.uns["image_source"] == "Space Ranger lowres image"


def test_pyramidal_tiff_read_by_region_with_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    path = tmp_path / "slide.tif"
    write_pyramid_tiff(str(path), img, um_per_px=0.5, levels=3)
    with open_image(path) as slide:
        assert (slide.width, slide.height) == (1024, 1024)
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        np.testing.assert_array_equal(slide.read(100, 200, 64, 32), img[200:232, 100:164])
        coarse = slide.read(0, 0, 512, 512, downsample=4)  # from the 4x level, not level 0
        assert coarse.shape == (128, 128, 3)
        off = slide.read(1000, 1000, 48, 48)  # partly off the image: composited on white
        assert (off[30:, 30:] == 255).all() and np.array_equal(off[:24, :24], img[1000:, 1000:])


def test_sample_sheet_paths_are_relative_to_the_sheet(st_sample, tmp_path):
    folder = st_sample["image"].parent
    sheet = folder / "samples.tsv"
    pd.DataFrame([{"sample": "S1", "patient": "P1", "image": st_sample["image"].name,
                   "counts": st_sample["counts"].name, "spots": st_sample["spots"].name,
                   "um_per_px": 1.0}]).to_csv(sheet, sep="\t", index=False)
    row = load_sample_sheet(sheet).iloc[0]
    assert row["image"] == str(st_sample["image"]) and row["format"] == "st" and row["um_per_px"] == 1.0
    assert row["pixel_scale"] == 1.0
