"""A chain of two routers: producer -> router A -> router B -> worker, the deadline shrinking.

Each router forwards under the producer's remaining time minus a margin (min(0.1 s, 10 %
of what is left), docs/requests.md), so every hop sees a little less than the one
before, and an error response from further down still reaches the producer in time.
Router A sends everything to router B (a fixed next hop); router B uses the destination
the producer named. A job the worker cannot finish in time fails at the worker at *its*
deadline, and the producer learns why before its own.

    python3 examples/router_chain.py
"""

from __future__ import annotations

import logging

import trio

import trio_chirp

LOCAL = "127.0.0.1"


async def main() -> None:
    # The producer reports the failure; the nodes' own log lines about it would repeat it.
    logging.getLogger("trio_chirp").setLevel(logging.CRITICAL)
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as router_b,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as router_a,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):

        def left(msg: trio_chirp.Message) -> str:
            assert msg.deadline is not None  # every hop gets the producer's deadline
            return f"{msg.deadline - trio.current_time():.2f} s left"

        def to_b(msg: trio_chirp.Message) -> tuple[str, int]:
            print(f"  router A: {msg.data.decode()}, {left(msg)}")
            return (LOCAL, router_b.port)

        def to_destination(msg: trio_chirp.Message) -> tuple[str, int] | None:
            print(f"  router B: {msg.data.decode()}, {left(msg)}")
            return msg.destination

        async def work(msg: trio_chirp.Message) -> None:
            seconds = float(msg.data.split()[1])
            print(f"  worker:   {msg.data.decode()}, {left(msg)}")
            await trio.sleep(seconds)  # cancelled at msg.deadline: the handler fails there
            await worker.reply(msg, b"done after %.1f s" % seconds)

        await nursery.start(trio_chirp.Workers(worker, work).run)
        await nursery.start(trio_chirp.Router(router_b, to_destination).run)
        await nursery.start(trio_chirp.Router(router_a, to_b).run)

        for job in (b"sleep 0.1", b"sleep 3"):
            request = trio_chirp.Message(
                job, address=LOCAL, port=router_a.port, destination=(LOCAL, worker.port)
            )
            print(f"producer: {job.decode()}, deadline 1.00 s")
            start = trio.current_time()
            try:
                with trio.fail_after(1.0):
                    response = await producer.request(request)
            except trio_chirp.RemoteError as exc:
                took = trio.current_time() - start
                print(
                    f"producer: failed after {took:.2f} s (before its 1 s):"
                    f" {exc.kind} at {exc.hop}: {exc.text}"
                )
            else:
                print(f"producer: {response.data.decode()}, after {trio.current_time() - start:.2f} s")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
