"""Attacks on ``receive()`` reading the node's one connection itself (``_reading.py``, the
seat, ``Inbox.reading``): several receivers, cancellation at every step, a second connection
appearing, the sole connection failing, node close, slots, synchronous senders and requests
on the same node, TLS. (Written by a reviewer with a brief to break it.)"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from memnet_helpers import read_frames, serve_raw
from reading_helpers import (
    LATENCY,
    PORT,
    A,
    B,
    C,
    CancelAfterSteps,
    Got,
    conn_of,
    msg_to,
    node,
    receiver_owns,
    until,
    up,
)
from tls_helpers import PKISet

from trio_chirp import ProtocolError, ShutdownError
from trio_chirp._protocol import (
    TYPE_ACK,
    encode_frame,
    encode_handshake,
    pack_frame_head,
)
from trio_chirp.testing import MemoryNetwork, MemoryStream


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


# --- the basics ---------------------------------------------------------------------------


async def test_a_receive_loop_reads_the_sole_connection_and_gets_everything_in_order(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    got: list[bytes] = []
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        conn = await up(a, b, A, B)
        done = trio.Event()

        async def receiver() -> None:
            async for msg in a:
                got.append(bytes(msg.data))
                msg.release()
                if len(got) == 40:
                    done.set()

        nursery.start_soon(receiver)
        for i in range(20):
            await b.send(msg_to(b"s%d" % i, A))  # synchronous: its ACK is A's release
        for i in range(20, 40):
            await b.send(msg_to(b"s%d" % i, A), synchronous=False)
        with trio.fail_after(5):
            await done.wait()
        assert got == [b"s%d" % i for i in range(40)]
        assert conn.reading.receiver_reads >= 10
        assert a.statistics().errors == {}
        assert a.statistics().slots_in_use == 0
        nursery.cancel_scope.cancel()


async def test_several_receivers_at_once_share_one_connection_without_loss_or_duplicates(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    per_task: dict[int, list[int]] = {i: [] for i in range(4)}
    total = 120
    done = trio.Event()
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        conn = await up(a, b, A, B)

        async def receiver(i: int) -> None:
            async for msg in a:
                per_task[i].append(int(bytes(msg.data)))
                msg.release()
                if i % 2:
                    await trio.lowlevel.checkpoint()  # some receivers yield between messages
                if sum(len(v) for v in per_task.values()) == total:
                    done.set()

        for i in range(4):
            nursery.start_soon(receiver, i)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(total):
            await b.send(msg_to(b"%d" % i, A), synchronous=(i % 3 == 0))
        with trio.fail_after(10):
            await done.wait()
        everything = sorted(n for v in per_task.values() for n in v)
        assert everything == list(range(total))
        for v in per_task.values():
            assert v == sorted(v)  # one connection's order, seen by each receiver
        assert conn.reading.receiver_reads >= 1
        assert a.statistics().errors == {}
        assert a.statistics().slots_in_use == 0
        nursery.cancel_scope.cancel()


# --- a second connection while receive() reads the first -----------------------------------


@pytest.mark.parametrize("who_dials", ["peer dials", "node dials"])
async def test_a_second_connections_message_does_not_wait_behind_the_read_connection(
    autojump_clock: Any, tls: PKISet | None, who_dials: str
) -> None:
    """receive() reads B's silent connection; a message from C (a new connection) must come now."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, LATENCY)
    async with (
        node(net, A, tls) as a,
        node(net, B, tls) as b,
        node(net, C, tls) as c,
        trio.open_nursery() as nursery,
    ):
        conn = await up(a, b, A, B)
        got = Got()

        async def receiver() -> None:
            async for msg in a:
                got.append((trio.current_time(), bytes(msg.data)))
                msg.release()

        async with trio.open_nursery() as inner:
            inner.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await b.send(msg_to(b"warm", A))  # the loop's next receive() reads itself
            await trio.testing.wait_all_tasks_blocked()
            receiver_task = next(t for t in inner.child_tasks)
            assert conn.reading.owner is receiver_task  # receive() reads B's connection
            del got[:]
            start = trio.current_time()
            if who_dials == "node dials":
                # A dials C (its message to C is asynchronous), C answers on that connection.
                await a.send(msg_to(b"to-c", C), synchronous=False)

                async def c_answers() -> None:
                    msg = await c.receive()
                    msg.release()
                    await c.send(msg_to(b"from-c", A), synchronous=False)

                nursery.start_soon(c_answers)
            else:
                await c.send(msg_to(b"from-c", A), synchronous=False)
            await got.wait_len(1, 2)  # B stays silent for ever
            inner.cancel_scope.cancel()
        assert got[0][1] == b"from-c"
        assert got[0][0] - start < 1.0
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_a_second_connection_then_the_first_closes_and_receive_goes_on(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """receive() reads B; C connects; B's connection is closed from A's side (as GC would); C's
    later messages and B's after a reconnect all arrive."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, LATENCY)
    got: list[bytes] = []
    async with (
        node(net, A, tls) as a,
        node(net, B, tls) as b,
        node(net, C, tls) as c,
        trio.open_nursery() as nursery,
    ):
        conn_b = await up(a, b, A, B)
        arrived = trio.Event()

        async def receiver() -> None:
            async for msg in a:
                got.append(bytes(msg.data))
                msg.release()
                arrived.set()

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await receiver_owns(b, A, conn_b)
        assert conn_b.reading.receiver_reads >= 1
        del got[:]
        await c.send(msg_to(b"c0", A))  # synchronous: A released it
        assert got == [b"c0"]
        conn_c = conn_of(a, C)
        from trio_chirp import ShutdownError as _SE

        conn_b.close(_SE("closed for the test"))
        await trio.testing.wait_all_tasks_blocked()
        assert conn_b not in a._links.connections
        # Now C is the sole connection: receive() may read it; its messages must come.
        for i in range(1, 6):
            await c.send(msg_to(b"c%d" % i, A))
        await b.send(msg_to(b"b-again", A))
        await c.send(msg_to(b"c6", A))
        assert got == [b"c0", b"c1", b"c2", b"c3", b"c4", b"c5", b"b-again", b"c6"]
        assert conn_c.reading.owner is not None
        nursery.cancel_scope.cancel()


# --- cancellation at every step -------------------------------------------------------------


@pytest.mark.parametrize("k", range(1, 9))
async def test_a_receive_cancelled_at_any_step_loses_nothing(
    autojump_clock: Any, tls: PKISet | None, k: int
) -> None:
    """A receive() (reading or seated) is cancelled after its k-th step while B floods A: every
    message reaches later receive() calls, once, in order; the connection survives."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    flood = [b"f%d" % i for i in range(15)]
    async with (
        node(net, A, tls) as a,
        node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        conn = await up(a, b, A, B)
        got: list[bytes] = []
        go = trio.Event()

        async def flooder() -> None:
            await go.wait()
            for data in flood:
                await b.send(msg_to(data, A))
                await trio.sleep(0.003)

        nursery.start_soon(flooder)
        for _round in range(3):
            with trio.CancelScope() as scope:
                instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
                trio.lowlevel.add_instrument(instrument)
                try:
                    go.set()
                    msg = await a.receive()
                    got.append(bytes(msg.data))
                    msg.release()
                finally:
                    trio.lowlevel.remove_instrument(instrument)
        with trio.fail_after(5):
            while len(got) < len(flood):
                msg = await a.receive()
                got.append(bytes(msg.data))
                msg.release()
        assert got == flood
        assert conn_of(a, B) is conn
        assert a.statistics().errors == {}
        assert a.statistics().slots_in_use == 0
        nursery.cancel_scope.cancel()


async def test_a_woken_seated_receive_cancelled_before_it_runs_loses_nothing(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """The seated receive() is woken by the reader (which stands aside for it), and its scope is
    cancelled before it runs: the message is returned or stays for the next receive(), and the
    reading goes back (later messages come)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        node(net, A, tls) as a,
        node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        conn = await up(a, b, A, B)
        got: list[bytes] = []
        cancelled = 0
        for i in range(6):
            # Make the reader task the owner (it reads when nobody waits), so receive() seats.
            await trio.testing.wait_all_tasks_blocked()
            me = trio.lowlevel.current_task()
            with trio.CancelScope() as scope:

                class _OnWake(trio.abc.Instrument):
                    def task_scheduled(
                        self,
                        task: trio.lowlevel.Task,
                        me: trio.lowlevel.Task = me,
                        scope: trio.CancelScope = scope,
                    ) -> None:
                        if task is me and a._inbox.seat.task is me:
                            scope.cancel()

                async def send_one(i: int = i) -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    await b.send(msg_to(b"m%d" % i, A))

                nursery.start_soon(send_one)
                instrument = _OnWake()
                trio.lowlevel.add_instrument(instrument)
                try:
                    msg = await a.receive()
                    got.append(bytes(msg.data))
                    msg.release()
                finally:
                    trio.lowlevel.remove_instrument(instrument)
            cancelled += scope.cancel_called
        with trio.fail_after(5):
            while len(got) < 6:
                msg = await a.receive()
                got.append(bytes(msg.data))
                msg.release()
        assert got == [b"m%d" % i for i in range(6)]
        assert a.statistics().errors == {}
        assert conn_of(a, B) is conn
        assert conn.reading.owner is not None or conn.reading._aside is None
        nursery.cancel_scope.cancel()


# --- the sole connection fails while receive() reads it ----------------------------------


async def test_the_sole_connection_cut_while_receive_reads_it(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        conn = await up(a, b, A, B)
        got: list[bytes] = []
        arrived = trio.Event()

        async def receiver() -> None:
            async for msg in a:
                got.append(bytes(msg.data))
                msg.release()
                arrived.set()

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await receiver_owns(b, A, conn)  # receive() reads
        del got[:]
        net.cut(A, B)
        await until(lambda: conn.closed and conn not in a._links.connections)
        assert got == []
        await b.send(msg_to(b"after", A))  # a new connection: receive() gets it
        assert got == [b"after"]
        assert conn_of(a, B) is not conn
        nursery.cancel_scope.cancel()


async def test_the_peer_closes_the_sole_connection_while_receive_reads_it(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    got: list[bytes] = []
    async with node(net, A, tls) as a, trio.open_nursery() as nursery:

        async def receiver() -> None:
            async for msg in a:
                got.append(bytes(msg.data))
                msg.release()

        nursery.start_soon(receiver)
        async with node(net, B, tls) as b:
            for i in range(3):
                await b.send(msg_to(b"b%d" % i, A))
            conn = conn_of(a, B)
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(conn.reading.owner, trio.lowlevel.Task)
        await until(lambda: conn.closed)
        async with node(net, C, tls) as c:
            for i in range(3):
                await c.send(msg_to(b"c%d" % i, A))
        assert got == [b"b0", b"b1", b"b2", b"c0", b"c1", b"c2"]
        nursery.cancel_scope.cancel()


class _Garbler:
    """A raw peer on C: answers the handshake and ACKs nothing; the test writes what it
    sends (good frames, then an ACK frame with a payload: a protocol error) on ``stream``."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.net = net
        self.stream: MemoryStream | None = None
        self.accepted = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await serve_raw(nursery, self.net, C, PORT, self._talk)
            task_status.started()

    async def _talk(self, stream: MemoryStream) -> None:
        self.stream = stream
        await stream.send_all(encode_handshake(PORT, b"\xee" * 16))
        self.accepted.set()
        await read_frames(stream)  # drained: the test writes to ``stream`` itself


async def test_garbage_on_the_sole_connection_read_by_receive_is_contained(autojump_clock: Any) -> None:
    """receive() reads a raw peer's connection; the peer sends one good message, then a bad
    frame: the connection closes with ProtocolError, receive() stays usable, the node serves B."""
    net = MemoryNetwork()
    net.set_latency(A, C, LATENCY)
    net.set_latency(A, B, LATENCY)
    peer = _Garbler(net)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.serve)
        async with node(net, A, None, synchronous=False) as a, node(net, B, None) as b:
            await a.send(msg_to(b"hi", C))  # A dials the raw peer
            await peer.accepted.wait()
            remote = a._remotes.find((C, PORT))
            assert remote is not None
            await until(lambda: remote.current is not None and remote.current.remote is not None)
            conn = conn_of(a, C)

            async def receiver() -> None:
                async for msg in a:
                    got.append(bytes(msg.data))
                    msg.release()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert peer.stream is not None
            await peer.stream.send_all(encode_frame(b"\x01" * 16, 1, 0, b"", b"good"))
            await until(lambda: got == [b"good"])
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(conn.reading.owner, trio.lowlevel.Task)  # receive() reads
            await peer.stream.send_all(pack_frame_head(b"\x02" * 16, 2, 5, 0, TYPE_ACK) + b"12345")
            await until(lambda: conn.closed)
            assert isinstance(conn.failure, ProtocolError)
            assert a.statistics().errors == {"ProtocolError": 1}
            await b.send(msg_to(b"from-b", A))
            assert got == [b"good", b"from-b"]
        nursery.cancel_scope.cancel()


# --- node close --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["reading", "seated", "plain"])
async def test_node_close_ends_every_receive_with_shutdown_error(
    autojump_clock: Any, tls: PKISet | None, where: str
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    outcomes: list[str] = []
    count = {"reading": 1, "seated": 2, "plain": 3}[where]
    async with node(net, B, tls) as b:
        a_cm = node(net, A, tls)
        a = await a_cm.__aenter__()
        try:
            conn = await up(a, b, A, B)
            async with trio.open_nursery() as nursery:

                async def receiver() -> None:
                    try:
                        while True:
                            msg = await a.receive()
                            msg.release()
                    except ShutdownError:
                        outcomes.append("shutdown")

                for _ in range(count):
                    nursery.start_soon(receiver)
                    await trio.testing.wait_all_tasks_blocked()
                await receiver_owns(b, A, conn)
                await trio.testing.wait_all_tasks_blocked()
                assert a._inbox.waiting == count - 1  # the others park in the inbox
                with trio.fail_after(5):
                    await a.aclose()
        finally:
            await a_cm.__aexit__(None, None, None)
        assert outcomes == ["shutdown"] * count
