"""Lock-ups, searched for deterministically: whole in-memory networks under MockClock.

The rule that keeps chirp networks free of lock-ups: consumers (workers) are
asynchronous, producers synchronous, and a worker puts its response on the wire before
it acknowledges the request. Hypothesis varies the network and the traffic and checks
that, following the rule, nothing ever times out; the last test shows the lock-up the
rule avoids.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from memnet_helpers import PORT, node

from trio_chirp import Chirp, ChirpTimeoutError, Message
from trio_chirp.testing import MemoryNetwork


def _ip(i: int) -> str:
    return f"10.0.1.{i + 1}"


async def _worker(chirp: Chirp) -> None:
    async for request in chirp:
        response = Message(b"re:" + request.data, address=request.address, port=request.port)
        response.identity = request.identity
        await chirp.send(response)  # asynchronous: accepted
        await chirp.flush(request.address, PORT)  # ... and on the wire
        request.release()  # only now does the producer's send() return


@settings(max_examples=40, deadline=None)
@given(
    workers=st.integers(1, 3),
    worker_slots=st.integers(1, 4),
    plans=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=6), min_size=1, max_size=3),
    window=st.sampled_from([200, 4096, 65536]),
)
def test_following_the_rule_never_locks_up(
    workers: int, worker_slots: int, plans: list[list[int]], window: int
) -> None:
    """Producers each send a sequence of requests to chosen workers and await each answer."""
    answers: dict[int, list[bytes]] = {}
    timeout = 1.0

    async def main() -> None:
        net = MemoryNetwork(window=window)
        async with trio.open_nursery() as outer:
            worker_nodes = []
            for w in range(workers):
                chirp = await outer.start(
                    _run_node, net, _ip(w), {"synchronous": False, "max_slots": worker_slots}
                )
                worker_nodes.append(chirp)
                outer.start_soon(_worker, chirp)

            async def producer(p: int, plan: list[int]) -> None:
                chirp = await outer.start(_run_node, net, _ip(10 + p), {"timeout": timeout})
                got = answers.setdefault(p, [])
                for i, target in enumerate(plan):
                    request = Message(b"%d/%d" % (p, i), address=_ip(target % workers), port=PORT)
                    await chirp.send(request)  # synchronous: returns once the worker released it
                    response = await chirp.receive()
                    assert response.identity == request.identity
                    got.append(response.data)
                    response.release()
                assert chirp.statistics().errors == {}

            start = trio.current_time()
            async with trio.open_nursery() as producers:
                for p, plan in enumerate(plans):
                    producers.start_soon(producer, p, plan)
            # No timer ever had to fire: everything finished well inside one timeout.
            assert trio.current_time() - start < timeout
            for chirp in worker_nodes:
                assert chirp.statistics().errors == {}
            outer.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert answers == {p: [b"re:%d/%d" % (p, i) for i in range(len(plan))] for p, plan in enumerate(plans)}


async def _run_node(
    net: MemoryNetwork,
    ip: str,
    settings: dict[str, object],
    *,
    task_status: trio.TaskStatus[Chirp] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with node(net, ip, **settings) as chirp:
        task_status.started(chirp)
        await trio.sleep_forever()


async def test_two_sync_nodes_holding_their_slot_while_sending_lock_up_until_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Sharp edge 2, kept: the lock-up the rule avoids ends at ``timeout``, not never."""
    net = MemoryNetwork()
    outcomes: list[object] = []
    async with node(net, _ip(0), timeout=1.0) as a, node(net, _ip(1), timeout=1.0) as b:

        async def handler(me: Chirp, peer_ip: str) -> None:
            # Breaks the rule: holds the received message (its only slot) while its own
            # synchronous send waits for an ACK the peer can never send.
            request = await me.receive()
            try:
                await me.send(Message(b"answer", address=peer_ip, port=PORT))
                outcomes.append("ok")
            except ChirpTimeoutError:
                outcomes.append("timeout")
            request.release(ack=False)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler, a, _ip(1))
            nursery.start_soon(handler, b, _ip(0))

            async def kick_off(sender: Chirp, to_ip: str) -> None:
                try:
                    await sender.send(Message(b"start", address=to_ip, port=PORT))
                except ChirpTimeoutError:
                    outcomes.append("timeout")

            nursery.start_soon(kick_off, a, _ip(1))
            nursery.start_soon(kick_off, b, _ip(0))
        assert trio.current_time() - start == 1.0
        assert outcomes == ["timeout"] * 4
