"""Every shell and Python block of the README and docs/ runs as printed, so a stale snippet fails CI.

A block is marked on the line before its fence:

* ``<!-- runnable -->``: run as is in a finished run of the catalog's .test study (Python blocks, with a
  non-interactive matplotlib);
* ``<!-- runnable: dry -->``: each ``snakemake`` command runs as a dry run (``-n``) there: targets, options,
  config files and ``--config`` values parse and plan (a real run is minutes to hours);
* ``<!-- not run: <why> -->``: a template or a command that needs what CI has not (a cluster, the network).

An unmarked ``bash``/``python`` block fails the test, so no new block escapes.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.workflow

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- (?P<mark>runnable(?:: dry)?|not run: [^>]+) -->\n)?```(?P<lang>bash|python|sh)\n"
                   r"(?P<body>.*?)\n```", re.S)


def blocks():
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start("lang")].count("\n") + 1
            yield pytest.param(page.relative_to(REPO), line, m["lang"], m["mark"], m["body"],
                               id=f"{page.relative_to(REPO)}:{line}")


def commands(body: str) -> list[str]:
    """The shell block's commands: comments dropped, continuation lines joined."""
    out, cur = [], ""
    for raw in body.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


def _needs_shared(text: str) -> bool:
    return "her2st" in text or "lymphoma" in text


@pytest.mark.parametrize("page, line, lang, mark, body", list(blocks()))
def test_a_doc_block_runs_as_printed(page, line, lang, mark, body, tiny_demo_run):
    assert mark, f"{page}:{line}: mark the {lang} block <!-- runnable -->, <!-- runnable: dry --> or <!-- not run: why -->"
    if mark.startswith("not run"):
        pytest.skip(f"{page}:{line}: {mark}")
    work, _ = tiny_demo_run
    if _needs_shared(body) and not SHARED_DATA.exists():
        pytest.skip("needs ../shared/data (HER2ST, lymphoma), absent here")
    her2st = work / "resources" / "her2st"
    if "her2st" in body and not her2st.exists():
        her2st.symlink_to(SHARED_DATA / "her2st")  # as fetch_her2st would have cloned it
    env = {**os.environ, "MPLBACKEND": "Agg", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if lang == "python":
        res = subprocess.run([sys.executable, "-c", body], cwd=work, capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, f"{page}:{line}\n{res.stderr[-3000:]}"
        return
    for cmd in commands(body):
        args = shlex.split(cmd)
        assert args[0] in ("snakemake", "python", "make"), f"{page}:{line}: {cmd}"
        if args[0] == "make":
            continue  # make demo / make test: what CI itself runs
        if args[0] == "snakemake":
            args = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args[1:]]
            args = ["2" if a == "N" else a for a in args]  # --cores N
            if mark == "runnable: dry":
                args.insert(5, "-n")
            if "config/her2st.yaml" in args:
                # the shared subset has 2 of HER2ST's 8 patients: leaving one out leaves EGN's training windows
                # no exemplar under exclude: patient, which the workflow (rightly) refuses
                at = args.index("--config") + 1 if "--config" in args else len(args)
                args[at:at] = [*([] if "--config" in args else ["--config"]), "exemplars={exclude: none}"]
        else:
            args[0] = sys.executable
        res = subprocess.run(args, cwd=work, capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, f"{page}:{line}: {cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        assert "histexpr error" not in res.stderr, f"{page}:{line}: {cmd}\n{res.stderr[-3000:]}"


def test_the_readmes_demo_table_and_printout_are_the_recorded_demo_runs(monkeypatch):
    """README's demo table and printout = what ``show --readme`` makes of the recorded run (docs/demo-run), and
    that run's config = the demo config: a changed demo config fails here until the run is recorded again."""
    from histexpr.show import closing_lines, group_table_markdown

    run = REPO / "docs" / "demo-run"
    assert yaml.safe_load((run / "config.yaml").read_text()) == yaml.safe_load(
        (REPO / "config" / "config.yaml").read_text()), "config/config.yaml changed: record the demo run again"
    readme = (REPO / "README.md").read_text()
    monkeypatch.chdir(run)
    table = group_table_markdown(pd.read_csv("results/demo/metrics_by_group.tsv", sep="\t"))
    assert table in readme, table
    printout = "```\n" + "\n".join(closing_lines("results/demo")) + "\n```"
    assert printout in readme, printout
    # the recorded run has every group the demo draws, and the verdicts the README's prose claims
    assert "morphology genes (12): best vit" in printout and "beats the floor" in printout
