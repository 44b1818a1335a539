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
        log_now, summary_due = self._limiter.record(trio.current_time(), address, kind, what)
        if log_now:
            log.warning(msg, *args, exc_info=exc_info)
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
                for line in limiter.summarise():
                    logger.warning("%s", line)
        finally:
            self._summary_timer = False

    def flush(self) -> None:
        """At close: a short-lived node still reports what it would have summarised."""
        if self._limiter.pending:
            for line in self._limiter.summarise():
                logger.warning("%s", line)
