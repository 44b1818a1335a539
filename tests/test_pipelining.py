"""Synchronous sends pipelined to a trio_chirp peer, up to the window it announced.

A synchronous ``send()`` still returns only on its own message's ACK, sent when the
receiver releases that message; what changes is that several tasks' messages to one
remote may wait for their ACKs at once, up to the window the peer granted in its
announcement (its receive slots, docs/protocol.md section 12). To libchirp, to an older
trio_chirp and before the announcement has arrived the window is 1: a second REQ_ACK in
flight corrupts libchirp's control queue (sharp edge 10). tests/interop/
test_interop_pipelining.py checks that last promise against the real libchirp.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, FakePeer, node, to

import trio_chirp
from trio_chirp import ChirpTimeoutError, ConnectionLostError, Message
from trio_chirp._protocol import TYPE_ACK, encode_announcement, pack_frame_head
from trio_chirp.testing import MemoryNetwork


class Senders:
    """Tasks that each send one synchronous message and record when it returned (or how it failed)."""

    def __init__(self, chirp: trio_chirp.Chirp, nursery: trio.Nursery) -> None:
        self.chirp = chirp
        self.nursery = nursery
        self.outcomes: dict[bytes, str] = {}

    async def start(self, *payloads: bytes, address: str = B) -> None:
        """Start one task per payload, in this order, each blocked in its send when this returns."""
        for data in payloads:
            self.nursery.start_soon(self._send, Message(data, address=address, port=PORT))
            await trio.testing.wait_all_tasks_blocked()

    async def _send(self, message: Message) -> None:
        try:
            await self.chirp.send(message)
            self.outcomes[message.data] = "ok"
        except trio_chirp.ChirpError as error:
            self.outcomes[message.data] = type(error).__name__


def names(count: int) -> list[bytes]:
    return [b"m%02d" % i for i in range(count)]


def remote_to(chirp: trio_chirp.Chirp, ip: str) -> trio_chirp.RemoteStats:
    (remote,) = [r for r in chirp.statistics().remotes if r.address == ip]
    return remote


async def receive_all(chirp: trio_chirp.Chirp, count: int) -> list[Message]:
    return [await chirp.receive() for _ in range(count)]


async def test_sixteen_tasks_wait_for_their_acks_together_and_each_returns_on_its_own_release(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a, trio.open_nursery() as nursery:
        senders = Senders(a, nursery)
        await senders.start(*names(16))
        held = await receive_all(b, 16)
        # All sixteen were written before any ACK: the receiver holds them all at once.
        assert [m.data for m in held] == names(16)  # in the order the sends were accepted
        assert remote_to(a, B).window == 16
        assert remote_to(a, B).in_flight == 16
        assert senders.outcomes == {}
        # Released in reverse: each release completes exactly its own sender.
        for count, message in enumerate(reversed(held), start=1):
            message.release()
            await trio.testing.wait_all_tasks_blocked()
            assert len(senders.outcomes) == count
            assert senders.outcomes.get(message.data) == "ok"
        assert a.statistics().in_flight == 0
        assert a.statistics().errors == {}


async def test_no_more_than_the_window_is_in_flight_and_each_release_lets_one_more_go(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False, max_slots=4) as b,
        node(net, A) as a,
        trio.open_nursery() as nursery,
    ):
        senders = Senders(a, nursery)
        await senders.start(*names(10))
        assert remote_to(a, B).window == 4
        stats = a.statistics()
        assert (stats.in_flight, stats.queued) == (4, 6)
        received = await receive_all(b, 4)
        assert [m.data for m in received] == names(4)
        for i in range(4, 10):
            received.pop(0).release()
            received.append(await b.receive())
            assert received[-1].data == names(10)[i]  # FIFO between tasks: accepted order
            await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().in_flight == 4
        for message in received:
            message.release()
        await trio.testing.wait_all_tasks_blocked()
        assert senders.outcomes == dict.fromkeys(names(10), "ok")


async def test_a_synchronous_receiver_grants_one(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B) as b, node(net, A) as a, trio.open_nursery() as nursery:
        senders = Senders(a, nursery)
        await senders.start(*names(3))
        assert (remote_to(a, B).window, a.statistics().in_flight, a.statistics().queued) == (1, 1, 2)
        for _ in range(3):
            message = await b.receive()
            message.release()
        await trio.testing.wait_all_tasks_blocked()
        assert senders.outcomes == dict.fromkeys(names(3), "ok")


async def ack(peer: FakePeer, identity: bytes) -> None:
    await peer.streams[0].send_all(pack_frame_head(identity, 0, 0, 0, TYPE_ACK))


def requests_for_ack(peer: FakePeer) -> list[bytes]:
    return [f.identity for f in peer.frames() if f.requests_ack]


@pytest.mark.parametrize(
    ("announced", "window"),
    [(None, 1), (0, 1), (3, 3), (0xFFFF, 64)],
    ids=["libchirp-or-older", "window-0", "window-3", "window-65535"],
)
async def test_a_peer_gets_the_window_it_announced_and_one_without_an_announcement(
    autojump_clock: trio.abc.Clock, announced: int | None, window: int
) -> None:
    """A raw peer counts the REQ_ACK frames it has not acknowledged: never above the window."""
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    if announced is not None:
        peer.announcement = encode_announcement(announced, 1 << 20)
    total = window + 3
    async with trio.open_nursery() as outer:
        await outer.start(peer.run)
        async with node(net, A, timeout=60.0) as a, trio.open_nursery() as nursery:
            senders = Senders(a, nursery)
            await senders.start(*names(total))
            acked: list[bytes] = []
            while len(acked) < total:
                unacked = [i for i in requests_for_ack(peer) if i not in acked]
                assert len(unacked) == min(window, total - len(acked))
                await ack(peer, unacked[0])
                acked.append(unacked[0])
                await trio.testing.wait_all_tasks_blocked()
            assert len(requests_for_ack(peer)) == total
            assert senders.outcomes == dict.fromkeys(names(total), "ok")
        outer.cancel_scope.cancel()


async def test_two_messages_with_one_identity_are_never_in_flight_together(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An ACK names only an identity: the second waits until the first has settled."""
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a, trio.open_nursery() as nursery:
        first, twin, other = to(B, b"first"), to(B, b"twin"), to(B, b"other")
        twin.identity = first.identity
        done: list[bytes] = []

        async def send(message: Message) -> None:
            await a.send(message)
            done.append(message.data)

        for message in (first, twin, other):
            nursery.start_soon(send, message)
            await trio.testing.wait_all_tasks_blocked()
        received = await b.receive()
        assert received.data == b"first"
        await trio.testing.wait_all_tasks_blocked()
        # The twin waits at the head of the queue, and "other" behind it (FIFO).
        assert (a.statistics().in_flight, a.statistics().queued, b.statistics().undelivered) == (1, 2, 0)
        received.release()
        twin_received = await b.receive()
        assert twin_received.data == b"twin"
        twin_received.release()
        (await b.receive()).release()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done) == [b"first", b"other", b"twin"]  # (the last two return in either order)


