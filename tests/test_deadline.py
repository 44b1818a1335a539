"""``_deadline.effective_deadline`` agrees with ``trio.current_effective_deadline`` everywhere.

It reads Trio's internals to save a recursive walk per send (``trio_chirp/_deadline.py``);
these tests compare it with Trio's public function in every kind of nesting, so a Trio
release that changes those internals fails here instead of changing which deadline travels.
"""

# ruff: noqa: ASYNC100
# Scopes are entered to read their deadlines inside, with nothing awaited: on purpose.

from __future__ import annotations

import math

import trio
import trio.testing

from trio_chirp import _deadline
from trio_chirp._deadline import effective_deadline


def same() -> float:
    """Both answers, checked equal; the value for further assertions."""
    ours, trios = effective_deadline(), trio.current_effective_deadline()
    assert ours == trios
    return ours


def test_the_fast_walk_is_in_use_with_this_trio() -> None:
    # If this fails, Trio changed the internals _deadline reads: the fallback (Trio's own
    # function) keeps sends correct; update _walk and _internals_present for the new Trio.
    assert _deadline.FAST
    assert effective_deadline is _deadline._walk


async def test_no_deadline_is_inf() -> None:
    assert same() == math.inf


async def test_nested_scopes_give_the_soonest(autojump_clock: trio.abc.Clock) -> None:
    now = trio.current_time()
    with trio.move_on_at(now + 10):
        assert same() == now + 10
        with trio.CancelScope():
            with trio.move_on_at(now + 5):
                assert same() == now + 5
                with trio.move_on_at(now + 20):
                    assert same() == now + 5
            assert same() == now + 10
    assert same() == math.inf


async def test_a_shield_hides_the_deadlines_outside_it(autojump_clock: trio.abc.Clock) -> None:
    now = trio.current_time()
    with trio.move_on_at(now + 1):
        with trio.CancelScope(shield=True):
            assert same() == math.inf
            with trio.move_on_at(now + 3):
                assert same() == now + 3
        with trio.CancelScope(shield=True, deadline=now + 2):
            assert same() == now + 2  # a shielded scope's own deadline counts
        with trio.CancelScope() as scope:
            scope.shield = True  # shielded after entering
            assert same() == math.inf
            scope.shield = False
            assert same() == now + 1


async def test_a_deadline_moved_after_entering_counts_at_once(autojump_clock: trio.abc.Clock) -> None:
    now = trio.current_time()
    with trio.CancelScope() as outer:
        assert same() == math.inf
        with trio.CancelScope():
            outer.deadline = now + 7
            assert same() == now + 7
            outer.deadline = math.inf
            assert same() == math.inf
            outer.relative_deadline = 3
            assert same() == now + 3


async def test_relative_deadlines_count_from_entering(autojump_clock: trio.abc.Clock) -> None:
    scope = trio.CancelScope(relative_deadline=4)
    await trio.sleep(1)
    with scope:
        assert same() == trio.current_time() + 4


async def test_a_cancelled_scope_is_minus_inf_unless_shielded() -> None:
    with trio.CancelScope() as outer:
        outer.cancel()
        assert same() == -math.inf
        with trio.CancelScope():
            assert same() == -math.inf
        with trio.CancelScope(shield=True):
            assert same() == math.inf
            with trio.CancelScope() as inner:
                inner.cancel()
                assert same() == -math.inf


async def test_tasks_see_the_scopes_of_the_nurseries_they_run_in(autojump_clock: trio.abc.Clock) -> None:
    now = trio.current_time()
    seen: list[float] = []

    async def child(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        seen.append(same())
        task_status.started()
        with trio.move_on_at(now + 2):
            seen.append(same())

    with trio.move_on_at(now + 9):
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = now + 6
            nursery.start_soon(child)
            await nursery.start(child)
            with trio.move_on_at(now + 1):
                seen.append(same())
    assert sorted(seen) == [now + 1, now + 2, now + 2, now + 6, now + 6]
