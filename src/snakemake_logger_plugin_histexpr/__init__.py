"""A quiet terminal for histexpr runs: ``snakemake --logger histexpr``.

Snakemake's default log prints five to fifteen lines a job (its whole input list, timestamps, "Select jobs
to execute..."), so a 71-job run scrolls ~1,300 lines past the lines a user wants: the epoch lines and
warnings the jobs themselves print, and the errors. This handler prints instead

* the plan in one line (jobs per rule),
* one line when every job of a rule has finished, with the run's progress and the rule's wall time,
* errors as Snakemake writes them (with ``--show-failed-logs``, the failed job's log), warnings, and any
  message it does not know to be routine.

A dry run (``-n``) prints exactly what Snakemake's own log prints, every job listed. Written as a logger
plugin (Snakemake >= 9) rather than a filter on the output so that exit codes, ``--profile`` and clusters
behave as usual; snakemake-logger-plugin-rich draws a live bar but keeps every job's block.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from histexpr.utils import duration

# Snakemake's messages that say nothing a user acts on (their lines start so).
ROUTINE = ("Assuming unrestricted shared filesystem", "Building DAG of jobs", "Using shell:", "Provided cores:",
           "Rules claiming more threads", "Conda environments: ignored", "Singularity containers: ignored",
           "Select jobs to execute", "Execute ", "Complete log", "Provided resources:", "Job stats:",
           "host:", "Using profile")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    pass


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        from snakemake.logging import DefaultFilter, DefaultFormatter

        quiet = self.common_settings.quiet or set()
        self.default_format = DefaultFormatter(quiet, self.common_settings.show_failed_logs)
        self.default_filter = DefaultFilter(quiet, self.common_settings.debug_dag, self.common_settings.verbose,
                                            self.common_settings.dryrun, self.common_settings.printshellcmds)
        self.stream = sys.stdout if self.common_settings.stdout else sys.stderr
        self.rule_of: dict[int, str] = {}
        self.planned: Counter = Counter()
        self.done: Counter = Counter()
        self.started: dict[str, float] = {}
        self.total = self.finished = 0

    # the interface's questions
    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def _print(self, text: str) -> None:
        if text:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # a log line must never stop a run
            self.handleError(record)

    def _emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if self.common_settings.dryrun or self.common_settings.verbose:  # the whole plan, as Snakemake lists it
            if self.default_filter.filter(record):
                self._print(self.default_format.format(record))
            return
        if event == LogEvent.RUN_INFO and getattr(record, "stats", None):
            stats = {k: v for k, v in record.stats.items() if k != "total"}
            self.planned = Counter(stats)
            self.total = sum(stats.values())
            plan = ", ".join(f"{rule} {n}" for rule, n in stats.items())
            self._print(f"{self.total} jobs to run: {plan}")
        elif event == LogEvent.JOB_INFO:
            self.rule_of[record.jobid] = record.rule_name
            self.started.setdefault(record.rule_name, time.monotonic())
        elif event == LogEvent.JOB_FINISHED:
            rule = self.rule_of.get(getattr(record, "job_id", None))
            self.finished += 1
            if rule is None:
                return
            self.done[rule] += 1
            if self.done[rule] == self.planned.get(rule, 0):
                took = time.monotonic() - self.started.get(rule, time.monotonic())
                n = self.planned[rule]
                pct = 100 * self.finished // max(self.total, 1)
                self._print(f"[{pct:3d}%] {rule}: {'the job' if n == 1 else f'all {n} jobs'} done ({duration(took)})")
        elif event in (LogEvent.JOB_ERROR, LogEvent.GROUP_ERROR, LogEvent.ERROR):
            self._print(self.default_format.format(record))
        elif event in (LogEvent.PROGRESS, LogEvent.JOB_STARTED, LogEvent.SHELLCMD, LogEvent.WORKFLOW_STARTED,
                       LogEvent.RESOURCES_INFO, LogEvent.DEBUG_DAG, LogEvent.GROUP_INFO, LogEvent.RULEGRAPH):
            return
        elif record.levelno >= logging.WARNING:
            self._print(self.default_format.format(record))
        else:
            text = str(self.default_format.format(record))
            if text.strip() and not text.lstrip().startswith(ROUTINE):
                self._print(text)

