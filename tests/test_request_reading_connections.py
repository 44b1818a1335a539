"""Attacks on an asynchronous ``request()`` reading its own response, continued: connections
replaced while it reads, the node closing, reply()'s response before its ACK on the wire,
routers and workers, real TCP and TLS, a response racing the request's timeout."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import NodeInAThread, read_frames
from reading_helpers import (
    LATENCY,
    PORT,
    A,
    B,
    C,
    async_node,
    conn_of,
    msg_to,
    reading_to,
    until,
)
from tls_helpers import PKISet

from trio_chirp import (
    Chirp,
    ChirpTimeoutError,
    Config,
    Message,
    RemoteError,
    Router,
    ShutdownError,
    Workers,
    open_chirp,
)
from trio_chirp._protocol import (
    TYPE_REQ_ACK,
    FrameHead,
    encode_handshake,
)
from trio_chirp.testing import MemoryNetwork


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


# --- connections replaced ------------------------------------------------------------------


async def test_the_peer_drops_the_connection_and_answers_on_a_new_one(autojump_clock: Any) -> None:
    """A's request reads its connection to B; B closes that connection (as an idle reuse
    would) and answers on a new one it dials: the request returns at once with that
    response, not at its timeout."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        async_node(net, A, timeout=5) as a,
        async_node(net, B, timeout=5) as b,
        trio.open_nursery() as nursery,
    ):
        held: list[Message] = []

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"hold":
                    held.append(msg)
                else:
                    await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(b_serves)
        done: list[bytes] = []

        async def a_requests() -> None:
            for i in range(2):  # the loop's next request reads its connection itself
                await a.request(msg_to(b"q%d" % i, B))
            done.append(bytes((await a.request(msg_to(b"hold", B))).data))

        nursery.start_soon(a_requests)
        await until(lambda: bool(held))
        await trio.testing.wait_all_tasks_blocked()
        first = conn_of(a, B)
        assert isinstance(first.reading.owner, trio.lowlevel.Task)  # the request reads
        conn_of(b, A).close(ConnectionResetError("B drops it"))  # type: ignore[arg-type]
        await trio.sleep(0.1)
        start = trio.current_time()
        await b.reply(held[0], b"re:hold")
        with trio.fail_after(1):
            await until(lambda: bool(done))
        assert done == [b"re:hold"]
        assert trio.current_time() - start < 0.5
        assert first.closed
        assert (await a.request(msg_to(b"after", B))).data == b"re:after"
        nursery.cancel_scope.cancel()


async def test_both_dial_at_once_and_request_both_ways(autojump_clock: Any, tls: PKISet | None) -> None:
    """A and B dial each other at the same moment (duplicate connections) and request each
    other from several tasks at once: every request completes with its own response, before
    its timeout."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        async_node(net, A, tls, timeout=5) as a,
        async_node(net, B, tls, timeout=5) as b,
        trio.open_nursery() as nursery,
    ):

        async def serve(chirp: Chirp, tag: bytes) -> None:
            async with trio.open_nursery() as inner:
                async for msg in chirp:
                    inner.start_soon(lambda m: chirp.reply(m, tag + bytes(m.data)), msg)

        nursery.start_soon(serve, a, b"A:")
        nursery.start_soon(serve, b, b"B:")
        results: list[tuple[bytes, bytes]] = []

        async def requester(me: Chirp, ip: str, tag: bytes, t: int) -> None:
            for i in range(6):
                q = b"%d-%d" % (t, i)
                results.append((tag + q, bytes((await me.request(msg_to(q, ip))).data)))

        with trio.fail_after(4):
            async with trio.open_nursery() as reqs:
                for t in range(3):
                    reqs.start_soon(requester, a, B, b"B:", t)
                    reqs.start_soon(requester, b, A, b"A:", t)
        assert len(results) == 36
        assert all(want == have for want, have in results)
        assert a.statistics().requests_failed == b.statistics().requests_failed == 0
        nursery.cancel_scope.cancel()


# --- the node closing ------------------------------------------------------------------------


async def test_the_requesting_node_closes_while_a_request_reads(autojump_clock: Any) -> None:
    """A closes while its request reads the connection to B: the request fails with
    ShutdownError at once (no BusyResourceError, no lock-up), and the close does not wait."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    outcome: list[BaseException] = []
    holding = trio.Event()
    async with async_node(net, B) as b, trio.open_nursery() as nursery:

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"hold":
                    msg.release()
                    holding.set()
                else:
                    await b.reply(msg, b"ok")

        nursery.start_soon(b_serves)
        a_cm = async_node(net, A, timeout=3)
        a = await a_cm.__aenter__()
        try:

            async def a_requests() -> None:
                await a.request(msg_to(b"q", B))  # the loop's next request reads itself
                try:
                    await a.request(msg_to(b"hold", B))
                except BaseException as exc:
                    outcome.append(exc)
                    if not isinstance(exc, Exception):
                        raise

            nursery.start_soon(a_requests)
            await holding.wait()
            await trio.testing.wait_all_tasks_blocked()
            reading = reading_to(a, B)
            assert isinstance(reading.owner, trio.lowlevel.Task)  # the request reads
            start = trio.current_time()
        finally:
            await a_cm.__aexit__(None, None, None)
        assert trio.current_time() - start < 1  # close did not wait for the request
        with trio.fail_after(1):
            await until(lambda: bool(outcome))
        # The close fails a waiting request at once, as it fails queued sends.
        assert isinstance(outcome[0], ShutdownError), outcome[0]
        assert "closed while a request waited" in str(outcome[0])
        assert trio.current_time() - start < 1
        nursery.cancel_scope.cancel()


