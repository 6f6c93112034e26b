"""Attention sampling: the sampler, the estimators, the entropy term, lazy patch reading, learning on real images."""

import itertools

import numpy as np
import pytest
import torch

from histexpr.data.demo import write_pyramid_tiff
from histexpr.data.megapixel import (
    ArrayImage,
    SlideImage,
    build_image_sheet,
    patch_corners,
    stratified_folds,
    view_shape,
)
from histexpr.models.ats import (
    AttentionSampling,
    build_classifier,
    expectation_weights,
    gumbel_topk,
    log_prob_without_replacement,
    neg_entropy,
    parse_setting,
    uniform_partner,
)
from histexpr.train.classify import (
    ClassifyConfig,
    classify_image,
    draw_seed,
    evaluate,
    forward,
    gather_patches,
    load_images,
    redraw,
    step_loss,
    to_float,
)

P = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)


def ordered_draws(p: torch.Tensor, n: int):
    """Every ordered draw of ``n`` distinct cells and its probability under sequential sampling."""
    for draw in itertools.permutations(range(len(p)), n):
        prob, left = 1.0, 1.0
        for i in draw:
            prob *= float(p[i]) / left
            left -= float(p[i])
        yield draw, prob


def test_gumbel_topk_never_repeats_and_matches_inclusion_frequencies():
    n, trials = 2, 40000
    gen = torch.Generator().manual_seed(0)
    draws = gumbel_topk(P.float().expand(trials, -1).contiguous(), n, gen)
    assert all(len(set(d)) == n for d in draws.tolist())
    exact_first = P.numpy()
    exact_incl = np.zeros(len(P))
    for draw, prob in ordered_draws(P, n):
        for i in draw:
            exact_incl[i] += prob
    for observed, exact in ((np.bincount(draws[:, 0].numpy(), minlength=5) / trials, exact_first),
                            (np.bincount(draws.flatten().numpy(), minlength=5) / trials, exact_incl)):
        sd = np.sqrt(exact * (1 - exact) / trials)
        assert np.all(np.abs(observed - exact) < 4 * sd), (observed, exact)


def test_draw_probabilities_sum_to_one_and_match_the_log_prob():
    draws, probs = zip(*ordered_draws(P, 3))
    assert sum(probs) == pytest.approx(1.0)
    logp = log_prob_without_replacement(P.expand(len(draws), -1), torch.tensor(draws))
    assert torch.allclose(logp.exp(), torch.tensor(probs, dtype=torch.float64))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_expectation_estimator_is_unbiased_exhaustively(n):
    f = torch.randn(len(P), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for draw, prob in ordered_draws(P, n):
        idx = torch.tensor([draw])
        w = expectation_weights(P[None].gather(1, idx))
        expected += prob * (w[0, :, None] * f[list(draw)]).sum(0)
    assert torch.allclose(expected, (P[:, None] * f).sum(0))


def test_entropy_term_pushes_attention_towards_uniform():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]], requires_grad=True)
    a = torch.softmax(logits, -1).view(1, 2, 2)
    (0.1 * neg_entropy(a)).sum().backward()  # the seed's H = Σ a log a, added to the loss with λ = 0.1 > 0
    # gradient descent lowers the most attended cell and raises the least attended: entropy goes up
    assert logits.grad[0, 0] > 0 and logits.grad[0, 2] < 0
    after = torch.softmax(logits.detach() - 1.0 * logits.grad, -1)
    before = torch.softmax(logits.detach(), -1)
    assert -(after * after.log()).sum() > -(before * before.log()).sum()


