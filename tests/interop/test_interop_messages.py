"""Data messages between trio_chirp and the real libchirp, both directions, both modes.

Every delivered message is checked field by field against PROTOCOL.md 1.2 and 4:
address = the TCP peer's IP, port = the sender's *announced listening* port,
remote_identity = the sender node's identity, identity = the sent message's identity,
serials consecutive per remote, REQ_ACK exactly for synchronous senders.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import (
    HEADER,
    LOCAL,
    SIZES,
    assert_consecutive,
    assert_peer_received,
    assert_trio_received,
    node_errors,
    payload,
    receive_released,
    trio_config,
)
from peer_process import open_peer

import trio_chirp
from trio_chirp._header import split as split_header

pytestmark = pytest.mark.interop

MODES = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
MANY = 10_000


def _messages() -> list[tuple[bytes, bytes]]:
    """(header, data) in sending order: every size, then a header with data, then a header alone."""
    out = [(b"", payload(size, seed)) for seed, size in enumerate(SIZES)]
    out.append((HEADER, b"data after a header"))
    out.append((HEADER, b""))
    return out


@MODES
async def test_libchirp_to_trio_sizes_and_header(reference_python: Path, sync: bool) -> None:
    messages = _messages()
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=sync)) as chirp,
        open_peer(reference_python, name="sender", SYNCHRONOUS=sync) as peer,
    ):
        sent_ids, identities = [], []
        for header, data in messages:
            if len(data) > 1024:  # regenerate on the peer instead of shipping it as hex
                seed = next(i for i, s in enumerate(SIZES) if s == len(data))
                send_id = await peer.send(LOCAL, chirp.port, size=len(data), seed=seed, header=header)
            else:
                send_id = await peer.send(LOCAL, chirp.port, data=data, header=header)
            sent_ids.append(send_id)
        # the "ok" responses carry each new message's identity
        for event in peer.history:
            if event.get("event") == "ok" and event.get("cmd") == "send":
                identities.append(bytes.fromhex(event["identity"]))

        got = await receive_released(chirp, len(messages), timeout=30)
        for send_id in sent_ids:
            outcome = await peer.wait_sent(send_id)
            assert outcome["ok"], outcome

        for g, (header, data), identity in zip(got, messages, identities, strict=True):
            assert_trio_received(g, peer=peer, data=data, header=header, sync=sync)
            assert g.identity == identity
        assert got[0].data == b""
        assert got[1].data == payload(1, 1)
        assert_consecutive([g.serial for g in got])
        assert node_errors(chirp) == {}
        stats = chirp.statistics()
        assert stats.connections == 1  # libchirp dialled once; everything came on it
        assert stats.slots_in_use == 0
        assert stats.frames_in == len(messages)


@MODES
async def test_trio_to_libchirp_sizes_and_header(reference_python: Path, sync: bool) -> None:
    messages = _messages()
    async with (
        open_peer(reference_python, name="receiver", SYNCHRONOUS=sync) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=sync, timeout=10)) as chirp,
    ):
        sent: list[trio_chirp.Message] = []
        with trio.fail_after(30):
            for header, data in messages:
                msg = trio_chirp.Message(data, header=header, address=LOCAL, port=peer.port)
                await chirp.send(msg)
                sent.append(msg)
            await chirp.flush(LOCAL, peer.port)
            events = [await peer.next_event("received", timeout=30) for _ in messages]

        for event, msg, (header, data) in zip(events, sent, messages, strict=True):
            if not header:
                # Sent under the caller's fail_after(30): our header map carries the deadline,
                # and a libchirp peer sees the map's bytes (docs/deadlines.md).
                seen, meta, malformed = split_header(bytes.fromhex(event["header_hex"]))
                assert (seen, malformed) == (b"", False)
                assert meta is not None
                assert meta.remaining is not None
                assert 0 < meta.remaining <= 30
                header = bytes.fromhex(event["header_hex"])
            assert_peer_received(event, sender=chirp, data=data, header=header, identity=msg.identity)
            assert event["serial"] == msg.serial  # the serial trio_chirp wrote is what arrived
            assert not event["has_slot"]  # the driver's queue get() released it (AUTO_RELEASE)
        assert events[0]["data_hex"] == ""
        assert events[1]["data_hex"] == payload(1, 1).hex()
        assert_consecutive([e["serial"] for e in events])
        assert node_errors(chirp) == {}
        stats = chirp.statistics()
        assert stats.connections == 1
        assert stats.queued == stats.in_flight == 0
        assert stats.messages_lost == 0
        assert (await peer.command("stats"))["received"] == len(messages)


@MODES
async def test_libchirp_to_trio_many_in_order(reference_python: Path, sync: bool) -> None:
    data = payload(32, 99)
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=sync)) as chirp,
        open_peer(reference_python, name="sender", SYNCHRONOUS=sync, REPORT="none") as peer,
    ):
        await peer.command("send_many", address=LOCAL, port=chirp.port, count=MANY, size=32, seed=99, id="b")
        got = await receive_released(chirp, MANY, timeout=45)
        done = await peer.next_event("send_many_done", timeout=30)
        assert done["ok_count"] == MANY, done
        assert done["failed_count"] == 0

        assert [int.from_bytes(g.header, "big") for g in got] == list(range(MANY))
        assert len({g.identity for g in got}) == MANY
        for g in got:
            assert g.data == data
            assert g.remote_identity == peer.identity
            assert g.port == peer.port
            assert g.address == LOCAL
            assert g.ack_requested is sync
        assert_consecutive([g.serial for g in got])
        await nothing_more(chirp)
        assert node_errors(chirp) == {}
        assert chirp.statistics().connections == 1


@MODES
async def test_trio_to_libchirp_many_in_order(reference_python: Path, sync: bool) -> None:
    data = payload(32, 98)
    async with (
        open_peer(reference_python, name="receiver", SYNCHRONOUS=sync) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=sync)) as chirp,
    ):
        serials = []
        identities = []
        with trio.fail_after(45):
            for i in range(MANY):
                msg = trio_chirp.Message(data, header=i.to_bytes(4, "big"), address=LOCAL, port=peer.port)
                await chirp.send(msg)
                identities.append(msg.identity.hex())
                if sync:
                    serials.append(msg.serial)
            await chirp.flush(LOCAL, peer.port)
            events = [await peer.next_event("received", timeout=30) for _ in range(MANY)]
        assert [int(e["header_hex"], 16) for e in events] == list(range(MANY))
        assert [e["identity"] for e in events] == identities
        for e in events:
            assert e["data_hex"] == data.hex()
            assert e["remote_identity"] == chirp.identity.hex()
            assert e["port"] == chirp.port
            assert e["address"] == LOCAL
        assert_consecutive([e["serial"] for e in events])
        if sync:
            assert [e["serial"] for e in events] == serials
        stats = await peer.command("stats")
        assert stats["received"] == MANY
        assert node_errors(chirp) == {}
        assert chirp.statistics().connections == 1


async def nothing_more(chirp: trio_chirp.Chirp) -> None:
    with trio.move_on_after(0.1):
        msg = await chirp.receive()
        msg.release()
        raise AssertionError(f"extra delivery {msg!r}")