# --- reply(): the response before the ACK, on the wire ---------------------------------------


@pytest.mark.parametrize("busy", [False, True])
async def test_reply_puts_the_response_on_the_wire_before_the_ack(autojump_clock: Any, busy: bool) -> None:
    """A raw libchirp-like peer at C dials B and pipelines synchronous messages; B's workers
    reply() to each (now written from the handler's task when B's writer is idle). With
    ``busy``, B also streams large messages to C through a small window, so its writer is
    often busy and a reply must wait for it. On the wire, each response precedes its ACK."""
    from trio_chirp._protocol import encode_frame

    net = MemoryNetwork()
    net.set_latency(B, C, LATENCY)
    if busy:
        net.set_window(B, C, 3000)
    identity_c = b"\xcc" * 16
    seen: list[tuple[str, bytes]] = []
    acks_seen = trio.Event()
    n = 24
    async with async_node(net, B, timeout=10) as b, trio.open_nursery() as nursery:

        async def handler(msg: Message) -> None:
            await trio.sleep(0.001 * (msg.data[-1] % 5))
            await b.reply(msg, b"re:" + bytes(msg.data))

        await nursery.start(Workers(b, handler, count=6).run)
        stream, _ = await net.host(C).connect(B, PORT)
        await stream.send_all(encode_handshake(PORT, identity_c))
        ids = [bytes([i + 1]) * 16 for i in range(n)]

        acks = 0

        async def note(event: object) -> None:
            nonlocal acks
            if isinstance(event, FrameHead):
                if event.is_message:
                    seen.append(("msg", event.identity))
                elif event.is_ack:
                    seen.append(("ack", event.identity))
                    acks += 1
                    if acks == n:
                        acks_seen.set()

        nursery.start_soon(read_frames, stream, note)
        for i, ident in enumerate(ids[:4]):  # B's window for a libchirp peer: pipelined anyway
            await stream.send_all(encode_frame(ident, i, TYPE_REQ_ACK, b"", b"q%d" % i))
        await trio.sleep(0.2)
        if busy:

            async def stream_big() -> None:
                for _ in range(6):
                    await b.send(msg_to(b"x" * 20000, C), synchronous=False)

            nursery.start_soon(stream_big)
        for i, ident in enumerate(ids[4:], start=4):
            await stream.send_all(encode_frame(ident, i, TYPE_REQ_ACK, b"", b"q%d" % i))
            await trio.sleep(0.0005)
        with trio.fail_after(5):
            await acks_seen.wait()
        for ident in ids:
            kinds = [k for k, i in seen if i == ident]
            assert kinds == ["msg", "ack"], (ident.hex(), kinds)
        if busy:  # the large messages went out on the same connection, between the replies
            first_big = next(j for j, (k, i) in enumerate(seen) if k == "msg" and i not in ids)
            assert first_big < max(j for j, (_, i) in enumerate(seen) if i in ids)
        assert b.statistics().errors == {}
        nursery.cancel_scope.cancel()


# --- routers and workers ------------------------------------------------------------------


