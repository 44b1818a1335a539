"""Attacks on ``receive()`` reading the node's one connection, continued: slots and
backpressure, and synchronous senders, requests and workers on the receiving node."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from reading_helpers import LATENCY, A, B, Got, msg_to, node, up
from tls_helpers import PKISet

from trio_chirp import Chirp, Message, Workers
from trio_chirp.testing import MemoryNetwork


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, pki: PKISet) -> PKISet | None:
    return pki if request.param == "tls" else None


# --- slots and backpressure --------------------------------------------------------------


async def test_a_flood_with_one_slot_and_a_slow_application(autojump_clock: Any, tls: PKISet | None) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    flood = [b"f%d" % i for i in range(30)]
    got: list[bytes] = []
    in_use: list[int] = []
    async with (
        node(net, A, tls, max_slots=1) as a,
        node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        await up(a, b, A, B)
        for data in flood:
            await b.send(msg_to(data, A))
        with trio.fail_after(20):
            while len(got) < len(flood):
                msg = await a.receive()
                with msg:
                    in_use.append(a.statistics().slots_in_use)
                    got.append(bytes(msg.data))
                    await trio.sleep(0.05)
        assert got == flood
        assert max(in_use) == 1
        assert a.statistics().slots_peak == 1
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_a_held_message_blocks_the_one_slot_until_released_then_all_come(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    """Two receivers with max_slots=1: one holds its message; the other receive() waits (the
    reading stops at the slot); on release, the next message reaches the waiting receive()."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with (
        node(net, A, tls, max_slots=1) as a,
        node(net, B, tls, synchronous=False) as b,
        trio.open_nursery() as nursery,
    ):
        conn = await up(a, b, A, B)
        await b.send(msg_to(b"one", A))
        await b.send(msg_to(b"two", A))
        first = await a.receive()
        assert bytes(first.data) == b"one"
        second = Got()

        async def waiter() -> None:
            msg = await a.receive()
            second.append(bytes(msg.data))
            msg.release()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert second == []  # "two" waits for the slot
        assert conn.waiting_for_slot
        first.release()
        await trio.testing.wait_all_tasks_blocked()
        await second.wait_len(1, 1)
        assert second == [b"two"]
        nursery.cancel_scope.cancel()


# --- synchronous senders, requests, workers on the receiving node ------------------------


async def test_sync_senders_on_the_node_while_receive_reads(autojump_clock: Any, tls: PKISet | None) -> None:
    """A sends synchronously to B in a loop (waiting for ACKs) while A's receive() loop reads the
    same connection and B sends back: every send completes, everything arrives in order."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    at_a = Got()
    at_b: list[bytes] = []
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        await up(a, b, A, B)

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()

        async def b_echoes() -> None:
            async for msg in b:
                at_b.append(bytes(msg.data))
                msg.release()
                await b.send(msg_to(b"echo-" + bytes(msg.data), A), synchronous=False)

        nursery.start_soon(a_receives)
        nursery.start_soon(b_echoes)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            for i in range(30):
                await a.send(msg_to(b"%d" % i, B))  # synchronous
        await at_a.wait_len(30, 5)
        assert at_b == [b"%d" % i for i in range(30)]
        assert at_a == [b"echo-%d" % i for i in range(30)]
        assert a.statistics().errors == {}
        assert a.statistics().send_errors == {}
        nursery.cancel_scope.cancel()


async def test_sync_echo_both_ways_each_node_one_connection(autojump_clock: Any, tls: PKISet | None) -> None:
    """Both nodes synchronous, both receive() loops answer each message with a synchronous
    send back: a ping-pong of 40 rounds completes (no lock-up between the two readers)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    rounds = 40
    finished = trio.Event()
    seen: list[bytes] = []
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        await up(a, b, A, B)

        async def pong(me: Chirp, other: str) -> None:
            async for msg in me:
                n = int(bytes(msg.data))
                seen.append(bytes(msg.data))
                msg.release()
                if n >= rounds:
                    finished.set()
                    continue
                nursery.start_soon(partial(me.send, msg_to(b"%d" % (n + 1), other)))

        nursery.start_soon(pong, a, B)
        nursery.start_soon(pong, b, A)
        await trio.testing.wait_all_tasks_blocked()
        await a.send(msg_to(b"0", B))
        with trio.fail_after(20):
            await finished.wait()
        assert seen == [b"%d" % i for i in range(rounds + 1)]
        assert a.statistics().errors == {}
        assert b.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_requests_from_a_node_whose_receive_loop_reads(autojump_clock: Any, tls: PKISet | None) -> None:
    """A's receive() loop reads the connection to B while another A task makes requests to B:
    every response comes back to request(), never to receive(); B's own messages reach receive()."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    at_a = Got()
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        await up(a, b, A, B)

        async def a_receives() -> None:
            async for msg in a:
                at_a.append(bytes(msg.data))
                msg.release()

        async def b_serves() -> None:
            async for msg in b:
                await b.reply(msg, b"re:" + bytes(msg.data))
                await b.send(msg_to(b"note:" + bytes(msg.data), A), synchronous=False)

        nursery.start_soon(a_receives)
        nursery.start_soon(b_serves)
        await trio.testing.wait_all_tasks_blocked()
        answers = []
        with trio.fail_after(10):
            for i in range(15):
                resp = await a.request(msg_to(b"q%d" % i, B))
                answers.append(bytes(resp.data))
        await at_a.wait_len(15, 5)
        assert answers == [b"re:q%d" % i for i in range(15)]
        assert at_a == [b"note:q%d" % i for i in range(15)]
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()


async def test_workers_answer_requests_on_a_node_with_one_connection(
    autojump_clock: Any, tls: PKISet | None
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with node(net, A, tls) as a, node(net, B, tls) as b, trio.open_nursery() as nursery:
        await up(a, b, A, B)

        async def handler(msg: Message) -> None:
            await a.reply(msg, b"re:" + bytes(msg.data))

        workers = Workers(a, handler, count=3)
        await nursery.start(workers.run)
        results: dict[int, bytes] = {}

        async def requester(i: int) -> None:
            resp = await b.request(msg_to(b"q%d" % i, A))
            results[i] = bytes(resp.data)

        with trio.fail_after(10):
            async with trio.open_nursery() as reqs:
                for i in range(20):
                    reqs.start_soon(requester, i)
        assert results == {i: b"re:q%d" % i for i in range(20)}
        assert workers.statistics().handled == 20
        assert a.statistics().errors == {}
        nursery.cancel_scope.cancel()
