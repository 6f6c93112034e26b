"""Clone the HER2ST repository (almaan/her2st) when no local copy is configured."""

import os
import shutil
import subprocess

from histexpr.errors import InputError
from histexpr.utils import setup_logging

log = setup_logging(snakemake.log[0])

out = snakemake.output[0]
tmp = out + ".partial"
shutil.rmtree(tmp, ignore_errors=True)
repo = snakemake.params.repository or "https://github.com/almaan/her2st"
log.info("cloning %s into %s", repo, out)
res = subprocess.run(["git", "clone", "--depth", "1", repo, tmp], capture_output=True, text=True)
log.info(res.stdout + res.stderr)
if res.returncode != 0:
    shutil.rmtree(tmp, ignore_errors=True)
    raise InputError(repo, f"git clone failed (no network?). Point samples.root in the config at an "
                     f"existing copy of the HER2ST repository instead.\n{res.stderr}")
os.replace(tmp, out)
