"""Edges of ``send()`` (``_node._sending.Sender``) that a user would notice.

* A send in a cancelled scope raises ``Cancelled`` and sends nothing, even when it would
  have found room at once (the fast path is a cancellation point too).
* A message above the peer's announced limit only with our header map says how many of
  its bytes are the map's.
* A sender waiting for queue room while the dial fails gets the dial's error at once; one
  waiting while the dial is under way gets the place of a message whose caller left.
* An asynchronous send that had to wait for queue room returns once its message is
  accepted, not when it is written.
* A synchronous send cancelled while its message is still queued withdraws it: it is
  never written.
* A synchronous send that times out while still connecting withdraws its message.
* A message may be sent again once its send returned; a header above the wire format's
  limit is refused by ``send()`` itself.
* A message that expired in the queue, or that the peer's announced limit refuses when it
  is taken, does not hold up the messages behind it.
* ``flush()`` raises as soon as the last message it waits for is lost.
"""

from __future__ import annotations

import functools
import re

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, node, to

from trio_chirp import (
    CannotConnectError,
    Chirp,
    ChirpError,
    ChirpTimeoutError,
    ConnectionLostError,
    Message,
    MessageTooLargeError,
)
from trio_chirp._header import ChirpMeta, encode
from trio_chirp._protocol import encode_handshake
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


async def test_a_message_over_the_limit_only_with_our_map_says_how_much_is_ours(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The error names the frame's size and how many of its bytes our header map added: the
    rest is exactly what the application gave. Here its header is itself our map (as a
    router forwards a received message's), which the deadline is merged into."""
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False, max_msg_size=1024) as b,
        node(net, A, synchronous=False) as a,
    ):
        await a.send(to(B, b"small"))
        await a.flush(B, PORT)
        (await b.receive()).release()
        app_header = encode(ChirpMeta(destination=("10.0.0.9", 3000)))
        data = b"x" * (1024 - len(app_header))
        started = trio.current_time()
        with pytest.raises(MessageTooLargeError) as info, trio.fail_after(3):  # a deadline travels
            await a.send(Message(data, header=app_header, address=B, port=PORT), synchronous=True)
        assert trio.current_time() == started  # refused as it was taken: not at its deadline
        found = re.search(r"message of (\d+) bytes \(header \+ data, (\d+) of them", str(info.value))
        assert found is not None, str(info.value)
        total, ours = int(found[1]), int(found[2])
        assert ours > 0
        assert total - ours == len(app_header) + len(data)


async def test_flush_raises_as_soon_as_the_last_unwritten_one_is_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.refuse(B)  # nothing listens there: the dial fails, and the queued messages with it
    async with node(net, A, synchronous=False, timeout=30.0) as a:
        await a.send(to(B, b"one"))
        started = trio.current_time()
        with pytest.raises(ConnectionLostError, match=r"1 asynchronous message\(s\)") as info:
            await a.flush(B, PORT)
        assert isinstance(info.value.__cause__, CannotConnectError)
        assert trio.current_time() == started  # at once, not at a deadline or a collection


async def test_a_sender_waiting_for_room_gets_the_failed_dials_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.refuse(B)
    net.set_latency(A, B, 0.5)  # the refusal comes after a round trip
    async with node(net, A, send_queue_size=1, timeout=30.0) as a, trio.open_nursery() as nursery:
        errors: list[tuple[bytes, BaseException]] = []

        async def send(data: bytes) -> None:
            try:
                await a.send(to(B, data))
            except ChirpError as error:
                errors.append((data, error))

        nursery.start_soon(send, b"queued")
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        started = trio.current_time()
        nursery.start_soon(send, b"waiting for room")
        nursery.start_soon(send, b"waiting too")  # more waiting than the one place withdrawn
    assert sorted((data, type(error)) for data, error in errors) == [
        (b"queued", CannotConnectError),
        (b"waiting for room", CannotConnectError),
        (b"waiting too", CannotConnectError),
    ]
    assert trio.current_time() == started + 1.0  # at the refusal, not at a deadline


async def test_a_withdrawn_message_makes_room_while_still_connecting(autojump_clock: trio.abc.Clock) -> None:
    """The caller of a queued message leaves while the dial is still under way: its place
    goes to the sender waiting for room, whose message is then the one delivered."""
    net = MemoryNetwork()
    net.set_latency(A, B, 0.5)  # the connect takes a second
    async with (
        node(net, B) as b,
        node(net, A, send_queue_size=1, timeout=30.0) as a,
        trio.open_nursery() as nursery,
    ):

        async def give_up() -> None:
            with trio.move_on_after(0.25):
                await a.send(to(B, b"given up"))

        nursery.start_soon(give_up)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        nursery.start_soon(a.send, to(B, b"waited for room"))
        msg = await b.receive()
        assert msg.data == b"waited for room"
        msg.release()
    assert b.statistics().messages_in == 1


