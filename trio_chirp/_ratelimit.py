"""Failure logging that a flood cannot turn into a log flood.

A peer that is down, a port scan or a thousand slowloris connections would otherwise
write one WARNING per event. The limiter logs the first event of each (peer IP, kind)
in a window, counts the repeats, and a timer writes one summary line per key when the
window ends. A node-wide cap bounds the lines of one window however many peers fail:
past it, events are only counted and summarised together. Counting in
``statistics()`` is the caller's job and is never limited.

The limiter itself does no I/O and keeps no task: ``record()`` says whether to log and
whether a summary is now due, ``summarise()`` returns the lines and starts a new window,
so the node owns the one timer task and tests can drive it with any clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = ["LimitedLog", "LogLimiter"]

WINDOW: Final = 10.0
"""Seconds of one window."""

NODE_CAP: Final = 20
"""Keys logged in full per window; events of further keys are only summarised together."""


@dataclass(slots=True)
class LogLimiter:
    """Decides, per event, whether to log it now or count it for the window's summary."""

    window: float = WINDOW
    cap: int = NODE_CAP
    window_end: float | None = None
    """When the current window ends; None while no window is open."""
    _logged: set[tuple[str, str]] = field(default_factory=set)
    _what: dict[tuple[str, str], str] = field(default_factory=dict)
    _repeats: Counter[tuple[str, str]] = field(default_factory=Counter)
    _overflow: Counter[str] = field(default_factory=Counter)
    """Events of keys past the cap, by ``what``; their peers are counted in ``_overflow_peers``."""
    _overflow_peers: set[str] = field(default_factory=set)

    def record(self, now: float, peer: str, kind: str, what: str) -> tuple[bool, bool]:
        """Note one event; returns ``(log_it_now, summary_timer_needed)``.

        ``kind`` tells failures apart (an exception class name); ``what`` names them in
        the summary ("connection failures").
        """
        if self.window_end is not None and now >= self.window_end and not self.pending:
            self.window_end = None
        opened = self.window_end is None
        if opened:
            self.window_end = now + self.window
            self._logged.clear()
        key = (peer, kind)
        if key in self._logged:
            self._repeats[key] += 1
            self._what[key] = what
            return False, True
        if len(self._logged) >= self.cap:
            self._overflow[what] += 1
            self._overflow_peers.add(peer)
            return False, True
        self._logged.add(key)
        return True, False

    @property
    def pending(self) -> bool:
        """Whether events wait to be summarised."""
        return bool(self._repeats or self._overflow)

    def summarise(self) -> list[str]:
        """The window's summary lines (at most ``cap`` + one per ``what``); closes the window."""
        return [line for _, line in self.summarise_by_key()]

    def summarise_by_key(self) -> list[tuple[tuple[str, str] | None, str]]:
        """``summarise()``, each line with the (peer, kind) key it sums up (None: past the cap)."""
        window = f"{self.window:g} s"
        lines: list[tuple[tuple[str, str] | None, str]] = [
            (key, f"{count} more {self._what[key]} with {key[0]} in the last {window}")
            for key, count in self._repeats.items()
        ]
        others = len(self._overflow_peers)
        lines.extend(
            (None, f"{count} {what} with {others} other peer(s) in the last {window} (log cap reached)")
            for what, count in self._overflow.items()
        )
        self._repeats.clear()
        self._what.clear()
        self._overflow.clear()
        self._overflow_peers.clear()
        self._logged.clear()
        self.window_end = None
        return lines


class LimitedLog(Protocol):
    """The node's rate-limited log, as the layers that report failures through it see it."""

    def limited(
        self,
        address: str,
        kind: str,
        what: str,
        msg: str,
        *args: object,
        log: logging.Logger = ...,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``msg % args`` at WARNING on ``log`` unless (``address``, ``kind``) repeats in
        this window; ``what`` names the repeats in the summary line."""
