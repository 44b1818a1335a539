"""The yield pacing of ``send()`` and ``receive()`` (``_node._sending.Pacer``), as ``Chirp.send``
documents it: an asynchronous send that finds room, and a receive that finds a message
waiting, yield to the scheduler only every 64th time, one count for both.

A ``trio.abc.Instrument`` records how many operations the task had done each time it was
resumed: a task resumes only after it yielded, so those are exactly its yield points.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing
from memnet_helpers import A, B, node, to

from trio_chirp.testing import MemoryNetwork

EVERY = 64


class _Resumes(trio.abc.Instrument):
    """The value of ``count()`` each time ``task`` is resumed."""

    def __init__(self, task: trio.lowlevel.Task, count: Callable[[], int]) -> None:
        self.task, self.count = task, count
        self.at: list[int] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.at.append(self.count())


async def test_async_sends_that_find_room_yield_every_64th(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False):
        sent = 0
        resumes = _Resumes(trio.lowlevel.current_task(), lambda: sent)
        trio.lowlevel.add_instrument(resumes)
        try:
            for _ in range(3 * EVERY + 8):  # fewer than send_queue_size (256): every send finds room
                sent += 1  # counted before: the task resumes inside the send that yielded
                await a.send(to(B))
        finally:
            trio.lowlevel.remove_instrument(resumes)
        assert resumes.at == [EVERY, 2 * EVERY, 3 * EVERY]
        await a.flush(B, 2998)


async def test_receives_that_find_a_message_count_with_sends(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False) as a,
        node(net, B, synchronous=False, max_slots=32) as b,
    ):
        for _ in range(32):
            await a.send(to(B))
        await a.flush(B, 2998)
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().undelivered == 32  # all waiting: no receive below has to wait
        done = 0
        resumes = _Resumes(trio.lowlevel.current_task(), lambda: done)
        trio.lowlevel.add_instrument(resumes)
        try:
            for _ in range(40):
                done += 1
                await b.send(to(A))
            for _ in range(32):
                done += 1
                msg = await b.receive()
                msg.release()
        finally:
            trio.lowlevel.remove_instrument(resumes)
        # One count for both: the 40 sends and the first 24 receives make the 64th operation.
        assert resumes.at == [EVERY]
