"""The node over real TCP on loopback: round trips, big messages, many remotes, bad peers."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket

import pytest
import trio

from trio_chirp import (
    CannotConnectError,
    Config,
    Message,
    MessageInUseError,
    ShutdownError,
    open_chirp,
)
from trio_chirp._protocol import encode_frame, encode_handshake

pytestmark = pytest.mark.timeout(30)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


LOOPBACKS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1")),
]


async def _echo_worker(chirp: object, count: int) -> None:
    from trio_chirp import Chirp

    assert isinstance(chirp, Chirp)
    for _ in range(count):
        msg = await chirp.receive()
        msg.release()
        msg.data = b"echo:" + msg.data
        await chirp.send(msg)


@pytest.mark.parametrize("address", LOOPBACKS)
async def test_sync_round_trip_keeps_identity_and_uses_one_connection(address: str) -> None:
    async with (
        open_chirp(Config(port=0, synchronous=False)) as worker,
        open_chirp(Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_echo_worker, worker, 1)
        msg = Message(b"ping", address=address, port=worker.port)
        with trio.fail_after(5):
            await producer.send(msg)
            reply = await producer.receive()
        reply.release()
        assert reply.data == b"echo:ping"
        assert reply.identity == msg.identity
        assert reply.remote_identity == worker.identity
        assert reply.port == worker.port
        assert reply.address == address
        stats = producer.statistics()
        assert stats.connections == 1
        assert worker.statistics().connections == 1


@pytest.mark.parametrize("address", LOOPBACKS)
async def test_async_stream_arrives_in_order(address: str) -> None:
    count = 500
    async with open_chirp(Config(port=0, synchronous=False)) as a, open_chirp(Config(port=0)) as b:
        for i in range(count):
            await b.send(Message(i.to_bytes(4, "big"), address=address, port=a.port), synchronous=False)
        await b.flush(address, a.port)
        seen = []
        serials = []
        with trio.fail_after(5):
            for _ in range(count):
                msg = await a.receive()
                assert not msg.ack_requested
                seen.append(int.from_bytes(msg.data, "big"))
                assert msg.serial is not None
                serials.append(msg.serial)
                msg.release()
        assert seen == list(range(count))
        assert all((y - x) % 2**32 == 1 for x, y in itertools.pairwise(serials))


async def test_16_mib_messages_both_modes() -> None:
    payload = os.urandom(16 * 1024 * 1024)
    big = 32 * 1024 * 1024  # max_msg_size must be raised for this (the default is 1 MiB)
    async with (
        open_chirp(Config(port=0, synchronous=False, max_msg_size=big)) as a,
        open_chirp(Config(port=0, max_msg_size=big)) as b,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.send, Message(payload, header=b"big", address="127.0.0.1", port=a.port))
            with trio.fail_after(10):
                msg = await a.receive()
            assert msg.ack_requested
            assert hashlib.sha256(msg.data).digest() == hashlib.sha256(payload).digest()
            assert msg.header == b"big"
            msg.release()
        await a.send(Message(payload, address="127.0.0.1", port=b.port))
        with trio.fail_after(10):
            back = await b.receive()
        back.release()
        assert back.data == payload


async def test_fifty_remotes_at_once() -> None:
    async with open_chirp(Config(port=0, synchronous=False)) as sink:
        received: list[bytes] = []

        async def drain() -> None:
            for _ in range(50):
                msg = await sink.receive()
                received.append(msg.data)
                msg.release()

        async def one_sender(i: int) -> None:
            async with open_chirp(Config(port=0)) as node:
                await node.send(Message(b"from %d" % i, address="127.0.0.1", port=sink.port))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                for i in range(50):
                    nursery.start_soon(one_sender, i)
        assert sorted(received) == sorted(b"from %d" % i for i in range(50))
        assert len({r.port for r in sink.statistics().remotes}) == 50


async def _raw_peer(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(encode_handshake(40000, b"\x11" * 16))
    return stream


async def _read_until_eof(stream: trio.SocketStream) -> bytes:
    seen = b""
    while chunk := await stream.receive_some(65536):
        seen += chunk
    return seen


@pytest.mark.parametrize(
    ("bad_bytes", "error_class"),
    [
        pytest.param(b"\x00" * 20 + b"\x00\x00\x00\x05\x00\x00\x04", "ProtocolError", id="noop-with-payload"),
        pytest.param(
            encode_frame(b"\x01" * 16, 1, 0, b"", b"")[:20]
            + (2**32 - 1).to_bytes(4, "big")
            + b"\x00\x01\x00",
            "MessageTooLargeError",
            id="oversized-length",
        ),
        pytest.param(
            encode_frame(b"\x01" * 16, 1, 0, b"", b"hello")[:30], "ChirpTimeoutError", id="half-frame"
        ),
    ],
)
async def test_bad_peer_is_cut_off_and_good_peer_still_served(bad_bytes: bytes, error_class: str) -> None:
    config = Config(port=0, synchronous=False, timeout=0.2)
    async with open_chirp(config) as node, open_chirp(Config(port=0)) as good:
        bad = await _raw_peer(node.port)
        await bad.send_all(bad_bytes)
        with trio.fail_after(5):
            seen = await _read_until_eof(bad)
        assert seen.startswith(encode_handshake(node.port, node.identity))
        await bad.aclose()
        assert node.statistics().errors == {error_class: 1}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good.send, Message(b"still here", address="127.0.0.1", port=node.port))
            with trio.fail_after(5):
                msg = await node.receive()
            msg.release()
        assert msg.data == b"still here"


async def test_send_to_closed_port_fails_at_once_with_the_refusal() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with open_chirp(Config(port=0, timeout=30)) as node:
        with trio.fail_after(10):  # far before the 30 s deadline: the refusal fails it
            with pytest.raises(CannotConnectError, match="cannot connect") as info:
                await node.send(Message(b"x", address="127.0.0.1", port=port))
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        stats = node.statistics()
        assert stats.remotes[0].queued == 0
        assert stats.errors == {"CannotConnectError": 1}
        assert stats.send_errors == {"CannotConnectError": 1}


async def test_same_message_twice_concurrently_is_refused() -> None:
    async with open_chirp(Config(port=0, synchronous=False)) as a, open_chirp(Config(port=0)) as b:
        msg = Message(b"once", address="127.0.0.1", port=a.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.send, msg)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(MessageInUseError):
                await b.send(msg)
            got = await a.receive()
            got.release()


async def test_closed_node_refuses_and_ends_iteration() -> None:
    async with open_chirp(Config(port=0)) as node:
        pass
    with pytest.raises(ShutdownError):
        await node.send(Message(b"late", address="127.0.0.1", port=node.port))
    with pytest.raises(ShutdownError):
        await node.receive()
    assert [m async for m in node] == []
    await node.aclose()  # twice is harmless


async def test_body_exception_propagates_unwrapped() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with open_chirp(Config(port=0)):
            raise Boom