def test_reinforce_moves_attention_towards_low_loss_draws():
    torch.manual_seed(0)
    model = AttentionSampling(3, 1, 5, estimator="reinforce", entropy=0.0)
    view = torch.randn(4, 3, 6, 6)
    a = model.attend(view)
    idx = torch.zeros(4, 1, dtype=torch.long)  # every image drew cell 0 ...
    logits = torch.zeros(4, 3, requires_grad=True)
    y = torch.tensor([0, 0, 0, 0])
    loss, ce = step_loss(model, logits, y, a, idx, baseline=float(ce_value(logits, y)) + 1.0)  # ... and did better
    loss.backward()
    opt = torch.optim.SGD(model.attention.parameters(), lr=0.5)
    opt.step()
    assert model.attend(view)[:, 0, 0].mean() > a[:, 0, 0].mean()


def test_reinforce_weights_are_the_seeds_ratio_or_the_unbiased_estimators_without_gradient():
    torch.manual_seed(0)
    view = torch.randn(3, 3, 6, 8)
    seed = AttentionSampling(3, 5, 4, estimator="reinforce", reinforce_weights="attention")
    unbiased = AttentionSampling(3, 5, 4, estimator="reinforce")  # the default
    unbiased.load_state_dict(seed.state_dict())
    a = seed.attend(view)
    idx = seed.sample(a, torch.Generator().manual_seed(1))
    p = a.reshape(3, -1).gather(1, idx)
    w_seed, w_unbiased = seed.weights(a, idx), unbiased.weights(a, idx)
    torch.testing.assert_close(w_seed, p / p.sum(1, keepdim=True))
    torch.testing.assert_close(w_unbiased, expectation_weights(p))
    assert not w_seed.requires_grad and not w_unbiased.requires_grad  # the attention learns by the policy gradient
    with pytest.raises(ValueError, match="reinforce_weights"):
        AttentionSampling(3, 5, 4, reinforce_weights="ratio")


def ce_value(logits, y):
    return torch.nn.functional.cross_entropy(logits.detach(), y)


def test_settings_carry_the_estimator_and_patch_corners():
    assert parse_setting("ats-p15-n20-reinforce") == {"kind": "ats", "patch_px": 15, "n_patches": 20,
                                                      "estimator": "reinforce"}
    assert parse_setting("ats-p15-n20")["estimator"] is None  # older names: ats.estimator decides
    assert parse_setting("uniform-p15-n20") == {"kind": "uniform", "patch_px": 15, "n_patches": 20}
    assert parse_setting("cnn") == {"kind": "cnn"}
    for bad in ("ats-15-20", "ats-p15-n20-sgd", "uniform-p15-n20-reinforce", "ats-p15-n20-reinforce-x", "ats-px-n2"):
        with pytest.raises(ValueError):
            parse_setting(bad)
    # the name wins over the config's estimator, so both estimators run in one study
    assert build_classifier("ats-p8-n3-reinforce", 3, estimator="expectation").estimator == "reinforce"
    assert build_classifier("ats-p8-n3-expectation", 3, estimator="reinforce").estimator == "expectation"
    assert build_classifier("ats-p8-n3", 3, estimator="reinforce").estimator == "reinforce"
    assert uniform_partner("ats-p8-n3-reinforce") == "uniform-p8-n3" and uniform_partner("cnn") is None
    corners = patch_corners(np.array([0, 3, 11]), (3, 4), (300, 400), 32)
    assert corners.tolist() == [[34, 34], [34, 334], [234, 334]]  # centred on cells, kept inside the image
    assert (patch_corners(np.arange(12), (3, 4), (300, 400), 400) == [0, 0]).all()


@pytest.fixture(scope="module")
def lymphoma(lymphoma_root):
    sheet = build_image_sheet(lymphoma_root)
    return sheet, load_images(sheet["image"].iloc[::10].tolist())


