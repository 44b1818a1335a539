"""A task waiting for its ACK reads its own connection (``_reading.py``, issue 14 section 1).

The hand-over of a connection's reading between its reader task and a synchronous
``send()``: nothing read is lost or reordered, slots and backpressure hold, a cancelled
owner hands the reading back at any point, and a failure the owner meets closes the
connection with the error the reader would have closed it with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import LowRandom, memory_pair, read_frames, serve_raw
from reading_helpers import CancelAfterSteps, hold_some
from tls_helpers import PKISet, handshaken

from trio_chirp import (
    Chirp,
    ChirpTimeoutError,
    Config,
    ConnectionLostError,
    Message,
    ProtocolError,
    open_chirp,
)
from trio_chirp._connection import Connection
from trio_chirp._protocol import (
    TYPE_ACK,
    TYPE_REQ_ACK,
    FrameHead,
    encode_handshake,
    pack_frame_head,
)
from trio_chirp.testing import MemoryNetwork, MemoryStream

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def _node(net: MemoryNetwork, ip: str, pki: PKISet | None, **settings: Any) -> AsyncIterator[Chirp]:
    settings.setdefault("port", PORT)
    config = Config(disable_encryption=True, **settings) if pki is None else pki.config("alpha", **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


def _connection(chirp: Chirp, ip: str) -> Connection:
    remote = chirp._remotes.find((ip, PORT))
    assert remote is not None
    assert remote.current is not None
    return remote.current


def _msg(data: bytes, ip: str = B) -> Message:
    return Message(data, address=ip, port=PORT)


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


async def test_a_synchronous_sender_reads_its_own_acks(autojump_clock: Any, tls: PKISet | None) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    got: list[bytes] = []
    async with _node(net, A, tls) as a, _node(net, B, tls) as b, trio.open_nursery() as nursery:

        async def receiver() -> None:
            async for msg in b:
                got.append(bytes(msg.data))
                msg.release()

        nursery.start_soon(receiver)
        for i in range(20):
            await a.send(_msg(b"m%d" % i))
        reading = _connection(a, B).reading
        # The first send waits for the connection and the second finds the reader reading;
        # after its ACK the reader hands the reading over, and every later sender reads.
        assert reading.handed_over == 18
        assert got == [b"m%d" % i for i in range(20)]
        # The reader reads again once nobody waits: a message from B arrives at A's inbox.
        await b.send(Message(b"back", address=A, port=PORT), synchronous=False)
        with trio.fail_after(1):
            back = await a.receive()
        assert back.data == b"back"
        back.release()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("k", range(1, 13))
async def test_an_owner_cancelled_at_any_await_hands_the_reading_back_and_loses_nothing(
    autojump_clock: Any, tls: PKISet | None, k: int
) -> None:
    """A's sender is cancelled after its k-th step while B's flood of data frames arrives:
    the connection survives, every message of B reaches A once and in order, later sends work."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    at_b: list[bytes] = []
    at_a: list[bytes] = []
    flood = [b"b%d" % i for i in range(12)]
    all_in = trio.Event()
    async with (
        _node(net, A, tls) as a,
        _node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):

        async def b_receives() -> None:
            async for msg in b:
                at_b.append(bytes(msg.data))
                if msg.data == b"m0":
                    for data in flood:  # written ahead of m0's ACK
                        await b.send(Message(data, address=A, port=PORT))
                msg.release()

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()
                if len(at_a) == len(flood):
                    all_in.set()

        nursery.start_soon(b_receives)
        nursery.start_soon(a_receives)
        await a.send(_msg(b"warm-up"))  # the connection is up; the reader handed over once
        conn = _connection(a, B)
        outcome = "cancelled"
        with trio.CancelScope() as scope:
            instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
            trio.lowlevel.add_instrument(instrument)
            try:
                await a.send(_msg(b"m0"))
                outcome = "sent"
            finally:
                trio.lowlevel.remove_instrument(instrument)
        assert outcome == ("cancelled" if scope.cancelled_caught else "sent")
        for i in range(1, 4):
            await a.send(_msg(b"m%d" % i))
        with trio.fail_after(5):
            await all_in.wait()
        assert at_a == flood
        assert at_b == [b"warm-up", b"m0", b"m1", b"m2", b"m3"]
        assert _connection(a, B) is conn  # the same connection throughout
        assert a.statistics().errors == {}
        assert conn.reading.owner is not trio.lowlevel.current_task()
        nursery.cancel_scope.cancel()


