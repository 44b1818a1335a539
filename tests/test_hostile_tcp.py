"""Hostile peers on real sockets: each attack costs only its own connection (issue 9).

Every case runs an attack against a node while a good peer sends it 20 messages: the bad
connection is closed (or its junk ignored) and counted, and every message of the good
peer arrives, in order.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio

from trio_chirp import Chirp, Config, Message, open_chirp
from trio_chirp._protocol import TYPE_ACK, encode_frame, encode_frame_head, encode_handshake

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"
GOOD = 20

Attack = Callable[[Chirp], Awaitable[None]]


async def _connect(node: Chirp, hello: bool = True) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(LOCAL, node.port)
    if hello:
        await stream.send_all(encode_handshake(40000, b"\x11" * 16))
    return stream


async def _until_closed(stream: trio.SocketStream) -> None:
    """Read until the node closes the connection, then close our end."""
    with trio.fail_after(10):
        async with stream:
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return


def _reset(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def garbage_instead_of_handshake(node: Chirp) -> None:
    stream = await _connect(node, hello=False)
    await stream.send_all(b"\x00\x00" + b"\xee" * 300)  # port 0, then junk
    await _until_closed(stream)


async def garbage_after_handshake(node: Chirp) -> None:
    stream = await _connect(node)
    await stream.send_all(b"\xff" * 300)
    await _until_closed(stream)


async def four_gib_length(node: Chirp) -> None:
    stream = await _connect(node)
    await stream.send_all(encode_frame_head(b"\x01" * 16, 1, 0, 0, 2**32 - 1))
    await _until_closed(stream)


async def wrapping_length(node: Chirp) -> None:
    # header_len + data_len = 2**32 + 10: 10 bytes if summed in 32 bits (libchirp's bug)
    stream = await _connect(node)
    await stream.send_all(encode_frame_head(b"\x01" * 16, 1, 0, 0xFFFF, 2**32 - 0xFFFF + 10))
    await _until_closed(stream)


async def unknown_acks(node: Chirp) -> None:
    stream = await _connect(node)
    for i in range(100):
        await stream.send_all(encode_frame(i.to_bytes(16, "big"), i, TYPE_ACK))
    await stream.aclose()


async def unknown_type_bits(node: Chirp) -> None:
    stream = await _connect(node)
    await stream.send_all(encode_frame(b"\x07" * 16, 1, 0x08, b"", b"odd bits"))  # a plain message
    await stream.aclose()


async def slowloris(node: Chirp) -> None:
    streams = []
    for _ in range(100):
        stream = await _connect(node, hello=False)
        await stream.send_all(b"\x9c")  # one byte of a handshake, then nothing
        streams.append(stream)
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(_until_closed, stream)


async def never_reading_peer(node: Chirp) -> None:
    # Asks for ACKs and never reads them: our writes to it back up, and only its
    # connection times out.
    stream = await _connect(node)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frames = encode_frame(b"\x05" * 16, 1, 1, b"", b"x") * 1000
    with trio.fail_after(15):
        async with stream:
            while True:  # until the node cuts us off (its ACK writes time out)
                try:
                    await stream.send_all(frames)
                except trio.BrokenResourceError:
                    return


async def killed_mid_frame(node: Chirp) -> None:
    stream = await _connect(node)
    await stream.send_all(encode_frame(b"\x06" * 16, 1, 0, b"", b"y" * 10000)[:5000])
    _reset(stream)
    await stream.aclose()


ATTACKS: dict[str, tuple[Attack, set[str] | None]] = {
    # attack -> the error classes it may be counted as (None: no error at all)
    "garbage-instead-of-handshake": (garbage_instead_of_handshake, {"ProtocolError"}),
    "garbage-after-handshake": (garbage_after_handshake, {"ProtocolError", "MessageTooLargeError"}),
    "4-gib-length": (four_gib_length, {"MessageTooLargeError"}),
    "32-bit-wrap": (wrapping_length, {"MessageTooLargeError"}),
    "unknown-acks": (unknown_acks, None),
    "unknown-type-bits": (unknown_type_bits, None),
    "slowloris": (slowloris, {"ChirpTimeoutError"}),
    "never-reading": (never_reading_peer, {"ChirpTimeoutError", "ConnectionLostError"}),
    "killed-mid-frame": (killed_mid_frame, {"ConnectionLostError"}),
}


@pytest.mark.parametrize("name", ATTACKS)
async def test_attack_costs_only_its_connection(name: str) -> None:
    attack, errors = ATTACKS[name]
    config = Config(port=0, synchronous=False, timeout=0.5, handshake_timeout=1.0, bind_v6=None)
    received: list[bytes] = []
    others: list[bytes] = []
    all_good = trio.Event()
    async with (
        open_chirp(config) as node,
        open_chirp(Config(port=0, synchronous=False, bind_v6=None)) as good,
        trio.open_nursery() as nursery,
    ):

        async def drain() -> None:
            async for msg in node:
                if msg.remote_identity == good.identity:
                    received.append(msg.data)
                    if len(received) == GOOD:
                        all_good.set()
                else:
                    others.append(msg.data)
                msg.release()

        nursery.start_soon(drain)

        async def good_peer() -> None:
            for i in range(GOOD):
                await good.send(Message(b"good %d" % i, address=LOCAL, port=node.port))
                await trio.sleep(0.05)
            await good.flush(LOCAL, node.port)

        with trio.fail_after(20):
            async with trio.open_nursery() as attackers:
                attackers.start_soon(good_peer)
                attackers.start_soon(attack, node)
            await all_good.wait()
        assert received == [b"good %d" % i for i in range(GOOD)]  # nothing lost, in order
        counted = set(node.statistics().errors)
        if errors is None:
            assert counted <= {"ConnectionLostError"}  # at most the raw peer's own close
        else:
            assert counted, "the attack was not counted"
            assert counted <= errors | {"ConnectionLostError"}
        assert node.statistics().connections == 1  # only the good peer's is left
        if name == "unknown-type-bits":
            assert others == [b"odd bits"]  # unknown bits are ignored, as libchirp does
        nursery.cancel_scope.cancel()
