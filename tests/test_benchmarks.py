"""The benchmark scripts run (tiny preset, CPU); their figures are read by people, not asserted."""

import subprocess
import sys

from conftest import REPO


def test_train_throughput_smoke():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--preset", "tiny",
                          "--device", "cpu", "--steps", "2"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line.split() for line in res.stdout.splitlines() if line.strip()]
    header = next(line for line in lines if line[0] == "model")
    rows = {line[0]: dict(zip(header, line)) for line in lines[lines.index(header) + 1:]}
    assert {"egn", "vit", "stnet", "tcgn", "ats"} <= set(rows)
    for name in ("egn", "vit", "stnet"):  # each beside its bare timm backbone, measured in the same run
        assert float(rows[name]["bare_step_img_s"].replace(",", "")) > 0
    assert float(rows["tcgn"]["epoch_img_s"].replace(",", "")) > 0


def test_model_size_smoke():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "model_size.py"), "--preset", "tiny"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {line.split()[0] for line in res.stdout.splitlines()[1:] if line.strip()}
    assert {"tcgn", "cyclemlp", "mpvit", "retro", "vitexp", "egn"} <= rows


def test_ats_wsi_smoke():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ats_wsi.py"), "--size", "3000", "--n", "5"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    header, row = [line.split() for line in res.stdout.splitlines()[-2:]]
    values = dict(zip(header, row))
    assert values["N"] == "5" and int(values["pixels_read_per_image"]) < 3000 * 3000 / 10
