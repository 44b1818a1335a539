"""The live display of a bench run: the workload being measured, its count and rate so far.

With ``rich`` (the ``bench`` extra) and a terminal, a progress bar per run over the
measuring window; otherwise one line when a run starts and one when it ends, which is
what a log file or a test wants to read.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any


class LiveProgress:
    """``with LiveProgress(runs) as live: live.start(label, seconds); live.update(n); live.done(line)``."""

    def __init__(self, runs: int, *, enabled: bool = True) -> None:
        self._runs = runs
        self._run = 0
        self._rich: Any = None
        self._task: Any = None
        self._started = 0.0
        self._seconds = 1.0
        if enabled and sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                pass
            else:
                self._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    transient=True,
                )

    def __enter__(self) -> LiveProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rich is not None:
            self._rich.stop()

    def start(self, label: str, seconds: float) -> None:
        """A run begins; ``seconds`` is its measuring window (the bar's length)."""
        self._run += 1
        self._started = 0.0
        self._seconds = seconds
        text = f"[{self._run}/{self._runs}] {label}"
        if self._rich is not None:
            self._task = self._rich.add_task(text, total=seconds, rate="warming up")
        else:
            print(f"{text} ...", flush=True)

    def update(self, count: int) -> None:
        """Messages measured so far in this run's window (0 while warming up)."""
        if count == 0:
            return
        now = time.perf_counter()
        if not self._started:
            self._started = now
            if self._rich is None:  # a log says when the window began
                print(f"  measuring for {self._seconds:g} s", flush=True)
            return
        if self._rich is None or self._task is None:
            return
        elapsed = now - self._started
        self._rich.update(
            self._task, completed=min(elapsed, self._seconds), rate=f"{count / max(elapsed, 1e-9):,.0f}/s"
        )

    def done(self, line: str) -> None:
        """The run's result, printed above the live display."""
        if self._rich is not None and self._task is not None:
            self._rich.remove_task(self._task)
            self._rich.console.print(line, highlight=False, markup=False)
            self._task = None
        else:
            print(f"  {line}", flush=True)
