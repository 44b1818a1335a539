"""A connection's receive slots (``_slots.SlotPool``) driven directly, under MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chirp import ConnectionLostError
from trio_chirp._inbox import Budget
from trio_chirp._slots import PROBE_INTERVAL, SlotPool


def pool(size: int = 2, max_count: int = 10) -> tuple[SlotPool, Budget]:
    budget = Budget(max_count=max_count, max_bytes=1000, connections=1, max_msg_size=100)
    return SlotPool(size, budget), budget


def test_slots_count_in_the_pool_and_the_budget_and_keep_their_peak() -> None:
    slots, budget = pool(size=2)
    assert (slots.in_use, slots.peak) == (0, 0)
    assert slots.try_take(10)
    assert slots.try_take(20)
    assert not slots.try_take(1)  # the pool's size
    assert (slots.in_use, slots.peak, budget.count, budget.size) == (2, 2, 2, 30)
    slots.release(20)
    assert (slots.in_use, slots.peak, budget.count, budget.size) == (1, 2, 1, 10)
    slots.release(10)
    assert (slots.in_use, slots.peak, budget.count, budget.size) == (0, 2, 0, 0)


async def test_acquire_waits_for_a_release_then_takes_the_slot(autojump_clock: trio.abc.Clock) -> None:
    slots, budget = pool(size=1)
    await slots.acquire(10, None)
    taken = trio.Event()

    async def second() -> None:
        await slots.acquire(5, None)
        taken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.sleep(100)  # no probe without is_broken: it just waits
        assert not taken.is_set()
        slots.release(10)
        await taken.wait()
    assert (slots.in_use, slots.peak, budget.count, budget.size) == (1, 1, 1, 5)


async def test_a_waiting_reader_probes_its_stream_every_probe_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert PROBE_INTERVAL == 1.0
    slots, _ = pool(size=1)
    await slots.acquire(10, None)
    probes: list[float] = []
    start = trio.current_time()

    def is_broken() -> bool:
        probes.append(trio.current_time() - start)
        return len(probes) == 3

    with pytest.raises(ConnectionLostError, match="reset the connection"):
        await slots.acquire(10, is_broken)
    assert probes == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0)]
    assert slots.in_use == 1


def test_the_readers_fast_take_follows_the_same_rules_as_acquire() -> None:
    # try_take() writes out _can_take() and _take() (acquire's rules) for speed: every
    # state near the limits must get the same answer and leave the same counts.
    for size in (1, 2, 3):
        for in_use in range(size + 1):
            for count in (0, 3, 4, 5, 6):
                for used in (0, 500, 900, 1000, 1100):
                    for cost in (0, 1, 100):
                        budget = Budget(max_count=5, max_bytes=1000, connections=1, max_msg_size=100)
                        slots = SlotPool(size, budget)
                        slots.in_use, budget.count, budget.size = in_use, count, used
                        expected = slots._can_take(cost)
                        assert slots.try_take(cost) is expected
                        grown = int(expected)
                        assert (slots.in_use, budget.count, budget.size) == (
                            in_use + grown,
                            count + grown,
                            used + cost * grown,
                        )
                        assert slots.peak == (in_use + 1 if expected else 0)