async def test_requests_through_a_router_to_workers(autojump_clock: Any, tls: PKISet | None) -> None:
    """A requests C through the router B (destination C) from several tasks; C's workers
    answer, one fails with an error response: each response reaches its own request, the
    error raises RemoteError at once."""
    net = MemoryNetwork()
    for x, y in ((A, B), (B, C)):
        net.set_latency(x, y, LATENCY)
    async with (
        async_node(net, A, tls, timeout=5) as a,
        async_node(net, B, tls, timeout=5) as b,
        async_node(net, C, tls, timeout=5) as c,
        trio.open_nursery() as nursery,
    ):

        async def handler(msg: Message) -> None:
            if msg.data.endswith(b"-bad"):
                raise ValueError("bad one")
            await trio.sleep(0.001 * (msg.data[-1] % 7))
            await c.reply(msg, b"re:" + bytes(msg.data))

        await nursery.start(Workers(c, handler, count=4, expected_errors=(ValueError,)).run)
        await nursery.start(Router(b).run)
        results: dict[bytes, bytes] = {}
        errors: list[tuple[bytes, float]] = []

        async def requester(t: int) -> None:
            for i in range(6):
                q = b"%d-%d" % (t, i) + (b"-bad" if i == 3 else b"")
                start = trio.current_time()
                try:
                    resp = await a.request(Message(q, address=B, port=PORT, destination=(C, PORT)))
                except RemoteError:
                    errors.append((q, trio.current_time() - start))
                else:
                    results[q] = bytes(resp.data)

        with trio.fail_after(4):
            async with trio.open_nursery() as reqs:
                for t in range(4):
                    reqs.start_soon(requester, t)
        assert results == {
            b"%d-%d" % (t, i): b"re:%d-%d" % (t, i) for t in range(4) for i in range(6) if i != 3
        }
        assert sorted(q for q, _ in errors) == sorted(b"%d-3-bad" % t for t in range(4))
        assert all(took < 1 for _, took in errors)
        nursery.cancel_scope.cancel()


# --- real TCP (and TLS) against a node in its own thread ----------------------------------------

_X, _Y = "127.0.0.2", "127.0.0.3"


async def _thread_echo(chirp: Chirp) -> None:
    async def handler(msg: Message) -> None:
        if msg.data.startswith(b"slow"):
            await trio.sleep(0.05)
        await chirp.reply(msg, b"re:" + bytes(msg.data))

    async with trio.open_nursery() as nursery:
        await nursery.start(Workers(chirp, handler, count=8).run)


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_concurrent_and_cancelled_requests_over_real_sockets(kind: str, pki: PKISet) -> None:
    """Over real sockets (TLS on 127.0.0.2/3), to a node in its own Trio run: four tasks
    request in loops, some requests cancelled at once or while waiting (the caller's scope,
    at varying moments): no BusyResourceError, every answered request got its own response,
    and the connection stays the same one throughout."""
    if kind == "tls":
        peer = pki.config("beta", port=0, bind_v4=_Y, bind_v6=None, synchronous=False, timeout=5)
        mine = pki.config("alpha", port=0, bind_v4=_X, bind_v6=None, synchronous=False, timeout=5)
        ip = _Y
    else:
        peer = Config(port=0, bind_v6=None, synchronous=False, timeout=5)
        mine = Config(port=0, bind_v6=None, synchronous=False, timeout=5)
        ip = "127.0.0.1"
    rng = random.Random(11)
    plan = {(t, i): rng.choice([None, None, 0.0, 0.0005, 0.002, 0.02]) for t in range(4) for i in range(25)}
    answered: dict[bytes, bytes] = {}
    raced: list[tuple[bytes, float | None, str]] = []
    cancelled = 0
    async with open_chirp(mine) as a, NodeInAThread(peer, _thread_echo) as port:

        async def requester(t: int) -> None:
            nonlocal cancelled
            for i in range(25):
                q = b"%s%d-%d" % (b"slow" if i % 5 == 0 else b"", t, i)
                limit = plan[(t, i)]
                with trio.move_on_after(math.inf if limit is None else limit) as scope:
                    try:
                        resp = await a.request(Message(q, address=ip, port=port))
                    except RemoteError as exc:
                        # The caller's deadline travelled; the worker passed it and said so,
                        # racing the caller's own cancellation (a fair outcome).
                        raced.append((q, limit, exc.kind))
                    else:
                        answered[q] = bytes(resp.data)
                if scope.cancelled_caught:
                    cancelled += 1

        with trio.fail_after(20):
            await a.request(Message(b"warm", address=ip, port=port))
            conn = a._remotes.find((ip, port))
            assert conn is not None
            assert conn.current is not None
            first = conn.current
            async with trio.open_nursery() as reqs:
                for t in range(4):
                    reqs.start_soon(requester, t)
            # and afterwards a plain loop still works, reading its own responses
            for i in range(10):
                assert (await a.request(Message(b"z%d" % i, address=ip, port=port))).data == b"re:z%d" % i
        assert all(v == b"re:" + k for k, v in answered.items())
        assert len(answered) + len(raced) + cancelled == 100
        assert all(limit is not None and kind == "ChirpTimeoutError" for _, limit, kind in raced), raced
        assert cancelled > 0
        assert conn.current is first
        assert a.statistics().errors == {}
        assert a.statistics().requests_failed == len(raced)


