"""libchirp never sees two of our REQ_ACK messages in flight, however many tasks send.

Between trio_chirp nodes, synchronous messages are pipelined up to the window the peer
announced (tests/test_pipelining.py). libchirp announces nothing, so its window stays 1:
a second REQ_ACK in flight would corrupt its control queue (sharp edge 10). Watched at
libchirp's application: an asynchronous libchirp node with 16 slots that holds what it
receives would be handed a second message at once if we wrote one; it is handed exactly
one more per release, on a connection we dialled and on one libchirp dialled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, node_errors, remote_stats, trio_config
from peer_process import PeerProcess, open_peer

import trio_chirp

pytestmark = pytest.mark.interop

TASKS = 6
QUIET = 0.4  # how long "nothing more arrives" is watched


async def no_second_message(peer: PeerProcess) -> None:
    with trio.move_on_after(QUIET):
        extra = await peer.next_event("received", timeout=QUIET + 1)
        raise AssertionError(f"libchirp was handed a second message while one waits for its ACK: {extra}")


@pytest.mark.parametrize("dialler", ["we-dial", "libchirp-dials"])
async def test_many_sending_tasks_put_one_req_ack_at_a_time_on_libchirps_wire(
    reference_python: Path, dialler: str
) -> None:
    async with (
        open_peer(
            reference_python, name="holder", SYNCHRONOUS=False, MAX_SLOTS=16, AUTO_RELEASE=False, HOLD=True
        ) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=True, timeout=20)) as chirp,
    ):
        if dialler == "libchirp-dials":
            send_id = await peer.send(LOCAL, chirp.port, data=b"hello")
            with trio.fail_after(10):
                (await chirp.receive()).release()
            assert (await peer.wait_sent(send_id))["ok"]
        done: list[bytes] = []

        async def send(i: int) -> None:
            await chirp.send(trio_chirp.Message(b"task %d" % i, address=LOCAL, port=peer.port))
            done.append(b"task %d" % i)

        async with trio.open_nursery() as nursery:
            for i in range(TASKS):
                nursery.start_soon(send, i)
            received = []
            for count in range(1, TASKS + 1):
                received.append(await peer.next_event("received"))
                await no_second_message(peer)
                assert (await peer.command("stats"))["held"] == 1
                assert len(done) == count - 1
                await peer.command("release", count=1)
                assert (await peer.next_event("released"))["ok"]
        assert len(done) == TASKS
        assert sorted(bytes.fromhex(e["data_hex"]) for e in received) == sorted(done)
        remote = remote_stats(chirp, peer.port)
        assert remote is not None
        assert (remote.window, remote.trio_chirp_version) == (1, None)
        assert chirp.statistics().connections == 1  # the one connection, whoever dialled
        assert node_errors(chirp) == {}
