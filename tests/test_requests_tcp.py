"""Requests, replies, workers and a router on real loopback TCP (the in-memory tests pin timing)."""

from __future__ import annotations

import pytest
import trio

from trio_chirp import Chirp, Config, Message, RemoteError, Router, Workers, open_chirp

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"


def _config(**settings: object) -> Config:
    return Config(port=0, bind_v6=None, **settings)  # type: ignore[arg-type]


async def _serve_echo(nursery: trio.Nursery, worker: Chirp) -> Workers:
    async def handle(msg: Message) -> None:
        if msg.data == b"fail":
            raise ValueError("asked to fail")
        await worker.reply(msg, msg.data[::-1])

    workers = Workers(worker, handle, count=4)
    await nursery.start(workers.run)
    return workers


@pytest.mark.parametrize("synchronous", [True, False])
async def test_requests_on_loopback(synchronous: bool) -> None:
    async with (
        open_chirp(_config(synchronous=False)) as worker,
        open_chirp(_config()) as producer,
        trio.open_nursery() as nursery,
    ):
        await _serve_echo(nursery, worker)
        with trio.fail_after(10):
            for i in range(50):
                data = b"request %d" % i
                response = await producer.request(
                    Message(data, address=LOCAL, port=worker.port), synchronous=synchronous
                )
                assert response.data == data[::-1]
            with pytest.raises(RemoteError, match="asked to fail"):
                await producer.request(
                    Message(b"fail", address=LOCAL, port=worker.port), synchronous=synchronous
                )
        stats = producer.statistics()
        assert (stats.requests_completed, stats.requests_failed, stats.requests_pending) == (50, 1, 0)
        assert stats.acks_before_response == 0
        nursery.cancel_scope.cancel()


async def test_router_on_loopback_carries_the_deadline() -> None:
    async with (
        open_chirp(_config(synchronous=False)) as worker,
        open_chirp(_config()) as router_node,
        open_chirp(_config()) as producer,
        trio.open_nursery() as nursery,
    ):
        seen: list[float] = []

        async def handle(msg: Message) -> None:
            assert msg.deadline is not None
            seen.append(msg.deadline - trio.current_time())
            await worker.reply(msg, b"ok")

        await nursery.start(Workers(worker, handle).run)
        router = Router(router_node)
        await nursery.start(router.run)
        with trio.fail_after(5):
            response = await producer.request(
                Message(b"x", address=LOCAL, port=router_node.port, destination=(LOCAL, worker.port))
            )
        assert response.data == b"ok"
        assert 4.0 < seen[0] <= 4.9  # 5 s minus the router's 0.1 s margin, minus transit
        assert router.statistics().forwarded == 1
        nursery.cancel_scope.cancel()