async def test_an_async_send_that_waited_for_room_returns_when_accepted(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An asynchronous send returns when its message is accepted, also when it first had to
    wait for queue room: not when the message is written (the peer here reads only when
    told, so the third message is never written)."""
    net = MemoryNetwork()
    net.set_window(A, B, 1024)
    streams: list[trio.abc.Stream] = []
    accepted = trio.Event()

    def on_accept(stream: trio.abc.Stream, peer: str) -> None:
        streams.append(stream)
        accepted.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                net.host(B).serve, port=PORT, bind_v4="0.0.0.0", bind_v6=None, backlog=8, on_accept=on_accept
            )
        )
        async with node(net, A, synchronous=False, send_queue_size=1, timeout=60.0) as a:
            big = b"x" * 8192
            await a.send(to(B, big))  # written first: the writer blocks on the small window
            await accepted.wait()
            await streams[0].send_all(encode_handshake(PORT, b"\xee" * 16))
            await trio.testing.wait_all_tasks_blocked()
            await a.send(to(B, big))  # queued: the queue is full now
            returned = trio.Event()

            async def third() -> None:
                await a.send(to(B, b"third"))
                returned.set()

            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert not returned.is_set()  # waiting for room
            while a.statistics().bytes_out == 0:  # read until the first message is written:
                await streams[0].receive_some(1024)  # the writer takes the second, room frees
                await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(1.0):
                await returned.wait()  # accepted, though not written
            assert a.statistics().remotes[0].unwritten_async == 2  # the second and the third
        nursery.cancel_scope.cancel()


async def test_a_cancelled_sync_send_still_queued_is_never_written(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B) as b, node(net, A, timeout=30.0) as a, trio.open_nursery() as nursery:
        nursery.start_soon(a.send, to(B, b"in flight"))
        first = await b.receive()  # held: the next message waits in the queue behind it
        with trio.move_on_after(1.0) as scope:
            await a.send(to(B, b"given up"))
        assert scope.cancelled_caught
        assert a.statistics().queued == 0
        got: list[bytes] = []
        nursery.start_soon(_receive_all, b, got)
        sent = trio.Event()

        async def after() -> None:
            await a.send(to(B, b"after"))  # queued behind the withdrawn one
            sent.set()

        nursery.start_soon(after)
        await trio.testing.wait_all_tasks_blocked()
        first.release()
        with trio.fail_after(5.0):  # the withdrawn entry does not hold up the one behind it
            await sent.wait()
        assert got == [b"after"]
        nursery.cancel_scope.cancel()


async def test_a_message_may_be_sent_again_once_its_send_returned(autojump_clock: trio.abc.Clock) -> None:
    """docs/node.md: a message is "in use" only while its send runs (synchronous sends and
    those that waited for room both take the slow path)."""
    net = MemoryNetwork()
    got: list[bytes] = []
    async with node(net, B) as b, node(net, A) as a, trio.open_nursery() as nursery:
        nursery.start_soon(_receive_all, b, got)
        msg = to(B, b"again")
        await a.send(msg)
        await a.send(msg)
        assert got == [b"again", b"again"]
        nursery.cancel_scope.cancel()


async def test_a_header_above_the_wire_limit_is_refused_by_send(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        with pytest.raises(ValueError, match="the wire format allows at most 65535"):
            await a.send(Message(b"data", header=b"h" * 65536, address=B, port=PORT))
        await a.send(to(B, b"still fine"))  # nothing of it was queued or written
        msg = await b.receive()
        assert msg.data == b"still fine"
        msg.release()


async def test_a_send_timed_out_while_connecting_is_never_written(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 0.6)  # connected, handshakes included, after 1.8 s: past timeout
    async with node(net, B) as b, node(net, A, timeout=1.0) as a:
        with pytest.raises(ChirpTimeoutError, match="still connecting") as info:
            await a.send(to(B, b"too late"))
        assert "last attempt" not in str(info.value)  # there was none to report
        await trio.sleep(5.0)  # the connection is up meanwhile
        stats = a.statistics()
        assert (stats.connections, stats.queued, stats.messages_out) == (1, 0, 0)
        assert b.statistics().messages_in == 0


async def test_an_async_message_expired_in_the_queue_does_not_hold_up_the_next(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 0.6)  # connected, handshakes included, after 1.8 s
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False, timeout=1.0) as a:
        await a.send(to(B, b"expires"))  # its deadline (1 s) passes before the connection is up
        await trio.sleep(0.9)
        await a.send(to(B, b"in time"))
        with trio.fail_after(5.0), pytest.raises(ConnectionLostError, match="expired in the queue"):
            await a.flush(B, PORT)
        msg = await b.receive()
        assert msg.data == b"in time"
        msg.release()
        assert b.statistics().messages_in == 1


async def test_a_message_refused_at_the_announced_limit_does_not_hold_up_the_next(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False, max_msg_size=1024) as b,
        node(net, A, synchronous=False) as a,
    ):
        await a.send(to(B, b"x" * 2000))  # queued before B announced its limit: refused then
        await a.send(to(B, b"small"))
        with trio.fail_after(5.0), pytest.raises(ConnectionLostError, match="above the max_msg_size"):
            await a.flush(B, PORT)
        msg = await b.receive()
        assert msg.data == b"small"
        msg.release()
        with pytest.raises(MessageTooLargeError) as info:  # the limit is known now: at once
            await a.send(to(B, b"x" * 2000))
        assert "header map" not in str(info.value)  # none of it is ours


async def test_a_sync_message_refused_when_taken_fails_at_once(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, max_msg_size=1024), node(net, A, timeout=30.0) as a:
        started = trio.current_time()
        with pytest.raises(MessageTooLargeError, match="as it announced"):
            await a.send(to(B, b"x" * 2000))  # waits for the connection; refused when taken
        assert trio.current_time() == started
