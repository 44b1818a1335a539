"""Requests and workers: a synchronous producer asks, asynchronous workers answer.

The worker node is asynchronous and answers with ``reply()``, which writes the response
before it releases the request: the producer's synchronous ``request()`` finds the
response already there when the ACK arrives. The producer's ``trio.fail_after()``
travels with each request: the handler runs under it (``msg.deadline``), and a handler
that raises answers with an error response, so the producer fails at once with
``RemoteError`` instead of waiting for its timeout.

    python3 examples/request_reply.py
"""

from __future__ import annotations

import trio

import trio_chirp


async def main() -> None:
    async with (
        trio_chirp.open_chirp(trio_chirp.Config(port=0, synchronous=False)) as worker,
        trio_chirp.open_chirp(trio_chirp.Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):

        async def square(msg: trio_chirp.Message) -> None:
            number = int(msg.data)  # b"oops" raises ValueError: an error response goes back
            left = msg.deadline - trio.current_time() if msg.deadline is not None else None
            print(f"  worker: {number} with {left:.2f} s of the producer's deadline left")
            await worker.reply(msg, b"%d" % (number * number))

        workers = trio_chirp.Workers(worker, square, count=4)
        await nursery.start(workers.run)

        for text in (b"3", b"12", b"oops"):
            request = trio_chirp.Message(text, address="127.0.0.1", port=worker.port)
            try:
                with trio.fail_after(1.5):  # travels: the worker sees msg.deadline
                    response = await producer.request(request)
            except trio_chirp.RemoteError as exc:
                print(f"producer: {text!r} failed at the worker: {exc.kind}: {exc.text}")
            else:
                print(f"producer: {text!r} squared is {response.data!r}")

        stats = producer.statistics()
        print(
            f"producer: {stats.requests_completed} answered, {stats.requests_failed} failed,"
            f" {stats.error_responses_in} by an error response"
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
