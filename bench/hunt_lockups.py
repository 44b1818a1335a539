#!/usr/bin/env python3
"""Time-boxed lock-up hunt: the generator of ``tests/test_lockup_hunt.py``, run for minutes.

    .venv/bin/python bench/hunt_lockups.py --minutes 30                # the long hunt (seed printed)
    .venv/bin/python bench/hunt_lockups.py --minutes 3 --seed 1000     # from a chosen seed
    .venv/bin/python bench/hunt_lockups.py --minutes 30 --jobs 2       # two processes
    .venv/bin/python bench/hunt_lockups.py --minutes 1 --mutant        # workers that break the rule
    .venv/bin/python bench/hunt_lockups.py --replay 123456             # one network, in full
    .venv/bin/python bench/hunt_lockups.py --spec 'Spec(seed=..., ...)' # a network Hypothesis printed
    .venv/bin/python bench/hunt_lockups.py --digest 11 12 13           # replay fingerprints (tests)

Network number ``n`` of a hunt is ``hunt_model.generate(RandomDraw(seed + n))``, run by
``hunt_model.run_network`` on the in-memory network under ``MockClock`` with Trio's
scheduler seeded from the network (see ``tests/hunt_model.py``), so the seed printed for a
violation replays the very same run in any process (``--replay``). Only how far a
time-boxed run gets depends on the machine.

Each violation is printed when found, with its seed and the command that replays it.
Liveness failures that an open bug the hunt found explains (``hunt_model.KNOWN_BUGS``) are
counted apart and do not fail the hunt unless ``--strict``. At the end: networks per
minute, the facts (full slots, backpressure, crash, ...) as ratios, the outcomes of all
operations; the exit status is 1 if any violation was found.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import pprint
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hunt_model

CHUNK = 10
"""Networks per unit of work handed to a process."""


@dataclass
class Found:
    seed: int
    violations: list[str]
    known: list[str]
    summary: str


@dataclass
class Tally:
    networks: int = 0
    calm: int = 0
    liveness_checked: int = 0
    facts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    found: list[Found] = field(default_factory=list)
    known: list[Found] = field(default_factory=list)
    slowest: tuple[float, int] = (0.0, -1)

    def add(self, other: Tally) -> None:
        self.networks += other.networks
        self.calm += other.calm
        self.liveness_checked += other.liveness_checked
        self.facts.update(other.facts)
        self.outcomes.update(other.outcomes)
        self.steps += other.steps
        self.found += other.found
        self.known += other.known
        self.slowest = max(self.slowest, other.slowest)


def run_chunk(seeds: list[int], mutant: bool, strict: bool) -> Tally:
    tally = Tally()
    for s in seeds:
        try:
            result = hunt_model.run_seed(s, mutant=mutant, strict=strict)
        except hunt_model.Livelock as exc:
            tally.networks += 1
            tally.found.append(Found(s, [str(exc)], [], "livelock"))
            continue
        tally.networks += 1
        tally.calm += result.spec.calm
        tally.liveness_checked += result.liveness_checked
        tally.facts.update(result.facts)
        tally.outcomes.update(result.outcomes)
        tally.steps += result.steps
        tally.slowest = max(tally.slowest, (result.wall, s))
        if result.violations:
            tally.found.append(Found(s, result.violations, result.known, result.summary()))
        elif result.known:
            tally.known.append(Found(s, [], result.known, result.summary()))
    return tally


def _rerun(seed: int, args: argparse.Namespace) -> str:
    flags = (" --mutant" if args.mutant else "") + (" --strict" if args.strict else "")
    return f"python3 bench/hunt_lockups.py --replay {seed}{flags}"


def _report_found(found: Found, args: argparse.Namespace) -> None:
    print(f"\nVIOLATION in network seed {found.seed}: {found.summary}", flush=True)
    for line in found.violations[:12]:
        print(f"    {line}")
    if len(found.violations) > 12:
        print(f"    ... {len(found.violations) - 12} more")
    print(f"    rerun: {_rerun(found.seed, args)}", flush=True)


def hunt(args: argparse.Namespace) -> int:
    start_seed = args.seed if args.seed is not None else int(time.time())
    mode = "mutant " if args.mutant else ""
    print(
        f"lock-up hunt: {mode}networks from seed {start_seed}, {args.minutes} min, {args.jobs} process(es),"
        f" generator v{hunt_model.GENERATOR_VERSION}",
        flush=True,
    )
    began = time.monotonic()
    stop_at = began + args.minutes * 60
    total = Tally()
    next_seed = start_seed
    last_progress = began

    def chunk() -> list[int]:
        nonlocal next_seed
        seeds = list(range(next_seed, next_seed + CHUNK))
        next_seed += CHUNK
        return seeds

    def absorb(tally: Tally) -> None:
        nonlocal last_progress
        for found in tally.found:
            _report_found(found, args)
        total.add(tally)
        now = time.monotonic()
        if now - last_progress >= 60:
            last_progress = now
            rate = total.networks / ((now - began) / 60)
            print(
                f"  {(now - began) / 60:5.1f} min: {total.networks} networks ({rate:.0f}/min),"
                f" {len(total.found)} with violations, {len(total.known)} known-bug hits",
                flush=True,
            )

    try:
        if args.jobs == 1:
            while time.monotonic() < stop_at:
                absorb(run_chunk(chunk(), args.mutant, args.strict))
        else:
            _run_pool(args, stop_at, chunk, absorb)
    except KeyboardInterrupt:
        print("\ninterrupted: the figures below are for the networks finished so far", flush=True)
        args.interrupted = True
    elapsed = time.monotonic() - began
    _summary(total, elapsed, start_seed, next_seed, args)
    return 1 if total.found else 0


def _run_pool(
    args: argparse.Namespace, stop_at: float, chunk: Callable[[], list[int]], absorb: Callable[[Tally], None]
) -> None:
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        pending = {pool.submit(run_chunk, chunk(), args.mutant, args.strict) for _ in range(2 * args.jobs)}
        while pending:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                absorb(future.result())
                if time.monotonic() < stop_at:
                    pending.add(pool.submit(run_chunk, chunk(), args.mutant, args.strict))


def _summary(total: Tally, elapsed: float, first: int, end: int, args: argparse.Namespace) -> None:
    n = max(total.networks, 1)
    rate = total.networks / (elapsed / 60)
    print(f"\n{total.networks} networks in {elapsed / 60:.2f} min: {rate:.0f} networks/min")
    partly = " (interrupted: the last chunks only in part)" if getattr(args, "interrupted", False) else ""
    print(f"  seeds {first}..{end - 1}{partly}")
    print(f"  calm {total.calm / n:.0%}, liveness checked {total.liveness_checked / n:.0%}")
    facts = ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(total.facts.items()))
    print(f"  facts: {facts}")
    ops = sum(total.outcomes.values())
    outcomes = ", ".join(f"{k} {v}" for k, v in total.outcomes.most_common())
    print(f"  {ops} operations: {outcomes}")
    slowest, slowest_seed = total.slowest
    print(f"  {total.steps / n:.0f} task steps per network; slowest {slowest:.2f}s (seed {slowest_seed})")
    if total.known:
        print(f"  known-bug hits (liveness failures an open bug explains, see --strict): {len(total.known)}")
        for bug in hunt_model.KNOWN_BUGS:
            hits = [f.seed for f in total.known if any(line.startswith(bug) for line in f.known)]
            if hits:
                more = f" (+{len(hits) - 8})" if len(hits) > 8 else ""
                print(f"    {bug}: {len(hits)} networks, seeds {', '.join(map(str, hits[:8]))}{more}")
    if total.found:
        seeds = ", ".join(str(f.seed) for f in total.found)
        print(f"  {len(total.found)} network(s) with violations: seeds {seeds}")
        print(f"  replay one: {_rerun(total.found[0].seed, args)}")
    else:
        print("  no violations")


def show(result: hunt_model.Result) -> int:
    pprint.pprint(result.spec, width=120, sort_dicts=False)
    print()
    for rec in sorted(result.ops.values(), key=lambda r: r.op_id):
        detail = f"  {rec.detail[:100]}" if rec.detail else ""
        print(
            f"op {rec.op_id:3d} {rec.kind:13s} {rec.start:9.6f} -> {rec.end:9.6f} (deadline {rec.bound:9.6f})"
            f" {rec.outcome}{detail}"
        )
    figures = "in_flight, queued, slots_in_use, undelivered, requests_pending"
    print(f"\nquiet at t={result.quiet_at:.6f}; final figures ({figures}):")
    for name, values in sorted(result.final_stats.items()):
        print(f"  {name}: {values}")
    print(f"facts: {sorted(result.facts)}; liveness checked: {result.liveness_checked}")
    print(f"digest {result.digest()}")
    for line in result.known:
        print(f"known bug: {line}")
    if result.violations:
        print(f"\n{len(result.violations)} violation(s):")
        for line in result.violations:
            print(f"  {line}")
        return 1
    print("no violations")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="time box (default 1)")
    parser.add_argument("--seed", type=int, help="first network seed (default: the current time)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--mutant", action="store_true", help="workers break the rule (the search must find it)"
    )
    parser.add_argument("--strict", action="store_true", help="count liveness failures of known bugs too")
    parser.add_argument("--replay", type=int, metavar="SEED", help="run one network and show everything")
    parser.add_argument("--spec", metavar="TEXT", help="run a Spec(...) as Hypothesis printed it")
    parser.add_argument("--digest", type=int, nargs="+", metavar="SEED", help="print each network's digest")
    args = parser.parse_args()
    if args.digest:
        print(" ".join(hunt_model.run_seed(s, mutant=args.mutant).digest() for s in args.digest))
        return 0
    if args.replay is not None:
        return show(hunt_model.run_seed(args.replay, mutant=args.mutant, strict=args.strict))
    if args.spec:
        spec = eval(args.spec, vars(hunt_model))  # a repr this project printed
        return show(hunt_model.run_network(spec, strict=args.strict))
    if args.jobs < 1 or args.minutes <= 0:
        parser.error("--jobs must be >= 1 and --minutes > 0")
    return hunt(args)


if __name__ == "__main__":
    sys.exit(main())
