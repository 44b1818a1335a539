"""The node on the in-memory network under MockClock: exact virtual times, slots, deadlines, close."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, LowRandom, node, to

from trio_chirp import (
    ChirpTimeoutError,
    Config,
    ConnectionLostError,
    Message,
    ShutdownError,
    TLSError,
    Transport,
    open_chirp,
    serve_chirp,
)
from trio_chirp._protocol import (
    NEED_DATA,
    DataFrame,
    FrameHead,
    FrameParser,
    Handshake,
    encode_announcement,
    encode_handshake,
)
from trio_chirp.testing import MemoryNetwork


async def test_sync_send_times_out_exactly_at_timeout_when_never_acked(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=2.0) as a:
            start = trio.current_time()
            with pytest.raises(ChirpTimeoutError, match="no ACK"):
                await a.send(to(B))
            assert trio.current_time() - start == pytest.approx(2.0)
            # The written frame's own timer shuts the connection down at the same moment.
            await trio.testing.wait_all_tasks_blocked()
            assert peer.events[-1][1] == "EOF"
            assert peer.events[-1][0] - start == pytest.approx(2.0)
            assert a.statistics().errors == {"ChirpTimeoutError": 1}
        nursery.cancel_scope.cancel()


async def test_connect_timeout_and_still_connecting_error(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    peer.send_handshake = False  # accepts TCP, never says hello
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=1.5) as a:
            start = trio.current_time()
            with pytest.raises(ChirpTimeoutError, match="still connecting"):
                await a.send(to(B))
            assert trio.current_time() - start == pytest.approx(1.5)
            await peer.accepted.wait()
            await peer.eof.wait()
            # The connect timer: min(2 * timeout, 60) from the dial.
            assert peer.events[-1][0] - start == pytest.approx(3.0)
            assert a.statistics().errors == {"ChirpTimeoutError": 1}
        nursery.cancel_scope.cancel()


async def test_black_holed_connect_fails_at_connect_timeout(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.black_hole(B)
    async with node(net, A, timeout=0.5) as a:
        start = trio.current_time()
        with pytest.raises(ChirpTimeoutError, match="still connecting"):
            await a.send(to(B))
        assert trio.current_time() - start == pytest.approx(0.5)
        await trio.sleep(0.6)
        assert a.statistics().errors == {"ChirpTimeoutError": 1}


async def test_incoming_connection_must_handshake_in_time(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, timeout=1.0, handshake_timeout=0.25) as a:
        stream, _ = await net.host(B).connect(A, a.port)
        start = trio.current_time()
        received = b""
        while chunk := await stream.receive_some(1000):
            received += chunk
        assert trio.current_time() - start == pytest.approx(0.25)
        # Our handshake, and our announcement in the same write (a synchronous node: 1 slot).
        assert received == encode_handshake(a.port, a.identity) + encode_announcement(
            1, a.config.max_msg_size
        )
        assert a.statistics().errors == {"ChirpTimeoutError": 1}


async def test_split_handshake_is_accepted(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a:
        stream, _ = await net.host(B).connect(A, a.port)
        hello = encode_handshake(4000, b"\x42" * 16)
        await stream.send_all(hello[:10])
        await trio.sleep(0.1)
        await stream.send_all(
            hello[10:] + b"\x01" * 16 + bytes(4) + (3).to_bytes(4, "big") + bytes(3) + b"abc"
        )
        msg = await a.receive()
        assert (msg.data, msg.port, msg.remote_identity, msg.address) == (b"abc", 4000, b"\x42" * 16, B)
        msg.release()


async def test_noop_probe_precedes_a_message_after_idling(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        # R = max(2.0, 3 * 1.0) = 3.0; NOOP after more than 2.25 s idle.
        async with node(net, A, timeout=1.0, reuse_time=2.0, synchronous=False) as a:
            await a.send(to(B, b"one"))
            await a.flush(B, PORT)
            await trio.sleep(2.0)
            await a.send(to(B, b"two"))
            await a.flush(B, PORT)
            await trio.sleep(2.3)
            await a.send(to(B, b"three"))
            await a.flush(B, PORT)
            await trio.testing.wait_all_tasks_blocked()
            kinds = ["NOOP" if f.is_noop else "MSG" for f in peer.frames()]
            assert kinds == ["MSG", "MSG", "NOOP", "MSG"]
            serials = [f.serial for f in peer.frames()]
            assert [(s - serials[0]) % 2**32 for s in serials] == [0, 1, 2, 3]
            assert peer.frames()[2].identity == bytes(16)
        nursery.cancel_scope.cancel()


async def test_idle_connection_is_collected_at_exact_gc_tick(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        # R = 1.5; LowRandom makes GC tick at 0.75, 1.5, 2.25 ...; idle must exceed R.
        async with node(net, A, timeout=0.5, reuse_time=1.5, synchronous=False) as a:
            start = trio.current_time()
            await a.send(to(B))
            await a.flush(B, PORT)
            assert a.statistics().connections == 1
            await trio.sleep(2.0)
            assert a.statistics().connections == 1
            await trio.sleep(0.3)
            assert a.statistics().connections == 0
            assert a.statistics().remotes == ()
            assert peer.events[-1][1] == "EOF"
            assert peer.events[-1][0] - start == pytest.approx(2.25)
            assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_slots_stop_reading_and_block_the_sender(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork(window=4096)
    size = 4000
    async with (
        node(net, A, synchronous=False, max_slots=2, buffer_size=1024) as a,
        node(net, B, synchronous=False, send_queue_size=1) as b,
    ):
        accepted = 0

        async def producer() -> None:
            nonlocal accepted
            for i in range(6):
                await b.send(to(A, bytes([i]) * size))
                accepted += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            first, second = await a.receive(), await a.receive()
            await trio.testing.wait_all_tasks_blocked()
            (stream,) = net.streams(B, A)
            consumed = (
                stream.peer.stats.bytes_received if stream.local[0] == B else stream.stats.bytes_received
            )
            frame = 27 + size
            # Handshake and two frames were consumed; the third payload was not.
            assert 18 + 2 * frame + 27 <= consumed < 18 + 3 * frame
            assert a.statistics().slots_in_use == 2
            assert accepted < 6  # the sender is blocked: its queue and the window are full
            blocked_at = accepted
            first.release()
            third = await a.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert accepted > blocked_at
            for msg in (second, third):
                msg.release()
            rest = []
            for _ in range(3):
                rest.append(msg := await a.receive())
                msg.release()
        assert [m.data[0] for m in (first, second, third, *rest)] == list(range(6))


async def test_short_deadline_does_not_disturb_other_sends(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    # One slot at A: the window it grants B is 1, so the later sends queue behind the first.
    async with node(net, A, synchronous=False, max_slots=1) as a, node(net, B, timeout=5.0) as b:
        outcomes: dict[str, object] = {}

        async def sender(name: str, deadline: float | None) -> None:
            try:
                if deadline is None:
                    await b.send(to(A, name.encode()))
                else:
                    with trio.fail_after(deadline):
                        await b.send(to(A, name.encode()))
                outcomes[name] = "ok"
            except trio.TooSlowError:
                outcomes[name] = "TooSlow"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "first", None)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(sender, "impatient", 0.5)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(sender, "third", None)
            await trio.testing.wait_all_tasks_blocked()
            # Hold the first message for a second: the others queue behind it (sync).
            first = await a.receive()
            await trio.sleep(1.0)
            assert b.statistics().queued == 1  # "impatient" was withdrawn at its deadline
            first.release()
            third = await a.receive()
            third.release()
        assert outcomes == {"first": "ok", "impatient": "TooSlow", "third": "ok"}
        assert (first.data, third.data) == (b"first", b"third")
        assert b.statistics().errors == {}
        assert b.statistics().connections == 1


async def test_caller_deadline_passes_through_unchanged(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.black_hole(B)
    async with node(net, A, timeout=5.0) as a:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1.0):
                await a.send(to(B))
        assert a.statistics().queued == 0


async def test_per_message_mode_override(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=True) as b:
        await b.send(to(A, b"fire and forget"), synchronous=False)
        msg = await a.receive()
        assert not msg.ack_requested
        msg.release()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(a.send, to(B, b"confirm me"), synchronous=True))
            got = await b.receive()
            assert got.ack_requested
            got.release()


async def test_release_without_ack_fails_the_sync_sender(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False) as a,
        node(net, B, timeout=1.0) as b,
        trio.open_nursery() as nursery,
    ):

        async def send_and_expect_timeout() -> None:
            with pytest.raises(ChirpTimeoutError):
                await b.send(to(A))

        nursery.start_soon(send_and_expect_timeout)
        msg = await a.receive()
        msg.release(ack=False)
        msg.release()  # idempotent: no late ACK either
        assert not msg.has_slot


async def test_close_fails_queued_waits_for_acks_and_never_acks_unreleased(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    outcomes: list[str] = []
    # One slot at A, so it grants a window of 1: the second message stays queued.
    async with node(net, A, synchronous=False, max_slots=1) as a:
        async with node(net, B, timeout=3.0) as b, trio.open_nursery() as nursery:

            async def send(data: bytes) -> None:
                try:
                    await b.send(to(A, data))
                    outcomes.append(f"{data.decode()}:ok")
                except ShutdownError:
                    outcomes.append(f"{data.decode()}:shutdown")
                except ConnectionLostError:
                    outcomes.append(f"{data.decode()}:lost")

            nursery.start_soon(send, b"written")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, b"queued")
            await trio.testing.wait_all_tasks_blocked()
            held = await a.receive()

            async def release_later() -> None:
                await trio.sleep(1.0)
                held.release()

            nursery.start_soon(release_later)
            start = trio.current_time()
            await b.aclose()
            # The written message's ACK was awaited (1 s), the queued one failed at once.
            assert trio.current_time() - start == pytest.approx(1.0)
        assert sorted(outcomes) == ["queued:shutdown", "written:ok"]

        # A message left unreleased at close is never ACKed: the sender times out.
        async with node(net, C, timeout=0.5) as c, trio.open_nursery() as nursery:

            async def expect_failure() -> None:
                with pytest.raises(ChirpTimeoutError):
                    await c.send(to(A))

            nursery.start_soon(expect_failure)
            unreleased = await a.receive()
        unreleased.release()


async def test_garbage_collected_message_frees_its_slot_and_warns(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False, max_slots=1) as a, node(net, B, synchronous=False) as b:
        await b.send(to(A, b"dropped"))
        await b.send(to(A, b"next"))
        msg: Message | None = await a.receive()
        assert a.statistics().slots_in_use == 1
        await trio.lowlevel.checkpoint()  # trio's hand-over record lets go of the message
        with pytest.warns(ResourceWarning, match="without release"):
            del msg  # the last reference: collected at once
        # The slot was handed straight to the reader, which now holds "next" in it.
        with trio.fail_after(1):
            nxt = await a.receive()
        assert nxt.data == b"next"
        nxt.release()


async def test_received_message_fields(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False) as a,
        node(net, B, port=3001) as b,
        trio.open_nursery() as nursery,
    ):
        sent = to(A, b"data")
        sent.header = bytearray(b"hdr")
        nursery.start_soon(b.send, sent)
        msg = await a.receive()
        assert (msg.address, msg.port, msg.remote_identity) == (B, 3001, b.identity)
        assert (msg.identity, msg.header, msg.data) == (sent.identity, b"hdr", b"data")
        assert msg.serial == sent.serial
        assert msg.has_slot
        msg.release()
        assert not msg.has_slot


async def test_events_are_consistent_for_parser_use() -> None:
    # Guard for the FakePeer helper itself: the parser yields heads before data frames.
    parser = FrameParser(100)
    parser.receive_data(
        encode_handshake(1, bytes(16)) + bytes(16) + bytes(4) + (1).to_bytes(4, "big") + bytes(3) + b"z"
    )
    kinds = []
    while (event := parser.next_event()) is not NEED_DATA:
        kinds.append(type(event))
    assert kinds == [Handshake, FrameHead, DataFrame]


async def test_send_queue_is_bounded(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.black_hole(B)
    async with node(net, A, synchronous=False, send_queue_size=2, timeout=1.0) as a:
        await a.send(to(B, b"1"))
        await a.send(to(B, b"2"))
        assert a.statistics().queued == 2
        start = trio.current_time()
        with pytest.raises(ChirpTimeoutError, match="still connecting"):
            await a.send(to(B, b"3"))  # waits for room that never comes
        assert trio.current_time() - start == pytest.approx(1.0)
        assert a.statistics().queued == 2


async def test_ack_written_meanwhile_does_not_cancel_the_waiting_message_timer(
    autojump_clock: trio.abc.Clock,
) -> None:
    # libchirp's single per-connection send timer is restarted and stopped by an ACK
    # write, so its waiting message loses its timeout (sharp edge 6). Ours keeps it.
    net = MemoryNetwork()
    async with node(net, A, timeout=1.0) as a, node(net, B, synchronous=False) as b:
        async with trio.open_nursery() as nursery:

            async def unacked() -> None:
                start = trio.current_time()
                with pytest.raises(ChirpTimeoutError, match="no ACK"):
                    await a.send(to(B, b"held"))
                assert trio.current_time() - start == pytest.approx(1.0)

            nursery.start_soon(unacked)
            held = await b.receive()  # never released in time
            await trio.sleep(0.5)
            nursery.start_soon(functools.partial(b.send, to(A, b"ping"), synchronous=True))
            ping = await a.receive()
            ping.release()  # A writes an ACK while its own message waits for one
        held.release()


async def test_non_local_peer_requires_tls(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    config = Config(port=PORT)  # encryption not disabled
    async with open_chirp(config, transport=net.host(A)) as a:
        with pytest.raises(TLSError, match="cert_chain_pem"):
            await a.send(to(B))
        # An incoming non-local connection is refused and counted.
        stream, _ = await net.host(B).connect(A, PORT)
        assert await stream.receive_some(100) == b""
        assert a.statistics().errors == {"TLSError": 1}


async def test_configured_identity_is_used_whole(autojump_clock: trio.abc.Clock) -> None:
    identity = bytes(range(1, 17))
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, identity=identity) as b:
        assert b.identity == identity
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.send, to(A))
            msg = await a.receive()
            assert msg.remote_identity == identity
            msg.release()


async def test_peer_collecting_an_idle_connection_is_routine(autojump_clock: trio.abc.Clock) -> None:
    # A peer's GC closing an idle connection is not a failure: not counted, and the next
    # send reconnects at once instead of waiting out a reconnect debounce (which with a
    # short timeout would make it fail, as libchirp's "block after every close" does).
    class HighRandom(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    net = MemoryNetwork()
    quick_gc = Config(port=PORT, disable_encryption=True, synchronous=False, timeout=0.2, reuse_time=0.6)
    slow_gc = Config(port=PORT, disable_encryption=True, timeout=0.2, reuse_time=30.0)
    async with (
        open_chirp(quick_gc, transport=net.host(A), rng=LowRandom()) as a,
        open_chirp(slow_gc, transport=net.host(B), rng=HighRandom()) as b,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in a:
                msg.release()

        nursery.start_soon(consume)
        await b.send(to(A, b"first"))
        await trio.sleep(1.0)  # A's GC ticks at 0.3, 0.6, 0.9: idle > 0.6 is collected at 0.9
        assert b.statistics().connections == 0
        start = trio.current_time()
        await b.send(to(A, b"second"))
        assert trio.current_time() == start
        assert b.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_serve_chirp_runs_a_node_in_a_nursery(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    config = Config(port=PORT, disable_encryption=True, synchronous=False)
    async with trio.open_nursery() as nursery:
        a = await nursery.start(functools.partial(serve_chirp, config, transport=net.host(A)))
        b = await nursery.start(functools.partial(serve_chirp, config, transport=net.host(B)))
        await b.send(to(A, b"via serve_chirp"))
        msg = await a.receive()
        assert (msg.data, msg.remote_identity) == (b"via serve_chirp", b.identity)
        msg.release()
        stats = a.statistics()
        assert (stats.port, stats.connections, stats.frames_in, stats.slots_peak) == (PORT, 1, 1, 1)
        nursery.cancel_scope.cancel()
    with pytest.raises(ShutdownError):
        await a.receive()


async def test_a_bug_inside_a_connection_crashes_the_node_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    # Only ChirpError, OSError, ssl.SSLError and BrokenResourceError are contained; anything
    # else is a bug in trio_chirp or in a transport, and must not be swallowed.
    class BuggyStream(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.lowlevel.checkpoint()

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            raise RuntimeError("bug in a transport")

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    class BuggyTransport(Transport):
        def __init__(self, inner: Transport) -> None:
            self.inner = inner

        async def connect(
            self, address: str, port: int, *, bind: str | None = None
        ) -> tuple[trio.abc.Stream, str]:
            await trio.lowlevel.checkpoint()
            return BuggyStream(), A

        async def serve(self, **kwargs: Any) -> None:
            await self.inner.serve(**kwargs)

    net = MemoryNetwork()
    config = Config(port=PORT, disable_encryption=True)
    with pytest.raises(RuntimeError, match="bug in a transport"):
        async with open_chirp(config, transport=BuggyTransport(net.host(A))) as a:
            await a.send(to(B))
