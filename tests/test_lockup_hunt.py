"""The lock-up hunt: generated networks of producers, routers and workers, in memory under MockClock.

``hunt_model.py`` draws a whole network description (nodes and roles, 1-4 slots, links
with latency and small windows, the producers' requests and synchronous sends under
random ``fail_after`` deadlines, directly or through routers, what each worker does, slow
handlers, cuts, partitions, crashes) and checks every run against the invariants listed
there. Here Hypothesis drives that generator (``@given`` over a generated description,
not a stateful machine: a whole network must run inside one ``trio.run`` under one
MockClock, and a description shrinks, prints and replays as one value), with fixed seeds
per shard and no example database, so CI always runs the same networks. The time-boxed
search over the same generator is ``bench/hunt_lockups.py``.

Trio's scheduler shuffles runnable tasks with ``trio._core._run._r``; ``run_network``
seeds it from the network's own seed (in Trio's deterministic mode), so a network replays
exactly, here and in another process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing
from hunt_model import (
    ASYNC_REQUEST,
    PRODUCER,
    RELEASE,
    REPLY,
    REQUEST,
    ROUTER,
    SABOTAGE,
    SEND,
    WORKER,
    FaultSpec,
    HypothesisDraw,
    LinkSpec,
    NodeSpec,
    OpSpec,
    RandomDraw,
    Result,
    Spec,
    TaskSpec,
    generate,
    run_network,
)
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from memnet_helpers import PORT, node

from trio_chirp import Chirp, ChirpError, ChirpTimeoutError, Message, Router, Workers
from trio_chirp.testing import MemoryNetwork

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

HUNT_SHARDS = 8
HUNT_EXAMPLES = 250
LIVENESS_SHARDS = 2
LIVENESS_EXAMPLES = 150
MUTANT_SEEDS = range(10)
MUTANT_BUDGET = 200
"""Networks the mutation search may try from each seed before it counts as not found."""
FULL_SLOTS_MIN = 0.25
CRASH_MIN = 0.10
PIPELINED_MIN = 0.05
"""Networks with several synchronous messages waiting for ACKs to one remote (a router
forwarding to a worker with more than one slot)."""


@st.composite
def networks(draw: st.DrawFn, mutant: bool = False, calm: bool | None = None) -> Spec:
    return generate(HypothesisDraw(draw), mutant=mutant, calm=calm)


def _hunt_settings(examples: int, phases: tuple[Phase, ...] = (Phase.generate, Phase.shrink)) -> settings:
    return settings(
        max_examples=examples,
        database=None,  # CI runs exactly the networks its seed names, nothing replayed
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def _explain(result: Result) -> str:
    lines = [f"{len(result.violations)} violation(s) in {result.spec!r}", result.summary()]
    lines += result.violations[:20]
    lines.append("rerun outside pytest: python3 bench/hunt_lockups.py --spec '<the Spec above>'")
    return "\n".join(lines)


# --- the hunt ------------------------------------------------------------------------------


@pytest.mark.parametrize("shard", range(HUNT_SHARDS))
def test_generated_networks_keep_every_invariant(shard: int) -> None:
    """Every send and request ends by its deadline with a defined outcome; nothing delivered
    twice, nothing succeeds undelivered; after 2 x timeout of quiet nothing is left; calm
    rule-following networks succeed fully. Coverage of each shard is asserted at the end."""
    facts: list[set[str]] = []

    @_hunt_settings(HUNT_EXAMPLES)
    @seed(8_000 + shard)
    @given(spec=networks())
    def hunt(spec: Spec) -> None:
        result = run_network(spec)
        facts.append(result.facts)
        assert not result.violations, _explain(result)

    hunt()
    assert len(facts) >= HUNT_EXAMPLES * 0.9  # Hypothesis ran (nearly) all the networks asked for
    full = sum("full slots" in f for f in facts) / len(facts)
    crashed = sum("crash" in f for f in facts) / len(facts)
    backpressure = sum("backpressure" in f for f in facts) / len(facts)
    pipelined = sum("pipelined" in f for f in facts) / len(facts)
    print(
        f"{len(facts)} networks: full slots {full:.0%}, bp {backpressure:.0%}, crash {crashed:.0%},"
        f" pipelined {pipelined:.0%}"
    )
    assert full >= FULL_SLOTS_MIN, f"only {full:.0%} of {len(facts)} networks reached full slots"
    assert pipelined >= PIPELINED_MIN, f"only {pipelined:.0%} of {len(facts)} networks pipelined"
    assert crashed >= CRASH_MIN, f"only {crashed:.0%} of {len(facts)} networks included a crash"


@pytest.mark.parametrize("shard", range(LIVENESS_SHARDS))
def test_calm_rule_following_networks_have_full_success(shard: int) -> None:
    """No faults, slowness well below the deadlines, the rule followed: 100 % success."""
    checked: list[int] = []
    known: list[Spec] = []

    @_hunt_settings(LIVENESS_EXAMPLES)
    @seed(9_000 + shard)
    @given(spec=networks(calm=True))
    def hunt(spec: Spec) -> None:
        result = run_network(spec)
        assert not result.violations, _explain(result)
        if result.liveness_checked:
            assert result.outcomes == {"ok": len(spec.ops())} or result.known, _explain(result)
            checked.append(len(spec.ops()))
        if result.known:
            known.append(spec)

    hunt()
    # Not vacuous: most calm networks are within the liveness bound, with real traffic.
    assert len(checked) >= 0.7 * LIVENESS_EXAMPLES
    assert sum(checked) >= 3 * len(checked)
    assert len(known) <= len(checked) // 10  # the open bug explains only a few networks


# --- the mutation: workers that break the rule ------------------------------------------------


def _first_violation(start: int, *, mutant: bool) -> tuple[int, Result] | None:
    for i in range(MUTANT_BUDGET):
        network_seed = start * 1_000_003 + i
        result = run_network(generate(RandomDraw(network_seed), mutant=mutant))
        if result.violations:
            return network_seed, result
    return None


@pytest.mark.parametrize("start", MUTANT_SEEDS)
def test_the_search_finds_workers_that_break_the_rule(start: int) -> None:
    """Synchronous workers that answer with a synchronous send before releasing lock up."""
    found = _first_violation(start, mutant=True)
    assert found is not None, f"no lock-up within {MUTANT_BUDGET} mutant networks from seed {start}"
    network_seed, result = found
    assert any(v.split(": ", 1)[1].startswith("liveness") for v in result.violations), result.violations
    # The mutation is what was found: the same network with workers that follow the rule passes.
    spec = generate(RandomDraw(network_seed), mutant=False)
    assert replace(spec, mutant=True) == result.spec
    fixed = run_network(spec)
    assert not fixed.violations, _explain(fixed)
    assert fixed.outcomes["ok"] > result.outcomes["ok"]


def test_hypothesis_shrinks_the_mutation_to_a_minimal_network() -> None:
    """Why Hypothesis: a found lock-up comes back as a small network, not a seed."""
    failures: list[Spec] = []

    @_hunt_settings(300)
    @seed(4242)
    @given(spec=networks(mutant=True))
    def hunt(spec: Spec) -> None:
        result = run_network(spec)
        if result.violations:
            failures.append(spec)
        assert not result.violations

    with pytest.raises(AssertionError):
        hunt()
    smallest = failures[-1]  # Hypothesis reruns the shrunk example last
    print(repr(smallest))
    ops = [op for _, _, op in smallest.ops()]
    roles = [n.role for n in smallest.nodes]
    assert roles[:2] == [PRODUCER, WORKER]
    assert len(roles) <= 4
    assert set(roles[2:]) <= {WORKER}  # idle extra workers at most (they shift the scheduling)
    assert len(smallest.tasks) == 2  # the fewest the generator draws
    assert len(ops) == 2
    assert {op.kind for op in ops} <= {REQUEST, ASYNC_REQUEST}  # the workers' answers lock it up
    assert all(op.action == REPLY and op.path == (1,) for op in ops)
    assert not smallest.faults
    assert smallest.calm


# --- libchirp's original symmetric lock-up -----------------------------------------------------


@pytest.mark.parametrize("limit", [0.5, 1.0, 3.0])
async def test_two_synchronous_peers_sending_to_each_other_before_releasing_end_at_timeout(
    autojump_clock: trio.abc.Clock, limit: float
) -> None:
    """Sharp edge 2 (see also test_lockups.py): each holds its one slot while its send waits
    for an ACK the other can never give. It ends in timeouts at exactly ``timeout``, and
    after 2 x timeout both nodes are clean and talk again."""
    net = MemoryNetwork()
    a_ip, b_ip = "10.0.9.1", "10.0.9.2"
    outcomes: list[str] = []
    async with node(net, a_ip, timeout=limit) as a, node(net, b_ip, timeout=limit) as b:

        async def peer(me: Chirp, other: str) -> None:
            async def handle_one() -> None:
                request = await me.receive()
                try:
                    await me.send(Message(b"answer", address=other, port=PORT))  # before releasing
                    outcomes.append("ok")
                except ChirpTimeoutError:
                    outcomes.append("timeout")
                request.release()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle_one)
                try:
                    await me.send(Message(b"start", address=other, port=PORT))
                    outcomes.append("ok")
                except ChirpTimeoutError:
                    outcomes.append("timeout")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer, a, b_ip)
            nursery.start_soon(peer, b, a_ip)
        assert trio.current_time() - start == pytest.approx(limit)  # config.timeout
        assert outcomes == ["timeout"] * 4
        await trio.sleep(2 * limit)
        for chirp in (a, b):
            stats = chirp.statistics()
            assert (stats.in_flight, stats.queued, stats.slots_in_use, stats.undelivered) == (0, 0, 0, 0)
        async with trio.open_nursery() as nursery:  # no lasting damage: a plain exchange works
            nursery.start_soon(a.send, Message(b"again", address=b_ip, port=PORT))
            with await b.receive() as msg:
                assert msg.data == b"again"


# --- bugs the hunt found (open ones strict xfail: they pass once fixed, and then fail here) ----


def test_a_frame_between_response_and_ack_does_not_lock_up() -> None:
    """Found by the hunt in calm networks (a synchronous and an asynchronous request from one
    producer to one worker), fixed in c5db746. The worker follows the rule (response written
    before the ACK) but writes another frame before the ACK: the response used to hold the
    synchronous producer's one slot until the ACK was read, the next frame waited for a
    slot, and the ACK behind it was never read, until the timeout."""
    assert _run_scenario(_frame_between_response_and_ack) == ("response", 0.0)


def _run_scenario(scenario: Callable[[], Awaitable[T]]) -> T:
    """Outside pytest-trio, so that a failed assertion is not wrapped in an ExceptionGroup
    (the strict xfails say ``raises=AssertionError``)."""
    return trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


async def _frame_between_response_and_ack() -> tuple[str, float]:
    net = MemoryNetwork()
    p_ip, w_ip = "10.0.9.1", "10.0.9.2"
    async with (
        node(net, p_ip, timeout=2.0) as producer,
        node(net, w_ip, timeout=2.0, synchronous=False) as worker,
        trio.open_nursery() as nursery,
    ):

        async def drain() -> None:
            async for msg in producer:
                msg.release()

        async def work() -> None:
            request = await worker.receive()
            response = Message(b"response", address=request.address, port=request.port)
            response.identity = request.identity
            await worker.send(response, synchronous=False)
            await worker.send(Message(b"notification", address=p_ip, port=PORT), synchronous=False)
            await worker.flush(p_ip, PORT)
            request.release()

        nursery.start_soon(drain)
        nursery.start_soon(work)
        start = trio.current_time()
        try:
            outcome = (await producer.request(Message(b"job", address=w_ip, port=PORT))).data.decode()
        except ChirpError as exc:
            outcome = repr(exc)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return outcome, took


@pytest.mark.parametrize("router_slots", [None, 4])
def test_requests_crossing_between_two_routers_do_not_lock_up(router_slots: int | None) -> None:
    """Found by the hunt (bench/hunt_lockups.py --replay 3110 --strict, reduced): P0 -> R2 -> R4 -> W and
    P3 -> R4 -> R2 -> W at once. Each router's response to the other waits behind its own
    synchronous forward to the other (one in flight per remote); on synchronous routers
    also for the one slot the other's request holds. Routers on asynchronous nodes (more
    slots) lock up all the same. Reproducer: /tmp/hunt/repro_crossing_routers.py."""
    outcomes, took = _run_scenario(lambda: _crossing_routers(router_slots))
    assert (outcomes, took) == ({b"R2,R4": "done", b"R4,R2": "done"}, 0.0)


async def _crossing_routers(router_slots: int | None) -> tuple[dict[bytes, str], float]:
    net = MemoryNetwork()
    p0, w, r2, p3, r4 = "10.0.9.1", "10.0.9.2", "10.0.9.3", "10.0.9.4", "10.0.9.5"
    routing = {b"R2,R4": {r2: r4, r4: w}, b"R4,R2": {r4: r2, r2: w}}
    router_settings: dict[str, object] = {"timeout": 0.5}
    if router_slots is not None:
        router_settings |= {"synchronous": False, "max_slots": router_slots}
    async with (
        node(net, w, timeout=0.5, synchronous=False) as worker,
        node(net, r2, **router_settings) as router2,
        node(net, r4, **router_settings) as router4,
        node(net, p0, timeout=0.5) as producer0,
        node(net, p3, timeout=0.5) as producer3,
        trio.open_nursery() as nursery,
    ):

        async def handle(msg: Message) -> None:
            await worker.reply(msg, b"done")

        await nursery.start(Workers(worker, handle).run)
        for here, chirp in ((r2, router2), (r4, router4)):
            await nursery.start(Router(chirp, lambda msg, here=here: (routing[msg.data][here], PORT)).run)
        outcomes: dict[bytes, str] = {}

        async def ask(producer: Chirp, first: str, data: bytes) -> None:
            try:
                outcomes[data] = (
                    await producer.request(Message(data, address=first, port=PORT))
                ).data.decode()
            except ChirpError as exc:
                outcomes[data] = type(exc).__name__

        start = trio.current_time()
        async with trio.open_nursery() as requests:
            requests.start_soon(ask, producer0, r2, b"R2,R4")
            requests.start_soon(ask, producer3, r4, b"R4,R2")
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return outcomes, took


def test_router_forgets_identities_by_their_deadline() -> None:
    """Found by the hunt's quiet check: every forwarded message leaves an identity in the
    router node's request table until the *next* forward, so an idle router shows
    ``requests_pending`` > 0 long after every deadline (the hunt leaves this figure out
    on routers while it is open: ``hunt_model.STRICT_ROUTER_PENDING``)."""
    forwarded, left = _run_scenario(_idle_router)
    assert forwarded == 1
    assert left == (0, 0)


async def _idle_router() -> tuple[int, tuple[int, int]]:
    net = MemoryNetwork()
    p_ip, r_ip, w_ip = "10.0.9.1", "10.0.9.2", "10.0.9.3"
    async with (
        node(net, w_ip, timeout=1.0, synchronous=False) as worker,
        node(net, r_ip, timeout=1.0) as router_node,
        node(net, p_ip, timeout=1.0) as producer,
        trio.open_nursery() as nursery,
    ):
        router = Router(router_node)
        await nursery.start(router.run)

        async def consume() -> None:
            async for msg in worker:
                msg.release()

        nursery.start_soon(consume)
        await producer.send(Message(b"x", address=r_ip, port=PORT, destination=(w_ip, PORT)))
        forwarded = router.statistics().forwarded
        await trio.sleep(2 * 1.0)  # twice the timeout: every deadline has passed
        left = (router_node.statistics().requests_pending, router.statistics().remembered)
        nursery.cancel_scope.cancel()
    return forwarded, left


# --- the checker itself ------------------------------------------------------------------------


def _small_spec(sabotage: str | None) -> Spec:
    ops = (  # the asynchronous request first: the rogue consumer keeps it, and the connection
        OpSpec(ASYNC_REQUEST, (1,), None, 100, REPLY, 0.0, 0.0),
        OpSpec(REQUEST, (1,), None, 100, REPLY, 0.0, 0.01),
        OpSpec(SEND, (1,), 0.8, 100, RELEASE, 0.0, 0.01),
    )
    return Spec(
        seed=7,
        timeout=1.0,
        window=65536,
        nodes=(NodeSpec(PRODUCER), NodeSpec(WORKER, slots=2, handlers=2)),
        links=(LinkSpec(0, 1, 0.001, None),),
        tasks=(TaskSpec(0, ops),),
        faults=(),
        calm=True,
        sabotage=sabotage,
    )


@pytest.mark.parametrize(
    ("sabotage", "expected"),
    [
        ("double delivery", "delivered to a worker application 2 times"),
        ("unrecorded", "succeeded but"),
        ("rogue consumer", "slots_in_use=1"),
        ("stuck handler", "hang: not finished and quiet"),
    ],
)
def test_the_checker_sees_planted_application_bugs(sabotage: str, expected: str) -> None:
    assert sabotage in SABOTAGE
    clean = run_network(_small_spec(None))
    assert clean.liveness_checked
    assert not clean.violations, _explain(clean)
    assert clean.outcomes == {"ok": 3}
    broken = run_network(_small_spec(sabotage))
    assert any(expected in v for v in broken.violations), broken.violations


def test_a_router_chain_and_a_crash_in_one_network() -> None:
    """A hand-written network through two routers, with a worker crash and restart."""
    spec = replace(
        _small_spec(None),
        nodes=(
            NodeSpec(PRODUCER),
            NodeSpec(WORKER, slots=1),
            NodeSpec(ROUTER, routes=True),
            NodeSpec(ROUTER),
        ),
        tasks=(
            TaskSpec(
                0,
                (
                    OpSpec(REQUEST, (2, 3, 1), 0.9, 100, REPLY, 0.05, 0.0),
                    OpSpec(SEND, (2, 3, 1), None, 1000, RELEASE, 0.0, 0.0),
                    OpSpec(REQUEST, (3, 1), 0.5, 100, REPLY, 0.0, 1.0),
                ),
            ),
        ),
        faults=(),
        calm=False,
    )
    result = run_network(spec)
    assert not result.violations, _explain(result)
    assert result.outcomes == {"ok": 3}
    crashed = run_network(replace(spec, faults=(FaultSpec(0.02, "crash", 1, 1, 0.3),)))
    assert not crashed.violations, _explain(crashed)
    assert "crash" in crashed.facts
    assert "restart" in crashed.facts
    assert crashed.outcomes["ok"] >= 1  # the last request reaches the restarted worker


# --- determinism -------------------------------------------------------------------------------


def test_trio_has_the_scheduler_hooks_the_hunt_seeds() -> None:
    import random

    core = trio._core._run
    assert isinstance(core._r, random.Random)
    assert hasattr(core, "_ALLOW_DETERMINISTIC_SCHEDULING")


def test_a_seed_replays_the_same_run() -> None:
    digests = {}
    for network_seed in (1, 2, 3, 4):
        result = run_network(generate(RandomDraw(network_seed)))
        digests[network_seed] = result.digest()
        assert run_network(generate(RandomDraw(network_seed))).digest() == digests[network_seed]
    assert len(set(digests.values())) == 4


def test_a_seed_replays_the_same_run_in_another_process() -> None:
    seeds = [11, 12, 13]
    here = [run_network(generate(RandomDraw(s))).digest() for s in seeds]
    script = ROOT / "bench" / "hunt_lockups.py"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, str(script), "--digest", *map(str, seeds)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=50,
    ).stdout.split()
    assert out == here
