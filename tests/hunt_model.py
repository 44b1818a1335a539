"""The lock-up hunt's model: generated networks of producers, routers and workers, run in memory.

One generator (``generate``) draws a whole network description (a ``Spec``: nodes and roles,
links, the producers' scripts, what each worker does with each message, faults) from a
``Draw``: ``HypothesisDraw`` in the tests (so Hypothesis can shrink a failing network) and
``RandomDraw`` in ``bench/hunt_lockups.py`` and the mutation search (a seed names a network).
``run_network(spec)`` runs it on a ``MemoryNetwork`` under ``MockClock(autojump_threshold=0)``
and returns a ``Result``: every operation's outcome and timing, what the workers saw, the
statistics of every node after the quiet period, per-network facts and the invariant
violations found.

Determinism: everything a run depends on comes from the spec. Message and node identities
and every node's ``rng`` are derived from ``spec.seed``; Trio's scheduler, which shuffles
each batch of runnable tasks with ``trio._core._run._r``, is put in its deterministic mode
(``_ALLOW_DETERMINISTIC_SCHEDULING``, which Trio's Hypothesis plugin also sets) and seeded
with ``spec.seed`` for the run (its state is restored afterwards). So a seed replays the
same run, also in another process with another ``PYTHONHASHSEED``
(``test_lockup_hunt.py::test_a_seed_replays_the_same_run_in_another_process``).

Invariants (``Result.violations``):

* every send and request ends, by ``start + min(fail_after, config.timeout)``, with success,
  a ``ChirpError`` (``RemoteError`` included), or ``trio.TooSlowError`` from its own
  ``fail_after`` (and only at that deadline); one that has not ended, or a network that
  is not quiet, by a generous virtual cap is a hang; a run that raises (a node crashed) is
  a violation too; a run that exceeds a step or wall-clock budget (``MAX_STEPS``,
  ``MAX_WALL``) is a livelock, which raises ``Livelock`` (it ends a Hypothesis test at once,
  unshrunk, instead of being recorded);
* nothing is delivered twice to an application, nor to a worker it was not meant for, and
  a response is never both returned by ``request()`` and delivered to the application;
* nothing succeeds that was not delivered: a synchronous send's success means its worker's
  handler returned (released with ACK), a request's success means its worker replied and
  the response is that reply, with the request's identity, from the peer it went to;
* after ``2 * timeout`` of quiet (no operation, handler or fault running and no
  application event: operation or handler start and end, ``route()``, a message in a
  producer's inbox, a fault), *before anything is cancelled*, every live node shows
  ``in_flight``, ``queued``, ``slots_in_use``, ``undelivered`` and ``requests_pending`` at 0
  (routers: ``requests_pending`` is left out while ``STRICT_ROUTER_PENDING`` is off) and no
  handler running;
* liveness: a network that follows the rule, with no faults and with slowness well below
  its deadlines (``Spec.eligible_for_liveness``), has 100 % success, except failures an
  open bug the hunt found explains (``KNOWN_BUGS``: ``Result.known``; ``strict=True``
  counts them as violations).

Per-network facts (``Result.facts``) for the coverage the tests assert: ``full slots`` (a
connection with all its slots in use while its peer has more for it), ``backpressure``
(the same with bytes arrived and unread: the reader stopped), ``crash``, ``restart``,
``error response``, ``late response delivered``.

The mutation (``generate(..., mutant=True)``) makes workers break the rule: worker nodes
are synchronous (one slot) and answer a request with a synchronous ``send()`` of the
response before releasing it, instead of ``reply()``. ``Spec.sabotage`` plants
application bugs in the model itself, to show the checker sees them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio
import trio.testing

import trio_chirp
from trio_chirp import ChirpError, Config, Message, Router, Workers, open_chirp
from trio_chirp.testing import MemoryNetwork, MemoryStream

__all__ = [
    "Draw",
    "HypothesisDraw",
    "Interrupted",
    "Livelock",
    "RandomDraw",
    "Result",
    "Spec",
    "generate",
    "run_network",
    "run_seed",
]

PORT = 2998
GENERATOR_VERSION = 2
"""Bump when ``generate`` changes, so a printed seed is known to name another network."""

KNOWN_BUGS: tuple[str, ...] = ()
"""Open bugs whose liveness failures the hunt counts apart (``Result.known``; a detector for
each in ``Run.explained_by_known_bug``). None is open. Fixed: a response held its
synchronous producer's only slot until the request's ACK was read, so a frame behind it
blocked that ACK (c5db746; regression test
``test_lockup_hunt.py::test_a_frame_between_response_and_ack_does_not_lock_up``); flows
crossing between two routers (P0 -> R2 -> R4 -> W while P3 -> R4 -> R2 -> W) locked up
until the timeout, each router's response queued behind its own synchronous forward to the
other (fixed by responses overtaking; regression test
``test_lockup_hunt.py::test_requests_crossing_between_two_routers_do_not_lock_up``; its
detector was removed after a strict 30-minute hunt of 25 510 networks, pipelining
included, found no violation)."""

STRICT_ROUTER_PENDING = True
"""Check ``requests_pending`` on router nodes too (every node is checked alike). It was off
while a router expired remembered identities only when it forwarded the next message; a
router now forgets them at their deadline
(``test_lockup_hunt.py::test_router_forgets_identities_by_their_deadline``)."""

T = TypeVar("T")

# --- choice sources -----------------------------------------------------------------------


class Draw(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def chance(self, percent: int) -> bool: ...


class RandomDraw:
    """Choices from a seeded ``random.Random``: a seed names a network."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"hunt:{GENERATOR_VERSION}:{seed}")

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._rng.randrange(len(options))]

    def chance(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent


class HypothesisDraw:
    """Choices from Hypothesis (inside ``st.composite``): shrinks toward the first option,
    the low end, and ``chance() == False`` (no fault, rule followed)."""

    def __init__(self, draw: Any) -> None:
        from hypothesis import strategies as st

        self._draw = draw
        self._st = st

    def integer(self, low: int, high: int) -> int:
        return int(self._draw(self._st.integers(low, high)))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        return self.integer(0, 99) >= 100 - percent


# --- the network description ----------------------------------------------------------------

SABOTAGE = {
    "double delivery": "the first worker's handler counts each delivery twice",
    "unrecorded": "the first worker's handler does its work but does not record it",
    "rogue consumer": "a task on the first worker takes one message and never releases it",
    "stuck handler": "the first worker's handler never returns (no deadline stops it)",
}

PRODUCER, WORKER, ROUTER = "producer", "worker", "router"
REQUEST, SEND, ASYNC_REQUEST = "request", "send", "async_request"
REPLY, RELEASE, RAISE = "reply", "release", "raise"
RULE = {REQUEST: REPLY, ASYNC_REQUEST: REPLY, SEND: RELEASE}
"""What a worker that follows the rule does with each kind of operation."""


@dataclass(frozen=True)
class NodeSpec:
    role: str
    slots: int = 1
    """Workers: ``max_slots`` (synchronous nodes always have 1)."""
    handlers: int = 1
    """Workers: ``Workers(count=...)``."""
    routes: bool = False
    """Routers: True forwards along the path in the payload (``route=``); False to ``msg.destination``."""


@dataclass(frozen=True)
class OpSpec:
    kind: str
    path: tuple[int, ...]
    """Node indices after the producer: routers (0-2), then the worker."""
    deadline: float | None
    """The producer's ``trio.fail_after`` (None: only ``config.timeout``)."""
    size: int
    action: str
    """What the worker does: reply (requests), release, raise."""
    work: float
    """The handler's (virtual) sleep before acting."""
    think: float
    """The producer task's (virtual) sleep before the operation."""


@dataclass(frozen=True)
class TaskSpec:
    producer: int
    ops: tuple[OpSpec, ...]
    burst: bool = False
    """True: all operations start together (each after its own think time), not one after another."""


@dataclass(frozen=True)
class LinkSpec:
    a: int
    b: int
    latency: float
    window: int | None


@dataclass(frozen=True)
class FaultSpec:
    at: float
    kind: str  # cut | partition | crash | latency
    a: int
    b: int
    duration: float | None
    """partition/latency: how long; crash: downtime before the restart (None: stays down)."""


@dataclass(frozen=True)
class Spec:
    seed: int
    timeout: float
    window: int
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    tasks: tuple[TaskSpec, ...]
    faults: tuple[FaultSpec, ...]
    mutant: bool = False
    calm: bool = False
    """Drawn as a calm network (small slowness, no faults, the rule followed)."""
    sabotage: str | None = None
    """A planted application bug, to prove the checker sees it (``SABOTAGE``); never generated."""

    def ip(self, index: int) -> str:
        return f"10.7.0.{index + 1}"

    def ops(self) -> list[tuple[int, int, OpSpec]]:
        """(op id, task index, op) for every operation, ids in task order."""
        out = []
        for t, task in enumerate(self.tasks):
            for op in task.ops:
                out.append((len(out), t, op))
        return out

    def latency(self, a: int, b: int) -> float:
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link.latency
        return 0.0

    def link_window(self, a: int, b: int) -> int:
        for link in self.links:
            if {link.a, link.b} == {a, b} and link.window is not None:
                return link.window
        return self.window

    def op_cost(self, producer: int, op: OpSpec) -> float:
        """A generous bound on an operation's own time when nothing else runs."""
        cost = op.work
        hops = [producer, *op.path]
        for a, b in itertools.pairwise(hops):
            latency, window = self.latency(a, b), self.link_window(a, b)
            frames = math.ceil((op.size + 256) / window) + math.ceil(512 / window)
            cost += (frames + 8) * latency  # connect, handshake, request, response, ACKs
        return cost

    def eligible_for_liveness(self) -> bool:
        """Follows the rule, no faults, and all the work fits in half the tightest deadline.

        The bound is conservative: even if every operation of the network had to wait for
        every other one (one slot, one handler, one in flight per remote), each would end
        within half of its own deadline.
        """
        if self.faults:
            return False
        ops = self.ops()
        if not ops or any(op.action != RULE[op.kind] for _, _, op in ops):
            return False
        limits = [min(self.timeout, op.deadline or math.inf) for _, _, op in ops]
        total = sum(self.op_cost(self.tasks[t].producer, op) for _, t, op in ops)
        return total <= 0.5 * min(limits)


# --- the generator ---------------------------------------------------------------------------


def _more(d: Draw, have: int, low: int, high: int, percent: int) -> bool:
    """Whether a list gets another element: a list is drawn element by element, so that
    Hypothesis shrinks it by dropping elements (and their choices) one at a time."""
    return have < low or (have < high and d.chance(percent))


def generate(d: Draw, *, mutant: bool = False, calm: bool | None = None) -> Spec:
    """Draw one network. ``calm=None`` draws calm (about 25 %) or stormy."""
    seed = d.integer(0, 2**32 - 1)
    if calm is None:
        calm = d.chance(25)
    timeout = d.choice([1.0, 0.5, 2.0])
    window = d.choice([65536, 4096, 512]) if not calm else 65536
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    while _more(d, len(nodes), 2, 6, 80):
        role = (
            [PRODUCER, WORKER][len(nodes)] if len(nodes) < 2 else d.choice([WORKER, PRODUCER, ROUTER, ROUTER])
        )
        if role == WORKER:
            nodes.append(NodeSpec(WORKER, slots=d.choice([1, 2, 1, 3, 1, 4]), handlers=d.integer(1, 3)))
        elif role == ROUTER:
            nodes.append(NodeSpec(ROUTER, routes=d.chance(50)))
        else:
            nodes.append(NodeSpec(PRODUCER))
        b = len(nodes) - 1
        for a in range(b):  # this node's links, drawn with it
            if nodes[a].role == role and role != ROUTER:
                continue  # producers never talk to producers, workers never to workers
            if calm:
                latency = d.choice([0.0, 0.0005, 0.002]) * timeout
                link_window = None
            else:
                latency = d.choice([0.0, 0.002, 0.02, 0.1]) * timeout
                link_window = d.choice([None, None, 256, 2048])
            if latency or link_window:
                links.append(LinkSpec(a, b, latency, link_window))
    workers = [i for i, n in enumerate(nodes) if n.role == WORKER]
    routers = [i for i, n in enumerate(nodes) if n.role == ROUTER]
    producers = [i for i, n in enumerate(nodes) if n.role == PRODUCER]

    tasks: list[TaskSpec] = []
    while _more(d, len(tasks), 2, 10, 70):  # at least two: lock-ups need concurrency
        producer = d.choice(producers)
        burst = d.chance(25)
        ops: list[OpSpec] = []
        while _more(d, len(ops), 1, 6, 65):
            ops.append(_op(d, calm, timeout, workers, routers))
        tasks.append(TaskSpec(producer, tuple(ops), burst=burst))

    faults: list[FaultSpec] = []
    if not calm:
        span = max(sum(op.think for op in task.ops) for task in tasks) + timeout
        targets = workers + routers
        while _more(d, len(faults), 1, 4, 45):  # a stormy network has faults; calm is the simpler
            at = round(d.integer(0, 20) / 20 * span, 6)
            kind = d.choice(["crash", "cut", "partition", "latency", "crash"])
            if kind == "crash":
                victim = d.choice(targets)
                downtime = d.choice([0.1, 0.5, 1.5, None])
                faults.append(
                    FaultSpec(at, kind, victim, victim, None if downtime is None else downtime * timeout)
                )
                continue
            a = d.choice(producers + routers)
            b = d.choice([i for i in workers + routers if i != a])
            duration = d.choice([0.2, 0.6, 1.5]) * timeout
            faults.append(FaultSpec(at, kind, a, b, None if kind == "cut" else duration))
    return Spec(
        seed=seed,
        timeout=timeout,
        window=window,
        nodes=tuple(nodes),
        links=tuple(links),
        tasks=tuple(tasks),
        faults=tuple(sorted(faults, key=lambda f: f.at)),
        mutant=mutant,
        calm=calm,
    )


def _op(d: Draw, calm: bool, timeout: float, workers: list[int], routers: list[int]) -> OpSpec:
    kind = d.choice([REQUEST, SEND, ASYNC_REQUEST, ASYNC_REQUEST, REQUEST, SEND])
    via: list[int] = []
    if routers and d.chance(50):
        via.append(d.choice(routers))
        if len(routers) > 1 and d.chance(30):
            via.append(d.choice([r for r in routers if r != via[0]]))
    path = (*via, d.choice(workers))
    if calm:
        factor = d.choice([None, 1.0, 0.6, 1.5])
        size = d.choice([10, 100, 1000, 4000])
        action = RULE[kind]
        work = d.choice([0.0, 0.002, 0.01]) * timeout
        think = d.choice([0.0, 0.01, 0.05]) * timeout
    else:
        factor = d.choice([None, 1.0, 0.3, 0.6, 1.5, 0.1])
        size = d.choice([10, 100, 1000, 4000, 30000, 100000])
        action = (
            RULE[kind] if d.chance(70) else d.choice([RELEASE, RAISE, REPLY] if kind != SEND else [RAISE])
        )
        work = d.choice([0.0, 0.01, 0.1, 0.4, 0.9, 1.5]) * timeout
        think = d.choice([0.0, 0.02, 0.0, 0.2, 0.6]) * timeout
    return OpSpec(
        kind=kind,
        path=path,
        deadline=None if factor is None else factor * timeout,
        size=size,
        action=action,
        work=work,
        think=think,
    )


# --- what a run records ----------------------------------------------------------------------


@dataclass
class OpRecord:
    op_id: int
    kind: str
    start: float = math.nan
    end: float = math.nan
    bound: float = math.nan
    outcome: str = "not started"
    detail: str = ""


@dataclass
class Result:
    spec: Spec
    ops: dict[int, OpRecord] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    """Liveness failures an open bug explains (``KNOWN_BUGS``), each prefixed with it; not violations."""
    facts: set[str] = field(default_factory=set)
    final_stats: dict[str, tuple[int, ...]] = field(default_factory=dict)
    handled: Counter[int] = field(default_factory=Counter)
    """op id -> handler invocations (all workers, all incarnations)."""
    quiet_at: float = math.nan
    end_time: float = math.nan
    steps: int = 0
    wall: float = 0.0

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.ops.values())

    @property
    def liveness_checked(self) -> bool:
        return self.spec.eligible_for_liveness()

    def digest(self) -> str:
        """What must be identical when the same spec runs again (times to the nanosecond)."""
        parts = [
            repr(sorted((r.op_id, r.outcome, round(r.start, 9), round(r.end, 9)) for r in self.ops.values())),
            repr(sorted(self.final_stats.items())),
            repr(sorted(self.handled.items())),
            repr(sorted(self.facts)),
            repr(round(self.end_time, 9)),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def summary(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"{len(self.ops)} ops ({outcomes}); facts: {', '.join(sorted(self.facts)) or '-'}"


class HandlerFailure(Exception):
    """What a worker told to fail raises."""


class _Activity:
    """Counts running operations and handlers and remembers the last application event."""

    def __init__(self) -> None:
        self.busy = 0
        self.last = 0.0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.busy += 1
        self.last = trio.current_time()
        if self._idle.is_set():
            self._idle = trio.Event()

    def end(self) -> None:
        self.busy -= 1
        self.last = trio.current_time()
        if self.busy == 0:
            self._idle.set()

    def poke(self) -> None:
        self.last = trio.current_time()

    async def quiet(self, span: float) -> None:
        """Return once nothing ran and nothing happened for ``span`` (virtual) seconds."""
        while True:
            await self._idle.wait()
            target = self.last + span
            if self.busy == 0 and trio.current_time() >= target:
                return
            await trio.sleep_until(target)


class _StepCounter(trio.abc.Instrument):
    """Counts task steps; cancels the run when it exceeds a step or wall-clock budget, or takes
    too many steps without virtual time moving (a task spinning at a deadline equal to "now"
    freezes ``MockClock``, whose autojump waits for every task to block): a livelock."""

    def __init__(self, scope: trio.CancelScope, max_steps: int, max_wall: float, max_frozen: int) -> None:
        self.steps = 0
        self.scope = scope
        self.max_steps = max_steps
        self.max_frozen = max_frozen
        self.deadline = time.monotonic() + max_wall
        self.tripped = ""
        self.virtual = -math.inf
        self.frozen = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        now = trio.current_time()
        if now != self.virtual:
            self.virtual = now
            self.frozen = 0
        self.frozen += 1
        if self.steps % 4096 == 0 and not self.tripped:
            if self.steps > self.max_steps:
                self.tripped = f"more than {self.max_steps} task steps"
            elif self.frozen > self.max_frozen:
                self.tripped = f"more than {self.max_frozen} task steps without virtual time moving"
            elif time.monotonic() > self.deadline:
                self.tripped = "wall-clock budget exceeded"
            if self.tripped:
                self.scope.cancel()


# --- running a network -----------------------------------------------------------------------


def _identity(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()[:16]


class _Node:
    """One node of the network: its incarnations (a crash ends one; a restart starts the next)."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        self.spec = run.spec.nodes[index]
        self.ip = run.spec.ip(index)
        self.incarnation = 0
        self.chirp: trio_chirp.Chirp | None = None
        self.workers: Workers | None = None
        self.router: Router | None = None
        self.scope: trio.CancelScope | None = None
        self.up = False

    def config(self) -> Config:
        spec, run = self.spec, self.run
        synchronous = spec.role != WORKER or run.spec.mutant
        return Config(
            port=PORT,
            timeout=run.spec.timeout,
            synchronous=synchronous,
            max_slots=0 if synchronous else spec.slots,
            disable_encryption=True,
            identity=_identity(run.spec.seed, "node", self.index, self.incarnation),
        )

    @property
    def effective_slots(self) -> int:
        return self.config().effective_slots

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        run = self.run
        rng = random.Random(f"{run.spec.seed}:{self.index}:{self.incarnation}")
        with trio.CancelScope() as scope:
            self.scope = scope
            async with (
                open_chirp(self.config(), transport=run.net.host(self.ip), rng=rng) as chirp,
                trio.open_nursery() as nursery,
            ):
                self.chirp = chirp
                if self.spec.role == WORKER:
                    if run.spec.sabotage == "rogue consumer" and self.index == run.first_worker:
                        nursery.start_soon(_rogue_consumer, chirp)
                    self.workers = Workers(chirp, self._handler(chirp), count=self.spec.handlers, grace=0)
                    await nursery.start(self.workers.run)
                elif self.spec.role == ROUTER:
                    self.router = Router(chirp, self._route if self.spec.routes else None)
                    await nursery.start(self.router.run)
                else:
                    nursery.start_soon(self._drain, chirp)
                self.up = True
                task_status.started()
                await trio.sleep_forever()

    def crash(self) -> None:
        self.run.net.crash(self.ip)
        self.up = False
        assert self.scope is not None
        self.scope.cancel()
        self.incarnation += 1

    # --- producers: the application inbox ---
    async def _drain(self, chirp: trio_chirp.Chirp) -> None:
        run = self.run
        async for msg in chirp:
            run.activity.poke()
            run.sample_full_slots()
            op_id = run.identities.get(msg.identity)
            if op_id is not None:
                run.inbox[op_id] += 1
            msg.release()

    # --- routers ---
    def _route(self, msg: Message) -> tuple[str, int] | None:
        run = self.run
        run.activity.poke()
        run.sample_full_slots()
        path = _parse(msg.data)[1]
        here = path.index(self.index)
        return (run.spec.ip(path[here + 1]), PORT)

    # --- workers ---
    def _handler(self, chirp: trio_chirp.Chirp) -> Any:
        run = self.run

        async def handle(msg: Message) -> None:
            op_id, path = _parse(msg.data)
            op = run.op_specs[op_id]
            sabotage = run.spec.sabotage if self.index == run.first_worker else None
            run.handled[op_id] += 2 if sabotage == "double delivery" else 1
            if run.handled[op_id] > 1:
                run.violation(f"op {op_id} delivered to a worker application {run.handled[op_id]} times")
            if path[-1] != self.index:
                run.violation(f"op {op_id} for node {path[-1]} was delivered to node {self.index}")
            run.activity.begin()
            try:
                run.sample_full_slots()
                if op.work:
                    await trio.sleep(op.work)
                if sabotage == "stuck handler":
                    await trio.sleep_forever()
                if op.action == RAISE:
                    raise HandlerFailure(f"op {op_id} told to fail")
                if op.action == REPLY:
                    if sabotage != "unrecorded":
                        run.replied.add(op_id)
                    data = _response(op_id)
                    if run.spec.mutant:  # breaks the rule: a synchronous send while holding the slot
                        response = Message(data, address=msg.address, port=msg.port)
                        response.identity = msg.identity
                        await chirp.send(response)
                    else:
                        await chirp.reply(msg, data)
                run.sample_full_slots()
                if sabotage != "unrecorded":
                    run.released_ok.add(op_id)  # Workers releases with ACK right after we return
            finally:
                run.activity.end()

        return handle


async def _rogue_consumer(chirp: trio_chirp.Chirp) -> None:
    held = await chirp.receive()  # an application bug: taken, and released only when the run ends
    try:
        await trio.sleep_forever()
    finally:
        held.release(ack=False)


def _arrived_unread(end: MemoryStream) -> bool:
    """Bytes ``end`` sent that have arrived at its peer (past the latency) and are not read yet.

    Reads the in-memory stream's pipe (``trio_chirp.testing`` internals: bytes in transit
    under latency are not backpressure, and ``StreamStats`` cannot tell them apart).
    """
    chunks = end._out.chunks
    return bool(chunks) and chunks[0][0] <= trio.current_time()


def _payload(op_id: int, path: tuple[int, ...], size: int) -> bytes:
    head = b"%d|%s|" % (op_id, ",".join(map(str, path)).encode())
    return head + b"." * max(0, size - len(head))


def _parse(data: bytes) -> tuple[int, list[int]]:
    op, path, _ = data.split(b"|", 2)
    return int(op), [int(i) for i in path.split(b",")]


def _response(op_id: int) -> bytes:
    return b"re:%d" % op_id


class _Run:
    def __init__(self, spec: Spec, result: Result, strict: bool) -> None:
        self.spec = spec
        self.strict = strict
        self.result = result
        self.net = MemoryNetwork(window=spec.window)
        for link in spec.links:
            if link.latency:
                self.net.set_latency(spec.ip(link.a), spec.ip(link.b), link.latency)
            if link.window:
                self.net.set_window(spec.ip(link.a), spec.ip(link.b), link.window)
        self.nodes = [_Node(self, i) for i in range(len(spec.nodes))]
        self.first_worker = next(i for i, n in enumerate(spec.nodes) if n.role == WORKER)
        self.activity = _Activity()
        ops = spec.ops()
        self.op_specs = {op_id: op for op_id, _, op in ops}
        self.identities = {_identity(spec.seed, "op", op_id): op_id for op_id, _, _ in ops}
        self.handled = result.handled
        self.replied: set[int] = set()
        self.released_ok: set[int] = set()
        self.returned: set[int] = set()
        self.inbox: Counter[int] = Counter()

    def violation(self, text: str) -> None:
        self.result.violations.append(f"t={trio.current_time():.6f}: {text}")

    def sample_full_slots(self) -> None:
        """Facts 'full slots', 'backpressure' and 'pipelined', sampled at every application event.

        *full slots*: some node has a connection with all ``effective_slots`` in use while
        its peer has more for it: bytes that arrived and are not read (the reader stopped),
        or messages queued for this node. *backpressure*: the first case alone. *pipelined*:
        some node has more than one synchronous message waiting for its ACKs to one remote
        (a trio_chirp peer granted a window above 1).
        """
        facts = self.result.facts
        if "backpressure" in facts and "pipelined" in facts:
            return
        queued = {}
        for sender in self.nodes:
            if sender.up and sender.chirp is not None:
                for remote in sender.chirp.statistics().remotes:
                    if remote.queued:
                        queued[(sender.ip, remote.address)] = remote.queued
                    if remote.in_flight > 1:
                        facts.add("pipelined")
        if "backpressure" in facts:
            return
        for node in self.nodes:
            if not node.up or node.chirp is None:
                continue
            slots = node.effective_slots
            for remote in node.chirp.statistics().remotes:
                if remote.slots_in_use < slots:
                    continue
                if (remote.address, node.ip) in queued:
                    facts.add("full slots")
                for end in self.net.streams(local=remote.address, remote=node.ip):
                    if not end.broken and _arrived_unread(end):
                        facts.update(("full slots", "backpressure"))
                        return

    async def operation(self, producer: _Node, op_id: int, op: OpSpec) -> None:
        spec = self.spec
        chirp = producer.chirp
        assert chirp is not None
        first = op.path[0]
        worker = op.path[-1]
        msg = Message(
            _payload(op_id, op.path, op.size),
            address=spec.ip(first),
            port=PORT,
            destination=(spec.ip(worker), PORT) if len(op.path) > 1 else None,
        )
        msg.identity = _identity(spec.seed, "op", op_id)
        rec = self.result.ops[op_id] = OpRecord(op_id, op.kind)
        rec.start = trio.current_time()
        rec.outcome = "running"
        rec.bound = rec.start + min(spec.timeout, math.inf if op.deadline is None else op.deadline)
        self.activity.begin()
        self.sample_full_slots()
        response: Message | None = None
        try:
            try:
                if op.deadline is None:
                    response = await self._do(chirp, msg, op)
                else:
                    with trio.fail_after(op.deadline):
                        response = await self._do(chirp, msg, op)
                rec.outcome = "ok"
            except trio.TooSlowError:
                rec.outcome = "TooSlowError"
            except ChirpError as exc:
                rec.outcome = type(exc).__name__
                rec.detail = str(exc)
            except Exception as exc:
                rec.outcome = "unexpected"
                rec.detail = repr(exc)
                self.violation(f"op {op_id} ended with an exception no outcome allows: {exc!r}")
        finally:
            rec.end = trio.current_time()
            self.activity.end()
            self.sample_full_slots()
        self._check_op(rec, op, response)

    async def _do(self, chirp: trio_chirp.Chirp, msg: Message, op: OpSpec) -> Message | None:
        if op.kind == SEND:
            await chirp.send(msg)
            return None
        return await chirp.request(msg, synchronous=op.kind == REQUEST)

    def _check_op(self, rec: OpRecord, op: OpSpec, response: Message | None) -> None:
        op_id = rec.op_id
        late = rec.end - rec.bound
        if late > 1e-6:
            self.violation(f"op {op_id} ({op.kind}) ended {late:.6f}s after its deadline: {rec.outcome}")
        if rec.outcome == "TooSlowError":
            if op.deadline is None:
                self.violation(f"op {op_id}: TooSlowError, but the caller set no fail_after")
            elif rec.end - rec.start < op.deadline - 1e-6:
                self.violation(f"op {op_id}: TooSlowError before its own fail_after({op.deadline})")
        if rec.outcome != "ok":
            return
        if op.kind == SEND:
            if op_id not in self.released_ok:
                self.violation(f"op {op_id}: synchronous send succeeded but no worker handled it")
            return
        if op_id not in self.replied:
            self.violation(f"op {op_id}: {op.kind} succeeded but its worker never replied")
        assert response is not None
        self.returned.add(op_id)
        where = (self.spec.ip(op.path[0]), PORT)
        if (response.data, response.identity) != (_response(op_id), _identity(self.spec.seed, "op", op_id)):
            self.violation(f"op {op_id}: request returned a wrong response {response.data[:40]!r}")
        if (response.address, response.port) != where:
            self.violation(f"op {op_id}: response from {response.address}:{response.port}, not from {where}")

    async def task(self, t: int, task: TaskSpec, first_id: int) -> None:
        producer = self.nodes[task.producer]
        if task.burst:
            async with trio.open_nursery() as nursery:
                for i, op in enumerate(task.ops):
                    nursery.start_soon(self._one, producer, first_id + i, op)
            return
        for i, op in enumerate(task.ops):
            await self._one(producer, first_id + i, op)

    async def _one(self, producer: _Node, op_id: int, op: OpSpec) -> None:
        if op.think:
            await trio.sleep(op.think)
        await self.operation(producer, op_id, op)

    async def fault(self, fault: FaultSpec, restart: trio.Nursery) -> None:
        await trio.sleep_until(self.start + fault.at)
        spec, net = self.spec, self.net
        a, b = spec.ip(fault.a), spec.ip(fault.b)
        self.activity.begin()
        try:
            if fault.kind == "cut":
                net.cut(a, b)
            elif fault.kind == "partition":
                net.partition(a, b)
                assert fault.duration is not None
                await trio.sleep(fault.duration)
                net.heal(a, b)
            elif fault.kind == "latency":
                assert fault.duration is not None
                net.set_latency(a, b, spec.timeout * 0.3)
                await trio.sleep(fault.duration)
                net.set_latency(a, b, spec.latency(fault.a, fault.b))
            else:
                node = self.nodes[fault.a]
                if not node.up:
                    return
                node.crash()
                self.result.facts.add("crash")
                if fault.duration is not None:
                    await trio.sleep(fault.duration)
                    await restart.start(node.serve)
                    self.result.facts.add("restart")
        finally:
            self.activity.end()

    def check_quiet(self) -> None:
        """The leak check, after the quiet period and before anything is cancelled."""
        for node in self.nodes:
            if not node.up or node.chirp is None:
                continue
            stats = node.chirp.statistics()
            pending = stats.requests_pending
            if node.spec.role == ROUTER and not STRICT_ROUTER_PENDING:
                pending = 0  # see STRICT_ROUTER_PENDING
            values = (stats.in_flight, stats.queued, stats.slots_in_use, stats.undelivered, pending)
            self.result.final_stats[f"node {node.index} ({node.spec.role}#{node.incarnation})"] = values
            if any(values):
                names = ("in_flight", "queued", "slots_in_use", "undelivered", "requests_pending")
                leak = ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True) if v)
                self.violation(
                    f"node {node.index} ({node.spec.role}) after {2 * self.spec.timeout}s of quiet: {leak}"
                )
            if node.workers is not None and node.workers.statistics().running:
                self.violation(f"node {node.index}: handlers still running after the quiet period")
            if stats.slots_peak > node.effective_slots:
                self.violation(f"node {node.index}: slots_peak {stats.slots_peak} > {node.effective_slots}")

    def check_end(self) -> None:
        for op_id, count in self.inbox.items():
            if op_id in self.returned:
                self.violation(f"op {op_id}: its response was returned and also delivered to the application")
            elif count > 1:
                self.violation(f"op {op_id}: its response reached the application {count} times")
        if self.spec.eligible_for_liveness():
            failed = [r for r in self.result.ops.values() if r.outcome != "ok"]
            for rec in failed:
                text = (
                    f"liveness: op {rec.op_id} ({rec.kind}) in a network that follows the rule, without"
                    f" faults: {rec.outcome} after {rec.end - rec.start:.6f}s {rec.detail[:120]}"
                )
                known = None if self.strict else self.explained_by_known_bug(rec)
                if known is None:
                    self.violation(text)
                else:
                    self.result.known.append(f"{known}: {text}")
        if self.inbox:
            self.result.facts.add("late response delivered")
        if any(r.outcome == "RemoteError" for r in self.result.ops.values()):
            self.result.facts.add("error response")

    def hops(self, producer: int, op: OpSpec) -> list[int]:
        """The nodes an operation's message really passes (a router without ``route=`` sends
        it straight to the destination, the worker)."""
        hops = [producer]
        for index in op.path:
            hops.append(index)
            if self.spec.nodes[index].role == ROUTER and not self.spec.nodes[index].routes:
                hops.append(op.path[-1])
                break
        return hops

    def explained_by_known_bug(self, failed: OpRecord) -> str | None:
        """Which open bug (``KNOWN_BUGS``) can explain this liveness failure, if any.

        None is open, so none does. When the hunt finds a bug that is not fixed at once, it
        gets a name in ``KNOWN_BUGS`` and a detector here that recognises its failures from
        the records (the crossing-routers detector, removed when that bug was fixed, is in
        the history of this file), so a long hunt counts them apart instead of stopping.
        """
        del failed
        return None

    def cap(self) -> float:
        """Virtual time by which a correct run is certainly done and quiet."""
        spec = self.spec
        longest = max(sum(op.think + 2 * spec.timeout + op.work for op in task.ops) for task in spec.tasks)
        faults = max((f.at + (f.duration or 0) for f in spec.faults), default=0.0)
        return max(longest, faults) + 12 * spec.timeout

    async def main(self) -> None:
        spec = self.spec
        self.start = trio.current_time()
        async with trio.open_nursery() as root:
            for node in self.nodes:
                await root.start(node.serve)
            guard = trio.CancelScope()  # no deadline: it must not change what operations see

            async def watchdog() -> None:
                await trio.sleep_until(self.start + self.cap())
                guard.cancel()

            root.start_soon(watchdog)
            with guard:
                async with trio.open_nursery() as work:
                    first = 0
                    for t, task in enumerate(spec.tasks):
                        work.start_soon(self.task, t, task, first)
                        first += len(task.ops)
                    for fault in spec.faults:
                        work.start_soon(self.fault, fault, root)
                await self.activity.quiet(2 * spec.timeout)
                self.result.quiet_at = trio.current_time() - self.start
                self.check_quiet()
            if guard.cancelled_caught:
                running = [r.op_id for r in self.result.ops.values() if r.outcome == "running"]
                self.violation(
                    f"hang: not finished and quiet by t={self.cap():.3f}s"
                    f" (operations still running: {running}, busy={self.activity.busy})"
                )
            self.check_end()
            self.result.end_time = trio.current_time() - self.start
            root.cancel_scope.cancel()


MAX_STEPS = 1_000_000
"""Task steps one network may take (the largest of 50 seeded networks takes about 3,200)."""
MAX_FROZEN = 40_000
"""Task steps one network may take at one virtual instant (a whole network takes far fewer)."""
MAX_WALL = 15.0
"""Seconds of real time one network may take (they take well under one): far inside pytest's
timeout, so a livelocking network fails its test long before the test's timeout would."""


class Livelock(BaseException):
    """A network that exceeded its step or wall-clock budget: it spins without time passing.

    A ``BaseException`` on purpose: Hypothesis treats ``Exception`` (and pytest's ``Failed``)
    as a finding to shrink, rerunning network after network each up to its budget, so a test
    would run on far past its timeout; this one ends the test at once, the network named."""


class Interrupted(BaseException):
    """The run was stopped from outside the model: pytest-timeout's failure, ``SystemExit``.
    Never a violation to record (the old ``except BaseException`` swallowed the timeout and
    Hypothesis went on); a ``BaseException`` that Hypothesis does not catch either."""


class _SwallowedByInstrument(logging.Handler):
    """Trio removes an instrument whose hook raises and only logs the error: a signal
    handler's exception (pytest-timeout's failure, Ctrl-C) that lands while the step
    counter runs would be swallowed, and a run without budgets would go on for ever. This
    catches that log record, keeps the exception and cancels the run, so ``run_network``
    raises it on like any other interruption."""

    def __init__(self, scope: trio.CancelScope) -> None:
        super().__init__()
        self.scope = scope
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None and record.exc_info[1] is not None and self.error is None:
            self.error = record.exc_info[1]
            self.scope.cancel()


def _from_outside(exc: BaseException) -> BaseException | None:
    """The first exception in ``exc`` (its group members, and the cause of a
    ``TrioInternalError``: a signal handler that raised inside Trio's run loop) that is not an
    ``Exception``: something outside the model stopped the run."""
    if isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            found = _from_outside(member)
            if found is not None:
                return found
        return None
    if not isinstance(exc, Exception):
        return exc
    if isinstance(exc, trio.TrioInternalError) and exc.__cause__ is not None:
        return _from_outside(exc.__cause__)
    return None


def run_network(
    spec: Spec,
    *,
    strict: bool = False,
    max_steps: int = MAX_STEPS,
    max_wall: float = MAX_WALL,
    max_frozen: int = MAX_FROZEN,
) -> Result:
    """Run ``spec`` deterministically (see the module docstring) and check its invariants.

    ``strict``: a liveness failure is a violation even where an open bug explains it.
    Raises ``Livelock`` when the run exceeds ``max_steps`` task steps, ``max_frozen`` steps at
    one virtual instant or ``max_wall`` seconds,
    ``KeyboardInterrupt`` as such, and ``Interrupted`` for any other exception that is not an
    ``Exception`` (pytest-timeout's failure): those are never recorded as violations.
    """
    result = Result(spec)
    run = _Run(spec, result, strict)
    core = trio._core._run
    saved_state = core._r.getstate()
    saved_flag = core._ALLOW_DETERMINISTIC_SCHEDULING
    logger = logging.getLogger("trio_chirp")
    saved_level = logger.level
    outer = trio.CancelScope()
    counter = _StepCounter(outer, max_steps, max_wall, max_frozen)
    swallowed = _SwallowedByInstrument(outer)
    instrument_log = logging.getLogger("trio.abc.Instrument")
    instrument_log.addHandler(swallowed)
    started = time.monotonic()
    try:
        core._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
        core._r.seed(spec.seed)
        logger.setLevel(logging.CRITICAL)  # failures are the workload here; they are counted, not logged

        async def body() -> None:
            with outer:
                await run.main()

        try:
            trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[counter])
            if swallowed.error is not None:
                raise swallowed.error
        except BaseException as exc:
            outside = _from_outside(exc)
            if isinstance(outside, KeyboardInterrupt):  # Ctrl-C, also inside a task
                raise outside from (None if outside is exc else exc)
            if outside is not None:
                raise Interrupted(f"network run stopped by {outside!r}; the network: {spec!r}") from exc
            trace = "".join(traceback.format_exception(exc))  # a node crashed (a bug) or the model did
            result.violations.append(f"the run raised {exc!r}:\n{trace}")
    finally:
        instrument_log.removeHandler(swallowed)
        core._r.setstate(saved_state)
        core._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        logger.setLevel(saved_level)
    result.steps = counter.steps
    result.wall = time.monotonic() - started
    if counter.tripped:
        raise Livelock(
            f"livelock: run stopped after {result.wall:.1f}s at virtual t={counter.virtual:.6f}s:"
            f" {counter.tripped}; the network: {spec!r}"
        )
    return result


def run_seed(seed: int, *, mutant: bool = False, calm: bool | None = None, strict: bool = False) -> Result:
    """The network a seed names (``RandomDraw``), run."""
    return run_network(generate(RandomDraw(seed), mutant=mutant, calm=calm), strict=strict)
