"""Shared helpers for the trio_chirp <-> libchirp interop scenarios (``test_interop_*.py``).

A trio_chirp node runs in the test's own Trio loop; the real libchirp runs in a child
process driven by ``peer_process.PeerProcess``. Everything that waits is bounded by
``trio.fail_after`` so a hang fails the test instead of blocking until pytest's timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libchirp_peer import payload

import trio_chirp

LOCAL = "127.0.0.1"

# Payload sizes every direction/mode is checked with (issue #4).
SIZES = (0, 1, 1024, 1 << 20, 50 << 20)
HEADER = b"\x00routing-header\xff" * 3  # non-empty, not UTF-8, 51 bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LIBCHIRP_MAX_MSG_SIZE = 100 * 1024 * 1024


def trio_config(**overrides: Any) -> trio_chirp.Config:
    """A loopback node on a free port (plaintext on 127.0.0.1 needs no certificates).

    ``max_msg_size`` is libchirp's default (100 MiB) here, so the same sizes pass both
    ways; ours is 1 MiB (docs/memory.md).
    """
    overrides.setdefault("port", 0)
    overrides.setdefault("max_msg_size", LIBCHIRP_MAX_MSG_SIZE)
    return trio_chirp.Config(**overrides)


@dataclass(frozen=True)
class Got:
    """What a trio_chirp node delivered, copied out so the message can be released at once."""

    identity: bytes
    serial: int
    remote_identity: bytes
    address: str
    port: int
    header: bytes
    data_len: int
    data_sha256: str
    data: bytes | None  # kept when small
    ack_requested: bool
    had_slot: bool


def snapshot(msg: trio_chirp.Message, keep_data_up_to: int = 4096) -> Got:
    assert msg.serial is not None
    assert msg.remote_identity is not None
    assert msg.address is not None
    assert msg.port is not None
    return Got(
        identity=msg.identity,
        serial=msg.serial,
        remote_identity=msg.remote_identity,
        address=msg.address,
        port=msg.port,
        header=msg.header,
        data_len=len(msg.data),
        data_sha256=sha(msg.data),
        data=msg.data if len(msg.data) <= keep_data_up_to else None,
        ack_requested=msg.ack_requested,
        had_slot=msg.has_slot,
    )


async def receive_released(chirp: trio_chirp.Chirp, count: int, timeout: float = 20) -> list[Got]:  # noqa: ASYNC109
    """Receive ``count`` messages, releasing (with ACK) each one right away."""
    got: list[Got] = []
    with trio.fail_after(timeout):
        while len(got) < count:
            msg = await chirp.receive()
            try:
                got.append(snapshot(msg))
            finally:
                msg.release()
    return got


async def nothing_arrives(chirp: trio_chirp.Chirp, seconds: float) -> None:
    """Assert that no message is delivered for ``seconds`` (releases and fails if one is)."""
    with trio.move_on_after(seconds):
        msg = await chirp.receive()
        msg.release()
        raise AssertionError(f"unexpected delivery {msg!r}")


async def poll_until(predicate: Callable[[], bool], timeout: float = 5, interval: float = 0.01) -> None:  # noqa: ASYNC109
    """Wait until ``predicate()`` holds (node statistics have no change notification)."""
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(interval)


def assert_consecutive(serials: list[int], start: int | None = None) -> None:
    """Serials of one remote go up by one per frame, modulo 2**32 (PROTOCOL.md 4)."""
    if not serials:
        return
    first = serials[0] if start is None else start
    expected = [(first + i) & 0xFFFFFFFF for i in range(len(serials))]
    assert serials == expected, f"serials not consecutive: first mismatch in {serials[:10]}..."


def assert_peer_received(
    event: dict[str, Any],
    *,
    sender: trio_chirp.Chirp,
    data: bytes,
    header: bytes = b"",
    identity: bytes | None = None,
) -> None:
    """A libchirp ``received`` event describes ``data`` sent by the trio node ``sender``."""
    assert event["address"] == LOCAL
    assert event["port"] == sender.port, "must be the sender's announced listening port"
    assert event["remote_identity"] == sender.identity.hex()
    assert event["header_hex"] == header.hex()
    assert event["data_len"] == len(data)
    assert event["data_sha256"] == sha(data)
    if identity is not None:
        assert event["identity"] == identity.hex()


def assert_trio_received(got: Got, *, peer: Any, data: bytes, header: bytes = b"", sync: bool) -> None:
    """A trio_chirp delivery describes ``data`` sent by the libchirp ``peer``."""
    assert got.address == LOCAL
    assert got.port == peer.port, "must be the sender's announced listening port"
    assert got.remote_identity == peer.identity
    assert got.header == header
    assert got.data_len == len(data)
    assert got.data_sha256 == sha(data)
    assert got.ack_requested is sync, "REQ_ACK exactly when the libchirp sender is synchronous"
    assert got.had_slot


def node_errors(chirp: trio_chirp.Chirp) -> dict[str, int]:
    return dict(chirp.statistics().errors)


def remote_stats(chirp: trio_chirp.Chirp, port: int) -> trio_chirp.RemoteStats | None:
    for remote in chirp.statistics().remotes:
        if remote.address == LOCAL and remote.port == port:
            return remote
    return None


__all__ = [
    "HEADER",
    "LOCAL",
    "SIZES",
    "Got",
    "assert_consecutive",
    "assert_peer_received",
    "assert_trio_received",
    "node_errors",
    "nothing_arrives",
    "payload",
    "poll_until",
    "receive_released",
    "remote_stats",
    "sha",
    "snapshot",
    "trio_config",
]
