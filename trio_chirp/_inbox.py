"""Received messages between the readers and ``receive()``: fair, and bounded node-wide.

Two things live here because they are one promise: memory held by received messages the
application has not released is bounded for the whole node, whatever peers do.

* ``Budget`` counts every received, unreleased message (count and bytes), from the
  moment its frame's fixed part is accepted until ``release()``. A connection's reader
  takes its first slot unconditionally (so a live connection can always make progress and
  readers never lock up on a shared resource), and every further slot only while the
  budget has room. Worst case: the budget plus one message of ``max_msg_size`` per live
  connection (docs/memory.md).
* ``Inbox`` holds delivered messages until ``receive()`` takes them: one FIFO per
  connection, served round-robin, so a flood on one connection cannot queue ahead of
  everyone else. Messages of connections that have closed are *leftovers*: they compete
  as one more share, count against the budget, and are the first to go when it overflows.

``receive()`` on a node with one connection reads that connection itself when nobody else
does (``_reading.FrameReader.read_for_receiver``), so a message wakes the application's
task directly instead of a reader task first. The inbox keeps the two things that needs:
``reading``, the cancel scope of a ``receive()`` reading now (a message from anywhere else
ends that read, so it is never kept waiting behind one connection), and the ``Seat`` of
the one ``receive()`` parked here that would read its connection if it could.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from ._message import Message

__all__ = ["LEFTOVERS", "Budget", "Inbox", "Seat"]


class _Leftovers:
    def __repr__(self) -> str:
        return "<leftovers of closed connections>"


LEFTOVERS: Final = _Leftovers()
"""The inbox source that stands for every connection that has closed."""


class _CountedWaiters:
    """A parking lot and how many tasks are parked in it (``waiting``).

    The count is kept equal to the lot's length by ``wait`` and by the wakers (each counts
    out whom it wakes), because asking the lot itself is a Python call
    (``ParkingLot.__bool__``) on a path taken once per message. A cancelled task leaves the
    lot at once but counts itself out only when it runs again, so for a moment the count
    may be one too high: wakers therefore count out only the tasks the lot actually woke
    (the count going one too low instead would leave a parked task that nobody wakes).
    """

    __slots__ = ("lot", "waiting")

    def __init__(self) -> None:
        self.lot = trio.lowlevel.ParkingLot()
        self.waiting = 0

    async def wait(self) -> None:
        """Park until a waker unparks this task."""
        self.waiting += 1
        try:
            await self.lot.park()
        except BaseException:
            self.waiting -= 1  # cancelled while parked, so no waker counted it out
            raise


class Budget(_CountedWaiters):
    """Received, unreleased messages of the whole node: how many, how many bytes.

    Readers waiting for room ``wait()`` until something is given back (``give``, or a
    slot's release)."""

    __slots__ = (
        "count",
        "first_max_bytes",
        "first_max_count",
        "max_bytes",
        "max_count",
        "size",
    )

    def __init__(self, max_count: int, max_bytes: int, connections: int, max_msg_size: int) -> None:
        super().__init__()
        self.max_count = max_count
        self.max_bytes = max_bytes
        # A connection's first slot is granted beyond the budget, up to one message of
        # max_msg_size per connection the node may have: the whole bound (docs/memory.md).
        # It is counted until the message is released, not until its connection closes,
        # or a peer that reconnects while the application holds what it sent would add
        # one message per reconnect.
        self.first_max_count = max_count + connections
        self.first_max_bytes = max_bytes + connections * max_msg_size
        self.count = 0
        self.size = 0

    def fits(self, size: int) -> bool:
        """Room for a connection's second or later slot."""
        return self.count < self.max_count and self.size + size <= self.max_bytes

    def fits_first(self, size: int) -> bool:
        """Room for a connection's first slot: only an application holding more than the
        budget plus one message per connection makes a connection wait for it."""
        return self.count < self.first_max_count and self.size + size <= self.first_max_bytes

    @property
    def over(self) -> bool:
        return self.count > self.max_count or self.size > self.max_bytes

    def take(self, size: int) -> None:
        self.count += 1
        self.size += size

    def give(self, size: int) -> None:
        self.count -= 1
        self.size -= size
        if self.waiting:
            self.wake_all()

    def wake_all(self) -> None:
        """Every waiting reader re-checks its own condition."""
        self.waiting -= len(self.lot.unpark_all())


class Seat:
    """A waiting task that would read the connection its wait ends on: a ``receive()``
    parked in the inbox, an asynchronous ``request()`` waiting for its response.

    It sits at that connection's frame reader, one at a time (``FrameReader.take_seat``).
    Whatever wakes the seated task marks it ``woken`` (``Inbox.put``, a response's
    ``RequestTable.offer``); the connection's reader task, when it finds its seat woken
    where it would read on, stands aside instead and leaves ``give_back`` here, which the
    woken task calls when it leaves its seat (``FrameReader.leave_seat``): the reading
    passes back unless that task takes it again first. The reader saves the read that would
    only find nothing, and a task waiting in a loop reads what it waits for itself.
    """

    __slots__ = ("give_back", "task", "woken")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.woken = False
        self.give_back: Callable[[], None] | None = None


class Inbox(_CountedWaiters):
    """Delivered messages by source (a connection, or ``LEFTOVERS``), taken round-robin.

    ``receive()`` waits (``wait()``) until a message is put or the inbox closes."""

    def __init__(self) -> None:
        super().__init__()
        self._queues: dict[object, deque[Message]] = {}
        self._ring: deque[object] = deque()  # sources with messages, in serving order
        self._count = 0
        self.closed = False
        self.seat = Seat()
        self.reading: tuple[trio.CancelScope, object] | None = None
        """The cancel scope of a ``receive()`` reading a connection, and that connection."""

    def ready(self) -> bool:
        """Something for ``receive()``: a message, or the end."""
        return self._count > 0 or self.closed

    def __len__(self) -> int:
        return self._count

    @property
    def leftovers(self) -> int:
        queue = self._queues.get(LEFTOVERS)
        return 0 if queue is None else len(queue)

    def put(self, source: object, message: Message) -> None:
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = deque()
        if not queue:
            self._ring.append(source)
        queue.append(message)
        self._count += 1
        if self.waiting:
            woken = self.lot.unpark()
            if woken:
                self.waiting -= 1
                seat = self.seat
                if woken[0] is seat.task:
                    seat.woken = True
        reading = self.reading
        if reading is not None and reading[1] is not source:
            reading[0].cancel()  # a receive() reading another connection: this one is ready

    def take_nowait(self) -> Message | None:
        ring = self._ring
        if not ring:
            return None
        source = ring.popleft()
        queue = self._queues[source]
        message = queue.popleft()
        if queue:
            ring.append(source)  # its next message waits for everyone else's turn
        else:
            del self._queues[source]
        self._count -= 1
        return message

    def retire(self, source: object, keep: Callable[[Message], bool]) -> list[Message]:
        """``source`` closed: what ``keep`` accepts becomes leftovers; the rest is returned."""
        queue = self._queues.pop(source, None)
        if queue is None:
            return []
        self._ring.remove(source)
        dropped: list[Message] = []
        for message in queue:
            if keep(message):
                self._count -= 1
                self.put(LEFTOVERS, message)
            else:
                dropped.append(message)
        self._count -= len(dropped)
        return dropped

    def drop_oldest_leftover(self) -> Message | None:
        queue = self._queues.get(LEFTOVERS)
        if not queue:
            return None
        message = queue.popleft()
        if not queue:
            del self._queues[LEFTOVERS]
            self._ring.remove(LEFTOVERS)
        self._count -= 1
        return message

    def close(self) -> list[Message]:
        """No more messages: return every one still waiting, and wake ``receive()``."""
        self.closed = True
        waiting = [m for queue in self._queues.values() for m in queue]
        self._queues.clear()
        self._ring.clear()
        self._count = 0
        self.waiting -= len(self.lot.unpark_all())
        if self.reading is not None:
            self.reading[0].cancel()
        return waiting
