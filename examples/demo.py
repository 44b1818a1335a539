"""Two chirp nodes on loopback: a synchronous producer and an asynchronous echo worker.

The worker follows the rule that keeps chirp networks free of lock-ups: consumers are
asynchronous, and a worker puts its response on the wire *before* it acknowledges the
request (release), so the producer's confirmed send means "processed".

    python3 dev.py demo
"""

from __future__ import annotations

import time

import trio

import trio_chirp


async def echo_worker(worker: trio_chirp.Chirp, count: int) -> None:
    for _ in range(count):
        request = await worker.receive()
        reply = trio_chirp.Message(b"echo: " + request.data, address=request.address, port=request.port)
        reply.identity = request.identity  # lets the producer match the answer
        await worker.send(reply)  # asynchronous: accepted for sending
        await worker.flush(request.address, request.port)  # ...and written
        request.release()  # now the producer's synchronous send() returns


async def main() -> None:
    count = 5
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):
        print(f"worker   listens on port {worker.port}, identity {worker.identity.hex()}")
        print(f"producer listens on port {producer.port}, identity {producer.identity.hex()}")
        nursery.start_soon(echo_worker, worker, count)
        start = time.perf_counter()
        for i in range(count):
            request = trio_chirp.Message(b"hello %d" % i, address="127.0.0.1", port=worker.port)
            with trio.fail_after(5):
                await producer.send(request)  # returns when the worker released it
                reply = await producer.receive()
            reply.release()
            assert reply.identity == request.identity
            print(f"sent {request.data!r:12} -> got {reply.data!r} (serial {reply.serial})")
        elapsed = time.perf_counter() - start
        stats = producer.statistics()
        print(
            f"{count} round trips in {elapsed * 1000:.1f} ms over {stats.connections} connection;"
            f" producer wrote {stats.bytes_out} bytes, read {stats.bytes_in}"
        )


if __name__ == "__main__":
    trio.run(main)
