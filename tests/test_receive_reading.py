"""``receive()`` reads the node's one connection itself (``_reading.py``, issue 14 section 1).

A receiving loop on a node with one connection takes its messages from the stream in its
own task: the reader task stands aside for the ``receive()`` it woke (``_inbox.Seat``) and
the receiving task reads the next message itself. These tests attack that from every side:
order and exactly-once delivery, a second connection's message not waiting behind the
first, cancellation at every step, slots, bad input, the peer's close, the node's close,
several receivers, and TLS.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import LowRandom, NodeInAThread
from reading_helpers import CancelAfterSteps, StepCounter
from tls_helpers import PKISet

from trio_chirp import Chirp, Config, Message, ShutdownError, open_chirp
from trio_chirp._protocol import TYPE_ACK, encode_handshake, pack_frame_head
from trio_chirp._reading import FrameReader
from trio_chirp.testing import MemoryNetwork

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def _node(net: MemoryNetwork, ip: str, pki: PKISet | None, **settings: Any) -> AsyncIterator[Chirp]:
    settings.setdefault("port", PORT)
    config = Config(disable_encryption=True, **settings) if pki is None else pki.config("alpha", **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


def _reading(chirp: Chirp) -> FrameReader:
    """The frame reader of ``chirp``'s one connection."""
    reading = chirp._links.sole_reading()
    assert reading is not None
    return reading


class _Loop:
    """A receiving loop on one node: every message's data, released at once (but ``hold``'s);
    how it ended."""

    def __init__(self, chirp: Chirp, hold: bytes | None = None) -> None:
        self.chirp = chirp
        self.hold = hold
        self.held: list[Message] = []
        self.got: list[bytes] = []
        self.ended: BaseException | None = None
        self.task: trio.lowlevel.Task | None = None

    async def run(self) -> None:
        self.task = trio.lowlevel.current_task()
        try:
            async for msg in self.chirp:
                self.got.append(bytes(msg.data))
                if msg.data == self.hold:
                    self.held.append(msg)
                else:
                    msg.release()
        except ShutdownError as exc:
            self.ended = exc
        self.ended = self.ended or StopAsyncIteration()

    async def until_reading(self, send_one: Callable[[], Awaitable[None]]) -> FrameReader:
        """Send messages until the loop's ``receive()`` reads its node's one connection."""
        for _ in range(4):
            await trio.testing.wait_all_tasks_blocked()
            reading = self.chirp._links.sole_reading()
            if reading is not None and reading.owner is self.task:
                return reading
            await send_one()
        raise AssertionError("the receiving loop never took the reading")


def _msg(data: bytes, ip: str = B) -> Message:
    return Message(data, address=ip, port=PORT)


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


async def test_a_receiving_loop_reads_its_own_messages(autojump_clock: Any, tls: PKISet | None) -> None:
    """A synchronous sender and a receiving loop: from the second message on, the receiving
    task reads every message itself, in order, each ACKed on release."""
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
            await a.send(_msg(b"m%d" % i))  # returns on its ACK: released by the receiver
        assert got == [b"m%d" % i for i in range(20)]
        # The first message wakes the seated receive() from the reader task, which stands
        # aside; every later one is read by the receiving task itself.
        assert _reading(b).receiver_reads == 19
        nursery.cancel_scope.cancel()


async def test_on_tcp_a_receiving_loop_takes_one_task_step_per_message() -> None:
    """What the reading is for: with the sender in its own Trio run (a real network's
    timing), the receiving task wakes once per message, from the socket itself."""
    got: list[bytes] = []
    steps: list[int] = []
    reads: list[int] = []

    async def send_twenty(chirp: Chirp) -> None:
        for i in range(20):
            await chirp.send(Message(b"m%d" % i, address="127.0.0.1", port=b.port))

    config = Config(port=0, bind_v6=None)
    async with open_chirp(config) as b:
        counter = StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            async with NodeInAThread(config, send_twenty):
                for _ in range(20):
                    msg = await b.receive()
                    steps.append(counter.steps)
                    reading = b._links.sole_reading()
                    reads.append(-1 if reading is None else reading.receiver_reads)
                    got.append(bytes(msg.data))
                    msg.release()
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert got == [b"m%d" % i for i in range(20)]
        # The first one or two messages come before the connection is up, or wake receive()
        # in its seat; from the third on, the receiving task reads every one itself.
        assert [later - earlier for earlier, later in itertools.pairwise(reads[2:])] == [1] * 17
        assert [later - earlier for earlier, later in itertools.pairwise(steps[2:])] == [1] * 17


