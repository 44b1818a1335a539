"""More of ``Router``, from the mutation run's survivors: the margin for a short deadline,
the expiry task waking at the earliest deadline, a cancelled forward releasing its message
without ACK, and ``run()`` returning when the node closes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, node

from trio_chirp import Message, Router
from trio_chirp.testing import MemoryNetwork


async def test_a_short_deadline_keeps_ten_percent_for_the_router(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    seen: list[float | None] = []
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in worker:
                seen.append(msg.deadline)
                msg.release()

        nursery.start_soon(consume)
        await nursery.start(Router(router_node).run)
        await trio.sleep(10.0)  # the margin comes from the time left, not from the clock's reading
        start = trio.current_time()
        with trio.fail_after(0.5):
            await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        assert seen == [pytest.approx(start + 0.5 - 0.05)]  # min(0.1 s, 10 % of 0.5 s)
        nursery.cancel_scope.cancel()


async def test_the_expiry_task_wakes_for_the_earliest_deadline(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in worker:
                msg.release()

        nursery.start_soon(consume)
        router = Router(router_node)
        await nursery.start(router.run)
        start = trio.current_time()
        for deadline in (3.0, 1.0):  # the later one first
            with trio.fail_after(deadline):
                await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        assert router.statistics().remembered == 2
        await trio.sleep_until(start + 1.01)
        assert router.statistics().remembered == 1
        await trio.sleep_until(start + 3.01)
        assert router.statistics().remembered == 0
        nursery.cancel_scope.cancel()


async def test_a_forward_cancelled_with_the_router_releases_its_message_without_ack(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    silent = FakePeer(net, C)  # reads, never ACKs
    outcome: list[str] = []
    async with (
        trio.open_nursery() as nursery,
        node(net, B) as router_node,
        node(net, A, timeout=2.0) as producer,
    ):
        await nursery.start(silent.run)
        router = Router(router_node)

        async def produce() -> None:
            try:
                await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
            except Exception as exc:
                outcome.append(type(exc).__name__)
            else:
                outcome.append("ok")

        with trio.CancelScope() as router_scope:
            async with trio.open_nursery() as routing:
                await routing.start(router.run)
                nursery.start_soon(produce)
                await trio.testing.wait_all_tasks_blocked()
                assert router.statistics().remembered == 1
                router_scope.cancel()
        stats = router_node.statistics()
        assert (stats.unreleased, stats.requests_pending) == (0, 0)  # released, and forgotten
        assert router.statistics().remembered == 0
        await trio.sleep(3.0)
        assert outcome == ["ChirpTimeoutError"]  # released without ACK: never a success
        nursery.cancel_scope.cancel()


async def test_router_run_returns_when_the_node_closes(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    returned = trio.Event()
    async with trio.open_nursery() as outer:
        async with node(net, B) as router_node:
            router = Router(router_node)

            async def route() -> None:
                await router.run()
                returned.set()

            outer.start_soon(route)
            await trio.testing.wait_all_tasks_blocked()
            assert not returned.is_set()
        with trio.fail_after(1.0):
            await returned.wait()
        assert not outer.cancel_scope.cancel_called


def test_the_hop_limit_is_eight() -> None:
    from trio_chirp._router import MAX_HOPS

    assert MAX_HOPS == 8
