"""Models: shapes, gradients, the knn floor, and loss going down on real HER2ST windows."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from histexpr.data.expression import common_genes
from histexpr.data.fold import FoldData
from histexpr.data.tiling import estimate_um_per_px, tile_spots
from histexpr.io import build_her2st_sheet, open_image, read_st_sample
from histexpr.models import available_models, get_model
from histexpr.models.autoencoder import ConvAutoencoder
from histexpr.models.catalog import FITTED, MODEL_NEEDS, uses_gpu
from histexpr.train.extractor import reconstruction_l1, train_autoencoder
from histexpr.train.loop import TrainConfig, fit, make_batch, predict


def test_registry_matches_the_workflow_catalog():
    assert set(available_models()) == set(MODEL_NEEDS)
    for name, needs in MODEL_NEEDS.items():
        assert get_model(name).needs == needs
        assert (get_model(name).kind == "fitted") == (name in FITTED) == (not uses_gpu(name))


def test_vit_forward_backward_shapes():
    model = get_model("vit").factory(7, {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}, img_size=32)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    y = model({"image": x})
    assert y.shape == (4, 7)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_autoencoder_shapes():
    ae = ConvAutoencoder(input_px=32, dim=10, width=8)
    x = torch.rand(3, 3, 32, 32)
    assert ae.encode(x).shape == (3, 10) and ae(x).shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="power of two"):
        ConvAutoencoder(input_px=48)


def test_knn_is_the_mean_of_valid_exemplars():
    targets = np.arange(12, dtype=np.float32).reshape(6, 2)
    data = FoldData(targets, ["train"] * 3 + ["test"] * 3, ["a", "b"],
                    exemplar_index=np.array([[0, 1], [2, -1], [-1, -1], [0, 2], [1, 2], [0, 0]]))
    knn = get_model("knn").factory({}).fit(data)
    pred = knn.predict(data, np.array([0, 1, 2, 3]))
    np.testing.assert_allclose(pred, [[1, 2], [4, 5], [2, 3], [2, 3]])  # row 2: no exemplar -> train mean


def test_colour_features_layout():
    from histexpr.models.colour_ridge import colour_features

    w = np.zeros((2, 32, 32, 3), np.uint8)
    w[0] = 255
    w[1, :, :16] = (255, 0, 0)  # left half red: a vertical edge
    phi = colour_features(w, bins=4, thumbnail_px=2)
    assert phi.shape == (2, 6 + 12 + 12 + 1)
    np.testing.assert_allclose(phi[0, :3], 1) and np.testing.assert_allclose(phi[0, 3:6], 0)
    np.testing.assert_allclose(phi[1, :3], [0.5, 0, 0]) and np.testing.assert_allclose(phi[1, 3], 0.5)
    np.testing.assert_allclose(phi[1, 6:10], [0.5, 0, 0, 0.5])  # red histogram: half 0, half 255
    assert phi[0, -1] == 0 and phi[1, -1] > 0  # gradient energy only where there is an edge


def test_colour_ridge_learns_colour_and_chooses_alpha_on_validation():
    rng = np.random.default_rng(0)
    n = 240
    level = rng.uniform(0, 1, n)
    windows = (rng.uniform(0, 60, (n, 16, 16, 3)) + 180 * level[:, None, None, None]).astype(np.uint8)
    targets = np.column_stack([level, 1 - level, rng.uniform(size=n)]).astype(np.float32)
    split = np.array(["train"] * 140 + ["val"] * 50 + ["test"] * 50)
    data = FoldData(targets, split, ["up", "down", "noise"], windows=windows)
    model = get_model("colour_ridge").factory({}).fit(data)
    test = data.index("test")
    pred = model.predict(data, test)
    r = [np.corrcoef(pred[:, j], targets[test, j])[0, 1] for j in range(3)]
    assert r[0] > 0.95 and r[1] > 0.95 and abs(r[2]) < 0.4
    assert model.alpha in model.scores and model.scores[model.alpha] == max(model.scores.values())
    # test windows are never used: changing them changes no coefficient
    data2 = FoldData(np.where(split[:, None] == "test", 0, targets), split, data.genes,
                     windows=np.where(split[:, None, None, None] == "test", 0, windows).astype(np.uint8))
    np.testing.assert_allclose(get_model("colour_ridge").factory({}).fit(data2).coef, model.coef)
    # no validation split: generalised cross-validation chooses alpha
    gcv = get_model("colour_ridge").factory({}).fit(FoldData(targets, np.where(split == "val", "train", split),
                                                             data.genes, windows=windows))
    assert np.corrcoef(gcv.predict(data, test)[:, 0], targets[test, 0])[0, 1] > 0.95
    # fold 0 (every patient in training) has no test windows: an empty prediction, not an error
    assert model.predict(data, np.array([], int)).shape == (0, 3)
    pool = FoldData(targets[:6], ["train"] * 6, data.genes, exemplar_index=np.zeros((6, 2), int))
    assert get_model("knn").factory({}).fit(pool).predict(pool, np.array([], int)).shape == (0, 3)


def _depth_fold(seed: int, n: int = 300):
    """A fold whose first gene follows each spot's log total count and whose second does not:
    ``(data, targets, split, obs)``."""
    rng = np.random.default_rng(seed)
    library = rng.lognormal(7, 0.6, n)
    targets = np.column_stack([0.3 * np.log1p(library) + rng.normal(0, 0.05, n), rng.uniform(size=n)])
    split = np.array(["train"] * (n * 3 // 5) + ["val"] * (n // 5) + ["test"] * (n - n * 3 // 5 - n // 5))
    obs = pd.DataFrame({"library_size": library}, index=[f"s{i}" for i in range(n)])
    data = FoldData(targets, split, ["depth", "noise"], adata=ad.AnnData(targets.astype(np.float32), obs=obs))
    return data, targets, split, obs


def test_depth_oracle_reads_only_each_spots_total_count():
    """Genes that follow depth are predicted from the test spot's own count; genes that do not, are not;
    the fit sees training and validation spots only."""
    data, targets, split, obs = _depth_fold(1)
    model = get_model("depth_oracle").factory({}).fit(data)
    test = data.index("test")
    pred = model.predict(data, test)
    assert np.corrcoef(pred[:, 0], targets[test, 0])[0, 1] > 0.95
    assert abs(np.corrcoef(pred[:, 1], targets[test, 1])[0, 1]) < 0.3
    blind = np.where(split[:, None] == "test", 0.0, targets)  # test targets hidden: the same fit
    data2 = FoldData(blind, split, data.genes, adata=ad.AnnData(blind.astype(np.float32), obs=obs))
    np.testing.assert_allclose(get_model("depth_oracle").factory({}).fit(data2).coef, model.coef)
    assert "depth_oracle" in FITTED and MODEL_NEEDS["depth_oracle"] == ()


def test_a_validation_score_blind_to_alpha_keeps_the_least_shrinkage_without_an_edge_warning(caplog):
    """One feature: every alpha gives the same validation PCC (PCC ignores the scale), so the smallest alpha is
    kept (the fit closest to least squares) and no 'edge of the grid' warning is printed."""
    data, targets, _, _ = _depth_fold(2)
    with caplog.at_level("INFO"):
        model = get_model("depth_oracle").factory({}).fit(data)
    assert model.alpha == min(model.alphas)
    assert "does not depend on alpha" in caplog.text and "edge of the grid" not in caplog.text
    # close to least squares: the depth gene's slope is not shrunk towards 0
    test = data.index("test")
    slope = np.polyfit(model.predict(data, test)[:, 0], targets[test, 0], 1)[0]
    assert 0.9 < slope < 1.1, slope


@pytest.fixture(scope="module")
def her2st_fold(her2st_root, tmp_path_factory):
    """96 real C2/C3 windows (48 px) with their top-20 log1p-min-max genes, split train/val."""
    folder = tmp_path_factory.mktemp("her2st_windows")
    sheet = build_her2st_sheet(her2st_root).set_index("sample")
    paths, parts = {}, []
    for s in ("C2", "C3"):
        a = read_st_sample(sheet.loc[s, "counts"], sheet.loc[s, "spots"])[:48].copy()
        with open_image(sheet.loc[s, "image"]) as slide:
            res = tile_spots(slide, a.obsm["spatial"], estimate_um_per_px(a.obsm["spatial"], 200), 112, 48, 0.0)
        np.save(folder / f"{s}.npy", res.windows)
        paths[s] = str(folder / f"{s}.npy")
        a.obs["sample"] = s
        parts.append(a)
    genes = common_genes({p.obs["sample"].iloc[0]: p for p in parts})
    counts = np.concatenate([p[:, genes].X.toarray() for p in parts])
    top = np.argsort(-counts.mean(axis=0))[:20]
    y = np.log1p(counts[:, top])
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    obs = pd.DataFrame({"sample": np.repeat(["C2", "C3"], 48), "split": np.repeat(["train", "val"], 48)},
                       index=[f"w{i}" for i in range(96)])
    return FoldData.load(ad.AnnData(y.astype(np.float32), obs=obs), window_paths=paths)


def test_vit_training_lowers_loss_on_real_windows(her2st_fold):
    torch.manual_seed(0)
    model = get_model("vit").factory(20, {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}, img_size=48)
    cfg = TrainConfig(epochs=12, batch_size=16, lr=2e-3, warmup_epochs=0.5, patience=100, augment=False)
    model, hist = fit(model, her2st_fold, cfg, torch.device("cpu"))
    assert hist["train_loss"].iloc[-3:].mean() < hist["train_loss"].iloc[0] - 0.05
    assert hist["selected"].sum() == 1
    assert hist.loc[hist["selected"], "val_pcc_m"].item() == pytest.approx(hist["val_pcc_m"].max())
    pred = predict(model, her2st_fold, her2st_fold.index("val"), cfg, torch.device("cpu"))
    assert pred.shape == (48, 20) and np.isfinite(pred).all()


def test_extractor_training_lowers_reconstruction_error(her2st_fold):
    rows = np.arange(96)
    ae_params = {"input_px": 32, "dim": 16, "width": 8, "epochs": 6, "batch_size": 16, "lr": 3e-3}
    torch.manual_seed(0)
    before = reconstruction_l1(ConvAutoencoder(32, 16, 8), her2st_fold.windows, rows, 32, torch.device("cpu"))
    model, hist = train_autoencoder(her2st_fold.windows, rows[:48], rows[48:], ae_params, torch.device("cpu"))
    assert hist["val_l1"].iloc[-1] < 0.85 * before and hist["val_l1"].iloc[-1] < hist["val_l1"].iloc[0]


def test_batches_normalise_and_augment_on_the_fly(her2st_fold):
    gen = torch.Generator().manual_seed(0)
    plain = make_batch(her2st_fold, np.arange(8), torch.device("cpu"), False, None)
    aug = make_batch(her2st_fold, np.arange(8), torch.device("cpu"), True, gen)
    assert plain["image"].shape == (8, 3, 48, 48) and plain["image"].dtype == torch.float32
    # each augmented window is one of the 8 symmetries of its original
    for a, p in zip(aug["image"], plain["image"]):
        variants = [torch.rot90(p, k, (1, 2)) for k in range(4)]
        variants += [torch.flip(v, (2,)) for v in variants]
        assert any(torch.equal(a, v) for v in variants)
    torch.testing.assert_close(aug["target"], plain["target"])


@pytest.fixture(scope="module")
def her2st_c234(her2st_root):
    """Every window of C2, C3, C4 (32 px) with the sections' top-50 log1p-min-max genes."""
    sheet = build_her2st_sheet(her2st_root).set_index("sample")
    parts, windows = [], []
    for s in ("C2", "C3", "C4"):
        a = read_st_sample(sheet.loc[s, "counts"], sheet.loc[s, "spots"])
        with open_image(sheet.loc[s, "image"]) as slide:
            res = tile_spots(slide, a.obsm["spatial"], estimate_um_per_px(a.obsm["spatial"], 200), 112, 32, 0.0)
        windows.append(res.windows)
        a.obs["sample"] = s
        parts.append(a)
    genes = common_genes({p.obs["sample"].iloc[0]: p for p in parts})
    counts = np.concatenate([p[:, genes].X.toarray() for p in parts])
    y = np.log1p(counts[:, np.argsort(-counts.mean(axis=0))[:50]])
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    return np.concatenate(windows), y, np.concatenate([p.obs["sample"].to_numpy() for p in parts])