def test_image_sheet_and_stratified_folds_on_the_real_images(lymphoma):
    sheet, _ = lymphoma
    assert sheet["label"].value_counts().to_dict() == {"FL": 112, "MCL": 98, "CLL": 91}
    folds = stratified_folds(sheet["label"].to_numpy(), 5, 0.2, 0)
    tests = folds[folds.split == "test"]
    assert sorted(tests["index"]) == list(range(len(sheet)))  # every image tested exactly once
    for _, f in folds.groupby("fold"):
        parts = [set(f.loc[f.split == s, "index"]) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        frac = sheet.loc[sorted(parts[2]), "label"].value_counts(normalize=True)
        assert (abs(frac - sheet["label"].value_counts(normalize=True)) < 0.05).all()  # stratified


def test_slide_patches_equal_in_memory_patches(lymphoma, tmp_path):
    _, images = lymphoma
    img = np.concatenate([np.concatenate(list(images[i:i + 3]), 1) for i in (0, 3)], 0)  # a 624 x 1251 mosaic
    path = tmp_path / "mosaic.tif"
    write_pyramid_tiff(str(path), img, 0.5, levels=3)
    slide, memory = SlideImage(path), ArrayImage(img)
    assert (slide.height, slide.width) == img.shape[:2]
    corners = patch_corners(np.array([0, 17, 250, 1000, 2000, view_shape(*img.shape[:2], 0.1)[0] * view_shape(
        *img.shape[:2], 0.1)[1] - 1]), view_shape(*img.shape[:2], 0.1), img.shape[:2], 32)
    assert np.array_equal(slide.patches(corners, 32), memory.patches(corners, 32))
    assert slide.pixels_read == len(corners) * 32 * 32  # only the patches were read
    v_slide, v_mem = slide.view(0.25), memory.view(0.25)
    assert v_slide.shape == v_mem.shape and np.abs(v_slide.astype(int) - v_mem).mean() < 3
    # and the batched tensor path cuts the same pixels
    x = to_float(img[None], torch.device("cpu"))
    got = gather_patches(x, torch.as_tensor(corners)[None], 32)[0]
    assert torch.equal(got, to_float(memory.patches(corners, 32), torch.device("cpu")))
    slide.close()


def test_a_trained_model_classifies_a_slide_read_lazily(lymphoma, tmp_path):
    _, images = lymphoma
    path = tmp_path / "one.tif"
    write_pyramid_tiff(str(path), images[0], 0.5, levels=2)
    torch.manual_seed(0)
    model = build_classifier("ats-p15-n5", 3).eval()
    classes = ["CLL", "FL", "MCL"]
    slide = SlideImage(path)
    a = classify_image(model, slide, classes, 0.25, torch.Generator().manual_seed(0))
    b = classify_image(model, ArrayImage(images[0]), classes, 0.25, torch.Generator().manual_seed(0))
    assert a["corners"].shape == (5, 2) and len(np.unique(a["corners"], axis=0)) == 5
    assert a["probs"].shape == (3,) and abs(a["probs"].sum() - 1) < 1e-5
    assert np.abs(a["probs"] - b["probs"]).max() < 0.05  # the same model through either reader
    slide.close()


# expectation, uniform and cnn: test_ats_learning.py fits 12 images to 100% in at most 100 steps
@pytest.mark.parametrize("setting,estimator", [("ats-p15-n5", "reinforce")])
def test_a_few_steps_lower_the_loss_on_real_images(lymphoma, setting, estimator):
    sheet, images = lymphoma
    labels = sheet["label"].iloc[::10].map({"CLL": 0, "FL": 1, "MCL": 2}).to_numpy()
    torch.manual_seed(0)
    model = build_classifier(setting, 3, estimator)
    cfg = ClassifyConfig(view_scale=0.25)
    opts = [torch.optim.Adam(model.parameters(), lr=3e-3)]
    x, y = to_float(images[:16], torch.device("cpu")), torch.as_tensor(labels[:16])
    losses = []
    for step in range(25):
        logits, a, idx = forward(model, x, cfg, torch.Generator().manual_seed(step))
        loss, ce = step_loss(model, logits, y, a, idx, None)
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
        losses.append(float(ce.detach().mean()))
    assert np.mean(losses[-5:]) < losses[0] - 0.05, [round(v, 3) for v in losses]


def test_a_reinforce_model_saved_before_reinforce_weights_loads_with_the_seeds_weights(tmp_path):
    from histexpr.train.classify import load_classifier

    ats = {"estimator": "reinforce", "entropy": 0.0}  # the ats block of a model.pt written before the option
    model = build_classifier("ats-p8-n3", 3, **ats)
    for name, block in (("old", ats), ("new", {**ats, "reinforce_weights": "unbiased"})):
        torch.save({"setting": "ats-p8-n3", "classes": ["CLL", "FL", "MCL"], "ats": block, "view_scale": 0.25,
                    "state_dict": model.state_dict()}, tmp_path / f"{name}.pt")
    assert load_classifier(str(tmp_path / "old.pt"))[0].reinforce_weights == "attention"
    assert load_classifier(str(tmp_path / "new.pt"))[0].reinforce_weights == "unbiased"


def test_a_uniform_view_gets_uniform_attention_at_the_borders_too():
    """The attention network pads by repeating the edge: a featureless view has no border for it to light up
    (with zero padding the border cells differed from the inside)."""
    torch.manual_seed(0)
    net = AttentionSampling(3, 5, 8).attention.eval()
    a = net(torch.full((1, 3, 20, 30), 0.3))[0]
    assert torch.allclose(a, torch.full_like(a, 1 / 600), rtol=1e-4)


def test_evaluation_draws_are_reproducible_by_seed_and_independent_of_the_batch(lymphoma):
    sheet, images = lymphoma
    labels = sheet["label"].iloc[::10].map({"CLL": 0, "FL": 1, "MCL": 2}).to_numpy()
    torch.manual_seed(0)
    model = build_classifier("ats-p15-n5-reinforce", 3)
    cfg = ClassifyConfig(view_scale=0.25, batch_size=4, eval_seed=7)
    rows, keys = np.arange(10), np.arange(100, 110)
    a = evaluate(model, images, rows, labels, cfg, torch.device("cpu"), keys=keys, draws=4)
    b = evaluate(model, images, rows, labels, cfg, torch.device("cpu"), keys=keys, draws=4)
    assert a["probs"].shape == (4, 10, 3) and np.array_equal(a["probs"], b["probs"])  # the same seed, the same draws
    assert not np.allclose(a["probs"][0], a["probs"][1])  # draws differ from each other
    assert a["accuracy"] == pytest.approx(float((a["probs"].argmax(-1) == labels[rows]).mean()))
    # an image's draw is its own: another batch size and order give it the same probabilities
    shuffled = evaluate(model, images, rows[::-1].copy(), labels, ClassifyConfig(view_scale=0.25, batch_size=3, eval_seed=7),
                        torch.device("cpu"), keys=keys[::-1].copy(), draws=4)
    assert np.allclose(shuffled["probs"][:, ::-1], a["probs"], atol=1e-5)
    other = evaluate(model, images, rows, labels, ClassifyConfig(view_scale=0.25, batch_size=4, eval_seed=8),
                     torch.device("cpu"), keys=keys, draws=4)
    assert not np.allclose(other["probs"], a["probs"])  # another evaluation seed, other draws
    # the figures redraw the table's draw: same probabilities for draw r of image k
    for r in (0, 3):
        one = redraw(model, images[2], 102, 0.25, 7, draw=r)
        assert np.allclose(one["probs"], a["probs"][r, 2], atol=1e-5) and one["corners"].shape == (5, 2)
    assert draw_seed(7, 0, 102) != draw_seed(7, 1, 102) != draw_seed(7, 0, 103)
    assert a["max_over_mean"].shape == (10,) and (a["max_over_mean"] >= 1).all()
    assert ((0 < a["entropy_ratio"]) & (a["entropy_ratio"] <= 1 + 1e-9)).all()
    cnn = evaluate(build_classifier("cnn", 3), images, rows, labels, cfg, torch.device("cpu"), keys=keys, draws=4)
    assert cnn["probs"].shape == (1, 10, 3) and "max_over_mean" not in cnn  # nothing sampled: one evaluation
