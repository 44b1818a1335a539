"""Testing an app deterministically: an in-memory network and Trio's MockClock.

``trio_chirp.testing.MemoryNetwork`` gives each node a host of its own (any IP literal)
with no sockets: latency, cuts, crashes and partitions are one call each. Under
``trio.testing.MockClock(autojump_threshold=0)`` time is virtual: whenever every task
waits, the clock jumps to the next deadline, so a test of seconds of timeouts runs in
milliseconds, and the times it sees are exact (pass ``rng=random.Random(seed)`` to
``open_chirp`` so the node's random choices repeat too).

The app under test is a small quote service (a worker answering requests) and its
client. The checks: an answer's exact latency over a 50 ms link, and what the client
sees when the link is cut while a request is in flight.

    python3 examples/testing_app.py

With pytest-trio, the same function is a test: mark it ``@pytest.mark.trio`` and take the
``autojump_clock`` fixture (or set ``trio_run = trio`` and pass a MockClock), e.g.

    async def test_quote_service(autojump_clock: trio.testing.MockClock) -> None:
        await check_quote_service()
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

import trio_chirp
from trio_chirp.testing import MemoryNetwork

SERVICE, CLIENT = "10.0.0.1", "10.0.0.2"
PORT = 2998
LATENCY = 0.05  # one way
PRICES = {b"apples": b"1.20", b"pears": b"2.10"}


# ---- the app ----------------------------------------------------------------------
async def quote(node: trio_chirp.Chirp, msg: trio_chirp.Message) -> None:
    """The service's handler: a price, after some thinking for unknown items."""
    if msg.data not in PRICES:
        await trio.sleep(1.0)  # asks a slow back office
    await node.reply(msg, PRICES.get(msg.data, b"?"))


async def run_service(
    node: trio_chirp.Chirp, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async def handle(msg: trio_chirp.Message) -> None:
        await quote(node, msg)

    await trio_chirp.Workers(node, handle, count=4).run(task_status=task_status)


# ---- the test -------------------------------------------------------------------
@asynccontextmanager
async def node_on(net: MemoryNetwork, ip: str, *, synchronous: bool) -> AsyncIterator[trio_chirp.Chirp]:
    # Memory hosts have no TLS; 10.0.0.x would need it on a real network (docs/tls.md).
    config = trio_chirp.Config(port=PORT, synchronous=synchronous, disable_encryption=True)
    async with trio_chirp.open_chirp(config, transport=net.host(ip), rng=random.Random(1)) as chirp:
        yield chirp


async def check_quote_service() -> None:
    net = MemoryNetwork()
    net.set_latency(SERVICE, CLIENT, LATENCY)
    async with (
        node_on(net, SERVICE, synchronous=False) as service,
        node_on(net, CLIENT, synchronous=True) as client,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(run_service, service)

        async def ask(item: bytes) -> tuple[bytes, float]:
            start = trio.current_time()
            response = await client.request(trio_chirp.Message(item, address=SERVICE, port=PORT))
            return response.data, trio.current_time() - start

        price, first = await ask(b"apples")
        print(
            f"apples cost {price.decode()};"
            f" first request took {first:.3f} s (connect and handshakes included)"
        )
        price, again = await ask(b"pears")
        print(f"pears cost {price.decode()}; on the open connection it took {again:.3f} s")
        assert price == b"2.10"
        assert exactly(again, 2 * LATENCY)  # one round trip: virtual time does not drift

        # A link cut while the slow request is in flight: the client fails at that instant.
        cut_at = trio.current_time() + 0.5
        nursery.start_soon(cut_later, net, cut_at)
        try:
            await ask(b"plums")
        except trio_chirp.ConnectionLostError as exc:
            print(
                f"plums: {type(exc).__name__} at +{trio.current_time() - cut_at:.3f} s after the cut: {exc}"
            )
            assert exactly(trio.current_time(), cut_at)
        else:
            raise AssertionError("the request outlived the cut")
        # chirp reconnects on demand, after the reconnect debounce (50 ms + uniform[0, 500 ms),
        # docs/node.md): with the seeded rng it is the same every run.
        price, after = await ask(b"apples")
        print(
            f"after the cut apples still cost {price.decode()}"
            f" ({after:.3f} s: debounce, then a new connection)"
        )
        assert after > first
        nursery.cancel_scope.cancel()


def exactly(a: float, b: float) -> bool:
    """Equal up to float rounding (times are sums of float seconds, not jitter)."""
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


async def cut_later(net: MemoryNetwork, when: float) -> None:
    await trio.sleep_until(when)
    net.cut(SERVICE, CLIENT)


def main() -> None:
    logging.getLogger("trio_chirp").setLevel(logging.ERROR)  # the cut's warnings: expected here
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(check_quote_service, clock=clock)
    print(f"done: {clock.current_time():.3f} s of virtual time")


if __name__ == "__main__":
    main()