def test_stylegan_extractor_learns_and_retrieves_expression_like_exemplars(her2st_c234):
    """E + G + F on real windows: reconstruction falls, and E's 9 nearest windows of other sections have
    closer expression than random windows of those sections (mean L2 distance over 50 genes)."""
    from histexpr.retrieval.exemplars import exact_search
    from histexpr.train.extractor import build_extractor, embed, train_extractor

    windows, y, sample = her2st_c234
    c3 = np.flatnonzero(sample == "C3")
    train = np.concatenate([np.flatnonzero(sample == "C2"), c3[: len(c3) // 2]])
    val, query = c3[len(c3) // 2:], np.flatnonzero(sample == "C4")
    params = {"kind": "stylegan", "input_px": 32, "dim": 16, "width": 8, "cap": 64, "epochs": 3, "batch_size": 32,
              "lpips": "random"}
    torch.manual_seed(0)
    before = reconstruction_l1(build_extractor(params), windows, val, 32, torch.device("cpu"))
    model, hist = train_extractor(windows, train, val, params, torch.device("cpu"), seed=0)
    print(f"\nvalidation L1 before training {before:.4f}\n"
          + hist[["epoch", "train_l1", "train_lpips", "train_adv", "train_d", "val_l1"]].round(4).to_string())
    assert hist["val_l1"].min() < 0.8 * before
    assert hist["val_l1"].iloc[-1] < hist["val_l1"].iloc[0]
    assert np.isfinite(hist.drop(columns="epoch").to_numpy()).all()
    emb = embed(model, windows, torch.device("cpu"))
    assert emb.shape == (len(windows), 16) and np.isfinite(emb).all()
    idx, _ = exact_search(emb[train], emb[query], sample[query], sample[train], 9, "l2")
    assert (idx >= 0).all() and (sample[train][idx] != "C4").all()
    near = np.linalg.norm(y[query][:, None] - y[train][idx], axis=-1).mean()
    rng = np.random.default_rng(0)
    rand = np.mean([np.linalg.norm(y[query] - y[rng.choice(train, len(query))], axis=1).mean() for _ in range(50)])
    print(f"C4 windows: mean expression distance to their 9 exemplars {near:.3f}, to random training windows "
          f"{rand:.3f}")
    assert near < 0.95 * rand


def test_alexnet_lpips_feature_space_makes_l2_the_lpips_distance():
    """||φ(x) - φ(y)||² equals the lpips package's distance (checked with a random trunk: no weights offline)."""
    from histexpr.models.pretrained_features import LPIPSFeatures

    torch.manual_seed(0)
    feats = LPIPSFeatures(input_px=64, pretrained=False)
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    phi = feats.encode(x) - feats.encode(y)
    with torch.no_grad():
        ref = feats.lpips(x * 2 - 1, y * 2 - 1).flatten()
    torch.testing.assert_close(phi.pow(2).sum(1), ref, rtol=1e-4, atol=1e-6)
    assert phi.shape[1] == feats.dim > 10_000


def test_imagenet_feature_spaces_refuse_to_run_without_weights(tmp_path, monkeypatch):
    from histexpr.errors import ConfigError
    from histexpr.train.extractor import build_extractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    for kind in ("resnet50", "alexnet_lpips"):
        with pytest.raises(ConfigError, match="ImageNet .* weights at .*no download"):
            build_extractor({"kind": kind, "input_px": 64})


def test_resnet50_feature_space_shape():
    from histexpr.models.pretrained_features import ResNet50Features

    feats = ResNet50Features(input_px=64, pretrained=False).eval()
    with torch.no_grad():
        assert feats.encode(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_probe_is_sklearns_standardise_pca_ridge():
    """HEST's probe: the same predictions as sklearn's Pipeline(StandardScaler, PCA(k), Ridge(alpha))."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    n, d, k, alpha = 200, 40, 12, 3.0
    emb = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, d)
    targets = emb[:, :5] @ rng.normal(size=(5, 4)) + rng.normal(0, 0.3, (n, 4))
    split = np.array(["train"] * 150 + ["test"] * 50)
    data = FoldData(targets, split, list("abcd"), embeddings=emb)
    probe = get_model("probe").factory({"n_components": k, "alphas": [alpha]}).fit(data)
    train, test = data.index("train"), data.index("test")
    reference = make_pipeline(StandardScaler(), PCA(k, svd_solver="full"), Ridge(alpha=alpha))
    reference.fit(emb[train], targets[train].astype(np.float32))
    np.testing.assert_allclose(probe.predict(data, test), reference.predict(emb[test]), atol=1e-6, rtol=1e-6)
    hest = get_model("probe").factory({"n_components": k, "alpha_rule": "hest"}).fit(data)
    assert hest.alpha == pytest.approx(100 / (k * 4))


def test_timm_encoder_loads_whole_or_stops(tmp_path):
    """A frozen encoder never trains, so a checkpoint that leaves any tensor unloaded is refused, naming it."""
    import timm

    from histexpr.errors import ConfigError
    from histexpr.models.pretrained_features import TimmFeatures

    good, wrong = tmp_path / "small.bin", tmp_path / "tiny.bin"
    torch.save(timm.create_model("vit_small_patch16_224", num_classes=0).state_dict(), good)
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), wrong)
    enc = TimmFeatures("vit_small_patch16_224", str(good), input_px=32, kwargs={"dynamic_img_size": True})
    assert enc.encode(torch.rand(2, 3, 32, 32)).shape == (2, 384) and enc.input_px == 32
    assert TimmFeatures("vit_small_patch16_224", str(good)).input_px == 224  # the encoder's own size
    with pytest.raises(ConfigError, match="tiny.bin: .*no tensor of this checkpoint matches"):
        TimmFeatures("vit_small_patch16_224", str(wrong))
    partial = tmp_path / "partial.bin"
    state = torch.load(good, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("norm.")}, partial)
    with pytest.raises(ConfigError, match="partial.bin: .*2 of the encoder's tensors are not in this checkpoint.*"
                                          "must load whole"):
        TimmFeatures("vit_small_patch16_224", str(partial))
    with pytest.raises(ConfigError, match="absent.bin: .*does not exist"):
        TimmFeatures("vit_small_patch16_224", str(tmp_path / "absent.bin"))
    with pytest.raises(ConfigError, match="needs extractor.timm.checkpoint"):
        TimmFeatures("vit_small_patch16_224", None)
    # Virchow2's recipe on a tiny ViT: layer classes named in YAML, class token + mean patch token
    options = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU", "reg_tokens": 4, "dynamic_img_size": True}
    swiglu = tmp_path / "swiglu.bin"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0, mlp_layer=timm.layers.SwiGLUPacked,
                                 act_layer=torch.nn.SiLU, reg_tokens=4).state_dict(), swiglu)
    enc = TimmFeatures("vit_tiny_patch16_224", str(swiglu), input_px=32, kwargs=options, pool="cls_mean")
    x = torch.rand(2, 3, 32, 32)
    tokens = enc.net.forward_features((x - enc.mean) / enc.std)
    torch.testing.assert_close(enc.encode(x), torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], -1))
    assert enc.dim == 2 * 192 and isinstance(enc.net.blocks[0].mlp, timm.layers.GluMlp)  # SwiGLUPacked
    with pytest.raises(ConfigError, match="kwargs.act_layer: 'os.system' is not a layer"):
        TimmFeatures("vit_tiny_patch16_224", str(swiglu), kwargs={**options, "act_layer": "os.system"})


def test_timm_encoder_reads_the_image_trunk_of_a_conch_layout_checkpoint(tmp_path):
    """CONCH's pytorch_model.bin holds its image trunk (a timm ViT, no pooling) under visual.trunk., beside the
    text tower and the attention pooler: ``prefix`` reads the trunk alone, whole."""
    import timm

    from histexpr.errors import ConfigError
    from histexpr.models.pretrained_features import TimmFeatures

    trunk = timm.create_model("vit_tiny_patch16_224", num_classes=0, global_pool="", img_size=64).eval()
    state = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
    state |= {"visual.attn_pool_contrast.query": torch.randn(1, 192), "text.token_embedding.weight": torch.randn(9, 8),
              "logit_scale": torch.tensor(2.0)}
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(state, ckpt)
    enc = TimmFeatures("vit_tiny_patch16_224", str(ckpt), kwargs={"img_size": 64}, prefix="visual.trunk.")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval().encode(x), trunk.forward_features((x - enc.mean) / enc.std)[:, 0])
    with pytest.raises(ConfigError, match="pytorch_model.bin: .*no tensor of this checkpoint matches"):
        TimmFeatures("vit_tiny_patch16_224", str(ckpt), kwargs={"img_size": 64})
    with pytest.raises(ConfigError, match="no key of this checkpoint starts with the prefix 'visual.encoder.'"):
        TimmFeatures("vit_tiny_patch16_224", str(ckpt), kwargs={"img_size": 64}, prefix="visual.encoder.")
