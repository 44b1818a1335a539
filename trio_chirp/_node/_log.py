"""The node's rate-limited log: one limiter and one summary timer for the node and everything on it.

Connections, routers and workers of one node all report failures here, so the node-wide
cap of ``_ratelimit.LogLimiter`` holds for all of them together and every repeat that was
not logged ends up in a summary line (written by a timer task in the node's nursery, and
at close by ``flush()``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from .._ratelimit import LogLimiter

__all__ = ["NodeLog", "logger"]

logger = logging.getLogger("trio_chirp.node")

StartSoon = Callable[[Callable[[], Awaitable[None]]], None]


class NodeLog:
    """``limited()`` logs a failure at WARNING unless it repeats; repeats go into summary lines."""

    def __init__(self, start_soon: StartSoon) -> None:
        self._start_soon = start_soon
        self._limiter = LogLimiter()
        self._summary_timer = False
        self._channels: dict[tuple[str, str], logging.Logger] = {}
        """The logger each key logged its first event on: its summary line goes there too."""

    def limited(
        self,
        address: str,
        kind: str,
        what: str,
        msg: str,
        *args: object,
        log: logging.Logger = logger,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``msg % args`` on ``log`` unless the (``address``, ``kind``) key repeats in this window.

        ``what`` names the failures in the summary ("connection failures").
        """
        limiter = self._limiter
        window = limiter.window_end
        log_now, summary_due = limiter.record(trio.current_time(), address, kind, what)
        if limiter.window_end != window:
            self._channels.clear()  # a new window: nothing of the last one is left to summarise
        if log_now:
            log.warning(msg, *args, exc_info=exc_info)
            if log is not logger:
                self._channels[(address, kind)] = log
        if summary_due and not self._summary_timer:
            self._summary_timer = True
            self._start_soon(self._summarise_repeats)

    @trio.lowlevel.enable_ki_protection
    async def _summarise_repeats(self) -> None:
        """The limiter's timer: one summary line per repeating failure when its window ends."""
        limiter = self._limiter
        try:
            while limiter.pending and limiter.window_end is not None:
                await trio.sleep_until(limiter.window_end)
                self._write_summary()
        finally:
            self._summary_timer = False

    def _write_summary(self) -> None:
        channels = self._channels
        for key, line in self._limiter.summarise_by_key():
            (logger if key is None else channels.get(key, logger)).warning("%s", line)
        channels.clear()

    def flush(self) -> None:
        """At close: a short-lived node still reports what it would have summarised."""
        if self._limiter.pending:
            self._write_summary()
