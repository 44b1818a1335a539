"""Traffic in both directions at once, starting with no connection (PROTOCOL.md 2.5, 5.3).

Both nodes dial each other at the same moment, so there may be two connections; each
side writes only on its current one (the last handshaken) and reads both, and ACKs may
come back on a different connection than their message. Synchronous streams in both
directions must still arrive exactly once, in order, and every send must succeed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, Got, node_errors, snapshot, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop

N = 30


@pytest.mark.parametrize("attempt", range(3))
async def test_simultaneous_sync_streams_both_ways(reference_python: Path, attempt: int) -> None:
    async with (
        open_peer(reference_python, name="peer") as peer,  # synchronous
        trio_chirp.open_chirp(trio_config(synchronous=True, timeout=2)) as chirp,
    ):
        got: list[Got] = []
        sent: list[trio_chirp.Message] = []

        async def receive() -> None:
            for _ in range(N):
                msg = await chirp.receive()
                got.append(snapshot(msg))
                msg.release()

        async def send() -> None:
            for i in range(N):
                msg = trio_chirp.Message(b"t%d" % i, address=LOCAL, port=peer.port)
                await chirp.send(msg)
                sent.append(msg)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await peer.command("send_many", address=LOCAL, port=chirp.port, count=N, size=8, seed=4)
                nursery.start_soon(send)
            done = await peer.next_event("send_many_done")
            events = [await peer.next_event("received") for _ in range(N)]
        assert done["ok_count"] == N, done

        assert [int.from_bytes(g.header, "big") for g in got] == list(range(N))
        assert {g.remote_identity for g in got} == {peer.identity}
        assert {g.port for g in got} == {peer.port}
        assert len({g.identity for g in got}) == N
        assert all(g.ack_requested for g in got)

        assert [e["identity"] for e in events] == [m.identity.hex() for m in sent]
        assert [e["serial"] for e in events] == [m.serial for m in sent]
        assert {e["port"] for e in events} == {chirp.port}
        # Each side's serials towards the other count its N messages and its N ACKs
        # (PROTOCOL.md 4), across both connections: increasing, with room for the ACKs.
        assert_interleaved([m.serial for m in sent], extra=N)
        assert_interleaved([g.serial for g in got], extra=N)
        assert chirp.statistics().connections in (1, 2)
        assert node_errors(chirp) == {}


def assert_interleaved(serials: list[int], extra: int) -> None:
    gaps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(serials)]
    assert all(g >= 1 for g in gaps), serials
    assert sum(gaps) <= len(serials) - 1 + extra, serials