# --- the response racing the request's timeout -------------------------------------------------


@pytest.mark.parametrize("offset", [-0.002, -1e-6, 0.0, 1e-6, 0.002])
async def test_a_response_racing_the_timeout_is_either_returned_or_counted_late(
    autojump_clock: Any, offset: float
) -> None:
    """The response arrives around the moment the reading request's timeout passes: the
    request either returns it, or raises ChirpTimeoutError and the response is counted late;
    never both, never neither, and the next requests read their own responses."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    timeout = 1.0
    async with (
        async_node(net, A, timeout=timeout) as a,
        async_node(net, B) as b,
        trio.open_nursery() as nursery,
    ):

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"race":
                    await trio.sleep(timeout - 2 * LATENCY + offset)
                await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(b_serves)
        await a.request(msg_to(b"warm", B))
        outcome = ""
        try:
            resp = await a.request(msg_to(b"race", B))
            assert resp.data == b"re:race"
            outcome = "answered"
        except ChirpTimeoutError:
            outcome = "timeout"
        await trio.sleep(0.1)
        late = a.statistics().late_responses
        assert (outcome, late) in {("answered", 0), ("timeout", 1)}
        if offset < 0:
            assert outcome == "answered"
        if offset > 0:
            assert outcome == "timeout"
        for i in range(3):
            assert (await a.request(msg_to(b"q%d" % i, B))).data == b"re:q%d" % i
        assert a.statistics().unreleased == 0
        nursery.cancel_scope.cancel()


async def test_the_same_identity_from_another_peer_does_not_end_a_reading_request(
    autojump_clock: Any,
) -> None:
    """While A's request to B reads its connection, C sends A a message with the request's
    identity: it reaches receive() (it is not B's response), and the request keeps waiting
    for, and returns, B's own response."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, LATENCY)
    held: list[Message] = []
    at_a: list[tuple[bytes, str]] = []
    async with (
        async_node(net, A, timeout=5) as a,
        async_node(net, B) as b,
        async_node(net, C) as c,
        trio.open_nursery() as nursery,
    ):

        async def b_serves() -> None:
            async for msg in b:
                if msg.data == b"hold":
                    held.append(msg)
                else:
                    await b.reply(msg, b"re:" + bytes(msg.data))

        async def a_receives() -> None:
            async for msg in a:
                at_a.append((bytes(msg.data), msg.address))
                msg.release()

        nursery.start_soon(b_serves)
        nursery.start_soon(a_receives)
        result: list[bytes] = []

        async def a_requests() -> None:
            await a.request(msg_to(b"q", B))
            result.append(bytes((await a.request(msg_to(b"hold", B))).data))

        nursery.start_soon(a_requests)
        await until(lambda: bool(held))
        await trio.testing.wait_all_tasks_blocked()
        reading = reading_to(a, B)
        assert isinstance(reading.owner, trio.lowlevel.Task)  # the request reads
        impostor = Message(b"impostor", address=A, port=PORT)
        impostor.identity = held[0].identity
        await c.send(impostor)
        await until(lambda: bool(at_a))
        assert at_a == [(b"impostor", C)]
        assert result == []
        assert isinstance(reading.owner, trio.lowlevel.Task)  # still reading
        await b.reply(held[0], b"the real one")
        await until(lambda: bool(result))
        assert result == [b"the real one"]
        assert a.statistics().late_responses == 0
        nursery.cancel_scope.cancel()
