"""A randomized storm on a node whose receive() reads its connection, and the waiter-count
race it found (``_inbox._CountedWaiters``): a receive() whose deadline coincides with a
delivery must not leave a later receive() unwoken."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from reading_helpers import LATENCY, A, B, C, Got, msg_to, node, up
from tls_helpers import PKISet

from trio_chirp.testing import MemoryNetwork

# --- a randomized storm ----------------------------------------------------------------------


# Before the counted waiters' fix (below), 5 to 8 of these 12 seeds (receivers=1) failed:
# a synchronous send timed out because A's receive() was parked and never woken.
@pytest.mark.parametrize("receivers", [1, 3])
@pytest.mark.parametrize("seed", range(12))
async def test_a_storm_of_cancelled_receives_senders_and_a_late_second_peer(
    autojump_clock: Any, seed: int, receivers: int
) -> None:
    await _storm(seed, receivers, None)


@pytest.mark.parametrize("seed", range(3))
async def test_a_storm_over_tls(autojump_clock: Any, pki: PKISet, seed: int) -> None:
    await _storm(seed, 2, pki)


async def _storm(seed: int, receivers: int, pki: PKISet | None) -> None:
    """A (2 slots) is read by ``receivers`` receive() loops, each call under a random short
    deadline and holding its message a random time; B sends to A (sync and async mixed), C
    connects half-way and sends too, and A sends synchronously to B meanwhile. Every message
    reaches A once, each sender's in order per receiver; every send completes."""
    import random

    rng = random.Random(seed)
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, 2 * LATENCY)
    n_b, n_c, n_a = 40, 20, 10
    seen: dict[int, list[tuple[str, int]]] = {i: [] for i in range(receivers)}
    cancelled = 0
    async with (
        node(net, A, pki, max_slots=2) as a,
        node(net, B, pki) as b,
        node(net, C, pki) as c,
        trio.open_nursery() as nursery,
    ):
        await up(a, b, A, B)
        total = n_b + n_c
        all_in = trio.Event()
        delays = [rng.choice([0.0, 0.0, 0.001, 0.004, 0.02]) for _ in range(400)]
        holds = [rng.choice([0.0, 0.0, 0.0, 0.002, 0.015]) for _ in range(400)]

        async def receiver(i: int) -> None:
            nonlocal cancelled
            k = i
            while True:
                k += receivers
                deadline = delays[k % len(delays)]
                msg = None
                with trio.move_on_after(deadline) if deadline else trio.CancelScope() as scope:
                    msg = await a.receive()
                if scope.cancelled_caught:
                    cancelled += 1
                if msg is None:
                    continue
                with msg:  # released on the way out, also when the test ends
                    who, _, n = bytes(msg.data).partition(b":")
                    seen[i].append((who.decode(), int(n)))
                    hold = holds[k % len(holds)]
                    if hold:
                        await trio.sleep(hold)
                if sum(len(v) for v in seen.values()) == total:
                    all_in.set()

        async def b_sends() -> None:
            for n in range(n_b):
                await b.send(msg_to(b"b:%d" % n, A), synchronous=rng.random() < 0.5)
                if rng.random() < 0.3:
                    await trio.sleep(rng.choice([0.001, 0.01]))

        async def c_sends() -> None:
            await trio.sleep(0.05)
            for n in range(n_c):
                await c.send(msg_to(b"c:%d" % n, A), synchronous=rng.random() < 0.5)

        async def a_sends() -> None:
            for n in range(n_a):
                await a.send(msg_to(b"a:%d" % n, B))
                await trio.sleep(rng.choice([0.0, 0.003]))

        async def b_drains() -> None:
            async for msg in b:
                msg.release()

        for i in range(receivers):
            nursery.start_soon(receiver, i)
        nursery.start_soon(b_drains)
        with trio.fail_after(60):
            async with trio.open_nursery() as senders:
                senders.start_soon(b_sends)
                senders.start_soon(c_sends)
                senders.start_soon(a_sends)
            await all_in.wait()
        everything = sorted(x for v in seen.values() for x in v)
        assert everything == sorted([("b", n) for n in range(n_b)] + [("c", n) for n in range(n_c)])
        for v in seen.values():
            for who in "bc":
                mine = [n for w, n in v if w == who]
                assert mine == sorted(mine)
        assert a.statistics().errors == {}
        assert a.statistics().send_errors == {}
        assert b.statistics().send_errors == {}
        assert c.statistics().send_errors == {}
        nursery.cancel_scope.cancel()


# --- the waiter-count race ---------------------------------------------------------------
#
# ``_CountedWaiters.wait`` counts itself out only when the cancelled task *runs*; Trio takes
# it out of the lot at once (the abort). A ``put`` in between (same scheduler batch) saw
# ``waiting == 1``, counted it out too and unparked nobody; the cancelled task then made it
# -1, and from then on a parked receive() was not counted and not woken: a message that had
# arrived was never delivered (a lock-up; a synchronous sender then failed with "no ACK
# within timeout"). Now the wakers count out only whom the lot woke.


@pytest.mark.parametrize("peers", [1, 2])
async def test_a_receive_timeout_that_coincides_with_a_delivery_keeps_the_inbox_count(
    autojump_clock: Any, peers: int
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, LATENCY)
    async with node(net, A) as a, node(net, B) as b, node(net, C) as c:
        await up(a, b, A, B)
        if peers == 2:
            await up(a, c, A, C)
        inbox = a._inbox
        for r in range(40):
            await trio.testing.wait_all_tasks_blocked()
            t = trio.current_time()
            await b.send(msg_to(b"r%d" % r, A), synchronous=False)  # arrives at exactly t + LATENCY
            msg = None
            with trio.move_on_at(t + LATENCY):  # the same instant
                msg = await a.receive()
            if msg is None:
                with trio.fail_after(1):
                    msg = await a.receive()
            assert bytes(msg.data) == b"r%d" % r
            msg.release()
            assert inbox.waiting == len(inbox.lot) == 0, f"round {r}: waiting={inbox.waiting}"


@pytest.mark.parametrize("peers", [1, 2])
async def test_after_such_a_coincidence_a_parked_receive_gets_its_message(
    autojump_clock: Any, peers: int
) -> None:
    """The same race, seen from outside: afterwards a receive() parked in the inbox must be
    woken by a message that arrives (it waited for ever before the fix)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    net.set_latency(A, C, LATENCY)
    async with node(net, A) as a, node(net, B) as b, node(net, C) as c:
        await up(a, b, A, B)
        if peers == 2:
            await up(a, c, A, C)
        for r in range(40):
            await trio.testing.wait_all_tasks_blocked()
            t = trio.current_time()
            await b.send(msg_to(b"r%d" % r, A), synchronous=False)
            msg = None
            with trio.move_on_at(t + LATENCY):
                msg = await a.receive()
            if msg is None:
                msg = await a.receive()  # it arrived: the fast path takes it
            msg.release()
            if a._inbox.waiting != 0:
                break  # the count went wrong in this round
        got = Got()
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                m = await a.receive()
                got.append(bytes(m.data))
                m.release()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await b.send(msg_to(b"last", A), synchronous=False)
            await got.wait_len(1, 2)
        assert got == [b"last"]
