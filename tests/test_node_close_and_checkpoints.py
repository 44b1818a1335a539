"""What ``Chirp``'s own methods promise about closing and checkpoints (``_node._chirp``).

* ``receive()``, ``flush()`` and ``aclose()`` are checkpoints even when they need not wait
  (Trio's rule for async functions): a cancelled caller gets ``Cancelled``, and a receive
  cancelled so takes nothing from the inbox.
* During ``aclose()``'s grace (waiting for written synchronous messages' ACKs) a new send
  is refused with ``ShutdownError``, and a second ``aclose()`` returns only when the node
  is closed; if the connection of the message in flight fails, the grace ends at once.
* A node whose block was left by an exception is closed: a later send raises
  ``ShutdownError``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, node, to

from trio_chirp import Chirp, ConnectionLostError, ShutdownError
from trio_chirp.testing import MemoryNetwork


async def test_flush_and_aclose_are_checkpoints_when_nothing_waits(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B):
        with trio.testing.assert_checkpoints():
            await a.flush(B, PORT)  # no remote for it yet
        await a.send(to(B))
        await a.flush(B, PORT)
        with trio.testing.assert_checkpoints():
            await a.flush(B, PORT)  # the remote is there, nothing left to write
        started = trio.current_time()
        with trio.testing.assert_checkpoints():
            await a.aclose()  # connected, but nothing in flight: no wait for an ACK
        assert trio.current_time() == started


async def test_a_cancelled_receive_takes_nothing(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        await a.send(to(B, b"first"))
        await a.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().undelivered == 1
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.receive()
        assert scope.cancelled_caught
        msg = await b.receive()  # still there for the next receive
        assert msg.data == b"first"
        msg.release()


async def test_during_the_close_grace_sends_are_refused_and_a_second_aclose_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, timeout=30.0) as b, node(net, A, timeout=30.0) as a:
        held = trio.Event()
        ack_at: list[float] = []
        returned_at: dict[str, float] = {}

        async def hold_then_release() -> None:
            msg = await b.receive()
            held.set()
            await trio.sleep(2.0)
            ack_at.append(trio.current_time())
            msg.release()

        async def close(name: str) -> None:
            await a.aclose()
            returned_at[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_then_release)
            nursery.start_soon(a.send, to(B, b"in flight"))
            await held.wait()
            nursery.start_soon(close, "first")
            await trio.testing.wait_all_tasks_blocked()
            assert "first" not in returned_at  # waiting for the ACK of the message in flight
            with pytest.raises(ShutdownError):
                await a.send(to(B, b"too late"))
            nursery.start_soon(close, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert returned_at == {}
        assert returned_at["first"] >= ack_at[0]
        assert returned_at["second"] >= ack_at[0]


class _Boom(Exception):
    pass


async def test_a_node_left_by_an_exception_refuses_later_sends(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    nodes: list[Chirp] = []

    async def use_then_fail() -> None:
        async with node(net, A) as a:
            nodes.append(a)
            await a.send(to(B), synchronous=False)
            raise _Boom

    async with node(net, B):
        with pytest.raises(_Boom):
            await use_then_fail()
        (a,) = nodes
        with pytest.raises(ShutdownError):
            await a.send(to(B))
        with pytest.raises(ShutdownError):
            await a.receive()


async def test_the_close_grace_ends_when_the_connection_of_the_message_in_flight_fails(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``aclose()`` waits for the ACK of a written synchronous message; if the connection it
    was written on fails meanwhile, no ACK can come: the close goes on at once."""
    net = MemoryNetwork()
    async with node(net, B) as b, node(net, A, timeout=30.0) as a, trio.open_nursery() as nursery:
        failed = trio.Event()

        async def send() -> None:
            with pytest.raises(ConnectionLostError):
                await a.send(to(B, b"in flight"))
            failed.set()

        nursery.start_soon(send)
        held = await b.receive()
        closed_at: list[float] = []

        async def close() -> None:
            await a.aclose()
            closed_at.append(trio.current_time())

        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        assert closed_at == []  # waiting for the ACK
        cut_at = trio.current_time()
        net.cut(A, B)
        await failed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert closed_at == [cut_at]
        held.release()
