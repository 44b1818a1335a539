"""Attacking an asynchronous ``request()`` that reads its own response (``_requests.py``
``Requests._await_response``, ``FrameReader.read_for_response`` / ``take_seat``), the
direct write of requests and replies (``Remote.enqueue`` -> ``kick(urgent=out.confirm)``),
and their neighbours: receive() reading, synchronous senders, routers, workers, TLS.

Promises under attack (docs/requests.md, docs/node.md): a response reaches exactly the
request waiting for it; timeouts and cancellation at any point; late responses dropped;
error responses raise at once; no BusyResourceError; no lock-up; the response of a reply()
goes on the wire before its ACK.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from reading_helpers import (
    LATENCY,
    A,
    B,
    C,
    CancelAfterSteps,
    async_node,
    conn_of,
    echo,
    msg_to,
    reading_to,
    until,
)
from tls_helpers import PKISet

from trio_chirp import (
    Chirp,
    ChirpTimeoutError,
    Message,
    RemoteError,
    Workers,
)
from trio_chirp.testing import MemoryNetwork


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


# --- many requests at once ---------------------------------------------------------------


async def test_many_tasks_requesting_one_peer_each_get_their_own_response(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """Six tasks, ten asynchronous requests each, to one peer that answers out of order
    (random delays): every request gets exactly its own response, nothing leaks."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    rng = random.Random(3)
    delays = {
        b"t%d-%d" % (t, i): rng.choice([0.0, 0.001, 0.005, 0.02, 0.05]) for t in range(6) for i in range(10)
    }
    async with async_node(net, A, tls) as a, async_node(net, B, tls) as b, trio.open_nursery() as nursery:
        nursery.start_soon(partial(echo, b, lambda d: delays[d]))
        results: dict[bytes, bytes] = {}

        async def requester(t: int) -> None:
            for i in range(10):
                q = b"t%d-%d" % (t, i)
                resp = await a.request(msg_to(q, B))
                assert q not in results
                results[q] = bytes(resp.data)

        with trio.fail_after(10):
            async with trio.open_nursery() as reqs:
                for t in range(6):
                    reqs.start_soon(requester, t)
        assert results == {q: b"re:" + q for q in delays}
        stats = a.statistics()
        assert stats.requests_completed == 60
        assert stats.requests_failed == 0
        assert stats.late_responses == 0
        assert stats.errors == {}
        assert stats.slots_in_use == 0
        assert reading_to(a, B).owner is not None or reading_to(a, B).claimable()
        nursery.cancel_scope.cancel()


async def test_requests_to_two_peers_at_once_from_one_node(autojump_clock: Any, tls: PKISet | None) -> None:
    """A requests B and C from several tasks at once (each peer answering with its own
    latency): each response comes from the peer asked, for the request asked."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, 3 * LATENCY)
    async with (
        async_node(net, A, tls) as a,
        async_node(net, B, tls) as b,
        async_node(net, C, tls) as c,
        trio.open_nursery() as nursery,
    ):

        async def tagged_echo(chirp: Chirp, tag: bytes) -> None:
            async for msg in chirp:
                await chirp.reply(msg, tag + bytes(msg.data))

        nursery.start_soon(tagged_echo, b, b"B:")
        nursery.start_soon(tagged_echo, c, b"C:")
        got: list[tuple[bytes, bytes]] = []

        async def requester(ip: str, tag: bytes, t: int) -> None:
            for i in range(8):
                q = b"%d-%d" % (t, i)
                resp = await a.request(msg_to(q, ip))
                got.append((tag + q, bytes(resp.data)))

        with trio.fail_after(10):
            async with trio.open_nursery() as reqs:
                for t in range(3):
                    reqs.start_soon(requester, B, b"B:", t)
                    reqs.start_soon(requester, C, b"C:", t)
        assert len(got) == 48
        assert all(want == have for want, have in got)
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


# --- error responses, timeouts, late responses -------------------------------------------


async def test_an_error_response_raises_at_once_while_the_request_reads(autojump_clock: Any) -> None:
    """B's worker fails the request: the requester, reading its own connection (a previous
    request made it the reader), raises RemoteError at once, not at its timeout."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with async_node(net, A, timeout=5) as a, async_node(net, B) as b, trio.open_nursery() as nursery:

        async def handler(msg: Message) -> None:
            if msg.data == b"bad":
                raise KeyError("no such thing")
            await b.reply(msg, b"re:" + bytes(msg.data))

        await nursery.start(Workers(b, handler, expected_errors=(KeyError,)).run)
        for i in range(3):
            assert (await a.request(msg_to(b"q%d" % i, B))).data == b"re:q%d" % i
        reads = reading_to(a, B).response_reads
        start = trio.current_time()
        with pytest.raises(RemoteError) as info:
            await a.request(msg_to(b"bad", B))
        assert info.value.kind == "KeyError"
        assert trio.current_time() - start < 0.5
        assert reading_to(a, B).response_reads == reads + 1  # it read the error response itself
        # and the next requests go on as before
        for i in range(3):
            assert (await a.request(msg_to(b"again%d" % i, B))).data == b"re:again%d" % i
        assert a.statistics().requests_failed == 1
        nursery.cancel_scope.cancel()


