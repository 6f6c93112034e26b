"""The training loop's device-resident data path and speed settings give the plain path's results."""

import numpy as np
import pytest
import torch

from histexpr.data.fold import FoldData
from histexpr.models import get_model
from histexpr.train.augment import colour_jitter
from histexpr.train.loop import DeviceFold, TrainConfig, fit, make_batch, predict, resolve_speed

EGN = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "eb_heads": 2, "eb_head_dim": 8,
       "frequency": 1, "n_exemplars": 3}


def _fold(n=96, genes=6, px=16, seed=0) -> FoldData:
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, 256, (n, px, px, 3), dtype=np.uint8)
    brightness = windows.mean(axis=(1, 2, 3)) / 255.0
    targets = (brightness[:, None] * rng.uniform(0.5, 1.5, genes) + 0.1 * rng.normal(size=(n, genes)))
    split = np.array(["train"] * 64 + ["val"] * 16 + ["test"] * 16)
    emb = rng.normal(size=(n, 12)).astype(np.float32)
    ex = rng.integers(0, 64, (n, 4))
    ex[::7, -1] = -1  # some missing exemplars
    return FoldData(targets.astype(np.float32), split, [f"g{i}" for i in range(genes)], windows=windows,
                    embeddings=emb, exemplar_index=ex, exemplar_distance=np.zeros(ex.shape, np.float32))


def _train(data, **overrides):
    torch.manual_seed(0)
    model = get_model("egn").factory(data.n_genes, EGN, img_size=16, d_code=12)
    cfg = TrainConfig(epochs=3, batch_size=16, eval_batch_size=32, lr=2e-3, warmup_epochs=0.5, patience=10,
                      colour_jitter=0.1, **overrides)
    model, hist = fit(model, data, cfg, torch.device("cpu"))
    return hist, predict(model, data, data.index("test"), cfg, torch.device("cpu"))


def test_device_resident_windows_give_the_host_paths_results_exactly():
    data = _fold()
    host_hist, host_pred = _train(data, windows_on_device=False)
    dev_hist, dev_pred = _train(data, windows_on_device=True)
    cols = ["train_loss", "train_mse", "val_mse", "val_pcc_m"]
    np.testing.assert_array_equal(host_hist[cols].to_numpy(), dev_hist[cols].to_numpy())
    np.testing.assert_array_equal(host_pred, dev_pred)


def test_device_fold_batches_equal_host_batches():
    data = _fold()
    rows = np.array([3, 70, 7, 21, 0])
    dev = DeviceFold(data, torch.device("cpu"), windows=True)
    assert isinstance(dev.windows, torch.Tensor) and dev.windows.dtype == torch.uint8
    a = make_batch(data, rows, torch.device("cpu"), True, torch.Generator().manual_seed(1), 0.2)
    b = make_batch(dev, rows, torch.device("cpu"), True, torch.Generator().manual_seed(1), 0.2)
    assert a.keys() == b.keys() == {"target", "image", "embedding", "exemplar_mask", "exemplar_target",
                                    "exemplar_embedding"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not b["exemplar_mask"][rows == 7].all()  # row 7 has a missing exemplar
    cl = make_batch(dev, rows, torch.device("cpu"), False, None, channels_last=True)["image"]
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_trains_and_returns_fp32():
    data = _fold()
    hist, pred = _train(data, precision="bf16")
    assert pred.dtype == np.float32 and np.isfinite(pred).all()
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]


def test_speed_settings_default_to_plain_fp32_on_the_cpu():
    speed = resolve_speed(TrainConfig(), torch.device("cpu"), window_bytes=10**9)
    assert speed == {"bf16": False, "channels_last": False, "fused_adamw": False, "compile": False,
                     "windows_on_device": False}
    assert resolve_speed(TrainConfig(precision="bf16", windows_on_device=True), torch.device("cpu"))["bf16"]


def test_colour_jitter_stays_in_range_and_is_seeded():
    x = torch.rand(8, 3, 10, 10)
    a = colour_jitter(x.clone(), 0.3, torch.Generator().manual_seed(5))
    b = colour_jitter(x.clone(), 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    same = colour_jitter(x.clone(), 0.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(same, x)


def test_colour_jitter_in_one_pass_equals_the_three_steps():
    """The fused map is brightness, then contrast about the image mean, then saturation about the grey."""
    x = torch.rand(6, 3, 12, 9, dtype=torch.float64)
    f = 1 + 0.3 * (2 * torch.rand((3, 6, 1, 1, 1), generator=torch.Generator().manual_seed(2), dtype=torch.float32) - 1)
    b, c, s = f.double()
    y = x * b
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * c + mean
    grey = 0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
    y = ((y - grey) * s + grey).clamp(0, 1)
    torch.testing.assert_close(colour_jitter(x.clone(), 0.3, torch.Generator().manual_seed(2)), y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the lent device machine)")
def test_gpu_path_metrics_match_the_cpu_path():
    """Same fold and seed on the GPU (device-resident windows, fp32) and on the CPU: predictions agree to 1e-3."""
    data = _fold()
    _, cpu_pred = _train(data)
    torch.backends.cudnn.allow_tf32 = False  # true fp32 convolutions, as on the CPU
    torch.manual_seed(0)
    model = get_model("egn").factory(data.n_genes, EGN, img_size=16, d_code=12)
    cfg = TrainConfig(epochs=3, batch_size=16, eval_batch_size=32, lr=2e-3, warmup_epochs=0.5, patience=10,
                      colour_jitter=0.1, precision="fp32", channels_last=False, fused_adamw=False)
    model, _ = fit(model, data, cfg, torch.device("cuda"))
    gpu_pred = predict(model, data, data.index("test"), cfg, torch.device("cuda"))
    np.testing.assert_allclose(gpu_pred, cpu_pred, atol=1e-3)
