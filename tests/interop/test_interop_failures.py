"""Failures across implementations (PROTOCOL.md 7.4, 7.5, 5.3).

* libchirp SIGKILLed mid-stream: every pending trio_chirp send ends with a ``ChirpError``
  (never hangs), the node keeps working, and a restarted libchirp on the same port (new
  identity) is reached again.
* libchirp SIGKILLed while sending to trio_chirp: the partial message is never
  delivered, the connection is counted as lost, a restarted libchirp gets through.
* trio_chirp closed while libchirp waits for an ACK: libchirp reports the failure.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
from interop_helpers import (
    LOCAL,
    node_errors,
    nothing_arrives,
    payload,
    poll_until,
    remote_stats,
    snapshot,
    trio_config,
)
from peer_process import PeerCommandError, PeerProcess, open_peer

import trio_chirp

pytestmark = pytest.mark.interop

TIMEOUT = 1.0  # trio_chirp's config.timeout in these scenarios
SETTLE = TIMEOUT + 2.0  # the longest any pending send may take to end after the kill


async def _restart(reference_python: Path, port: int, name: str, **config: object) -> PeerProcess:
    """A fresh libchirp process on the same port (new random identity).

    The killed process's listening socket is gone with it; should the port still be
    busy (CH_EADDRINUSE, ecode 4), a new process retries for a few seconds.
    """
    with trio.fail_after(20):
        while True:
            peer = PeerProcess(reference_python, name=name)
            try:
                await peer.start(PORT=port, **config)
                return peer
            except PeerCommandError as exc:
                await peer.aclose()
                if exc.event is None or exc.event.get("ecode") != 4:
                    raise
            await trio.sleep(0.1)


async def test_libchirp_killed_with_sync_sends_pending(reference_python: Path) -> None:
    outcomes: dict[int, tuple[BaseException | None, float]] = {}
    async with trio_chirp.open_chirp(trio_config(synchronous=True, timeout=TIMEOUT)) as chirp:
        holder = PeerProcess(reference_python, name="holder")
        try:
            await holder.start(AUTO_RELEASE=False, HOLD=True)
            port, old_identity = holder.port, holder.identity
            assert port is not None
            msgs = [trio_chirp.Message(b"pending %d" % i, address=LOCAL, port=port) for i in range(3)]

            async def send(i: int) -> None:
                start = trio.current_time()
                try:
                    await chirp.send(msgs[i])
                except trio_chirp.ChirpError as exc:
                    outcomes[i] = (exc, trio.current_time() - start)
                else:
                    outcomes[i] = (None, trio.current_time() - start)

            killed_at = math.inf
            with trio.fail_after(SETTLE + 10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, 0)
                    got = await holder.next_event("received")  # 0 is in flight, held, unACKed
                    assert got["identity"] == msgs[0].identity.hex()
                    nursery.start_soon(send, 1)
                    nursery.start_soon(send, 2)
                    await trio.sleep(0.2)
                    remote = remote_stats(chirp, port)
                    assert remote is not None
                    assert (remote.in_flight, remote.queued) == (1, 2)
                    await holder.kill()
                    killed_at = trio.current_time()
            settled_after = trio.current_time() - killed_at
        finally:
            await holder.aclose()

        # Pinned: the message on the wire fails at once with ConnectionLostError (EOF);
        # the queued ones wait out the reconnect debounce (at most 0.55 s), and the
        # refused reconnect fails them at once with CannotConnectError (fail fast, as
        # libchirp does), long before their own deadline.
        first, _ = outcomes[0]
        assert isinstance(first, trio_chirp.ConnectionLostError), outcomes
        for i in (1, 2):
            exc, _ = outcomes[i]
            assert isinstance(exc, trio_chirp.CannotConnectError), outcomes
            assert isinstance(exc.__cause__, ConnectionRefusedError), outcomes
        assert settled_after <= 1.0
        errors = node_errors(chirp)
        assert errors.get("ConnectionLostError") == 1, errors
        assert set(errors) <= {"ConnectionLostError", "CannotConnectError"}, errors
        stats = chirp.statistics()
        assert stats.queued == stats.in_flight == 0

        # The node keeps working: a restarted libchirp on the same port is reached.
        async with await _restart(reference_python, port, "echo", SYNCHRONOUS=False, ECHO=True) as echo:
            assert echo.identity != old_identity
            await poll_until(lambda: not _blocked(chirp, port))  # past the debounce (fail fast)
            again = trio_chirp.Message(b"are you back?", address=LOCAL, port=port)
            with trio.fail_after(10):
                await chirp.send(again)
                reply = await chirp.receive()
            got_reply = snapshot(reply)
            reply.release()
            assert got_reply.identity == again.identity
            assert got_reply.data == b"are you back?"
            assert got_reply.remote_identity == echo.identity != old_identity
            assert got_reply.port == port
            received = await echo.next_event("received")
            assert received["identity"] == again.identity.hex()
            assert received["remote_identity"] == chirp.identity.hex()
            assert chirp.statistics().connections == 1


def _blocked(chirp: trio_chirp.Chirp, port: int) -> bool:
    remote = remote_stats(chirp, port)
    return remote is not None and remote.reconnect_blocked


async def test_libchirp_killed_with_async_stream_pending(reference_python: Path) -> None:
    """Async: libchirp holds one message and stops reading; trio's writes back up; kill."""
    data = payload(1 << 20, 11)
    async with trio_chirp.open_chirp(trio_config(synchronous=False, timeout=2 * TIMEOUT)) as chirp:
        holder = PeerProcess(reference_python, name="holder")
        try:
            await holder.start(SYNCHRONOUS=False, MAX_SLOTS=1, AUTO_RELEASE=False, HOLD=True)
            port = holder.port
            assert port is not None
            with trio.fail_after(10):
                for i in range(20):
                    await chirp.send(
                        trio_chirp.Message(data, header=i.to_bytes(4, "big"), address=LOCAL, port=port)
                    )
                got = await holder.next_event("received")
                assert got["header_hex"] == "00000000"
            await trio.sleep(0.3)  # TCP buffers are full: our writer is blocked in send_all
            remote = remote_stats(chirp, port)
            assert remote is not None
            assert remote.unwritten_async > 0
            await holder.kill()
            with trio.fail_after(2 * TIMEOUT + 3):
                with pytest.raises(trio_chirp.ConnectionLostError) as info:
                    await chirp.flush(LOCAL, port)
            assert isinstance(info.value.__cause__, trio_chirp.ChirpError)
        finally:
            await holder.aclose()
        stats = chirp.statistics()
        assert stats.messages_lost > 0
        assert stats.queued == 0
        assert node_errors(chirp).get("ConnectionLostError") == 1, node_errors(chirp)

        async with await _restart(reference_python, port, "receiver", SYNCHRONOUS=False) as receiver:
            # A send during the debounce after the refused reconnect would fail at once
            # (fail fast); the first one after it reaches the restarted peer.
            await poll_until(lambda: not _blocked(chirp, port))
            with trio.fail_after(10):
                await chirp.send(trio_chirp.Message(b"after restart", address=LOCAL, port=port))
                await chirp.flush(LOCAL, port)
                ev = await receiver.next_event("received")
            assert ev["data_hex"] == b"after restart".hex()
            assert ev["remote_identity"] == chirp.identity.hex()