async def test_a_flood_while_the_sender_reads_takes_slots_as_the_reader_would(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """A synchronous node (one slot) reads a flood ahead of its ACK: the sender stops at the
    frame that finds no slot, the reader waits for it, and nothing is lost or reordered."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    flood = [b"f%d" % i for i in range(40)]
    all_in = trio.Event()
    at_a: list[bytes] = []
    in_use: list[int] = []
    async with (
        _node(net, A, tls) as a,
        _node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):

        async def b_receives() -> None:
            async for msg in b:
                if msg.data == b"go":
                    for data in flood:
                        await b.send(Message(data, address=A, port=PORT))
                msg.release()

        async def a_receives() -> None:
            async for msg in a:
                with msg:
                    in_use.append(a.statistics().slots_in_use)
                    at_a.append(bytes(msg.data))
                    await trio.sleep(0.05)  # a slow application (virtual time, MockClock)
                if len(at_a) == len(flood):
                    all_in.set()

        nursery.start_soon(b_receives)
        nursery.start_soon(a_receives)
        for _ in range(3):  # the connection is up, the reader has handed the reading over
            await a.send(_msg(b"warm-up"))
        assert _connection(a, B).reading.handed_over == 1
        await a.send(_msg(b"go"))  # its ACK comes behind the flood, read by this sender
        for i in range(3):
            await a.send(_msg(b"after%d" % i))
        with trio.fail_after(10):
            await all_in.wait()
        reading = _connection(a, B).reading
        assert at_a == flood
        assert max(in_use) == 1  # one slot: the flood was read one message at a time
        assert a.statistics().slots_peak == 1
        assert reading.stopped_for_slot >= 1
        assert reading.handed_over >= 3
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_the_owners_connection_cut_fails_the_send_with_the_connections_error(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    held: list[Message] = []
    holding = trio.Event()
    async with _node(net, A, tls) as a, _node(net, B, tls) as b, trio.open_nursery() as nursery:
        nursery.start_soon(hold_some, b, held, b"hold", holding)  # A's sender reads, waiting
        for _ in range(3):  # the connection is up, the reader has handed the reading over
            await a.send(_msg(b"warm-up"))
        conn = _connection(a, B)
        me = trio.lowlevel.current_task()
        async with trio.open_nursery() as inner:

            async def cut_when_waiting() -> None:
                await holding.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert conn.reading.owner is me  # the sender reads
                net.cut(A, B)

            inner.start_soon(cut_when_waiting)
            with pytest.raises(ConnectionLostError) as info:
                await a.send(_msg(b"hold"))
        assert conn.failure is info.value  # the connection's own error, as the reader would raise it
        assert a.statistics().errors == {"ConnectionLostError": 1}
        assert conn.reading.handed_over == 2
        held[0].release(ack=False)
        await a.send(_msg(b"again"))  # the node keeps serving: a new connection
        assert _connection(a, B) is not conn
        nursery.cancel_scope.cancel()


async def test_an_ack_that_never_comes_times_out_as_before_while_the_sender_reads(
    autojump_clock: Any,
) -> None:
    net = MemoryNetwork()
    held: list[Message] = []
    async with (
        _node(net, A, None, timeout=2.0) as a,
        _node(net, B, None) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(hold_some, b, held)
        for _ in range(3):
            await a.send(_msg(b"warm-up"))
        conn = _connection(a, B)
        start = trio.current_time()
        with pytest.raises(ChirpTimeoutError, match=r"no ACK within timeout=2\.0s") as info:
            await a.send(_msg(b"hold"))
        assert trio.current_time() - start == pytest.approx(2.0)
        # Alone in flight to a peer that grants one, the send waits under no cancel scope of
        # its own: the connection's ACK timer ends it, and it is said as a send's timeout.
        assert str(info.value).startswith(f"send to {B}:{PORT}: no ACK")
        assert info.value.__cause__ is conn.failure
        assert a.statistics().send_errors == {"ChirpTimeoutError": 1}
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().errors == {"ChirpTimeoutError": 1}  # the connection's ACK timer
        assert conn.reading.handed_over == 2  # the last warm-up and the timed-out send read
        assert "no ACK" in str(conn.failure)
        held[0].release()
        nursery.cancel_scope.cancel()


class _RawPeer:
    """A peer on the memory network that ACKs the first ``good`` REQ_ACK frames, then answers
    each with ``answer(head)``."""

    def __init__(self, net: MemoryNetwork, answer: Callable[[FrameHead], bytes], good: int = 3) -> None:
        self.net, self.answer, self.good = net, answer, good

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await serve_raw(nursery, self.net, C, PORT, self._talk)
            task_status.started(PORT)

    async def _talk(self, stream: MemoryStream) -> None:
        await stream.send_all(encode_handshake(PORT, b"\xee" * 16))

        async def answer(event: object) -> None:
            if isinstance(event, FrameHead) and event.type & TYPE_REQ_ACK:
                if self.good:
                    self.good -= 1
                    await stream.send_all(pack_frame_head(event.identity, 0, 0, 0, TYPE_ACK))
                else:
                    await stream.send_all(self.answer(event))

        await read_frames(stream, answer)


async def test_bad_input_seen_by_the_owner_closes_the_connection_with_the_readers_error(
    autojump_clock: Any,
) -> None:
    """A peer answers with an ACK frame that carries a payload: the owner's parser refuses it,
    the connection closes with that ``ProtocolError``, the send fails with it, the node goes on."""
    net = MemoryNetwork()
    net.set_latency(A, C, LATENCY)
    net.set_latency(A, B, LATENCY)
    peer = _RawPeer(net, lambda head: pack_frame_head(head.identity, 0, 5, 0, TYPE_ACK) + b"12345")
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        async with _node(net, A, None) as a, _node(net, B, None) as b:

            async def b_releases() -> None:
                async for msg in b:
                    msg.release()

            nursery.start_soon(b_releases)
            for _ in range(3):
                await a.send(_msg(b"good", C))
            conn = _connection(a, C)
            with pytest.raises(ProtocolError, match="carries a payload") as info:
                await a.send(_msg(b"x", C))
            assert conn.reading.handed_over == 2  # the sender read the bad frame
            assert conn.failure is info.value
            assert a.statistics().errors == {"ProtocolError": 1}
            for data in (b"x", b"y", b"z"):  # the node keeps serving everyone else
                await a.send(_msg(data, B))
            assert _connection(a, B).reading.handed_over == 1
        nursery.cancel_scope.cancel()


async def test_the_peers_clean_close_while_the_sender_reads(autojump_clock: Any) -> None:
    """The peer reads the REQ_ACK frame and closes (FIN): the send fails with the close."""
    net = MemoryNetwork()
    net.set_latency(A, C, LATENCY)

    class Closer(_RawPeer):
        async def _talk(self, stream: MemoryStream) -> None:
            await stream.send_all(encode_handshake(PORT, b"\xee" * 16))

            async def ack_then_close(event: object) -> bool:
                if isinstance(event, FrameHead) and event.type & TYPE_REQ_ACK:
                    if not self.good:
                        await stream.aclose()
                        return True
                    self.good -= 1
                    await stream.send_all(pack_frame_head(event.identity, 0, 0, 0, TYPE_ACK))
                return False

            await read_frames(stream, ack_then_close)

    peer = Closer(net, lambda head: b"")
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        async with _node(net, A, None) as a:
            for _ in range(3):
                await a.send(_msg(b"good", C))
            conn = _connection(a, C)
            with pytest.raises(ConnectionLostError, match="closed by the peer") as info:
                await a.send(_msg(b"x", C))
            assert conn.reading.handed_over == 2
            assert conn.failure is info.value
            # Not routine: a message was in flight (node.md), whoever read the close.
            assert a.statistics().errors == {"ConnectionLostError": 1}
        nursery.cancel_scope.cancel()


# --- the streams: a cancelled receive_some loses nothing ------------------------------------


async def _memory_streams(nursery: trio.Nursery) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    return await memory_pair(MemoryNetwork(), nursery)


async def _tcp_streams(nursery: trio.Nursery) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


@pytest.mark.parametrize("kind", ["memory", "tcp", "tls-memory", "tls-tcp"])
async def test_a_cancelled_receive_some_loses_no_bytes(kind: str, pki: PKISet) -> None:
    """What the hand-over relies on: a task reading a connection may be cancelled in
    ``receive_some`` (waiting, or just as data arrives) and the next reader gets every byte."""
    async with trio.open_nursery() as nursery:
        opened = _memory_streams if kind.endswith("memory") else _tcp_streams
        writer, reader = await opened(nursery)
        if kind.startswith("tls"):
            writer, reader = await handshaken(pki, writer, reader)
        sent = bytearray()
        got = bytearray()
        cancelled = 0

        async def read_once(scope: trio.CancelScope) -> None:
            nonlocal cancelled
            with scope:
                got.extend(await reader.receive_some(700))
            if scope.cancelled_caught:
                cancelled += 1

        for i in range(60):
            chunk = bytes([i]) * (800 + 37 * i)  # above one read of 700
            scope = trio.CancelScope()
            async with trio.open_nursery() as rounds:
                rounds.start_soon(read_once, scope)
                await trio.testing.wait_all_tasks_blocked()  # blocked in receive_some
                if i % 3 == 0:
                    scope.cancel()  # cancelled while waiting, nothing has arrived
                await writer.send_all(chunk)
                sent += chunk
                if i % 3 == 1:
                    scope.cancel()  # cancelled as the bytes arrive
            if i % 3 == 2:  # part of the chunk read, the rest waiting in the stream's buffers
                scope = trio.CancelScope()
                scope.cancel()
                await read_once(scope)  # cancelled before it returns anything
            with trio.fail_after(10):  # a lost byte would leave this waiting
                while len(got) < len(sent):  # the next reader gets the rest
                    got.extend(await reader.receive_some(65536))
        assert bytes(got) == bytes(sent)
        assert cancelled >= 40
        await writer.aclose()
        await reader.aclose()
        nursery.cancel_scope.cancel()


async def test_a_synchronous_request_reads_its_response_and_ack_itself(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """reply() writes the response, then the ACK: the requesting task reads both."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        _node(net, A, tls) as a,
        _node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):

        async def worker() -> None:
            async for msg in b:
                await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(worker)
        answers = [bytes((await a.request(_msg(b"q%d" % i))).data) for i in range(6)]
        assert answers == [b"re:q%d" % i for i in range(6)]
        assert _connection(a, B).reading.handed_over == 4  # all but the first two
        assert a.statistics().slots_in_use == 0  # each response was released at once
        nursery.cancel_scope.cancel()


