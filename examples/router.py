"""A router between a synchronous producer and two asynchronous workers, deadlines travelling.

The producer names each job's final destination (``Message(destination=...)``) and sends
it to the router under ``trio.fail_after()``. The router forwards synchronously under the
producer's remaining time minus a margin, so each worker sees the producer's deadline
(``msg.deadline``) and runs its handler under it. A job the worker cannot finish in time
fails at once at the producer with ``RemoteError``, with no worker time wasted after it.

    python3 examples/router.py
"""

from __future__ import annotations

import trio

import trio_chirp


async def main() -> None:
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as fast,
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as slow,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as router_node,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):

        def worker(node: trio_chirp.Chirp, name: str, seconds: float) -> trio_chirp.Workers:
            async def handle(msg: trio_chirp.Message) -> None:
                assert msg.deadline is not None
                print(f"  {name}: got {msg.data!r}, {msg.deadline - trio.current_time():.2f} s left")
                await trio.sleep(seconds)  # cancelled at msg.deadline
                await node.reply(msg, msg.data.upper())

            return trio_chirp.Workers(node, handle)

        await nursery.start(worker(fast, "fast worker", 0.1).run)
        await nursery.start(worker(slow, "slow worker", 5.0).run)
        router = trio_chirp.Router(router_node)  # forwards to the destination the producer named
        await nursery.start(router.run)

        for job, target in ((b"job one", fast), (b"job two", slow)):
            request = trio_chirp.Message(
                job, address="127.0.0.1", port=router_node.port, destination=("127.0.0.1", target.port)
            )
            start = trio.current_time()
            try:
                with trio.fail_after(1.0):
                    response = await producer.request(request)
            except trio_chirp.RemoteError as exc:
                took = trio.current_time() - start
                print(f"producer: {job!r} failed after {took:.2f} s at {exc.hop}: {exc.text}")
            else:
                print(f"producer: {job!r} -> {response.data!r} in {trio.current_time() - start:.2f} s")
        stats = router.statistics()
        failed = dict(stats.failed)
        print(f"router: {stats.forwarded} forwarded, {stats.responses} response(s) returned, failed {failed}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
