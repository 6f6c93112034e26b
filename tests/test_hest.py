"""HEST-1k samples: st/<id>.h5ad, wsis/<id>.tif, metadata/<id>.json, read with the fields HEST documents."""

import json
import logging

import anndata as ad
import numpy as np
import pytest
from conftest import HER2ST, REPO

from histexpr.config import validate
from histexpr.data.section import tile_section
from histexpr.errors import InputError
from histexpr.io.hest import read_hest_sample
from histexpr.io.sheet import load_sample_sheet, sample_genes, sample_image

pytestmark = pytest.mark.skipif(not HER2ST.exists(), reason="needs ../shared/data/her2st (HER2ST C2)")
TILING = validate({"study": "t", "samples": "s.tsv"}, REPO / "workflow" / "schemas" / "config.schema.yaml",
                  "test")["tiling"] | {"window_px": 32}


@pytest.fixture(scope="module")
def c2_hest(tmp_path_factory, her2st_root):
    """HER2ST C2 in HEST's layout, as HEST ships legacy ST: raw counts, obsm['spatial'] in WSI pixels, obs
    array_col/array_row/in_tissue, and the metadata fields its readers use (pixel size, spot geometry)."""
    from histexpr.data.tiling import estimate_um_per_px_from_array
    from histexpr.io.sheet import build_her2st_sheet
    from histexpr.io.st import read_st_sample

    row = build_her2st_sheet(her2st_root).set_index("sample").loc["C2"]
    st = read_st_sample(row["counts"], row["spots"], float(row["pixel_scale"]))
    xy = np.asarray(st.obsm["spatial"])
    um = estimate_um_per_px_from_array(st.obs["array_x"], st.obs["array_y"], xy, "st", 200.0)
    root = tmp_path_factory.mktemp("hest") / "hest_data"
    for d in ("st", "wsis", "metadata"):
        (root / d).mkdir(parents=True)
    a = ad.AnnData(X=st.X.copy(), obs={"in_tissue": np.ones(st.n_obs, int), "array_col": st.obs["array_x"].to_numpy(),
                                       "array_row": st.obs["array_y"].to_numpy(),
                                       "pxl_col_in_fullres": xy[:, 0], "pxl_row_in_fullres": xy[:, 1]},
                   var={"gene": st.var_names.to_numpy()})
    a.obs_names, a.var_names = st.obs_names.astype(str), st.var_names.astype(str)
    a.obs.loc[a.obs_names[:5], "in_tissue"] = 0  # five spots HEST marks outside the tissue
    a.obsm["spatial"] = xy
    a.write_h5ad(root / "st" / "TENX_C2.h5ad")
    meta = {"id": "TENX_C2", "st_technology": "Spatial Transcriptomics", "pixel_size_um_embedded": None,
            "pixel_size_um_estimated": um, "spot_diameter": 100.0, "inter_spot_dist": 200.0,
            "spots_under_tissue": st.n_obs - 5, "species": "Homo sapiens", "organ": "Breast"}
    (root / "metadata" / "TENX_C2.json").write_text(json.dumps(meta))
    return {"root": root, "st": st, "um": um, "image": row["image"], "meta": meta}


def _sheet(tmp_path, c2_hest, image=True):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\timage\tcounts\tformat\n"
                     f"TENX_C2\tC\t{c2_hest['image'] if image else ''}\t{c2_hest['root']}\thest\n")
    return load_sample_sheet(sheet, schema=REPO / "workflow" / "schemas" / "samples.schema.yaml").iloc[0].to_dict()


def test_a_hest_sample_is_tiled_with_its_metadata_pixel_size_and_spot_geometry(c2_hest, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    row = _sheet(tmp_path, c2_hest)
    sec = tile_section(row, TILING)
    t = sec.adata.uns["tiling"]
    assert t["um_per_px"] == pytest.approx(c2_hest["meta"]["pixel_size_um_estimated"])
    assert t["um_per_px_source"] == "HEST metadata pixel_size_um_estimated"
    assert t["platform"] == "st_1k" and t["spot_um"] == 100.0  # legacy ST: the 1k design read off the grid
    assert abs(t["grid_um_per_px"] / t["um_per_px"] - 1) < 0.01  # the grid of inter_spot_dist agrees
    assert t["input"] == c2_hest["st"].n_obs - 5 and t["outside_tissue"] == 5
    kept = sec.adata.obs["spot"].to_numpy()
    assert np.array_equal(sec.adata.X.toarray(), c2_hest["st"][kept].X.toarray())  # the counts, unchanged
    assert "HEST sample TENX_C2 (Spatial Transcriptomics), 182 spots under tissue of 187" in caplog.text
    assert sample_genes(row) == list(c2_hest["st"].var_names)


def test_without_an_image_the_wsi_of_the_layout_is_used(c2_hest, tmp_path):
    row = _sheet(tmp_path, c2_hest, image=False)
    path, scale, source = sample_image(row)
    assert path == str(c2_hest["root"] / "wsis" / "TENX_C2.tif") and scale == 1.0 and source == "HEST wsis/"


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop("pixel_size_um_estimated"), "no usable pixel size"),
    (lambda m: m.update(st_technology="Slide-seq"), "st_technology 'Slide-seq' is not one histexpr reads"),
    (lambda m: m.update(spot_diameter=None), "spot_diameter is None"),
])
def test_malformed_metadata_stops_with_one_line_naming_the_file(c2_hest, tmp_path, change, match):
    import shutil

    root = tmp_path / "hest_data"
    shutil.copytree(c2_hest["root"], root)
    meta = json.loads((root / "metadata" / "TENX_C2.json").read_text())
    change(meta)
    (root / "metadata" / "TENX_C2.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=match) as err:
        read_hest_sample(root, "TENX_C2")
    assert "TENX_C2.json" in str(err.value) and "\n" not in str(err.value)


def test_a_sample_missing_from_the_layout_or_without_positions_is_named(c2_hest, tmp_path):
    with pytest.raises(InputError, match="metadata file not found") as err:
        read_hest_sample(c2_hest["root"], "TENX_C9")
    assert "TENX_C9.json" in str(err.value)
    import shutil

    root = tmp_path / "hest_data"
    shutil.copytree(c2_hest["root"], root)
    a = ad.read_h5ad(root / "st" / "TENX_C2.h5ad")
    del a.obsm["spatial"]
    a.obs = a.obs.drop(columns=["pxl_col_in_fullres", "pxl_row_in_fullres"])
    a.write_h5ad(root / "st" / "TENX_C2.h5ad")
    with pytest.raises(InputError, match="no spot positions") as err:
        read_hest_sample(root / "st" / "TENX_C2.h5ad", "ignored")
    assert "TENX_C2.h5ad" in str(err.value)
