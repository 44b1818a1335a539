"""What the node's link service (``_node._links.Links``) promises around failed and shed
connections, as a user sees it through sends and ``statistics()``.

* A dial refused at the connection limit does not leave its remote "connecting" for ever:
  once the limit has room, the next send to that peer dials and gets through.
* A dialled connection shed during its handshake (for a newcomer, at the limit) is dialled
  again for the messages still queued.
* An established connection that fails is a failure of its remote: counted, in the
  remote's ``last_error``, and its reconnect is debounced (``reconnect_blocked``).
* Accept failures are counted by their errno name, or by the exception's class when it
  has no errno.
* ``max_handshakes`` limits incoming handshakes only: our own dial neither sheds one nor
  is refused for them.
* A connection whose synchronous message awaits its ACK is not shed, however idle.
* A peer we dialled is never taken for a TLS client, whatever its handshake looks like.
* A connection the listener takes as the node begins to close is closed at once, without
  our handshake.
* A dial that connects after the node began to close is closed at once, without our
  handshake.
* ``slots_peak`` starts at 0 and keeps the peak of connections that have closed.
"""

from __future__ import annotations

import errno
import functools
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, node, to

from trio_chirp import CannotConnectError, Config, Message, open_chirp
from trio_chirp._limits import IDLE_SHED_AFTER
from trio_chirp._protocol import NEED_DATA, DataFrame, FrameParser, encode_handshake
from trio_chirp._sniff import client_hello_verdict
from trio_chirp.testing import MemoryNetwork, MemoryTransport

D, E = "10.0.0.4", "10.0.0.5"


async def test_a_dial_refused_at_the_limit_dials_again_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False, max_connections=1) as a,
        node(net, B, synchronous=False) as b,
        node(net, E, synchronous=False) as e,
    ):
        await b.send(to(A, b"b"))
        held = await a.receive()  # B's connection holds a slot: it cannot be shed
        with pytest.raises(CannotConnectError, match="limit of 1 connections"):
            await a.send(to(E), synchronous=True)
        held.release()
        await b.aclose()  # the limit has room again
        await trio.sleep(1.0)  # past the reconnect debounce
        with trio.fail_after(10.0):  # not waiting for ever for a dial nobody makes
            await a.send(to(E, b"now"))
            await a.flush(E, PORT)
            got = await e.receive()
        assert got.data == b"now"
        got.release()


async def test_a_dial_shed_in_its_handshake_is_dialled_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    silent = FakePeer(net, C)
    silent.send_handshake = False  # our dial to it stays in its handshake
    async with trio.open_nursery() as nursery:
        await nursery.start(silent.run)
        async with (
            node(net, A, synchronous=False, max_connections=2, timeout=30.0) as a,
            node(net, B, synchronous=False) as b,
        ):
            await a.send(to(C))
            await silent.accepted.wait()
            await trio.sleep(0.5)  # the dial is the older connection
            await b.send(to(A, b"b"))
            (await a.receive()).release()
            await trio.sleep(IDLE_SHED_AFTER + 0.5)  # both connections idle long enough to be shed
            newcomer, _ = await net.host(D).connect(A, PORT)  # A is full: the oldest, the dial, goes
            await trio.testing.wait_all_tasks_blocked()
            # The queued message made A dial C again (shedding B's idle connection for it).
            assert a.statistics().connections_shed == 2
            assert len(silent.streams) == 2
            await newcomer.aclose()
        nursery.cancel_scope.cancel()


