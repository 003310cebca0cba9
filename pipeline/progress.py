"""Progress with an ETA for long loops: a bar on a terminal, a log line now and then anywhere else.

Stages run under `dvc repro`, Prefect workers and CI, where a redrawn bar is noise in a log file, and
from a terminal, where a log line every half-minute is too little. `DEMOIRE_PROGRESS` forces one:
`bar`, `log` or `off`; unset, stderr being a terminal picks the bar.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger(__name__)
T = TypeVar("T")
MODES = ("bar", "log", "off")
LOG_EVERY_S = 30.0  # a log line at most this often (and always at the end)
_override: str | None = None  # set by the command line for the command it runs (-q: off)


def set_progress_override(mode: str | None) -> None:
    """Force every reporter's mode in this process (None: back to the environment and the terminal)."""
    global _override
    if mode is not None and mode not in MODES:
        raise ValueError(f"progress mode {mode!r}: expected one of {', '.join(MODES)}")
    _override = mode


def progress_mode() -> str:
    """The override, else `DEMOIRE_PROGRESS` when set to bar | log | off, else bar on a terminal, log elsewhere."""
    if _override is not None:
        return _override
    mode = os.environ.get("DEMOIRE_PROGRESS", "").strip().lower()
    if mode in MODES:
        return mode
    return "bar" if sys.stderr.isatty() else "log"


def mlflow_bar_as_ours() -> None:
    """MLflow's download bar (its documented switch; a user's setting kept) only where ours is a bar: off a terminal
    it is lines of redraws in a log, and -q or DEMOIRE_PROGRESS=log|off silence it as they silence ours."""
    if progress_mode() != "bar":
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def eta_seconds(done: int, total: int | None, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before the first item or without a total."""
    if not total or done <= 0 or elapsed <= 0:
        return None
    return elapsed / done * max(total - done, 0)


def _clock(seconds: float) -> str:
    """`1:02:03` or `2:03`."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressReporter:
    """Counts done units out of `total`; shows them as a bar with ETA, or logs them every `log_every_s`.

    Use as a context manager and call `advance(n)`; `done` and `elapsed` stay readable afterwards.
    """

    def __init__(self, description: str, total: int | None, unit: str = "items", mode: str | None = None,
                 log_every_s: float = LOG_EVERY_S, start: int = 0) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.mode = mode or progress_mode()
        self.log_every_s = log_every_s
        self.done = self.started_at_count = start
        self._began = self._logged = time.monotonic()
        self._logged_done: int | None = None  # the count the last line showed
        self._bar: Progress | None = None
        self._task = None

    @property
    def elapsed(self) -> float:
        """Seconds since the reporter started."""
        return time.monotonic() - self._began

    def eta(self) -> float | None:
        """Seconds left at this run's rate (units done before `start` do not count towards the rate)."""
        remaining_total = None if self.total is None else self.total - self.started_at_count
        return eta_seconds(self.done - self.started_at_count, remaining_total, self.elapsed)

    def __enter__(self) -> ProgressReporter:
        self._began = self._logged = time.monotonic()
        if self.mode == "bar":
            self._bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(self.unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        return self

    def advance(self, units: int = 1) -> None:
        """Count `units` more done."""
        self.done += units
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.mode == "log" and time.monotonic() - self._logged >= self.log_every_s:
            self._log_line()

    def _log_line(self) -> None:
        """One INFO line: done / total, percent, elapsed, ETA."""
        self._logged, self._logged_done = time.monotonic(), self.done
        if self.total:
            eta = self.eta()
            left = f", ETA {_clock(eta)}" if eta is not None else ""
            log.info("%s: %d/%d %s (%.0f%%), %s elapsed%s", self.description, self.done, self.total, self.unit,
                     100.0 * self.done / self.total, _clock(self.elapsed), left)
        else:
            log.info("%s: %d %s, %s elapsed", self.description, self.done, self.unit, _clock(self.elapsed))

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.mode == "log" and self._logged_done != self.done:  # the last count, unless just shown
            self._log_line()


def track_progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "items",
                   mode: str | None = None, start: int = 0) -> Iterator[T]:
    """Yield `items`, reporting progress (total: len(items) when it has one; `start` units done before them)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with ProgressReporter(description, total, unit, mode, start=start) as reporter:
        for item in items:
            yield item
            reporter.advance()
