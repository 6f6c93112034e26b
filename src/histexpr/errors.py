"""Errors for bad input.

Every problem with a user's files or settings is raised as one of these, with
the offending file named first, before any expensive work starts.
"""

from __future__ import annotations

import errno
import os


class InputError(ValueError):
    """A user's input file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(InputError):
    """A configuration file or sample sheet does not match its schema."""


class OutputError(InputError):
    """A place the run writes to cannot take the output: no space left, read-only, not permitted."""


# errno values that mean "this place cannot be written", with the words a user reads.
_WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or process limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
}


def _existing_folder(path: str) -> str:
    """``path`` or its nearest parent that exists (where a file for it would be created)."""
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def write_problem(err: BaseException, path: str | os.PathLike) -> OutputError | None:
    """The :class:`OutputError` for an ``OSError`` (or HDF5's ``RuntimeError``) that means ``path`` (or its
    folder) cannot be written, with the free space of that disk; None for any other error."""
    import shutil

    code = getattr(err, "errno", None)
    if code is None and isinstance(err, (OSError, RuntimeError)):
        # HDF5 (h5py, anndata) reports a failed write as "... errno = 28, error message = ..."
        import re

        found = re.search(r"errno = (\d+)", str(err))
        code = int(found.group(1)) if found else None
    if code not in _WRITE_PROBLEMS:
        return None
    named = getattr(err, "filename", None)
    if code in (errno.EACCES, errno.EPERM) and isinstance(named, str) and \
            not os.path.abspath(path).startswith(os.path.dirname(os.path.abspath(named))):
        return None  # an input the writer was reading, not the output
    problem = _WRITE_PROBLEMS[code]
    folder = _existing_folder(os.path.dirname(os.path.abspath(path)))
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            problem += f" ({shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there)"
        except OSError:
            pass
        problem += "; free space, or run where there is room (snakemake --directory DIR)"
    else:
        problem += "; make the folder writable, or run in one that is (snakemake --directory DIR)"
    return OutputError(path, f"cannot write: {problem}")


def check_writable(folder: str | os.PathLike, min_free_mib: float = 64) -> None:
    """Raise :class:`OutputError` unless a file can be created in ``folder`` (or, while it does not exist, in
    its nearest existing parent) and that disk has ``min_free_mib`` free. Tries a real file, since
    ``os.access`` says yes to root on a read-only mount."""
    import shutil
    import tempfile

    probe = _existing_folder(os.path.abspath(folder))
    try:
        fd, name = tempfile.mkstemp(prefix=".histexpr-write-check.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise (write_problem(err, os.path.join(folder, "")) or OutputError(folder, f"cannot write: {err}")) from None
    free = shutil.disk_usage(probe).free / 2**20
    if free < min_free_mib:
        raise OutputError(os.path.join(folder, ""), f"cannot write: no space left on the device ({free:,.0f} MiB "
                          "free there); free space, or run where there is room (snakemake --directory DIR)")
