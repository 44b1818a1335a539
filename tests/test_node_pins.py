"""Two behaviours of the remote that no other test pinned (issue 7), on the in-memory network.

* An ACK that names another identity does not complete the synchronous message in flight
  (``Remote.on_ack`` compares identities).
* A queued message withdrawn at its deadline frees its queue place for a sender that waits
  for room (``Remote.withdraw`` wakes one of them).

Each was checked by mutation: dropping the identity comparison, or the wake-up, makes
the test fail.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, FakePeer, node, to

from trio_chirp import ChirpTimeoutError
from trio_chirp._protocol import TYPE_ACK, FrameHead, encode_frame
from trio_chirp.testing import MemoryNetwork


async def _ack(peer: FakePeer, identity: bytes, serial: int) -> None:
    """The fake peer writes an ACK frame for ``identity`` on its (only) connection."""
    await peer.streams[0].send_all(encode_frame(identity, serial, TYPE_ACK, b"", b""))


def _data_frames(peer: FakePeer) -> list[FrameHead]:
    return [head for head in peer.frames() if head.is_message]


async def test_an_ack_for_another_identity_leaves_the_sync_send_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=10.0) as a:
            msg = to(B, b"wait for me")
            returned = trio.Event()

            async def send() -> None:
                await a.send(msg)
                returned.set()

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            (head,) = _data_frames(peer)
            assert head.identity == msg.identity
            assert head.requests_ack
            start = trio.current_time()

            other = bytes(b ^ 0xFF for b in msg.identity)
            assert other != msg.identity
            await _ack(peer, other, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert not returned.is_set(), "an ACK for another identity completed the send"
            assert a.statistics().in_flight == 1
            assert trio.current_time() == start  # nothing timed out meanwhile

            await _ack(peer, msg.identity, 2)
            await returned.wait()
            assert trio.current_time() == start
            assert a.statistics().in_flight == 0
            # the connection is still good: the next send goes out on it and completes too
            nursery.start_soon(a.send, to(B, b"next"))
            await trio.testing.wait_all_tasks_blocked()
            second = _data_frames(peer)[-1]
            await _ack(peer, second.identity, 3)
            await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().in_flight == 0
            assert len(peer.streams) == 1
            assert "EOF" not in [event for _, event in peer.events]
            assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_a_withdrawn_queued_message_lets_a_sender_waiting_for_room_in(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Queue of one: a synchronous message in flight (not ACKed yet), one queued behind it
    with a 1 s deadline, a third sender waiting for room. When the queued one gives up at
    1 s, the waiting sender is queued at once, long before its own deadline (10 s); once the
    peer ACKs the first, the third is written and the withdrawn one never is."""
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=10.0, send_queue_size=1) as a:
            first, second, third = to(B, b"first"), to(B, b"second"), to(B, b"third")
            first_done = trio.Event()
            third_queued = trio.Event()
            outcomes: dict[str, object] = {}

            async def send_first() -> None:
                await a.send(first)
                first_done.set()

            async def send_second() -> None:
                with trio.move_on_after(1.0) as scope:
                    await a.send(second)
                outcomes["second"] = "cancelled" if scope.cancelled_caught else "sent"

            async def send_third() -> None:
                try:
                    await a.send(third, synchronous=False)
                except ChirpTimeoutError as exc:
                    outcomes["third"] = exc
                    raise
                outcomes["third"] = trio.current_time()
                third_queued.set()

            start = trio.current_time()
            nursery.start_soon(send_first)
            await trio.testing.wait_all_tasks_blocked()
            assert [h.identity for h in _data_frames(peer)] == [first.identity]
            assert a.statistics().in_flight == 1

            nursery.start_soon(send_second)
            await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().queued == 1  # the queue is full

            nursery.start_soon(send_third)
            await trio.testing.wait_all_tasks_blocked()
            assert "third" not in outcomes  # waits for room
            assert a.statistics().queued == 1
            assert trio.current_time() == start

            await third_queued.wait()
            assert outcomes == {"second": "cancelled", "third": pytest.approx(start + 1.0)}
            assert a.statistics().queued == 1  # the third took the freed place
            assert a.statistics().in_flight == 1  # the first still waits for its ACK
            assert [h.identity for h in _data_frames(peer)] == [first.identity]

            head = _data_frames(peer)[0]
            await _ack(peer, head.identity, 1)
            await first_done.wait()
            await a.flush(B, PORT)
            await trio.testing.wait_all_tasks_blocked()
            assert [h.identity for h in _data_frames(peer)] == [first.identity, third.identity]
            assert not _data_frames(peer)[-1].requests_ack
            assert a.statistics().queued == 0
            assert trio.current_time() == pytest.approx(start + 1.0)
        nursery.cancel_scope.cancel()