async def test_a_request_timing_out_while_reading_then_its_late_response_is_dropped(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """config.timeout passes while the request reads: ChirpTimeoutError ("no response") at
    the timeout; the late response is counted and dropped; the connection and later requests
    are fine (the late one never reaches a later request nor receive())."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    held: list[Message] = []
    at_a: list[bytes] = []
    async with (
        async_node(net, A, tls, timeout=2) as a,
        async_node(net, B, tls) as b,
        trio.open_nursery() as nursery,
    ):

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"slow":
                    held.append(msg)
                else:
                    await b.reply(msg, b"re:" + bytes(msg.data))

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()

        nursery.start_soon(b_serves)
        nursery.start_soon(a_receives)
        for i in range(2):
            await a.request(msg_to(b"q%d" % i, B))
        conn = conn_of(a, B)
        reads = conn.reading.response_reads
        start = trio.current_time()
        with pytest.raises(ChirpTimeoutError, match="no response"):
            await a.request(msg_to(b"slow", B))
        assert trio.current_time() - start == pytest.approx(2, abs=0.05)
        assert conn.reading.response_reads == reads + 1
        await b.reply(held[0], b"too late")
        for i in range(2, 5):
            assert (await a.request(msg_to(b"q%d" % i, B))).data == b"re:q%d" % i
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().late_responses == 1
        assert at_a == []
        assert conn_of(a, B) is conn
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_the_callers_deadline_ends_a_reading_request_with_too_slow(autojump_clock: Any) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with async_node(net, A, timeout=5) as a, async_node(net, B) as b, trio.open_nursery() as nursery:

        async def b_serves() -> None:
            async for msg in b:
                if msg.data != b"never":
                    await b.reply(msg, b"ok")
                else:
                    msg.release()

        nursery.start_soon(b_serves)
        await a.request(msg_to(b"q", B))
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.5):
                await a.request(msg_to(b"never", B))
        assert trio.current_time() - start == pytest.approx(0.5, abs=0.01)
        assert (await a.request(msg_to(b"q", B))).data == b"ok"
        assert a.statistics().requests_failed == 0
        nursery.cancel_scope.cancel()


# --- cancellation at every step ------------------------------------------------------------


@pytest.mark.parametrize("k", range(1, 11))
async def test_a_request_cancelled_at_each_step_loses_nothing(
    autojump_clock: Any, tls: PKISet | None, k: int
) -> None:
    """A's request is cancelled after its k-th task step while B, before answering, floods A
    with messages: every flood message reaches A's receive() once and in order, later
    requests get their own responses, the connection survives."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    flood = [b"f%d" % i for i in range(10)]
    at_a: list[bytes] = []
    all_in = trio.Event()
    async with async_node(net, A, tls) as a, async_node(net, B, tls) as b, trio.open_nursery() as nursery:

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"m0":
                    for data in flood:
                        await b.send(msg_to(data, A))
                await b.reply(msg, b"re:" + bytes(msg.data))

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()
                if len(at_a) == len(flood):
                    all_in.set()

        nursery.start_soon(b_serves)
        nursery.start_soon(a_receives)
        assert (await a.request(msg_to(b"warm", B))).data == b"re:warm"
        conn = conn_of(a, B)
        outcome = "cancelled"
        with trio.CancelScope() as scope:
            instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
            trio.lowlevel.add_instrument(instrument)
            try:
                resp = await a.request(msg_to(b"m0", B))
                assert resp.data == b"re:m0"
                outcome = "answered"
            finally:
                trio.lowlevel.remove_instrument(instrument)
        assert outcome == ("cancelled" if scope.cancelled_caught else "answered")
        for i in range(1, 4):
            assert (await a.request(msg_to(b"m%d" % i, B))).data == b"re:m%d" % i
        with trio.fail_after(5):
            await all_in.wait()
        assert at_a == flood
        assert conn_of(a, B) is conn
        assert a.statistics().errors == {}
        assert conn.reading.owner is not trio.lowlevel.current_task()
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().late_responses == (1 if outcome == "cancelled" else 0)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("k", range(1, 8))
async def test_a_seated_request_cancelled_at_each_step_loses_nothing(autojump_clock: Any, k: int) -> None:
    """Two tasks request at once: one reads, the other sits in the seat. The seated one is
    cancelled after its k-th step; everything else completes, the reader is not stuck aside."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with async_node(net, A) as a, async_node(net, B) as b, trio.open_nursery() as nursery:
        nursery.start_soon(partial(echo, b, lambda d: 0.05 if d.startswith(b"s") else 0.01))
        assert (await a.request(msg_to(b"warm", B))).data == b"re:warm"
        results: list[bytes] = []

        async def reader_loop() -> None:
            for i in range(6):
                results.append(bytes((await a.request(msg_to(b"r%d" % i, B))).data))

        seated_outcome: list[str] = []

        async def seated() -> None:
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                instrument = CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
                trio.lowlevel.add_instrument(instrument)
                try:
                    resp = await a.request(msg_to(b"s0", B))
                    assert resp.data == b"re:s0"
                    seated_outcome.append("answered")
                finally:
                    trio.lowlevel.remove_instrument(instrument)
            if scope.cancelled_caught:
                seated_outcome.append("cancelled")
            for i in range(1, 4):
                results.append(bytes((await a.request(msg_to(b"s%d" % i, B))).data))

        with trio.fail_after(5):
            async with trio.open_nursery() as reqs:
                reqs.start_soon(reader_loop)
                reqs.start_soon(seated)
        assert sorted(results) == sorted(
            [b"re:r%d" % i for i in range(6)] + [b"re:s%d" % i for i in range(1, 4)]
        )
        assert len(seated_outcome) == 1
        # and the connection's reading is alive: a message from B arrives with nobody waiting
        got = trio.Event()

        async def a_receives() -> None:
            msg = await a.receive()
            assert msg.data == b"ping"
            msg.release()
            got.set()

        nursery.start_soon(a_receives)
        await b.send(msg_to(b"ping", A))
        with trio.fail_after(1):
            await got.wait()
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


# --- neighbours: receive(), synchronous senders, slots ---------------------------------------


async def test_requests_receive_loop_and_sync_sends_on_one_connection(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """On A (one connection, to B): a receive() loop, three request loops and a synchronous
    sender all want the reading or its seat at once, while B sends A notes. Everything comes
    to whom it belongs, in order per sender, before any timeout."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    at_a: list[bytes] = []
    at_b: list[bytes] = []
    async with (
        async_node(net, A, tls, timeout=5) as a,
        async_node(net, B, tls) as b,
        trio.open_nursery() as nursery,
    ):

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()

        async def b_serves() -> None:
            async for msg in b:
                data = bytes(msg.data)
                at_b.append(data)
                if data.startswith(b"q"):
                    await b.reply(msg, b"re:" + data)
                    await b.send(msg_to(b"note:" + data, A), synchronous=True)
                else:
                    msg.release()

        nursery.start_soon(a_receives)
        nursery.start_soon(b_serves)
        results: dict[bytes, bytes] = {}

        async def requester(t: int) -> None:
            for i in range(8):
                q = b"q%d-%d" % (t, i)
                results[q] = bytes((await a.request(msg_to(q, B))).data)

        async def sync_sender() -> None:
            for i in range(8):
                await a.send(msg_to(b"s%d" % i, B), synchronous=True)

        with trio.fail_after(4):  # under the timeout: nobody waited for it
            async with trio.open_nursery() as work:
                for t in range(3):
                    work.start_soon(requester, t)
                work.start_soon(sync_sender)
            await until(lambda: len(at_a) >= 24)
        assert results == {b"q%d-%d" % (t, i): b"re:q%d-%d" % (t, i) for t in range(3) for i in range(8)}
        assert [d for d in at_b if d.startswith(b"s")] == [b"s%d" % i for i in range(8)]
        assert sorted(at_a) == sorted(b"note:q%d-%d" % (t, i) for t in range(3) for i in range(8))
        for t in range(3):
            mine = [d for d in at_a if d.startswith(b"note:q%d-" % t)]
            assert mine == [b"note:q%d-%d" % (t, i) for i in range(8)]
        assert a.statistics().errors == {}
        assert b.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_a_flood_with_one_slot_while_requests_read(autojump_clock: Any, tls: PKISet | None) -> None:
    """A has one slot per connection and a slow receive() loop; B floods A while A's requests
    read the connection: every flood message arrives once and in order, every request gets its
    response (the response's slot is released at once: auto_release)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    flood = [b"f%03d" % i for i in range(40)]
    at_a: list[bytes] = []
    async with (
        async_node(net, A, tls, max_slots=1, timeout=10) as a,
        async_node(net, B, tls) as b,
        trio.open_nursery() as nursery,
    ):

        async def a_receives() -> None:
            async for msg in a:
                await trio.sleep(0.003)
                at_a.append(bytes(msg.data))
                msg.release()

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"go":
                    for data in flood:
                        await b.send(msg_to(data, A))
                    msg.release()
                else:
                    await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(a_receives)
        nursery.start_soon(b_serves)
        await a.send(msg_to(b"go", B))
        results = []
        with trio.fail_after(5):
            for i in range(12):
                results.append(bytes((await a.request(msg_to(b"q%d" % i, B))).data))
            await until(lambda: len(at_a) >= len(flood))
        assert results == [b"re:q%d" % i for i in range(12)]
        assert at_a == flood
        assert a.statistics().errors == {}
        assert a.statistics().slots_in_use == 0
        nursery.cancel_scope.cancel()
