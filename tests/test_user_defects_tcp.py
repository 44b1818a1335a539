"""Issue 15's defects on real loopback TCP: a router's worker error and a handler without reply."""

from __future__ import annotations

import pytest
import trio

from trio_chirp import Chirp, Config, Message, MessageTooLargeError, RemoteError, Router, Workers, open_chirp

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"


def _config(**settings: object) -> Config:
    return Config(port=0, bind_v6=None, **settings)  # type: ignore[arg-type]


async def _workers(nursery: trio.Nursery, worker: Chirp) -> None:
    async def handle(msg: Message) -> None:
        if msg.data == b"fail":
            raise ValueError("asked to fail")
        # b"forget": returns without reply()

    await nursery.start(Workers(worker, handle, count=2).run)


@pytest.mark.parametrize("synchronous", [True, False])
@pytest.mark.parametrize(
    ("data", "expected"), [(b"fail", "ValueError: asked to fail"), (b"forget", "returned without replying")]
)
async def test_worker_failures_through_a_router_come_back_at_once(
    synchronous: bool, data: bytes, expected: str
) -> None:
    async with (
        open_chirp(_config(synchronous=False)) as worker,
        open_chirp(_config()) as router_node,
        open_chirp(_config()) as producer,
        trio.open_nursery() as nursery,
    ):
        await _workers(nursery, worker)
        await nursery.start(Router(router_node).run)
        message = Message(data, address=LOCAL, port=router_node.port, destination=(LOCAL, worker.port))
        start = trio.current_time()
        with pytest.raises(RemoteError, match=expected), trio.fail_after(10):
            await producer.request(message, synchronous=synchronous)
        assert trio.current_time() - start < 5.0, "well before the 10 s deadline (config.timeout is 5 s)"
        assert router_node.statistics().unmatched_error_responses == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("first", [True, False], ids=["first-message", "connected"])
async def test_two_mib_to_a_one_mib_node_is_refused_by_the_sender(first: bool) -> None:
    got: list[int] = []
    async with (
        open_chirp(_config(synchronous=False)) as receiver,  # max_msg_size: 1 MiB by default
        open_chirp(_config()) as sender,
        trio.open_nursery() as nursery,
    ):

        async def take_all() -> None:
            async for msg in receiver:
                got.append(len(msg.data))
                msg.release()

        nursery.start_soon(take_all)
        with trio.fail_after(10):
            if not first:
                await sender.send(Message(b"hello", address=LOCAL, port=receiver.port))
            with pytest.raises(MessageTooLargeError, match=r"message of 20971\d\d bytes .* \(1048576"):
                await sender.send(Message(b"x" * (2 << 20), address=LOCAL, port=receiver.port))
            await sender.send(Message(b"after", address=LOCAL, port=receiver.port))
        assert got == ([5] if not first else []) + [5]
        stats = receiver.statistics()
        assert (stats.connections, stats.errors) == (1, {})
        assert stats.bytes_in < 1 << 20, "not a byte of the 2 MiB was written"
        nursery.cancel_scope.cancel()