async def test_a_message_on_a_second_connection_ends_the_read(autojump_clock: Any) -> None:
    """B's receive() reads its connection from A, where nothing comes; C connects and sends:
    the message reaches receive() at once, it does not wait behind A's silent connection."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(C, B, LATENCY)
    async with (
        _node(net, A, None) as a,
        _node(net, B, None) as b,
        _node(net, C, None) as c,
        trio.open_nursery() as nursery,
    ):
        loop = _Loop(b)
        nursery.start_soon(loop.run)
        await loop.until_reading(lambda: a.send(_msg(b"from a")))
        before = len(loop.got)
        started = trio.current_time()
        await c.send(_msg(b"from c"))  # synchronous: returns on its release by the loop
        assert loop.got[before:] == [b"from c"]
        # Only the connection's set-up and the frame's way, no timeout waited for.
        assert trio.current_time() - started < 1
        assert b._links.sole_reading() is None  # two connections now: receive() waits in the inbox
        await a.send(_msg(b"a again"))
        assert loop.got[-1] == b"a again"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("k", range(1, 11))
async def test_a_reading_receive_cancelled_at_any_step_loses_nothing(
    autojump_clock: Any, tls: PKISet | None, k: int
) -> None:
    """B's receiving task is cancelled after its k-th step while A's messages arrive: a
    new receiving loop gets every message once and in order, on the same connection."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    sent = [b"m%d" % i for i in range(12)]
    got: list[bytes] = []
    async with (
        _node(net, A, tls, synchronous=False) as a,
        _node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        await a.send(_msg(b"warm-up"))
        (await b.receive()).release()
        conn = b._links.sole_reading()

        async def first_loop(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                counter = CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
                trio.lowlevel.add_instrument(counter)
                task_status.started(scope)
                try:
                    async for msg in b:
                        got.append(bytes(msg.data))
                        msg.release()
                finally:
                    trio.lowlevel.remove_instrument(counter)
            first_done.set()

        first_done = trio.Event()
        scope = await nursery.start(first_loop)
        for data in sent:
            await a.send(_msg(data))
        await a.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()  # if its k-th step has not come yet
        await first_done.wait()
        with trio.fail_after(5):
            while len(got) < len(sent):
                msg = await b.receive()
                got.append(bytes(msg.data))
                msg.release()
        assert got == sent
        assert b._links.sole_reading() is conn  # the same connection throughout
        assert b.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_closing_the_node_ends_a_reading_receive(autojump_clock: Any) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with _node(net, A, None) as a, _node(net, B, None) as b, trio.open_nursery() as nursery:
        loop = _Loop(b)
        nursery.start_soon(loop.run)
        await loop.until_reading(lambda: a.send(_msg(b"up")))
        await b.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(loop.ended, StopAsyncIteration)  # ShutdownError ends ``async for``


async def test_a_full_slot_pool_stops_the_reading_receive_and_the_reader_takes_over(
    autojump_clock: Any,
) -> None:
    """B has one slot. Its receiving loop, reading, gets "one" and holds it; its next
    receive() reads "two"'s head, finds no slot, leaves the frame to the reader task (which
    waits for the slot, as always) and waits; the release lets "two" and "three" through."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        _node(net, A, None, synchronous=False) as a,
        _node(net, B, None, synchronous=False, max_slots=1) as b,
        trio.open_nursery() as nursery,
    ):
        loop = _Loop(b, hold=b"one")
        nursery.start_soon(loop.run)
        reading = await loop.until_reading(lambda: a.send(_msg(b"warm-up"), synchronous=True))
        warm = len(loop.got)
        for data in (b"one", b"two", b"three"):
            await a.send(_msg(data))
        await trio.sleep(1)  # the frames' way (the autojump clock)
        assert loop.got[warm:] == [b"one"]
        assert reading.stopped_for_slot == 1  # the receiving task stopped at "two"'s head
        assert reading.owner is not loop.task
        loop.held[0].release()
        await trio.sleep(1)
        assert loop.got[warm:] == [b"one", b"two", b"three"]
        nursery.cancel_scope.cancel()


async def test_several_receivers_get_every_message_once(autojump_clock: Any, tls: PKISet | None) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    sent = [b"m%02d" % i for i in range(40)]
    got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    async with (
        _node(net, A, tls, synchronous=False) as a,
        _node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        all_in = trio.Event()

        async def receiver(n: int) -> None:
            async for msg in b:
                got[n].append(bytes(msg.data))
                msg.release()
                if sum(map(len, got.values())) == len(sent):
                    all_in.set()

        for n in got:
            nursery.start_soon(receiver, n)
        for data in sent:
            await a.send(_msg(data))
            if data.endswith(b"5"):
                await trio.sleep(LATENCY)  # in several batches
        with trio.fail_after(5):
            await all_in.wait()
        assert sorted(m for ms in got.values() for m in ms) == sent
        for ms in got.values():
            assert ms == sorted(ms)  # each receiver's share in order
        nursery.cancel_scope.cancel()


async def _raw_client(net: MemoryNetwork, ip: str) -> trio.abc.Stream:
    stream, _ = await net.host(ip).connect(B, PORT)
    await stream.send_all(encode_handshake(PORT, bytes([0xEE]) * 16))
    return stream


def _data_frame(n: int, data: bytes) -> bytes:
    return pack_frame_head(bytes([n]) * 16, n, len(data), 0, 0) + data  # data_len, then header_len


async def test_bad_input_seen_by_a_reading_receive_closes_only_that_connection(autojump_clock: Any) -> None:
    """A raw peer sends good messages, then an ACK frame with a payload: B's receive(),
    reading, closes that connection with the reader's ProtocolError and serves the next peer."""
    net = MemoryNetwork()
    async with _node(net, B, None, synchronous=False) as b, trio.open_nursery() as nursery:
        stream = await _raw_client(net, C)
        loop = _Loop(b)
        nursery.start_soon(loop.run)
        sent = iter(range(1, 10))
        await loop.until_reading(lambda: stream.send_all(_data_frame(next(sent), b"good")))
        good = len(loop.got)
        await stream.send_all(pack_frame_head(b"\x02" * 16, 2, 5, 0, TYPE_ACK) + b"12345")
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().errors == {"ProtocolError": 1}
        assert b._links.sole_reading() is None  # that connection is closed
        assert loop.got == [b"good"] * good
        assert loop.ended is None
        async with _node(net, A, None, synchronous=False) as a:
            await a.send(_msg(b"after"))
            await a.flush(B, PORT)
            await trio.sleep(1)  # the frame's way (the autojump clock)
        assert loop.got[good:] == [b"after"]
        nursery.cancel_scope.cancel()


async def test_the_peers_close_while_receive_reads(autojump_clock: Any) -> None:
    """The raw peer closes its stream: receive() goes on waiting, and the next peer's message
    reaches it."""
    net = MemoryNetwork()
    async with _node(net, B, None, synchronous=False) as b, trio.open_nursery() as nursery:
        stream = await _raw_client(net, C)
        loop = _Loop(b)
        nursery.start_soon(loop.run)
        sent = iter(range(1, 10))
        await loop.until_reading(lambda: stream.send_all(_data_frame(next(sent), b"hi")))
        count = len(loop.got)
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert b._links.sole_reading() is None  # the connection is gone
        assert b.statistics().errors == {}  # a clean close with nothing in flight is routine
        async with _node(net, A, None, synchronous=False) as a:
            await a.send(_msg(b"next"))
            await a.flush(B, PORT)
            await trio.sleep(1)
        assert loop.got[count:] == [b"next"]
        assert loop.ended is None
        nursery.cancel_scope.cancel()


async def test_the_reader_resumes_when_the_receiving_task_stops_receiving(autojump_clock: Any) -> None:
    """The reader task stood aside for B's receiving task, which takes its message and then
    stops receiving: the reader reads again, so the response to B's asynchronous request
    (which does not read the connection) still arrives."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        _node(net, A, None, synchronous=False) as a,
        _node(net, B, None, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):

        async def a_answers() -> None:
            async for msg in a:
                await a.reply(msg, b"re: " + bytes(msg.data))

        nursery.start_soon(a_answers)
        await a.send(_msg(b"hello"))
        (await b.receive()).release()  # the connection is up

        async def receive_one(task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            (await b.receive()).release()  # seated: the reader stands aside for it

        await nursery.start(receive_one)
        await a.send(_msg(b"the one"))
        await trio.sleep(1)  # delivered, and receive_one has returned
        reading = _reading(b)
        assert reading.owner is not None  # someone reads again: the reader task
        with trio.fail_after(5):
            response = await b.request(Message(b"q", address=A, port=PORT), synchronous=False)
        assert response.data == b"re: q"
        response.release()
        nursery.cancel_scope.cancel()