async def test_a_failed_connection_is_the_remotes_failure_and_its_reconnect_is_debounced(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        await a.send(to(B))
        await a.flush(B, PORT)
        (await b.receive()).release()
        net.cut(A, B)  # a reset: not a routine close
        await trio.testing.wait_all_tasks_blocked()
        (remote,) = [r for r in a.statistics().remotes if r.address == B]
        assert remote.reconnect_blocked
        assert remote.last_error is not None
        assert a.statistics().errors["ConnectionLostError"] == 1
        await trio.sleep(1.0)
        (remote,) = [r for r in a.statistics().remotes if r.address == B]
        assert not remote.reconnect_blocked


class _AcceptFails(MemoryTransport):
    """A memory host whose listener first fails to accept twice (with and without an errno)."""

    async def serve(self, **kwargs: Any) -> None:
        on_error = kwargs["on_error"]
        on_error(OSError(errno.EMFILE, "Too many open files"))
        on_error(OSError("no errno"))
        await super().serve(**kwargs)


async def test_accept_failures_are_counted_by_errno_name_or_class(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    transport = _AcceptFails(net, A)
    async with open_chirp(Config(port=PORT, disable_encryption=True), transport=transport) as a:
        await trio.testing.wait_all_tasks_blocked()
        errors = dict(a.statistics().errors)
        assert errors == {"EMFILE": 1, "OSError": 1}


async def test_slots_peak_starts_at_zero_and_outlives_the_connection(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        assert b.statistics().slots_peak == 0
        for _ in range(3):
            await a.send(to(B))
        await a.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        held = [await b.receive() for _ in range(3)]
        for m in held:
            m.release()
        assert a.statistics().slots_peak == 0  # A received nothing
        await a.aclose()
        await trio.testing.wait_all_tasks_blocked()
        stats = b.statistics()
        assert stats.connections == 0
        assert stats.slots_peak == 3


async def test_a_peer_we_dial_is_never_taken_for_a_tls_client(autojump_clock: trio.abc.Clock) -> None:
    """A handshake that reads like a ClientHello (port 0x1603, a crafted identity) is refused
    only on an accepted plaintext connection; a peer we dialled answers with its handshake,
    whatever it looks like."""
    identity = bytes([0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2C, 0x03, 0x03]) + b"\x77" * 7
    hello_port = 0x1603
    assert client_hello_verdict(encode_handshake(hello_port, identity)) is True
    net = MemoryNetwork()
    received: list[bytes] = []
    got_one = trio.Event()

    async def answer(stream: trio.abc.Stream) -> None:
        await stream.send_all(encode_handshake(hello_port, identity))
        parser = FrameParser(2**20)
        while not got_one.is_set():
            event = parser.next_event()
            if event is NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                parser.receive_data(data)
            elif isinstance(event, DataFrame):
                received.append(bytes(event.data))
                got_one.set()

    async with trio.open_nursery() as nursery:

        def on_accept(stream: trio.abc.Stream, peer: str) -> None:
            nursery.start_soon(answer, stream)

        await nursery.start(
            functools.partial(
                net.host(B).serve,
                port=hello_port,
                bind_v4="0.0.0.0",
                bind_v6=None,
                backlog=8,
                on_accept=on_accept,
            )
        )
        async with node(net, A, synchronous=False) as a:
            await a.send(Message(b"plain", address=B, port=hello_port))
            await a.flush(B, hello_port)
            await got_one.wait()
            assert received == [b"plain"]
            assert dict(a.statistics().errors) == {}
        nursery.cancel_scope.cancel()


async def test_a_connection_awaiting_an_ack_is_not_shed(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as b,
        node(net, A, max_connections=1, timeout=30.0) as a,
        trio.open_nursery() as nursery,
    ):
        done = trio.Event()

        async def send() -> None:
            await a.send(to(B, b"in flight"))
            done.set()

        nursery.start_soon(send)
        held = await b.receive()
        await trio.sleep(IDLE_SHED_AFTER + 1.0)  # idle, holds no slot: only its ACK is awaited
        newcomer, _ = await net.host(D).connect(A, PORT)
        assert await newcomer.receive_some(100) == b""  # refused: nothing could be shed
        assert (a.statistics().connections_refused, a.statistics().connections_shed) == (1, 0)
        held.release()
        await done.wait()


async def test_a_connection_accepted_while_closing_is_closed_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A) as a:
        raw, _ = await net.host(D).connect(A, PORT)  # the listener has it, but has not run yet
        await a.aclose()
    with trio.fail_after(5.0):
        assert await raw.receive_some(100) == b""  # closed, without our handshake


async def test_our_dial_is_not_held_to_the_limit_of_incoming_handshakes(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False, max_handshakes=2) as a, node(net, B, synchronous=False) as b:
        pending = [(await net.host(D).connect(A, PORT))[0] for _ in range(2)]  # never say hello
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().connections == 2
        await a.send(to(B, b"out"))
        await a.flush(B, PORT)
        msg = await b.receive()
        msg.release()
        stats = a.statistics()
        assert (stats.connections, stats.connections_shed, stats.connections_refused) == (3, 0, 0)
        for stream in pending:
            await stream.aclose()


async def test_a_dial_connected_after_the_close_began_says_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A connect that completes during ``aclose()``'s grace is closed at once: the peer
    sees the stream end without our handshake."""
    net = MemoryNetwork()
    net.set_latency(A, B, 0.5)  # the dial to B connects after a second
    late = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(late.run)
        async with node(net, C) as c, node(net, A, timeout=30.0) as a:
            nursery.start_soon(a.send, to(C, b"in flight"))
            held = await c.receive()  # keeps aclose() in its grace
            await a.send(to(B, b"queued"), synchronous=False)  # starts the dial
            nursery.start_soon(a.aclose)
            await late.eof.wait()
            assert [event for _, event in late.events] == ["EOF"]
            held.release()
        nursery.cancel_scope.cancel()