async def test_an_ack_timeout_after_a_slot_wait_that_ended_gives_no_slot_hint(autojump_clock: Any) -> None:
    """A (one slot) held B's message until B's second one had to wait for the slot, then
    released it: that wait is over. A later ACK timeout on the same connection must not say
    that A stopped reading for want of a slot (the hint is only for a reader still waiting)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    held: list[Message] = []
    async with (
        _node(net, A, None, timeout=2.0) as a,
        _node(net, B, None, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(hold_some, b, held)
        await a.send(_msg(b"up"))
        first_two = [Message(b"one", address=A, port=PORT), Message(b"two", address=A, port=PORT)]
        for msg in first_two:
            await b.send(msg)
        one = await a.receive()  # holds A's one slot: "two" waits for it
        await trio.sleep(1)
        conn = _connection(a, B)
        assert conn.waiting_for_slot
        one.release()
        two = await a.receive()
        two.release()
        await trio.testing.wait_all_tasks_blocked()
        assert not conn.waiting_for_slot  # the wait is over
        with pytest.raises(ChirpTimeoutError, match=r"no ACK within timeout=2\.0s") as info:
            await a.send(_msg(b"hold"))
        assert "receive slot" not in str(info.value)
        assert "budget" not in str(info.value)
        held[0].release()
        nursery.cancel_scope.cancel()


async def test_a_callers_earlier_deadline_ends_a_send_waiting_under_the_ack_timer(
    autojump_clock: Any,
) -> None:
    """A send alone in flight to a peer that grants one waits under its connection's ACK
    timer, not a scope of its own: its caller's own, earlier deadline still ends it on time,
    with Trio's own exception, and the connection stays until the ACK timer's timeout."""
    net = MemoryNetwork()
    held: list[Message] = []
    async with (
        _node(net, A, None, timeout=2.0) as a,
        _node(net, B, None) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(hold_some, b, held)
        await a.send(_msg(b"warm-up"))
        conn = _connection(a, B)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
            await a.send(_msg(b"hold"))
        assert trio.current_time() - start == pytest.approx(0.5)
        assert a.statistics().send_errors == {}  # Trio's cancellation, not a send error
        assert not conn.closed  # the message keeps its place until its ACK or the timer
        await trio.sleep(1.6)
        assert conn.closed
        assert "no ACK within timeout=2.0s" in str(conn.failure)
        held[0].release()
        nursery.cancel_scope.cancel()
