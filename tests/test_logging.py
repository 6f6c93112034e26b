"""What a rule's script shows in the terminal and writes to its log; how scripts find the library."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = """
import logging, sys
from histexpr.utils import log_epoch, progress, setup_logging
log = setup_logging(sys.argv[1])
log.info("detail for the log only")
logging.getLogger("faiss.loader").info("Loading faiss with AVX512 support.")
for epoch in (1, 2):
    log_epoch(epoch, 4, 3.0 * epoch, f"val PCC@M 0.{epoch}")
progress.info("kept epoch 2 of 2 (6 s)")
for epoch in range(1, 16):
    log_epoch(epoch, 15, 1.0 * epoch, "loss 0.5")
import anndata as ad, numpy as np, pandas as pd
ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame({"sample": ["a", "a", "b"]}, index=["0", "1", "2"])).write_h5ad(sys.argv[2])
"""


def test_progress_lines_reach_the_terminal_and_the_log(tmp_path):
    log = tmp_path / "results" / "s" / "logs" / "train" / "vit" / "raw" / "fold_1.log"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(log), str(tmp_path / "a.h5ad")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    terminal = res.stderr.splitlines() + res.stdout.splitlines()
    # a long run shows its first epoch, every quarter and the last; anndata's notes stay out of the terminal
    assert terminal == ["[train/vit/raw/fold_1] epoch 1/4: val PCC@M 0.1; 3.0 s/epoch, ETA 9 s",
                        "[train/vit/raw/fold_1] epoch 2/4: val PCC@M 0.2; 3.0 s/epoch, ETA 6 s",
                        "[train/vit/raw/fold_1] kept epoch 2 of 2 (6 s)"] + [
        f"[train/vit/raw/fold_1] epoch {e}/15: loss 0.5; 1.0 s/epoch, ETA {15 - e} s" for e in (1, 4, 8, 12, 15)]
    text = log.read_text()
    assert "detail for the log only" in text and "epoch 2/4: val PCC@M 0.2" in text
    assert all(f"epoch {e}/15: loss 0.5" in text for e in range(1, 16))  # the log has every epoch
    assert "storing 'sample' as categorical" in text
    assert "AVX512" not in text  # faiss's loader notes are not shown


def test_scripts_import_the_library_through_their_own_folder():
    """Snakemake puts a script's folder on sys.path; scripts/histexpr links to src/histexpr, so a conda env
    without the package still imports it (python -S: no site-packages, nothing installed)."""
    link = REPO / "scripts" / "histexpr"
    assert link.is_symlink() and link.resolve() == (REPO / "src" / "histexpr").resolve()
    res = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.append({str(REPO / 'scripts')!r}); "
                          "import histexpr.errors as e; print(e.__file__)"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(REPO / "scripts" / "histexpr"))
    for script in (REPO / "scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script
