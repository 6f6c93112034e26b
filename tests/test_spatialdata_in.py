"""SpatialData stores as input: the real Visium fixture written as a store by spatialdata-io, read back through
the store's own transformations, agrees with our Space Ranger reader on the same files."""

import shutil
import warnings

import numpy as np
import pytest
from conftest import REPO, VISIUM_SMALL

from histexpr.errors import InputError

pytestmark = pytest.mark.skipif(not VISIUM_SMALL.exists(), reason="needs ../shared/data/visium_small (10x Visium fixture)")


@pytest.fixture(scope="module")
def visium_store(tmp_path_factory, visium_dir):
    sdio = pytest.importorskip("spatialdata_io")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sdio.visium(visium_dir, dataset_id="V1")
        store = tmp_path_factory.mktemp("sd") / "visium.zarr"
        sdata.write(store)
    return store


def _row(store, check_files=True, **cells):
    from histexpr.io.sheet import complete_sheet

    rec = {"sample": "V1", "patient": "P", "counts": str(store), "format": "spatialdata", "platform": "visium"}
    rec.update(cells)
    return complete_sheet([rec], str(store.parent / "samples.tsv"),
                          schema=REPO / "workflow" / "schemas" / "samples.schema.yaml",
                          check_files=check_files).iloc[0].to_dict()


def test_a_store_written_by_spatialdata_io_reads_as_our_visium_reader_reads_the_files(visium_store, visium_dir):
    from histexpr.io.sheet import read_sample
    from histexpr.io.visium import read_scalefactors, read_visium_sample

    adata, image = read_sample(_row(visium_store))
    assert image == f"{visium_store}/images/V1_lowres_image"  # the hires PNG is a blank placeholder: skipped
    spatial = visium_dir / "spatial"
    sf = read_scalefactors(spatial / "scalefactors_json.json")
    ours = read_visium_sample(visium_dir / "filtered_feature_bc_matrix.h5", next(spatial.glob("tissue_positions*")),
                              image_scale=sf["tissue_lowres_scalef"])
    assert list(adata.obs_names) == list(ours.obs_names)
    assert np.array_equal(adata.X.toarray(), ours.X.toarray())
    assert np.abs(adata.obsm["spatial"] - ours.obsm["spatial"]).max() < 0.5  # through the store's transformations
    assert (adata.obs[["array_x", "array_y"]].to_numpy() == ours.obs[["array_x", "array_y"]].to_numpy()).all()


def test_a_store_row_is_tiled_from_its_image_element(visium_store):
    from histexpr.config import validate
    from histexpr.data.section import tile_section

    tiling = validate({"study": "t", "samples": "s.tsv"}, REPO / "workflow" / "schemas" / "config.schema.yaml",
                      "test")["tiling"] | {"window_px": 16, "min_spots_on_tissue": 0.0}
    sec = tile_section(_row(visium_store, image=f"{visium_store}/images/V1_lowres_image"), tiling)
    t = sec.adata.uns["tiling"]
    assert t["platform"] == "visium" and t["kept"] > 0 and sec.windows.shape[1:] == (16, 16, 3)
    assert t["um_per_px_source"].startswith("array grid")  # from the Visium grid, 100 um a step


def test_unknown_elements_and_a_missing_platform_stop_with_one_line(visium_store, tmp_path):
    from histexpr.io.sheet import read_sample

    with pytest.raises(InputError, match=r"no images element 'nope'|no image element 'nope'") as err:
        read_sample(_row(visium_store, False, image=f"{visium_store}/images/nope"))
    assert "V1_hires_image" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="no shape element 'cells'"):
        read_sample(_row(visium_store, False, spots=f"{visium_store}/shapes/cells"))
    with pytest.raises(InputError, match="a spatialdata row needs its array design in the platform column"):
        _row(visium_store, platform="")
    broken = tmp_path / "broken.zarr"
    shutil.copytree(visium_store, broken)
    shutil.rmtree(broken / "tables")  # its metadata still lists the table: a torn copy
    with pytest.raises(InputError, match="not a readable SpatialData store") as err:
        read_sample(_row(broken))
    assert str(broken) in str(err.value) and "\n" not in str(err.value)
