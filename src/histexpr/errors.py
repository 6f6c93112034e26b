"""Errors for bad input.

Every problem with a user's files or settings is raised as one of these, with
the offending file named first, before any expensive work starts.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """A user's input file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(InputError):
    """A configuration file or sample sheet does not match its schema."""
