"""The reply path (PROTOCOL.md 1.2, 4, 10): answer a received message by sending it back.

A reply keeps the request's identity, address and announced port, so it goes to the
requester's listening port and travels back over the connection the request came on:
no second connection is opened. Checked with a libchirp echo worker answering a
trio_chirp node, and with a trio_chirp worker answering a libchirp sender.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, node_errors, remote_stats, snapshot, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop

ROUNDS = 3


def assert_round_serials(serials: list[int], frames_per_round: int) -> None:
    """Serials of replies when each round has ``frames_per_round`` frames in some order."""
    gaps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(serials)]
    if frames_per_round == 1:
        assert gaps == [1] * (len(serials) - 1), serials
    else:
        assert all(1 <= g <= 2 * frames_per_round - 1 for g in gaps), serials
        span = sum(gaps)
        expected = frames_per_round * (len(serials) - 1)
        assert expected - (frames_per_round - 1) <= span <= expected + (frames_per_round - 1), serials


@pytest.mark.parametrize("sync", [True, False], ids=["sync-sender", "async-sender"])
async def test_libchirp_echo_worker_replies_over_same_connection(reference_python: Path, sync: bool) -> None:
    async with (
        open_peer(reference_python, name="echo", SYNCHRONOUS=False, ECHO=True) as worker,
        trio_chirp.open_chirp(trio_config(synchronous=sync)) as chirp,
    ):
        replies = []
        for i in range(ROUNDS):
            request = trio_chirp.Message(
                f"request {i}".encode(), header=b"h%d" % i, address=LOCAL, port=worker.port
            )
            with trio.fail_after(10):
                await chirp.send(request)  # sync: returns on the worker's ACK
                reply_msg = await chirp.receive()
            reply = snapshot(reply_msg)
            reply_msg.release()
            replies.append(reply)

            assert reply.identity == request.identity, "a reply keeps the request's identity"
            assert reply.data == request.data
            assert reply.header == request.header
            assert reply.remote_identity == worker.identity
            assert reply.address == LOCAL
            assert reply.port == worker.port
            assert not reply.ack_requested  # the worker is asynchronous
            got = await worker.next_event("received")
            assert got["identity"] == request.identity.hex()
            assert got["serial"] == request.serial
            assert got["port"] == chirp.port
            assert got["remote_identity"] == chirp.identity.hex()
            echoed = await worker.next_event("sent", where=lambda e: e["id"].startswith("echo-"))
            assert echoed["ok"], echoed
            assert echoed["echo_of"] == [request.identity.hex(), request.serial]

            # Same connection: the worker did not dial us, we did not dial again.
            stats = chirp.statistics()
            assert stats.connections == 1
            assert len(stats.remotes) == 1
            remote = remote_stats(chirp, worker.port)
            assert remote is not None
            assert remote.connections == 1
            assert remote.connected

        # The worker's serials towards us: in async mode replies only, consecutive; in
        # sync mode each round also has the worker's ACK, which consumes a serial too
        # (PROTOCOL.md 4), written before or after the reply (libchirp's loop decides).
        assert_round_serials([r.serial for r in replies], frames_per_round=2 if sync else 1)
        assert chirp.statistics().frames_in == ROUNDS * (2 if sync else 1)
        assert node_errors(chirp) == {}


@pytest.mark.parametrize("worker_sync", [False, True], ids=["async-worker", "sync-worker"])
async def test_trio_worker_replies_to_libchirp_over_same_connection(
    reference_python: Path, worker_sync: bool
) -> None:
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=worker_sync)) as chirp,
        open_peer(reference_python, name="producer") as producer,  # synchronous, the default
    ):

        async def worker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            async for msg in chirp:
                try:
                    msg.data = b"answer to " + msg.data
                    await chirp.send(msg)  # the very same object: identity, address, port kept
                finally:
                    msg.release()

        async with trio.open_nursery() as nursery:
            await nursery.start(worker)
            for i in range(ROUNDS):
                send_id = await producer.send(LOCAL, chirp.port, data=b"question %d" % i)
                ok = next(e for e in producer.history if e.get("id") == send_id and e["event"] == "ok")
                with trio.fail_after(10):
                    outcome = await producer.wait_sent(send_id)
                    reply = await producer.next_event("received")
                assert outcome["ok"], outcome
                assert reply["identity"] == ok["identity"], "the reply keeps the request's identity"
                assert reply["data_hex"] == (b"answer to question %d" % i).hex()
                assert reply["remote_identity"] == chirp.identity.hex()
                assert reply["port"] == chirp.port
                assert reply["address"] == LOCAL

                stats = chirp.statistics()
                assert stats.connections == 1, "the reply must use the producer's connection"
                assert len(stats.remotes) == 1
                remote = remote_stats(chirp, producer.port)
                assert remote is not None
                assert remote.connections == 1
            nursery.cancel_scope.cancel()

        replies = [e for e in producer.history if e.get("event") == "received"]
        # Our serials towards the producer: one reply plus one ACK per round; a sync
        # worker's reply always precedes its ACK (it releases after the send returned).
        serials = [e["serial"] for e in replies]
        if worker_sync:
            assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(serials)] == [2] * (ROUNDS - 1)
        else:
            assert_round_serials(serials, frames_per_round=2)
        assert node_errors(chirp) == {}
