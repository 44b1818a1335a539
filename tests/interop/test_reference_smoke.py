"""Smoke tests for the interop harness: two *reference* libchirp peers talk to each other.

These check the harness (build recipe, driver, JSON protocol), not trio_chirp; if they
fail, every other interop test would be meaningless.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from libchirp_peer import payload
from peer_process import free_port, open_peer

pytestmark = pytest.mark.interop

LOCAL = "127.0.0.1"


async def test_message_and_echo_reply(reference_python: Path) -> None:
    """Sync sender -> async echo worker, the pattern libchirp's examples use."""
    async with (
        open_peer(reference_python, name="worker", SYNCHRONOUS=False, ECHO=True) as worker,
        open_peer(reference_python, name="producer") as producer,
    ):
        send_id = await producer.send(LOCAL, worker.port, data=b"hello", header=b"\x01\x02")
        sent = await producer.wait_sent(send_id)
        assert sent["ok"], sent

        got = await worker.next_event("received")
        assert got["data_hex"] == b"hello".hex()
        assert got["header_hex"] == "0102"
        assert got["address"] == LOCAL
        assert got["port"] == producer.port  # announced listening port, not the source port
        assert got["remote_identity"] == producer.identity.hex()

        echoed = await worker.next_event("sent")
        assert echoed["ok"], echoed
        reply = await producer.next_event("received")
        assert reply["identity"] == got["identity"]  # a reply keeps the identity
        assert reply["port"] == worker.port
        assert reply["data_hex"] == b"hello".hex()


async def test_sync_send_completes_only_on_release(reference_python: Path) -> None:
    """In sync mode the send future resolves when the receiver releases (ACK)."""
    async with (
        open_peer(reference_python, name="holder", AUTO_RELEASE=False, HOLD=True) as holder,
        open_peer(reference_python, name="sender") as sender,
    ):
        send_id = await sender.send(LOCAL, holder.port, size=100_000, seed=7)
        got = await holder.next_event("received")
        assert got["has_slot"]
        assert got["data_sha256"] == hashlib.sha256(payload(100_000, 7)).hexdigest()
        assert "data_hex" not in got
        assert not [e for e in sender.drain("sent") if e["id"] == send_id]

        reply = await holder.command("release", count=1)
        assert reply["released"] == 1
        released = await holder.next_event("released")
        assert released["ok"]
        assert released["result"] == [got["identity"], got["serial"]]
        assert (await sender.wait_sent(send_id))["ok"]


async def test_failures_are_reported(reference_python: Path) -> None:
    """Nobody listening: the send fails with CH_CANNOT_CONNECT (ConnectionError, ecode 12)."""
    async with open_peer(reference_python, name="lonely", TIMEOUT=1.0) as peer:
        send_id = await peer.send(LOCAL, free_port(), data=b"x")
        sent = await peer.wait_sent(send_id)
        assert not sent["ok"]
        assert sent["error_type"] == "ConnectionError"
        assert sent["ecode"] == 12


async def test_send_many(reference_python: Path) -> None:
    async with (
        open_peer(reference_python, name="sink", SYNCHRONOUS=False, REPORT="none") as sink,
        open_peer(reference_python, name="source", SYNCHRONOUS=False) as source,
    ):
        await source.command("send_many", address=LOCAL, port=sink.port, count=500, size=64, id="batch")
        done = await source.next_event("send_many_done", timeout=30)
        assert done["ok_count"] == 500, done
        for _ in range(50):
            stats = await sink.command("stats")
            if stats["received"] == 500:
                break
            await trio.sleep(0.1)
        assert stats["received"] == 500
