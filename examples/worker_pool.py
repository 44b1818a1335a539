"""A worker pool answering many requests in parallel.

One asynchronous worker node runs ``Workers(count=8)``: eight handler tasks take messages
as they arrive. The producer is asynchronous too, so its requests do not wait for each
other: an asynchronous request asks for no ACK and holds no in-flight place; the response
alone completes it. Sixteen jobs of 0.2 s each then take about 0.4 s (two rounds of
eight) instead of 3.2 s one after another.

    python3 examples/worker_pool.py
"""

from __future__ import annotations

import time

import trio

import trio_chirp

JOBS = 16
WORK = 0.2  # seconds of "work" per job
POOL = 8


async def main() -> None:
    running = peak = 0
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker,
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as producer,
        trio.open_nursery() as nursery,
    ):

        async def handle(msg: trio_chirp.Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await trio.sleep(WORK)  # the job; cancelled if the producer's deadline passes
            finally:
                running -= 1
            await worker.reply(msg, msg.data.upper())

        pool = trio_chirp.Workers(worker, handle, count=POOL)
        await nursery.start(pool.run)

        answers: dict[int, bytes] = {}

        async def ask(n: int) -> None:
            request = trio_chirp.Message(b"job %d" % n, address="127.0.0.1", port=worker.port)
            with trio.fail_after(5):
                response = await producer.request(request)
            answers[n] = response.data

        start = time.perf_counter()
        async with trio.open_nursery() as requests:
            for n in range(JOBS):
                requests.start_soon(ask, n)
        elapsed = time.perf_counter() - start

        print(f"{len(answers)} answers, e.g. {answers[0]!r} and {answers[JOBS - 1]!r}")
        print(f"at most {peak} jobs ran at once (pool of {POOL})")
        print(
            f"{JOBS} jobs of {WORK} s took {elapsed:.2f} s;"
            f" one after another they would take {JOBS * WORK:.1f} s"
        )
        stats = pool.statistics()
        print(f"workers: {stats.handled} handled, {stats.failed} failed")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
