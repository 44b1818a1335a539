"""Receive slots and flow control across implementations (PROTOCOL.md 5, 6).

A receiver whose application holds every slot of a connection stops reading it; the
sender is throttled by TCP and nothing is lost or reordered; each release lets exactly
one more message through. Checked with libchirp sending to a trio_chirp node whose
application holds its slots, and the other way round (libchirp with HOLD).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import (
    LOCAL,
    Got,
    assert_consecutive,
    node_errors,
    nothing_arrives,
    payload,
    poll_until,
    remote_stats,
    sha,
    snapshot,
    trio_config,
)
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop

N = 6
QUIET = 0.4  # how long "nothing more arrives" is watched


def release_first(held: list[trio_chirp.Message], seen: list[Got]) -> None:
    msg = held.pop(0)
    seen.append(snapshot(msg))
    msg.release()


async def test_libchirp_throttled_by_trio_slots(reference_python: Path) -> None:
    data = payload(1024, 5)
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=False, max_slots=2)) as chirp,
        open_peer(reference_python, name="sender", SYNCHRONOUS=False) as peer,
    ):
        await peer.command("send_many", address=LOCAL, port=chirp.port, count=N, size=1024, seed=5, id="b")
        held: list[trio_chirp.Message] = []
        seen: list[Got] = []
        try:
            with trio.fail_after(10):
                held.append(await chirp.receive())
                held.append(await chirp.receive())
            # libchirp is asynchronous: its sends completed when written to the OS,
            # although only two of them reached our application.
            done = await peer.next_event("send_many_done", timeout=10)
            assert done["ok_count"] == N, done
            await nothing_arrives(chirp, QUIET)
            stats = chirp.statistics()
            assert stats.slots_in_use == 2
            assert stats.undelivered == 0  # the rest waits in TCP buffers, not in our queue
            remote = remote_stats(chirp, peer.port)
            assert remote is not None
            assert remote.slots_in_use == 2

            order = [int.from_bytes(m.header, "big") for m in held]
            assert order == [0, 1]

            # Each release lets exactly one more message through.
            release_first(held, seen)
            with trio.fail_after(10):
                held.append(await chirp.receive())
            await nothing_arrives(chirp, QUIET)
            order.append(int.from_bytes(held[-1].header, "big"))
            assert chirp.statistics().slots_in_use == 2

            while held:
                release_first(held, seen)
                if len(order) < N:
                    with trio.fail_after(10):
                        held.append(await chirp.receive())
                    order.append(int.from_bytes(held[-1].header, "big"))
            assert order == list(range(N))
        finally:
            for msg in held:
                msg.release()
        await nothing_arrives(chirp, 0.1)
        assert chirp.statistics().slots_in_use == 0
        assert chirp.statistics().slots_peak == 2
        assert node_errors(chirp) == {}
        assert [g.data for g in seen] == [data] * N
        assert [g.remote_identity for g in seen] == [peer.identity] * N
        assert [g.port for g in seen] == [peer.port] * N
        assert not any(g.ack_requested for g in seen)
        assert_consecutive([g.serial for g in seen])


async def test_trio_throttled_by_libchirp_slots(reference_python: Path) -> None:
    data = payload(1024, 6)
    async with (
        open_peer(
            reference_python, name="holder", SYNCHRONOUS=False, MAX_SLOTS=2, AUTO_RELEASE=False, HOLD=True
        ) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=False)) as chirp,
    ):
        sent = []
        with trio.fail_after(10):
            for i in range(N):
                msg = trio_chirp.Message(data, header=i.to_bytes(4, "big"), address=LOCAL, port=peer.port)
                await chirp.send(msg)
                sent.append(msg)
            await chirp.flush(LOCAL, peer.port)  # all written, though libchirp holds two
        first = [await peer.next_event("received") for _ in range(2)]
        assert [int(e["header_hex"], 16) for e in first] == [0, 1]
        assert all(e["has_slot"] for e in first)
        with trio.move_on_after(QUIET):
            extra = await peer.next_event("received", timeout=QUIET + 1)
            raise AssertionError(f"libchirp delivered a third message with both slots held: {extra}")
        assert (await peer.command("stats"))["held"] == 2

        released = await peer.command("release", count=1)
        assert released == {**released, "released": 1, "held": 1}
        ev = await peer.next_event("released")
        assert ev["ok"]
        assert ev["result"] == [sent[0].identity.hex(), sent[0].serial]
        third = await peer.next_event("received")
        assert int(third["header_hex"], 16) == 2
        with trio.move_on_after(QUIET):
            extra = await peer.next_event("received", timeout=QUIET + 1)
            raise AssertionError(f"libchirp delivered more than one message per release: {extra}")

        events = [*first, third]
        while len(events) < N:
            await peer.command("release", all=True)
            events.append(await peer.next_event("received"))
        await peer.command("release", all=True)
        assert [int(e["header_hex"], 16) for e in events] == list(range(N))
        for e, msg in zip(events, sent, strict=True):
            assert e["identity"] == msg.identity.hex()
            assert e["serial"] == msg.serial
            assert e["data_sha256"] == sha(data)
            assert e["port"] == chirp.port
            assert e["remote_identity"] == chirp.identity.hex()
        assert node_errors(chirp) == {}
        assert chirp.statistics().messages_lost == 0


async def test_trio_sync_send_completes_on_libchirp_release(reference_python: Path) -> None:
    """A synchronous send returns when libchirp's application releases (ACK), not before."""
    async with (
        open_peer(reference_python, name="holder", AUTO_RELEASE=False, HOLD=True) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=True, timeout=5)) as chirp,
    ):
        msg = trio_chirp.Message(b"hold me", address=LOCAL, port=peer.port)
        returned = trio.Event()

        async def sender() -> None:
            await chirp.send(msg)
            returned.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            got = await peer.next_event("received")
            assert got["identity"] == msg.identity.hex()
            await trio.sleep(QUIET)
            assert not returned.is_set(), "sync send returned before the receiver released"
            remote = remote_stats(chirp, peer.port)
            assert remote is not None
            assert remote.in_flight == 1
            await peer.command("release", count=1)
            with trio.fail_after(5):
                await returned.wait()
        ev = await peer.next_event("released")
        assert ev["result"] == [msg.identity.hex(), msg.serial]
        assert node_errors(chirp) == {}