async def test_libchirp_killed_while_sending_to_trio(reference_python: Path) -> None:
    """A partial frame from a killed peer is never delivered; the next libchirp gets through."""
    big = 8 << 20
    async with trio_chirp.open_chirp(trio_config(synchronous=False, max_slots=1, timeout=5)) as chirp:
        sender = PeerProcess(reference_python, name="sender")
        try:
            await sender.start(SYNCHRONOUS=False, TIMEOUT=5)
            old_identity = sender.identity
            port = sender.port
            assert port is not None
            first_id = await sender.send(LOCAL, chirp.port, size=big, seed=1)
            second_id = await sender.send(LOCAL, chirp.port, size=big, seed=2)
            with trio.fail_after(10):
                first = await chirp.receive()  # holds our only slot: the reader stops
            try:
                assert first.data == payload(big, 1)
                assert (await sender.wait_sent(first_id))["ok"]
                await trio.sleep(0.3)
                # The second 8 MiB do not fit into the TCP buffers: libchirp is mid-write.
                assert not [e for e in sender.drain("sent") if e["id"] == second_id]
                await sender.kill()
            finally:
                first.release()
            await nothing_arrives(chirp, 0.5)  # the rest of frame 2 never comes: EOF
        finally:
            await sender.aclose()
        stats = chirp.statistics()
        assert stats.connections == 0
        assert stats.slots_in_use == 0
        assert node_errors(chirp) == {"ConnectionLostError": 1}

        async with await _restart(reference_python, port, "sender2", SYNCHRONOUS=True) as sender2:
            assert sender2.identity != old_identity
            send_id = await sender2.send(LOCAL, chirp.port, data=b"new life")
            with trio.fail_after(10):
                msg = await chirp.receive()
            got = snapshot(msg)
            msg.release()
            assert (await sender2.wait_sent(send_id))["ok"]
            assert got.data == b"new life"
            assert got.remote_identity == sender2.identity
            assert got.port == port
            assert got.ack_requested
            # Same (address, port) as the killed peer: the same remote, a new identity.
            assert len(chirp.statistics().remotes) == 1


async def test_trio_closed_while_libchirp_waits_for_ack(reference_python: Path) -> None:
    async with open_peer(reference_python, name="sender", TIMEOUT=2.0) as peer:  # synchronous
        async with trio_chirp.open_chirp(trio_config(synchronous=False)) as chirp:
            port = chirp.port
            send_id = await peer.send(LOCAL, port, data=b"ack me")
            with trio.fail_after(10):
                msg = await chirp.receive()
            assert msg.ack_requested
            closed_at = trio.current_time()
            # leaving the block closes the node with the message still held
        msg.release()  # after close: frees the slot, sends nothing
        with trio.fail_after(5):
            sent = await peer.wait_sent(send_id)
        # Pinned libchirp behaviour: our FIN fails its waiting message with
        # CH_PROTOCOL_ERROR (3), surfaced by the binding as RuntimeError.
        assert not sent["ok"], sent
        assert sent["ecode"] == 3, sent
        assert sent["error_type"] == "RuntimeError", sent
        assert trio.current_time() - closed_at < 2.0

        # libchirp keeps working and reports the node as gone (connection refused).
        again = await peer.send(LOCAL, port, data=b"anyone?")
        refused = await peer.wait_sent(again, timeout=10)
        assert not refused["ok"]
        assert refused["ecode"] == 12, refused  # CH_CANNOT_CONNECT
    stopped = [e for e in peer.history if e.get("event") == "stopped"]
    assert stopped
    assert stopped[0]["ok"], stopped
    assert stopped[0]["unresolved_sends"] == []
