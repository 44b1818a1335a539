"""A connection's receive slots: the first is its own, the rest come from the node's budget.

A reader takes a slot at a data frame's fixed part, before the payload is consumed, and
the message holds it until released; with none free the reader stops reading, so TCP
pushes back on the sender (docs/memory.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import trio

from ._errors import ConnectionLostError
from ._inbox import Budget

__all__ = ["PROBE_INTERVAL", "SlotPool"]


PROBE_INTERVAL: Final = 1.0
"""A reader waiting for a slot checks this often whether its peer reset the connection."""


class SlotPool:
    """The receive slots of one connection: the first is its own, the rest come from the budget.

    The first slot is granted beyond the budget (up to one message per connection the
    node may have), so every live connection can make progress and readers do not lock up
    on the node-wide budget; each further one (up to ``size``) is taken only while the
    budget has room for the message (docs/memory.md).
    """

    __slots__ = ("_budget", "in_use", "peak", "size")

    def __init__(self, size: int, budget: Budget) -> None:
        self.size = size
        self._budget = budget
        self.in_use = 0
        self.peak = 0

    def _can_take(self, cost: int) -> bool:
        if not self.in_use:
            return self._budget.fits_first(cost)
        return self.in_use < self.size and self._budget.fits(cost)

    def try_take(self, cost: int) -> bool:
        """Take a slot now if one is free (the reader's path without a coroutine).

        ``_can_take`` and ``_take`` written out in one frame: this runs for every received
        message, and the calls were a measurable part of its cost. Same rules, same order.
        """
        budget = self._budget
        in_use = self.in_use
        count = budget.count
        size = budget.size + cost
        if in_use:
            if in_use >= self.size or count >= budget.max_count or size > budget.max_bytes:
                return False
        elif count >= budget.first_max_count or size > budget.first_max_bytes:
            return False
        self.in_use = in_use = in_use + 1
        budget.count = count + 1
        budget.size = size
        if in_use > self.peak:
            self.peak = in_use
        return True

    def _take(self, cost: int) -> None:
        self.in_use = in_use = self.in_use + 1
        self._budget.take(cost)
        if in_use > self.peak:
            self.peak = in_use

    async def acquire(self, cost: int, is_broken: Callable[[], bool] | None) -> None:
        """Take a slot for a message of ``cost`` bytes, waiting (not reading) until one is free.

        While waiting, ``is_broken`` (the stream's probe, if it has one) is asked every
        ``PROBE_INTERVAL``: a peer that reset the connection must not keep its fd and
        slots until garbage collection.
        """
        budget = self._budget
        while not self._can_take(cost):
            with trio.move_on_after(PROBE_INTERVAL if is_broken is not None else math.inf):
                await budget.wait()
            if is_broken is not None and is_broken():
                raise ConnectionLostError("the peer reset the connection while its reader waited for a slot")
        self._take(cost)

    def why_reading_stopped(self) -> str:
        """For a timeout's message, while the reader waits for a slot: what holds it up."""
        if self.in_use < self.size:
            return (
                "; the ACK may be unread: this node stopped reading from the peer because the"
                " node-wide budget of unreleased messages (max_unreleased, max_unreleased_bytes) is"
                " full: receive() and release() messages (docs/memory.md)"
            )
        return (
            f"; the ACK may be unread: this node's {self.in_use} receive slot(s) on that connection are"
            " held by message(s) the application has not released (or not received yet), so this node"
            " stopped reading from the peer; receive() and release() them (docs/lockups.md)"
        )

    def release(self, cost: int) -> None:
        """Give a slot back (``Budget.give`` written out: this runs for every message)."""
        self.in_use -= 1
        budget = self._budget
        budget.count -= 1
        budget.size -= cost
        if budget.waiting:
            budget.wake_all()