async def test_trio_app_holding_its_slot_keeps_libchirp_sync_sender_waiting(reference_python: Path) -> None:
    """The mirror: libchirp's sync send completes only when our application releases."""
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=False, max_slots=2)) as chirp,
        open_peer(reference_python, name="sender") as peer,  # synchronous
    ):
        first = await peer.send(LOCAL, chirp.port, data=b"one")
        second = await peer.send(LOCAL, chirp.port, data=b"two")
        with trio.fail_after(10):
            msg = await chirp.receive()
        try:
            assert msg.ack_requested
            assert msg.data == b"one"
            # libchirp keeps one message in flight per remote: "two" is not even sent.
            await nothing_arrives(chirp, QUIET)
            assert not peer.drain("sent")
            got = snapshot(msg)
        finally:
            msg.release()
        assert (await peer.wait_sent(first))["ok"]
        with trio.fail_after(10):
            msg2 = await chirp.receive()
        msg2.release()
        assert msg2.data == b"two"
        assert msg2.serial == (got.serial + 1) & 0xFFFFFFFF
        assert (await peer.wait_sent(second))["ok"]
        assert node_errors(chirp) == {}


async def test_libchirp_async_flood_against_held_slot(reference_python: Path) -> None:
    """Pinned libchirp behaviour (PROTOCOL.md 10, "recommended pattern" note; 7.3, 7.4):
    an asynchronous libchirp producer whose consumer holds its only slot fills the TCP
    buffers; libchirp's send timer (TIMEOUT) then fails the frame being written with
    CH_TIMEOUT and closes the connection, and it reconnects for the rest. Slots are per
    connection, so the later messages arrive on the new connection while the first is
    still held, and the ones stuck in the old connection's buffers come after the release:
    out of order, each exactly once, the failed one never.
    """
    big, count = 8 << 20, 6
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=False, max_slots=1)) as chirp,
        open_peer(reference_python, name="flood", SYNCHRONOUS=False, TIMEOUT=0.5) as peer,
    ):
        await peer.command("send_many", address=LOCAL, port=chirp.port, count=count, size=big, seed=3, id="b")
        order: list[int] = []
        with trio.fail_after(10):
            first = await chirp.receive()
        try:
            assert int.from_bytes(first.header, "big") == 0

            async def drain(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                async for msg in chirp:
                    order.append(int.from_bytes(msg.header, "big"))
                    assert msg.data == payload(big, 3)
                    msg.release()

            async with trio.open_nursery() as nursery:
                await nursery.start(drain)
                done = await peer.next_event("send_many_done", timeout=10)
                # Exactly one message failed: the one being written when the timer fired.
                assert done["failed_count"] == 1, done
                (error,) = done["errors"]
                assert (error["error_type"], error["ecode"]) == ("TimeoutError", 9), error
                failed = error["index"]
                assert 1 <= failed < count
                later = list(range(failed + 1, count))
                await poll_until(lambda: len(order) >= len(later))
                # Delivered on the new connection while message 0 is still held.
                assert order == later
                stats = chirp.statistics()
                assert stats.connections == 2  # the old one: our reader waits for its slot
                assert stats.slots_in_use == 1

                first.release()  # the old connection reads on: what libchirp had written
                await poll_until(lambda: len(order) >= len(later) + failed - 1)
                await trio.sleep(QUIET)
                nursery.cancel_scope.cancel()
        finally:
            first.release()
        assert order == later + list(range(1, failed))
        await poll_until(lambda: chirp.statistics().connections == 1)
        # Then the old connection's partial frame ends in EOF: counted as lost, not delivered.
        assert node_errors(chirp) == {"ConnectionLostError": 1}
