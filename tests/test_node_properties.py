"""Property tests of whole in-memory networks under MockClock, and failure scenarios."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from memnet_helpers import PORT, A, B, LowRandom, node, to

from trio_chirp import ChirpError, ChirpTimeoutError, Config, ConnectionLostError, Message, open_chirp
from trio_chirp.testing import MemoryNetwork


def _run(async_fn: object) -> None:
    trio.run(async_fn, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


@given(
    slots=st.integers(1, 4),
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=12),
    window=st.integers(100, 8000),
    synchronous=st.booleans(),
    release_picks=st.lists(st.integers(0, 3), max_size=12),
)
def test_nothing_lost_or_duplicated_whatever_the_release_order(
    slots: int, sizes: list[int], window: int, synchronous: bool, release_picks: list[int]
) -> None:
    sent = [bytes([i]) * size for i, size in enumerate(sizes)]
    received: list[bytes] = []
    outcomes: list[object] = []

    async def main() -> None:
        net = MemoryNetwork(window=window)
        async with (
            node(net, A, synchronous=False, max_slots=slots, buffer_size=1024) as receiver,
            node(net, B, synchronous=synchronous, send_queue_size=2, timeout=30.0) as sender,
            trio.open_nursery() as nursery,
        ):

            async def produce() -> None:
                for data in sent:
                    try:
                        await sender.send(to(A, data))
                        outcomes.append("ok")
                    except ChirpError as exc:  # pragma: no cover - a failure is the bug we look for
                        outcomes.append(exc)
                await sender.flush(A, PORT)

            nursery.start_soon(produce)
            held: list[Message] = []
            picks = iter(release_picks)
            while len(received) < len(sent):
                # Hold messages until every slot is used (or nothing more can come), then
                # release one chosen by Hypothesis.
                with trio.move_on_after(1.0):
                    while len(held) < slots and len(received) + len(held) < len(sent):
                        held.append(await receiver.receive())
                assert held, "no message arrived although slots were free: a lock-up"
                assert receiver.statistics().slots_in_use == len(held)
                victim = held.pop(next(picks, 0) % len(held))
                received.append(victim.data)
                victim.release()
            assert receiver.statistics().slots_peak <= slots
        assert receiver.statistics().messages_lost == 0

    _run(main)
    assert outcomes == ["ok"] * len(sent)
    assert sorted(received) == sorted(sent)
    assert len(received) == len(sent)


async def test_crashed_peer_fails_the_message_in_flight_and_is_reached_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    outcome: list[object] = []
    async with node(net, A, timeout=2.0) as a:
        async with node(net, B, synchronous=False) as b, trio.open_nursery() as nursery:

            async def send() -> None:
                try:
                    await a.send(to(B, b"doomed"))
                    outcome.append("ok")
                except ChirpError as exc:
                    outcome.append(exc)

            nursery.start_soon(send)
            doomed = await b.receive()  # delivered, but the ACK will never come
            start = trio.current_time()
            net.crash(B)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() == start  # failed at once, not at the timeout
            doomed.release(ack=False)
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionLostError)
        # The peer comes back (new identity, same address): the node reaches it again.
        async with node(net, B, synchronous=False) as b2, trio.open_nursery() as nursery:
            nursery.start_soon(a.send, to(B, b"again"))
            msg = await b2.receive()
            assert msg.data == b"again"
            assert msg.remote_identity == a.identity
            msg.release()
        assert a.statistics().errors["ConnectionLostError"] == 1


async def test_cut_link_while_queued_messages_wait_for_reconnect(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False, timeout=1.0) as b:
        await b.send(to(A, b"before"))
        first = await a.receive()
        first.release()
        net.cut(A, B)
        await trio.testing.wait_all_tasks_blocked()
        await b.send(to(A, b"after"))  # queued; goes out on a new connection
        msg = await a.receive()
        assert msg.data == b"after"
        msg.release()
        await b.flush(A, PORT)
        assert b.statistics().messages_lost == 0


async def test_simultaneous_dials_end_with_one_current_connection_each(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        # Both dial at once: two connections, the last handshake wins on each side.
        await a.send(to(B, b"a->b"))
        await b.send(to(A, b"b->a"))
        got_b, got_a = await b.receive(), await a.receive()
        assert (got_b.data, got_a.data) == (b"a->b", b"b->a")
        got_a.release()
        got_b.release()
        assert a.statistics().connections == 2
        assert [r.connected for r in a.statistics().remotes] == [True]
        for i in range(20):
            await a.send(to(B, b"%d" % i))
        order = []
        for _ in range(20):
            msg = await b.receive()
            order.append(int(msg.data))
            msg.release()
        assert order == list(range(20))
        # The replaced connection is collected once idle for more than R.
        await trio.sleep(a.config.effective_reuse_time * 2)
        assert a.statistics().connections <= 1


async def test_queued_async_message_expires_and_flush_reports_it(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.black_hole(B)  # the connect times out: the message stays queued until its deadline
    async with node(net, A, synchronous=False, timeout=0.5) as a:
        await a.send(to(B, b"never"))  # accepted
        with pytest.raises(ConnectionLostError, match="1 asynchronous message") as info:
            await a.flush(B, PORT)
        assert isinstance(info.value.__cause__, ChirpTimeoutError)
        assert a.statistics().messages_lost == 1
        await a.flush(B, PORT)  # reported once


async def test_default_rng_and_tcp_free_config_still_work_in_memory() -> None:
    net = MemoryNetwork()
    config = Config(port=PORT, disable_encryption=True, synchronous=False)
    async with (
        open_chirp(config, transport=net.host(A), rng=random.Random()) as a,
        open_chirp(config, transport=net.host(B), rng=LowRandom()) as b,
    ):
        await b.send(to(A, b"hello"))
        msg = await a.receive()
        assert msg.data == b"hello"
        msg.release()


@given(garbage=st.binary(min_size=1, max_size=300), chunk=st.integers(1, 64))
def test_garbage_from_one_peer_costs_only_its_connection(garbage: bytes, chunk: int) -> None:
    """Whatever a peer sends after its handshake, the node keeps serving everyone else."""
    from trio_chirp._protocol import encode_handshake

    async def main() -> None:
        net = MemoryNetwork()
        async with (
            node(net, A, synchronous=False, max_msg_size=1024, timeout=0.5) as a,
            node(net, B) as good,
            trio.open_nursery() as nursery,
        ):
            bad, _ = await net.host("10.0.0.66").connect(A, PORT)
            await bad.send_all(encode_handshake(4000, bytes(16)))
            for i in range(0, len(garbage), chunk):
                try:
                    await bad.send_all(garbage[i : i + chunk])
                except trio.BrokenResourceError:
                    break  # the node already closed this connection
            nursery.start_soon(good.send, to(A, b"from the good peer"))
            seen = []
            with trio.move_on_after(2.0):  # virtual: long enough for any stall timeout
                async for msg in a:
                    seen.append(msg)
                    msg.release()
            assert [m.data for m in seen if m.address == B] == [b"from the good peer"]
            # The garbage either parsed as frames (delivered above) or broke the
            # connection with a typed, counted error; nothing else.
            assert set(a.statistics().errors) <= {
                "ProtocolError",
                "MessageTooLargeError",
                "ChirpTimeoutError",
            }
            assert all(m.address == "10.0.0.66" for m in seen if m.address != B)

    _run(main)
