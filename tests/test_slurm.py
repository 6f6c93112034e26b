"""The demo study submitted through profiles/slurm to a real SLURM cluster gives the local run's metrics.

Needs a running cluster: `make test-slurm` starts a single-node one on localhost (tests/slurm/cluster.sh),
runs this file and stops the daemons. Under plain `make test` these tests skip unless a cluster answers.
"""

import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from test_workflow import TINY_TRAINING

from histexpr.models.catalog import uses_gpu

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

PROFILE = REPO / "profiles" / "slurm"


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and any(s.strip() in {"idle", "mix", "alloc"} for s in res.stdout.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not _cluster_up():
        pytest.skip("no SLURM cluster answers sinfo; `make test-slurm` starts one on localhost and runs this file")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["demo"].update({"patients": 3, "sections_per_patient": 1, "image_px": 900})
    cfg.update(TINY_TRAINING)
    cfg["models"] = ["knn", "vit"]
    out = {}
    for name, args in {
        "local": ["--profile", str(REPO / "profiles" / "local")],
        # The test cluster has accounting off, so job states come from squeue (see profiles/slurm).
        "slurm": ["--profile", str(PROFILE), "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs"],
    }.items():
        work = tmp_path_factory.mktemp(name)
        path = work / "demo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = run_snakemake(work, path, *args, timeout=1800, one_thread=False)  # the profiles' threads
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-8000:]
        out[name] = (work, res.stdout + res.stderr)
    return out


def test_slurm_run_gives_the_local_metrics(runs):
    local, slurm = (pd.read_csv(runs[k][0] / "results" / "demo" / "metrics.tsv", sep="\t") for k in ("local", "slurm"))
    assert set(slurm["model"]) == {"knn", "vit", "colour_ridge", "depth_oracle"}
    # the SLURM jobs run 8 threads where the local ones run 1: float sums in another order, so equal to 1e-6
    pd.testing.assert_frame_equal(slurm, local, check_exact=False, rtol=1e-6, atol=1e-6)


def test_every_rule_ran_as_a_slurm_job_with_the_profiles_resources(runs):
    work, log = runs["slurm"]
    # The plugin logs to .snakemake/slurm_logs/rule_<rule>/[<wildcard values>/]<jobid>.log
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/(?:(\S+?)/)?\d+\.log\)", log)
    rules = {rule for _, rule, _ in submitted}
    assert {"make_demo", "tile", "folds", "expression", "train_extractor", "embed", "exemplars", "train",
            "fit", "evaluate", "aggregate"} <= rules, rules
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
    assert {rule for rule, res in profile.items() if res.get("gpu")} >= {"train_extractor", "embed"}
    trained = set()
    for jobid, rule, wildcards in submitted:
        fields = dict(f.split("=", 1) for f in subprocess.run(
            ["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True, check=True).stdout.split()
            if "=" in f)
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (rule, fields)
        assert int(fields["NumCPUs"]) == profile[rule].get("cpus_per_task", 1), (rule, fields["NumCPUs"])
        gpu = profile[rule].get("gpu", 0)
        if rule in ("train", "fit"):  # train asks for a GPU itself, for networks; fit (knn, colour_ridge) never
            model = wildcards.split("_raw_")[0]
            trained.add(model)
            gpu = int(uses_gpu(model))
            assert (rule == "train") == uses_gpu(model), (rule, model)
        assert ("gres:gpu:1" in fields.get("TresPerJob", "")) == (gpu == 1), (rule, fields.get("TresPerJob"))
        assert _minutes(fields["TimeLimit"]) == profile[rule]["runtime"], (rule, fields["TimeLimit"])
    assert trained == {"knn", "vit", "colour_ridge", "depth_oracle"}, trained


def _minutes(limit: str) -> int:
    """SLURM's [days-]hours:minutes:seconds or minutes:seconds, in minutes."""
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes = (parts[0], parts[1]) if len(parts) == 3 else (0, parts[0])
    return int(days or 0) * 1440 + hours * 60 + minutes
