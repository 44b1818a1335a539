"""How a connection (``_connection.Connection``) ends when its peer misbehaves, as the node's
user sees it: which error, counted where, and that the connection is gone.

* A synchronous message whose ACK does not come within ``timeout`` of its write costs
  its connection, also when it was written at once from the sender's own task (an idle
  connection), not by the writer task.
* A flood of frames above ``max_msg_size``, past what the node answers with refusals,
  closes the connection with an error that names the frame's size and the limit.
* A connection whose peer reset it while our reader waited for a slot is closed as lost
  (counted) when the peer reconnects.
* A write the peer does not take within ``timeout`` closes the connection.
* A trio_chirp peer's oversized frame up to 64 MiB is skipped unread; one byte more closes
  the connection at once.
"""

from __future__ import annotations

import functools
import logging

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, node, to

from trio_chirp import ChirpTimeoutError, ConnectionLostError
from trio_chirp._protocol import encode_announcement, encode_frame, encode_frame_head, encode_handshake
from trio_chirp.testing import MemoryNetwork


async def test_a_missing_ack_closes_the_connection_it_was_written_on(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=2.0) as a:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, to(B, b"acked"))
            (await b.receive()).release()
        await trio.sleep(3.0)  # idle for longer than timeout: no earlier deadline is pending
        assert a.statistics().connections == 1  # the next write is the sender's own
        started = trio.current_time()
        with pytest.raises(ChirpTimeoutError, match="no ACK within"):
            await a.send(to(B, b"held"))
        held = await b.receive()  # B's application holds it: no ACK
        assert trio.current_time() - started == pytest.approx(2.0)
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert stats.connections == 0
        assert stats.errors == {"ChirpTimeoutError": 1}
        held.release()


async def test_an_oversized_flood_closes_with_the_frames_size(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    net = MemoryNetwork()
    net.set_window(A, B, 1024)  # the flooder never reads: the refusals back up
    async with node(net, B, synchronous=False, max_msg_size=16) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        flood = b"".join(encode_frame(i.to_bytes(16, "big"), i, 0, b"hh", b"z" * 17) for i in range(2000))
        await stream.send_all(encode_handshake(PORT, bytes(range(16))) + encode_announcement(1, 1 << 20))
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(flood)
        await trio.testing.wait_all_tasks_blocked()
        assert receiver.statistics().errors == {"MessageTooLargeError": 1}
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "frame of 19 bytes above max_msg_size=16" in logged


@pytest.mark.parametrize("above", [0, 1])
async def test_an_announced_peer_may_send_oversized_frames_up_to_64_mib_to_be_skipped(
    autojump_clock: trio.abc.Clock, above: int
) -> None:
    """Up to ``SKIP_OVERSIZED_UP_TO`` (64 MiB) a trio_chirp peer's oversized frame is skipped
    unread and refused (the connection waits for its bytes); one byte more closes the
    connection at the frame's fixed part."""
    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=16, timeout=30.0) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        size = 64 * 1024 * 1024 + above
        head = encode_frame_head(bytes(range(16)), 1, 0, 0, size)
        await stream.send_all(
            encode_handshake(PORT, bytes(range(1, 17))) + encode_announcement(1, 1 << 20) + head
        )
        await trio.testing.wait_all_tasks_blocked()
        stats = receiver.statistics()
        if above:
            assert (stats.connections, stats.errors) == (0, {"MessageTooLargeError": 1})
        else:
            assert (stats.connections, stats.errors) == (1, {})  # skipping: waits for the payload
        await stream.aclose()


async def test_a_reset_found_when_the_peer_reconnects_is_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Our reader stopped (its one slot is held), so it misses the peer's reset; when the
    restarted peer connects again, the old connection is closed as lost, not as routine:
    counted, with the reason."""
    net = MemoryNetwork()
    async with node(net, A) as a:  # synchronous: one receive slot per connection
        async with node(net, B, synchronous=False) as b:
            await b.send(to(A, b"one"))
            await b.send(to(A, b"two"))  # waits in the stream: A's reader has no slot for it
            await b.flush(A, PORT)
            held = await a.receive()
            net.crash(B)
        started = trio.current_time()
        async with node(net, B, synchronous=False) as restarted:
            await restarted.send(to(A, b"three"))
            await restarted.flush(A, PORT)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() == started  # before the reader's own probe of the stream
            assert a.statistics().errors == {"ConnectionLostError": 1}
        held.release()


async def test_a_write_the_peer_does_not_take_within_timeout_closes_the_connection(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    net = MemoryNetwork()
    net.set_window(A, B, 1024)
    accepted: list[trio.abc.Stream] = []

    async with trio.open_nursery() as nursery:

        def on_accept(stream: trio.abc.Stream, peer: str) -> None:
            accepted.append(stream)
            nursery.start_soon(stream.send_all, encode_handshake(PORT, b"\xee" * 16))  # then never reads

        await nursery.start(
            functools.partial(
                net.host(B).serve, port=PORT, bind_v4="0.0.0.0", bind_v6=None, backlog=8, on_accept=on_accept
            )
        )
        async with node(net, A, synchronous=False, timeout=2.0) as a:
            await a.send(to(B, b"z" * 8192))
            started = trio.current_time()
            with pytest.raises(ConnectionLostError) as info:
                await a.flush(B, PORT)
            assert trio.current_time() - started == pytest.approx(2.0)
            assert "took longer than timeout=2.0s" in str(info.value.__cause__)
            assert a.statistics().errors == {"ChirpTimeoutError": 1}
            assert a.statistics().connections == 0
        nursery.cancel_scope.cancel()
