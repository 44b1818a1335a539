"""Edges of ``send()`` (``_node._sending.Sender``) that a user would notice.

* A send in a cancelled scope raises ``Cancelled`` and sends nothing, even when it would
  have found room at once (the fast path is a cancellation point too).
"""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import PORT, A, B, node, to

from trio_chirp import Chirp
from trio_chirp.testing import MemoryNetwork


async def _receive_all(chirp: Chirp, got: list[bytes]) -> None:
    async for msg in chirp:
        got.append(bytes(msg.data))
        msg.release()


async def test_a_cancelled_send_sends_nothing(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    got: list[bytes] = []
    async with (
        node(net, A, synchronous=False) as a,
        node(net, B, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_receive_all, b, got)
        await a.send(to(B, b"first"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send(to(B, b"cancelled"))
        assert scope.cancelled_caught
        await a.send(to(B, b"last"))
        await a.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"first", b"last"]
        assert dict(a.statistics().send_errors) == {}
        nursery.cancel_scope.cancel()
