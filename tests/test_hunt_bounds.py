"""A livelocking network fails its test promptly, and no test swallows its own timeout.

The bug these pin: ``hunt_model.run_network`` caught ``BaseException``, which includes
pytest-timeout's failure, and recorded it as a violation; Hypothesis then shrank and reran
networks, each bounded only by a 120 s wall-clock budget, far past the test's timeout. The
livelock planted here is the one that was seen: a router's expiry task spinning with
checkpoints at a deadline equal to "now", which freezes ``MockClock`` (it jumps only when
every task is blocked).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from hunt_model import MAX_WALL, ROUTER, Livelock, RandomDraw, Spec, generate, run_network
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from trio_chirp import Router

TESTS = Path(__file__).resolve().parent


async def _spin_at_now(self: Router) -> None:
    """The planted bug: an expiry loop whose deadline is always "now"."""
    while True:
        await trio.lowlevel.checkpoint()


def _has_router(spec: Spec) -> bool:
    return any(n.role == ROUTER for n in spec.nodes)


def test_a_network_spinning_at_one_instant_ends_its_hypothesis_test_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first livelocking network raises ``Livelock``: no shrinking, no further network."""
    monkeypatch.setattr(Router, "_expire", _spin_at_now)
    runs: list[Spec] = []

    @settings(max_examples=50, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(16)
    @given(st.integers(0, 10_000).map(lambda s: generate(RandomDraw(s))).filter(_has_router))
    def hunt(spec: Spec) -> None:
        runs.append(spec)
        run_network(spec)

    started = time.monotonic()
    with pytest.raises(Livelock, match="without virtual time moving") as caught:
        hunt()
    elapsed = time.monotonic() - started
    assert len(runs) == 1  # Hypothesis neither shrank nor went on
    assert repr(runs[0]) in str(caught.value)  # the network is named, to replay it
    assert elapsed < MAX_WALL / 2  # the frozen-clock bound, not the wall-clock one, stopped it


def test_the_same_network_without_the_planted_bug_runs_within_its_bounds() -> None:
    """The bound is not what fails: the network from above, unplanted, passes."""
    spec = next(s for s in (generate(RandomDraw(i)) for i in range(100)) if _has_router(s))
    result = run_network(spec)
    assert not result.violations, result.violations
    assert 0 < result.steps < 40_000


INNER = """
import sys
sys.path.insert(0, {tests!r})
import pytest, trio
from hypothesis import HealthCheck, given, settings, strategies as st
from hunt_model import ROUTER, RandomDraw, generate, run_network
from trio_chirp import Router

async def spin(self):
    while True:
        await trio.lowlevel.checkpoint()

RUNS = []

# Drawn at import, outside the 2 s the test has: on a loaded machine the drawing alone
# could take that long, and the timeout would then hit it instead of the network run.
SPEC = next(
    s for s in (generate(RandomDraw(i)) for i in range(100)) if any(n.role == ROUTER for n in s.nodes)
)

@pytest.mark.timeout(2)
def test_livelock_with_no_budget_of_its_own(monkeypatch):
    monkeypatch.setattr(Router, "_expire", spin)
    spec = SPEC

    @settings(max_examples=20, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.just(spec))
    def hunt(spec):
        RUNS.append(1)
        # no budget: only the test's timeout can stop this run
        run_network(spec, max_steps=10**15, max_wall=1e9, max_frozen=10**15)

    hunt()

def test_runs_once():
    assert len(RUNS) == 1
"""


def test_a_hang_fails_within_the_tests_timeout_and_hypothesis_does_not_go_on(
    pytester: pytest.Pytester,
) -> None:
    """With every budget of the network switched off, pytest-timeout's failure ends the test:
    ``run_network`` does not record it as a violation (which Hypothesis would shrink, rerunning
    the hang for ever) but raises it on as ``Interrupted``. An inner run in a subprocess,
    itself bounded, so a regression fails here instead of hanging this suite."""
    pytester.makepyfile(test_inner=INNER.format(tests=str(TESTS)))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-p", "no:randomly", timeout=45)
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=1, passed=1)
    text = result.stdout.str()
    assert "hunt_model.Interrupted: network run stopped by Timeout (>2.0s) from pytest-timeout" in text, text
    assert elapsed < 30, f"the inner run took {elapsed:.1f}s for a 2 s timeout"
