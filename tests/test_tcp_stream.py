"""``_tcp.TCPStream.receive_some``: trio's ``SocketStream`` contract on the plain socket.

The stream reads its socket itself (fewer Python calls on a synchronous round trip's
critical path), so what trio's stream promises is tested here against it: a checkpoint,
one reader at a time, the errors a closed or broken socket gives, EOF, and that a
cancelled call consumes nothing.
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from trio_chirp._tcp import TCPStream


def _pair() -> tuple[TCPStream, socket.socket]:
    """Our stream on one end of a loopback TCP connection, the plain socket on the other."""
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    return TCPStream(ours), theirs


async def test_it_returns_what_arrived_and_b_empty_at_eof() -> None:
    stream, peer = _pair()
    with peer:
        peer.sendall(b"hello")
        assert await stream.receive_some() == b"hello"
        peer.sendall(b"abcdef")
        assert await stream.receive_some(4) == b"abcd"
        assert await stream.receive_some(4) == b"ef"
        peer.shutdown(socket.SHUT_WR)
        assert await stream.receive_some() == b""
    await stream.aclose()


async def test_a_waiting_call_wakes_when_data_comes() -> None:
    stream, peer = _pair()
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            got.append(await stream.receive_some())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        peer.sendall(b"late")
    assert got == [b"late"]
    peer.close()
    await stream.aclose()


async def test_it_is_a_checkpoint_and_a_cancelled_call_consumes_nothing() -> None:
    stream, peer = _pair()
    peer.sendall(b"kept")
    await trio.lowlevel.wait_readable(stream.socket)  # arrived: the next call finds it at once
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive_some()
    assert scope.cancelled_caught
    assert await stream.receive_some() == b"kept"  # the cancelled call took nothing
    with trio.move_on_after(0.01) as waiting:
        await stream.receive_some()  # cancelled while waiting for readability
    assert waiting.cancelled_caught
    peer.sendall(b"next")
    assert await stream.receive_some() == b"next"
    peer.sendall(b"x")
    await trio.lowlevel.wait_readable(stream.socket)
    with trio.testing.assert_checkpoints():
        assert await stream.receive_some() == b"x"  # a checkpoint even with data ready at once
    peer.close()
    await stream.aclose()


async def test_a_second_reader_gets_busy_resource_error() -> None:
    stream, peer = _pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.receive_some()
        peer.sendall(b"x")  # ends the first
    peer.close()
    await stream.aclose()


async def test_closing_ends_a_waiting_reader_and_later_calls_with_closed_resource_error() -> None:
    stream, peer = _pair()
    outcome: list[BaseException] = []
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            try:
                await stream.receive_some()
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert len(outcome) == 1
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    peer.close()


async def test_a_reset_is_broken_resource_error() -> None:
    stream, peer = _pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # with linger 0: RST
    await trio.lowlevel.wait_readable(stream.socket)  # the reset has arrived
    with pytest.raises(trio.BrokenResourceError, match="socket connection broken"):
        await stream.receive_some()
    await stream.aclose()


async def test_max_bytes_below_one_is_refused() -> None:
    stream, peer = _pair()
    with pytest.raises(ValueError, match="max_bytes"):
        await stream.receive_some(0)
    peer.close()
    await stream.aclose()
