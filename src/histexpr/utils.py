"""Small shared helpers: atomic writes, logging to a rule's log file, seeding, devices."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import write_problem

log = logging.getLogger("histexpr")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; move it into place on success.

    A failed or killed writer leaves only a hidden ``.tmp`` file, never a
    half-written output under the real name.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # Disk full, read-only, no permission: one line naming the output (the writer's error stays in the log).
        problem = write_problem(err, path)
        if problem is None:
            raise
        raise problem from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` on success.

    The folder counterpart of :func:`atomic_path`: a failed writer leaves nothing under the real name.
    """
    import shutil

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        problem = write_problem(err, path)
        if problem is None:
            raise
        raise problem from err
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_table(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame as TSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=kwargs.pop("index", False), **kwargs)


def write_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def write_h5ad(adata, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)


# Progress lines (a line per epoch, per stage) go to the terminal as well as the log; everything else to the log.
PROGRESS = "histexpr.progress"
progress = logging.getLogger(PROGRESS)
# Loggers of other packages that say routine things at INFO (faiss: which CPU build it loaded).
QUIET = ("faiss.loader",)


def duration(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``."""
    s = int(round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def log_epoch(epoch: int, epochs: int, elapsed: float, metrics: str) -> None:
    """The progress line of an epoch: ``epoch 3/15: <metrics>; 2.1 s/epoch, ETA 25 s`` (from the mean epoch so
    far, at most: early stopping can end sooner). Every epoch goes to the log; the first, every quarter of the
    run and the last also to the terminal."""
    per = elapsed / max(epoch, 1)
    left = duration(per * (epochs - epoch))
    # The terminal gets the first, every quarter and the last epoch (a 71-job run stays readable); the log, all.
    every = max(1, -(-epochs // 4))
    shown = epoch == 1 or epoch == epochs or epoch % every == 0
    (progress if shown else log).info("epoch %d/%d: %s; %.1f s/epoch, ETA %s", epoch, epochs, metrics, per, left)


def _job_name(log_file) -> str:
    """A rule's log path after its ``logs/`` folder, without ``.log``: ``train/vit/raw/fold_1``."""
    parts = Path(log_file).with_suffix("").parts
    return "/".join(parts[len(parts) - parts[::-1].index("logs"):] if "logs" in parts else parts[-1:])


class _ForTerminal(logging.Filter):
    """Progress lines, and histexpr's own warnings (not third-party ones, nor errors: the excepthook prints
    one line for those)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS or record.name.startswith(PROGRESS + "."):
            return True
        return record.levelno == logging.WARNING and (record.name == "histexpr" or record.name.startswith("histexpr."))


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return line.replace("] ", "] WARNING: ", 1) if record.levelno == logging.WARNING else line


def setup_logging(log_file: str | os.PathLike | None = None, redirect_stderr: bool = True,
                  job: str | None = None) -> logging.Logger:
    """Send log records (and, for a rule, stderr with tqdm bars) to ``log_file``; progress lines and histexpr's
    warnings also to the terminal, each prefixed ``[job]`` (default: the log path after ``logs/``)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "w", buffering=1)
        if redirect_stderr:
            sys.stderr = stream
    else:
        stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # anndata writes its notes ("... storing 'sample' as categorical") to the terminal through its own handler;
    # route them to the log like everything else.
    adata_log = logging.getLogger("anndata")
    for h in list(adata_log.handlers):
        adata_log.removeHandler(h)
    adata_log.propagate = True
    logging.captureWarnings(True)
    if log_file is not None and sys.__stderr__ is not None:
        terminal = logging.StreamHandler(sys.__stderr__)
        terminal.addFilter(_ForTerminal())
        label = (job or _job_name(log_file)).replace("%", "%%")
        terminal.setFormatter(_TerminalFormatter(f"[{label}] %(message)s"))
        root.addHandler(terminal)
    if log_file is not None:
        sys.excepthook = _report_to_terminal(str(log_file))
    return log


def _report_to_terminal(log_file: str):
    """An excepthook for a rule's script: the traceback goes to the rule's log, and one line (the error,
    naming the user's file for bad input) to the terminal, where Snakemake itself only says "check log"."""
    import traceback

    def hook(kind, err, tb):
        logging.getLogger("histexpr").error("".join(traceback.format_exception(kind, err, tb)).rstrip())
        from .errors import InputError

        what = str(err) if isinstance(err, InputError) else f"{kind.__name__}: {err}"
        terminal = sys.__stderr__
        if terminal is not None:
            terminal.write(f"histexpr error: {what}\n  (traceback in {log_file})\n")
            terminal.flush()

    return hook


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(seed)


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


class FromDict:
    """Dataclass mixin: ``from_dict(config)`` keeps the keys the class knows and ignores the rest
    (a rule's params carry settings meant for other steps)."""

    @classmethod
    def from_dict(cls, d: dict | None):
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})
