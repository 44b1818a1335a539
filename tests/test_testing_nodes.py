"""``trio_chirp.testing.open_nodes``: nodes on a memory network in one call, faults, exact virtual times."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chirp import CannotConnectError, Config, ConnectionLostError, Message
from trio_chirp.testing import MemoryNetwork, open_nodes

A, B, C = "10.0.0.1", "10.0.0.2", "fd00::3"
L = 0.05  # one-way latency


async def test_a_synchronous_send_costs_a_connect_round_trip_then_a_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_nodes({A: Config(), B: Config(synchronous=False)}, latency=L) as nodes:
        assert list(nodes) == [A, B]
        assert len(nodes) == 2
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def take_one() -> None:
                msg = await nodes[B].receive()
                assert msg.data == b"hi"
                assert msg.address == A
                assert trio.current_time() - start == pytest.approx(3 * L)  # SYN, SYN-ACK, frame
                msg.release()

            nursery.start_soon(take_one)
            await nodes[A].send(nodes.message(b"hi", to=B))
            assert trio.current_time() - start == pytest.approx(4 * L)  # ... and the ACK back


async def _cut_mid_send(seed: int) -> tuple[float, float, list[bytes]]:
    """B holds the first message; the link is cut at 1 s; A sends again. Returns when each send ended."""
    async with open_nodes({A: None, B: Config(synchronous=False)}, latency=L, seed=seed) as nodes:
        received: list[Message] = []
        async with trio.open_nursery() as nursery:

            async def hold_the_first() -> None:
                async for msg in nodes[B]:
                    received.append(msg)
                    if msg.data != b"held":
                        msg.release()

            async def cut_later() -> None:
                await trio.sleep(1)
                nodes.network.cut(A, B)

            nursery.start_soon(hold_the_first)
            nursery.start_soon(cut_later)
            with pytest.raises(ConnectionLostError):
                await nodes[A].send(nodes.message(b"held", to=B))
            failed = trio.current_time()
            await nodes[A].send(nodes.message(b"next", to=B))
            done = trio.current_time()
            received[0].release()  # a no-op on its closed connection, but no ResourceWarning
            nursery.cancel_scope.cancel()
    return failed, done, [m.data for m in received]


async def test_a_link_cut_mid_send_fails_it_and_the_next_send_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failed, done, received = await _cut_mid_send(seed=0)
    assert failed == pytest.approx(1)
    assert received == [b"held", b"next"]
    assert done > failed + 4 * L  # the reconnect debounce, then a connect and a round trip


def test_runs_repeat_exactly_for_a_seed_and_differ_between_seeds() -> None:
    def run(seed: int) -> float:
        return trio.run(_cut_mid_send, seed, clock=trio.testing.MockClock(autojump_threshold=0))[1]

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other  # the debounce's jitter comes from the seed


async def test_crash_and_restart(autojump_clock: trio.testing.MockClock) -> None:
    async with open_nodes({A: None, B: None, C: Config(synchronous=False)}) as nodes:
        old_identity = nodes[C].identity
        await nodes.crash(C)
        with pytest.raises(CannotConnectError):
            await nodes[A].send(nodes.message(b"x", to=C))
        with pytest.raises(ValueError, match="already running"):
            await nodes.start(B)
        restarted = await nodes.start(C, Config(synchronous=False))
        assert nodes[C] is restarted
        assert restarted.identity != old_identity
        async with trio.open_nursery() as nursery:
            nursery.start_soon(nodes[B].send, nodes.message(b"back", to=C))
            with await restarted.receive() as msg:
                assert msg.data == b"back"
                assert msg.address == B


async def test_an_existing_network_and_certificates_are_respected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    network.refuse(B)
    async with open_nodes({A: None, B: None}, network=network) as nodes:
        assert nodes.network is network
        with pytest.raises(CannotConnectError):
            await nodes[A].send(nodes.message(b"x", to=B))


async def test_an_exception_in_the_block_comes_out_unchanged(autojump_clock: trio.testing.MockClock) -> None:
    error = KeyError("mine")
    with pytest.raises(KeyError) as caught:
        async with open_nodes({A: None}):
            raise error
    assert caught.value is error
