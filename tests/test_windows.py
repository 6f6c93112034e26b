"""The window store: JPEG windows of real HER2ST tiles, read back lazily, in any order, beside .npy files."""

import numpy as np
import pytest
import torch
from test_real_inputs import TILING, st_row

from histexpr.data.fold import FoldData
from histexpr.data.section import tile_section
from histexpr.data.windows import JpegWindows, WindowStore, psnr, tile_sample, write_windows
from histexpr.train.loop import DeviceFold, make_batch


@pytest.fixture(scope="module")
def c2_windows(her2st_root, tmp_path_factory):
    """HER2ST C2's 187 windows at the workflow's 224 px."""
    row = st_row(her2st_root, tmp_path_factory.mktemp("c2"))
    return tile_section(row, TILING | {"window_px": 224}).windows


def test_jpeg_store_holds_her2st_windows_in_a_fifth_of_the_bytes_at_40_db(c2_windows, tmp_path):
    w = c2_windows
    assert w.shape == (187, 224, 224, 3)
    stats = write_windows(w, tmp_path / "C2.jpg.h5", "jpeg", quality=90)
    assert stats["bytes"] <= 0.20 * w.nbytes, stats
    back = WindowStore([tmp_path / "C2.jpg.h5"])[np.arange(len(w))]
    p = psnr(w, back)
    assert p.min() >= 40.0 and abs(p.min() - stats["psnr_min_db"]) < 1e-6, (p.min(), stats)
    assert not np.array_equal(back, w)  # lossy, and the PSNR above is what it costs


def test_lossless_npy_and_lossy_jpeg_stores_mix_in_one_study(c2_windows, tmp_path):
    w = c2_windows[:60]
    write_windows(w[:25], tmp_path / "A.npy", "npy")
    write_windows(w[25:], tmp_path / "B.jpg.h5", "jpeg", quality=95)
    store = WindowStore([tmp_path / "A.npy", tmp_path / "B.jpg.h5"])
    assert store.shape == w.shape and store.compressed
    full = store[np.arange(60)]
    np.testing.assert_array_equal(full[:25], w[:25])  # .npy: exact
    assert psnr(w[25:], full[25:]).min() > 40
    rows = np.random.default_rng(0).permutation(60)[:17]  # any order, across both files: the same windows
    np.testing.assert_array_equal(store[rows], full[rows])
    np.testing.assert_array_equal(WindowStore([tmp_path / "A.npy", tmp_path / "B.jpg.h5"], in_memory=True)[rows],
                                  full[rows])
    assert [tile_sample(p) for p in ("t/A1.npy", "t/A1.jpg.h5", "t/x.y.npy")] == ["A1", "A1", "x.y"]


def test_the_training_loop_reads_a_jpeg_store_lazily_and_device_resident(c2_windows, tmp_path):
    w = c2_windows[:40]
    write_windows(w, tmp_path / "C2.jpg.h5", "jpeg")
    store = WindowStore([tmp_path / "C2.jpg.h5"])
    data = FoldData(np.zeros((40, 3), np.float32), np.array(["train"] * 40), ["a", "b", "c"], store)
    rows = np.array([5, 1, 33])
    lazy = make_batch(data, rows, torch.device("cpu"), augment=False, generator=None)["image"]
    resident = DeviceFold(data, torch.device("cpu"))
    assert isinstance(resident.windows, torch.Tensor) and resident.windows.shape == (40, 224, 224, 3)
    eager = make_batch(resident, rows, torch.device("cpu"), augment=False, generator=None)["image"]
    torch.testing.assert_close(lazy, eager, rtol=0, atol=0)


def test_a_file_that_is_not_a_window_store_is_named(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.jpg.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"x\.jpg\.h5: not a histexpr JPEG window store"):
        JpegWindows(tmp_path / "x.jpg.h5")
    (tmp_path / "y.jpg.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"y\.jpg\.h5: cannot read the window store"):
        JpegWindows(tmp_path / "y.jpg.h5")
    with pytest.raises(ValueError, match="uint8"):
        write_windows(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "z.npy")


def test_psnr_of_full_size_windows_matches_the_float_definition():
    """224-px windows: the squared error sums past 2^31, so an int32 accumulator would wrap."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    b = np.stack([np.full_like(a[0], 255), a[1], 255 - a[2]])
    a[0] = 0
    ref = 10 * np.log10(255.0**2 / ((a[2].astype(float) - b[2]) ** 2).mean())
    got = psnr(a, b)
    assert got[0] == pytest.approx(0.0) and got[1] == np.inf
    assert got[2] == pytest.approx(ref, abs=1e-9)


def test_a_corrupt_or_foreign_window_file_is_one_error_naming_it(c2_windows, tmp_path):
    import h5py

    from histexpr.data.windows import open_windows
    from histexpr.errors import InputError

    path = tmp_path / "C2.jpg.h5"
    write_windows(c2_windows[:8], path, "jpeg")
    with h5py.File(path, "r+") as f:  # zero a run of the first window's JPEG header
        f["jpeg"][20:400] = 0
    store = open_windows(path)
    assert store[[5]].shape == (1, 224, 224, 3)  # the other windows still read
    with pytest.raises(InputError, match=r"C2.jpg.h5: windows 0..1 do not decode as 224-px JPEGs .*tile the sample"):
        store[[0, 1]]
    (tmp_path / "B1.jpg.h5").write_text("not an HDF5 file")
    with pytest.raises(InputError, match="B1.jpg.h5: cannot read the window store"):
        open_windows(tmp_path / "B1.jpg.h5")
    with h5py.File(tmp_path / "D1.jpg.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="D1.jpg.h5: not a histexpr JPEG window store"):
        open_windows(tmp_path / "D1.jpg.h5")
