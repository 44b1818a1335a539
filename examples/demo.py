"""The main job's demo: a producer, a router and two workers on loopback, deadlines travelling.

    python3 dev.py demo

Four nodes in one process, talking over real TCP on 127.0.0.1:

* two **workers** (asynchronous nodes, as the lock-up rule asks) square numbers with
  ``Workers`` and answer with ``reply()``;
* a **router** (a synchronous node) hands the requests to the workers in turn;
* a **producer** (synchronous) sends each request to the router under
  ``trio.fail_after(1.0)``. That deadline travels: the router forwards under what is left
  minus a margin, and each worker runs its handler under it (``msg.deadline``).

One request cannot be squared: its handler raises at the worker, and the producer gets a
``RemoteError`` at once (an error response, back through the router) instead of waiting
out its second. At the end each node's statistics say what happened.
"""

from __future__ import annotations

import itertools
import logging
import time

import trio

import trio_chirp

LOCAL = "127.0.0.1"
JOBS = (b"7", b"12", b"oops", b"30")


def worker_handler(name: str, node: trio_chirp.Chirp) -> trio_chirp.Workers:
    async def square(msg: trio_chirp.Message) -> None:
        assert msg.deadline is not None  # the producer's deadline came along
        left = msg.deadline - trio.current_time()
        print(f"  {name}: squares {msg.data.decode()}, with {left:.2f} s of the producer's deadline left")
        number = int(msg.data)  # b"oops" raises ValueError: an error response goes back
        await node.reply(msg, b"%d" % (number * number))

    return trio_chirp.Workers(node, square, count=4)


async def main() -> None:
    # The failure is the producer's to report; trio_chirp also logs it (handler traceback
    # included) at WARNING, which would clutter the demo's output.
    logging.getLogger("trio_chirp").setLevel(logging.CRITICAL)
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker1,
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker2,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as router_node,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):
        turns = itertools.cycle([(LOCAL, worker1.port), (LOCAL, worker2.port)])

        def next_worker(msg: trio_chirp.Message) -> tuple[str, int]:
            return next(turns)  # round robin; a Router without route() uses msg.destination

        workers = [worker_handler("worker 1", worker1), worker_handler("worker 2", worker2)]
        for pool in workers:
            await nursery.start(pool.run)
        router = trio_chirp.Router(router_node, next_worker)
        await nursery.start(router.run)
        print(
            f"workers on ports {worker1.port} and {worker2.port}, router on {router_node.port},"
            f" producer on {producer.port}"
        )

        for job in JOBS:
            request = trio_chirp.Message(job, address=LOCAL, port=router_node.port)
            print(f"producer: square {job.decode()}? (deadline 1.00 s)")
            start = time.perf_counter()
            try:
                with trio.fail_after(1.0):  # travels: router and worker see what is left of it
                    response = await producer.request(request)
            except trio_chirp.RemoteError as exc:
                took = (time.perf_counter() - start) * 1000
                print(f"producer: failed after {took:.1f} ms, not 1 s: {exc.kind} at {exc.hop}: {exc.text}")
            else:
                took = (time.perf_counter() - start) * 1000
                # A received message's address and port are set; the type says Optional.
                assert response.address is not None
                assert response.port is not None
                via = f"{response.address}:{response.port}"
                print(f"producer: {response.data.decode()} in {took:.1f} ms, via {via}")

        print("statistics:")
        stats = producer.statistics()
        print(
            f"  producer: {stats.requests_completed} answered, {stats.requests_failed} failed"
            f" ({stats.error_responses_in} by an error response), {stats.connections} connection(s)"
        )
        routed = router.statistics()
        print(
            f"  router:   {routed.forwarded} forwarded, {routed.responses} responses returned,"
            f" failed {dict(routed.failed)}"
        )
        for name, pool in zip(("worker 1", "worker 2"), workers, strict=True):
            done = pool.statistics()
            print(
                f"  {name}: {done.handled} handled, {done.failed} failed,"
                f" {done.error_responses} error response(s) sent"
            )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
