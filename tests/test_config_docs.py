"""config/README.md is generated from the schemas: it describes every key, and it cannot drift."""

from conftest import REPO

from histexpr.schema_doc import render


def test_config_readme_is_the_schemas_rendered():
    page = (REPO / "config" / "README.md").read_text()
    assert page == render(), "config/README.md is stale: run `python -m histexpr.schema_doc > config/README.md`"
    for key in ("`tiling.spot_pitch_um.st_2k`", "`evaluation.section_bootstrap_min`", "`folds.k`", "`platform`",
                "`exemplars.exclude`", "`grid.patch_px`"):
        assert key in page, key
