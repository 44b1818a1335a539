"""Memory held by received, unreleased messages is bounded node-wide, whatever peers do (issue 9).

In memory under MockClock: reconnect floods, resets, fairness between connections, what
happens to a closed connection's undelivered messages, the guaranteed first slot, and a
reader that notices a reset while it waits for a slot.
"""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, node, to

from trio_chirp import Config, Message
from trio_chirp._protocol import TYPE_REQ_ACK, encode_frame, encode_handshake
from trio_chirp.testing import MemoryNetwork, MemoryStream

SIZE = 64 * 1024


async def _flooder(net: MemoryNetwork, source: str, count: int, *, req_ack: bool = False) -> MemoryStream:
    """A raw peer that handshakes and writes ``count`` frames of SIZE bytes (as fast as it may)."""
    stream, _ = await net.host(source).connect(A, PORT)
    assert isinstance(stream, MemoryStream)
    frames = b"".join(
        encode_frame(i.to_bytes(16, "big"), i, TYPE_REQ_ACK if req_ack else 0, b"", b"x" * SIZE)
        for i in range(count)
    )
    await stream.send_all(encode_handshake(PORT, source.encode().ljust(16, b"\0")[:16]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, frames)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # whatever did not fit stays unsent
    return stream


async def test_reconnect_flood_stays_within_the_budget_and_the_good_peer_gets_through(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    settings = {"synchronous": False, "max_unreleased": 64, "max_unreleased_bytes": 64 * SIZE + 64 * 100}
    async with node(net, A, **settings) as a, node(net, C, synchronous=False) as good:
        config = a.config
        for i in range(50):  # connect, fill every slot, reset, reconnect
            await _flooder(net, B, 40)
            await trio.testing.wait_all_tasks_blocked()
            stats = a.statistics()
            # The bound: the budget plus each live connection's first slot.
            assert stats.unreleased <= config.max_unreleased + stats.connections
            assert stats.unreleased_bytes <= config.max_unreleased_bytes + stats.connections * SIZE
            net.cut(A, B)
            if i % 2:  # half the resets are noticed by the reader's probe, the others pile up
                await trio.sleep(1.0)
            await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert stats.leftovers_dropped > 0
        assert stats.leftovers <= stats.unreleased <= config.max_unreleased
        # The good peer is served although leftovers fill the budget: its connection has
        # its own first slot and its own turn.
        await good.send(to(A, b"good"))
        await trio.testing.wait_all_tasks_blocked()
        got = [await a.receive() for _ in range(2)]
        assert b"good" in [m.data for m in got]
        for m in got:
            m.release()


async def test_delivery_is_fair_between_connections(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False, max_slots=32) as a, node(net, C, synchronous=False) as good:
        await _flooder(net, B, 32)  # 32 messages waiting from B
        await trio.testing.wait_all_tasks_blocked()
        await good.send(to(A, b"good"))
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().undelivered == 33
        order = []
        for _ in range(3):
            msg = await a.receive()
            order.append(msg.data)
            msg.release()
        assert b"good" in order[:2]  # not behind B's 32


async def test_a_clean_close_keeps_asynchronous_leftovers_and_drops_acked_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a:
        burst = await _flooder(net, B, 5)
        sync = await _flooder(net, C, 1, req_ack=True)
        await trio.testing.wait_all_tasks_blocked()
        await burst.aclose()  # the producer exits cleanly after its burst
        await sync.aclose()
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert (stats.connections, stats.leftovers, stats.leftovers_dropped) == (0, 5, 1)
        for i in range(5):  # nothing that arrived whole is lost, in order
            msg = await a.receive()
            assert msg.identity == i.to_bytes(16, "big")
            msg.release()
        assert a.statistics().unreleased == 0


async def test_a_protocol_error_drops_the_connections_leftovers(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a:
        stream = await _flooder(net, B, 3)
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(b"\xff" * 27)  # garbage after valid frames
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert stats.errors == {"MessageTooLargeError": 1}  # a ProtocolError
        assert (stats.undelivered, stats.unreleased, stats.leftovers_dropped) == (0, 0, 3)


async def test_every_live_connection_keeps_its_first_slot(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False, max_unreleased=0, max_unreleased_bytes=0) as a,
        node(net, B, synchronous=False) as b,
        node(net, C, synchronous=False) as c,
    ):
        await b.send(to(A, b"b1"))
        await b.send(to(A, b"b2"))
        await c.send(to(A, b"c1"))
        await trio.testing.wait_all_tasks_blocked()
        # The budget is 0: each connection has exactly its own first slot.
        held = [await a.receive(), await a.receive()]
        assert sorted(m.data for m in held) == [b"b1", b"c1"]
        assert a.statistics().undelivered == 0  # b2 waits in B's connection, unread
        held[0].release()
        held[1].release()
        msg = await a.receive()
        assert msg.data == b"b2"
        msg.release()


async def test_a_reader_waiting_for_a_slot_notices_a_reset(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False, max_slots=1) as a, node(net, B, synchronous=False) as b:
        for i in range(2):
            await b.send(Message(b"%d" % i, address=A, port=PORT))
        await trio.testing.wait_all_tasks_blocked()
        held = await a.receive()  # the only slot: A's reader waits for it, not reading
        assert a.statistics().connections == 1
        net.cut(A, B)
        await trio.sleep(0.99)
        assert a.statistics().connections == 1  # not reading: the reset is not seen yet
        await trio.sleep(0.01)  # the reader's probe, once a second, finds it
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert stats.connections == 0
        assert stats.errors == {"ConnectionLostError": 1}
        held.release()


def test_worst_case_formula() -> None:
    config = Config(max_connections=1000, max_msg_size=SIZE, max_unreleased_bytes=64 * 1024 * 1024)
    assert config.worst_case_unreleased_bytes == 64 * 1024 * 1024 + 1000 * SIZE
    assert Config().worst_case_unreleased_bytes <= 64 * 1024 * 1024 + 1024 * 1024 * 1024


async def test_reconnects_while_the_application_holds_everything_stay_bounded(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    settings = {"synchronous": False, "max_connections": 4, "max_unreleased": 8}
    async with node(net, A, **settings) as a, trio.open_nursery() as nursery:
        held: list[Message] = []

        async def hold() -> None:
            async for msg in a:
                held.append(msg)  # taken and never released

        nursery.start_soon(hold)
        bound = a.config.max_unreleased + a.config.effective_max_connections
        for _ in range(50):  # each reconnect would bring a fresh first slot
            await _flooder(net, B, 4)
            await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().unreleased <= bound
            net.cut(A, B)
            await trio.sleep(1.0)  # the probe notices the reset
        assert len(held) == bound  # then nothing more is read until the application releases
        for msg in held:
            msg.release()
        nursery.cancel_scope.cancel()
