"""The synthetic demo study: deterministic, in the user's on-disk format, with real image signal."""

import filecmp
import os

import numpy as np
import pandas as pd
import pytest

from histexpr.data.demo import generate_demo_study
from histexpr.data.tiling import tile_spots
from histexpr.io import load_sample_sheet, open_image, read_sample

SMALL = {"patients": 2, "sections_per_patient": 2, "image_px": 1200, "genes_image": 12, "genes_noise": 12}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    generate_demo_study(d, {**SMALL, "seed": 3})
    return d


def test_generator_is_deterministic(demo_dir, tmp_path):
    again = tmp_path / "again"
    generate_demo_study(again, {**SMALL, "seed": 3})
    for sub in ("counts", "spots"):
        names = sorted(os.listdir(demo_dir / sub))
        match, mismatch, errors = filecmp.cmpfiles(demo_dir / sub, again / sub, names, shallow=False)
        assert match == names and not mismatch and not errors
    with open_image(demo_dir / "images" / "P1_S1.tif") as a, open_image(again / "images" / "P1_S1.tif") as b:
        np.testing.assert_array_equal(a.read(0, 0, 1200, 1200), b.read(0, 0, 1200, 1200))
    other = tmp_path / "other"
    generate_demo_study(other, {**SMALL, "seed": 4, "patients": 2, "sections_per_patient": 1})
    assert not filecmp.cmp(demo_dir / "counts" / "P1_S1.tsv.gz", other / "counts" / "P1_S1.tsv.gz", shallow=False)


def test_demo_reads_through_the_user_readers(demo_dir):
    sheet = load_sample_sheet(demo_dir / "samples.tsv")
    assert sheet["patient"].tolist() == ["P1", "P1", "P2", "P2"]
    adata, image = read_sample(sheet.iloc[0])
    with open_image(image) as slide:
        assert slide.mpp == pytest.approx(2.0) and len(slide.level_downsamples) == 3
    assert "SYNTHETIC" in (demo_dir / "SYNTHETIC_DATA.txt").read_text()
    groups = pd.read_csv(demo_dir / "gene_groups.tsv", sep="\t")
    assert set(groups["group"]) == {"image", "noise"} and set(groups["gene"]) == set(adata.var_names)


def test_image_genes_follow_the_image_and_noise_genes_do_not(demo_dir):
    sheet = load_sample_sheet(demo_dir / "samples.tsv")
    feats, logc = [], []
    for _, row in sheet.iterrows():
        adata, image = read_sample(row)
        with open_image(image) as slide:
            w = tile_spots(slide, adata.obsm["spatial"], 2.0, 112, 56, 0.0).windows.astype(int)
        dark = (w.max(-1) < 140).mean((1, 2))  # nuclei
        white = (w.min(-1) > 215).mean((1, 2))  # fat / glass
        pink = ((w[..., 0] > 180) & (w[..., 1] < 170)).mean((1, 2))  # stroma
        feats.append(np.column_stack([dark, white, pink]))
        logc.append(pd.DataFrame(np.log1p(adata.X.toarray()), columns=adata.var_names))
    F, L = np.concatenate(feats), pd.concat(logc)
    best = {g: max(abs(np.corrcoef(F[:, i], L[g])[0, 1]) for i in range(3)) for g in L.columns}
    image = np.mean([v for g, v in best.items() if g.startswith("img_")])
    noise = np.mean([v for g, v in best.items() if g.startswith("noise_")])
    assert image > 0.25 and image > 2 * noise, (image, noise)
    tumour = [np.corrcoef(F[:, 0], L[g])[0, 1] for g in L.columns if g.startswith("img_tumour")]
    assert min(tumour) > 0.2  # tumour genes rise with nuclear density


def test_morphology_nuclei_differ_in_size_only():
    """The morphology genes' nuclei: pleomorphic groups (one large, five small) or uniform ones (five medium), at
    the same nuclear area and edge length and never touching, so a window's colour statistics and gradient
    energy (colour_ridge's features) hardly depend on the field; the nuclei's sizes do."""
    from scipy import ndimage

    from histexpr.data.demo import _pleomorphic_nuclei
    from histexpr.models.colour_ridge import colour_features

    allowed = np.ones((700, 700), bool)
    # as the demo draws them at 2 um/px: 70-um cells, radii 4, 6 and 10 um
    masks = {v: _pleomorphic_nuclei(np.random.default_rng(0), np.full(allowed.shape, v), allowed, 35, (2, 3, 5))
             for v in (0.0, 1.0)}
    inner = (slice(100, 600), slice(100, 600))
    fill = {v: m[inner].mean() for v, m in masks.items()}
    assert fill[1.0] == pytest.approx(fill[0.0], rel=0.03)  # the same share of nuclear pixels
    sizes = {}
    for v, m in masks.items():
        lab, k = ndimage.label(m)  # the generator draws no disk across the image's edge
        sizes[v] = np.bincount(lab.ravel())[1:]
    # no two nuclei touch: every component is one whole disk (13, 29 or 81 px)
    assert set(np.unique(sizes[0.0])) == {29}
    assert set(np.unique(sizes[1.0])) == {13, 81}
    assert (sizes[1.0] == 81).sum() == pytest.approx((sizes[1.0] == 13).sum() / 5, rel=0.1)
    # colour statistics and gradient energy of 48-px windows: the same distribution either way
    windows = {v: np.stack([np.repeat(m[y:y + 48, x:x + 48, None], 3, 2).astype(np.uint8) * 255
                            for y in range(100, 552, 48) for x in range(100, 552, 48)]) for v, m in masks.items()}
    f0, f1 = (colour_features(windows[v]) for v in (0.0, 1.0))
    cols = [0, 1, 2, 3, 4, 5, f0.shape[1] - 1]  # channel means and SDs, gradient energy
    se = np.sqrt(f0[:, cols].var(0) / len(f0) + f1[:, cols].var(0) / len(f1))
    assert (np.abs(f0[:, cols].mean(0) - f1[:, cols].mean(0)) < 2.5 * se + 1e-9).all()
    assert f1[:, -1].mean() == pytest.approx(f0[:, -1].mean(), rel=0.05)


@pytest.mark.parametrize("um_per_px, warned", [(2.0, False), (3.0, True)])
def test_the_morphology_nuclei_say_when_a_pixel_size_breaks_their_area_match(um_per_px, warned, caplog):
    from histexpr.data.demo import DemoConfig, render_section

    cfg = DemoConfig(image_px=400, um_per_px=um_per_px, genes_morphology=4)
    stain = np.array([[226.0, 140.0, 186.0], [68.0, 40.0, 122.0]])
    with caplog.at_level("WARNING"):
        render_section(np.random.default_rng(0), cfg, stain, np.full((400, 400), 0.5), np.random.default_rng(1))
    assert ("no longer cover the same area" in caplog.text) == warned, caplog.text
