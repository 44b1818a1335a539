"""A handshake that cannot be trusted is refused and counted; everyone else is served (issue 9)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, node, to

from trio_chirp import CannotConnectError, Config, Message, open_chirp
from trio_chirp._protocol import encode_frame, encode_handshake
from trio_chirp.testing import MemoryNetwork


async def _raw_peer(net: MemoryNetwork, source: str, target: str, port: int, identity: bytes) -> bytes:
    """Dial ``target`` from ``source``, announce ``port``, send one message; what came back."""
    stream, _ = await net.host(source).connect(target, PORT)
    await stream.send_all(encode_handshake(port, identity) + encode_frame(b"\x01" * 16, 1, 0, b"", b"evil"))
    received = b""
    while chunk := await stream.receive_some(1000):
        received += chunk
    return received


@pytest.mark.parametrize(
    ("source", "announced_port", "identity", "reason"),
    [
        (B, 0, b"\x02" * 16, "announced port 0"),
        (B, 4000, None, "own identity"),
        (A, PORT, b"\x02" * 16, "where this node listens"),
    ],
    ids=["port-0", "own-identity", "own-address"],
)
async def test_untrusted_handshake_is_refused_and_others_are_served(
    source: str,
    announced_port: int,
    identity: bytes | None,
    reason: str,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, C, synchronous=False) as good:
        await _raw_peer(net, source, A, announced_port, identity or a.identity)  # ends: EOF
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert stats.errors == {"ProtocolError": 1}
        assert stats.undelivered == 0  # its message was never delivered
        assert any(reason in r.getMessage() for r in caplog.records)
        await good.send(to(A, b"good"))  # a node on another address, same port: fine
        msg = await a.receive()
        assert (msg.data, msg.address, msg.port) == (b"good", C, PORT)
        msg.release()


async def test_sending_to_itself_fails_at_once(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, timeout=30) as a:
        # Whichever end reads the handshake first refuses it: either way the send fails at once.
        with pytest.raises(CannotConnectError, match=r"own identity|ended before the peer's chirp handshake"):
            await a.send(to(A))
        assert trio.current_time() == 0


def _raw_tcp(port: int, handshake: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake + encode_frame(b"\x01" * 16, 1, 0, b"", b"evil"))
        received = b""
        while chunk := sock.recv(1000):
            received += chunk
        return received


async def test_on_tcp_a_peer_announcing_our_port_or_port_0_is_refused() -> None:
    async with (
        open_chirp(Config(port=0, synchronous=False)) as a,
        open_chirp(Config(port=0, synchronous=False)) as good,
    ):
        for announced in (a.port, 0):
            await trio.to_thread.run_sync(_raw_tcp, a.port, encode_handshake(announced, b"\x03" * 16))
        with trio.fail_after(10):
            await good.send(Message(b"good", address="127.0.0.1", port=a.port))
            msg = await a.receive()
        assert msg.data == b"good"
        msg.release()
        assert a.statistics().errors == {"ProtocolError": 2}