async def test_a_lost_connection_fails_every_message_it_carried(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a, trio.open_nursery() as nursery:
        senders = Senders(a, nursery)
        await senders.start(*names(5))
        held = await receive_all(b, 5)
        net.cut(A, B)
        await trio.testing.wait_all_tasks_blocked()
        assert senders.outcomes == dict.fromkeys(names(5), ConnectionLostError.__name__)
        assert a.statistics().in_flight == 0
        for message in held:
            message.release()  # their connection is gone: nothing is ACKed


async def test_acks_that_keep_coming_keep_the_connection_and_each_send_keeps_its_own_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The ACK timer measures the peer's progress, not each message's wait.

    Four in flight, released one per 1.5 s with ``timeout=5``: the fourth's own send gives
    up at 5 s (its ACK comes at 6 s), but the connection, whose peer has kept answering,
    stays, and the others succeed. A peer that answers nothing still loses it.
    """
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as b,
        node(net, A, timeout=5.0) as a,
        trio.open_nursery() as nursery,
    ):
        senders = Senders(a, nursery)
        await senders.start(*names(4))
        held = await receive_all(b, 4)
        for message in held:
            await trio.sleep(1.5)
            message.release()
        await trio.testing.wait_all_tasks_blocked()
        assert senders.outcomes == {**dict.fromkeys(names(3), "ok"), b"m03": ChirpTimeoutError.__name__}
        assert a.statistics().connections == 1
        assert a.statistics().in_flight == 0  # the late ACK still settled its place

        senders.outcomes.clear()
        await senders.start(*names(2))
        silent = await receive_all(b, 2)
        await trio.sleep(5.0)
        await trio.testing.wait_all_tasks_blocked()
        assert set(senders.outcomes.values()) == {ChirpTimeoutError.__name__}
        assert "no ACK within timeout=5.0s" in str(remote_to(a, B).last_error)
        for message in silent:
            message.release()


async def test_closing_waits_for_the_acks_of_every_message_in_flight(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b:
        async with node(net, A, timeout=5.0) as a, trio.open_nursery() as nursery:
            senders = Senders(a, nursery)
            await senders.start(*names(3))
            held = await receive_all(b, 3)

            async def release_one_per_second() -> None:
                for message in held:
                    await trio.sleep(1.0)
                    message.release()

            nursery.start_soon(release_one_per_second)
            start = trio.current_time()
            await a.aclose()
            assert trio.current_time() - start == pytest.approx(3.0)
        assert senders.outcomes == dict.fromkeys(names(3), "ok")


async def test_pipelined_messages_stay_within_the_receivers_memory_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Three sender nodes, 16 tasks each, to a receiver with a budget of 4 that holds all it gets.

    Every pipelined message takes a slot before its payload is read, so the receiver holds
    exactly ``max_unreleased + connections`` (docs/memory.md) and the rest wait on the
    senders' side; once it releases, every send completes.
    """
    net = MemoryNetwork()
    senders_ips = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    async with (
        node(net, B, synchronous=False, max_unreleased=4) as b,
        trio.open_nursery() as nursery,
        node(net, senders_ips[0]) as s1,
        node(net, senders_ips[1]) as s2,
        node(net, senders_ips[2]) as s3,
    ):
        groups = [Senders(s, nursery) for s in (s1, s2, s3)]
        for group in groups:
            await group.start(*names(16))
        stats = b.statistics()
        # Within the budget plus each connection's first slot; the budget is used up.
        assert 4 <= stats.unreleased <= 4 + 3
        assert sum(g.chirp.statistics().in_flight for g in groups) == 3 * 16  # all written
        for _ in range(48):
            message = await b.receive()
            assert b.statistics().unreleased <= 4 + 3
            message.release()
        await trio.testing.wait_all_tasks_blocked()
        assert [g.outcomes for g in groups] == [dict.fromkeys(names(16), "ok")] * 3
