"""Edges of admission (``_limits``) and of the budget and inbox (``_inbox``) that the mutation
run showed unpinned: the shedding threshold at exactly one connection more, the oldest idle
connection first, outgoing handshakes not counted, limits of zero, "over" by either limit
alone, and the wake-ups of readers and of ``receive()``.
"""

from __future__ import annotations

import trio
import trio.testing
from test_unit_admission_inbox import NOW, Conn, _msg

from trio_chirp._inbox import LEFTOVERS, Budget, Inbox
from trio_chirp._limits import IDLE_SHED_AFTER, Admission

# --- admission ---------------------------------------------------------------------------------


def test_idle_shed_after_is_one_second() -> None:
    assert IDLE_SHED_AFTER == 1.0


def test_the_heaviest_address_is_shed_from_two_more_than_the_newcomer_holds() -> None:
    busy = {"busy": True, "last_activity": NOW}
    admission = Admission(max_connections=4, max_handshakes=10)
    newcomer = "10.0.0.2"
    equal_plus_one = [Conn("10.0.0.1", **busy), Conn("10.0.0.1", **busy), Conn(newcomer, **busy)]
    equal_plus_one.append(Conn("10.0.0.3", **busy))
    # 10.0.0.1 holds 2, the newcomer 1: not more than one more, and nobody is idle: refused.
    assert not admission.admit(equal_plus_one, newcomer, incoming=True, now=NOW)
    assert (admission.refused, admission.shed) == (1, 0)
    heavier = [Conn("10.0.0.1", **busy) for _ in range(3)] + [Conn(newcomer, **busy)]
    assert admission.admit(heavier, newcomer, incoming=True, now=NOW)  # 3 > 1 + 1
    assert [c.closed for c in heavier].count(True) == 1
    assert heavier[3].closed is False
    assert (admission.refused, admission.shed) == (1, 1)


def test_among_idle_connections_the_longest_idle_goes() -> None:
    admission = Admission(max_connections=3, max_handshakes=10)
    recent = Conn("10.0.0.1", last_activity=NOW - 5)
    oldest = Conn("10.0.0.2", last_activity=NOW - 50)
    middle = Conn("10.0.0.3", last_activity=NOW - 20)
    assert admission.admit([recent, oldest, middle], "10.0.0.4", incoming=False, now=NOW)
    assert [recent.closed, oldest.closed, middle.closed] == [False, True, False]


def test_outgoing_handshakes_do_not_fill_the_handshake_limit() -> None:
    admission = Admission(max_connections=100, max_handshakes=1)
    dialled = Conn("10.0.0.9", in_handshake=True, outgoing=True)
    working = Conn("10.0.0.8", outgoing=False, busy=True)
    assert admission.admit([dialled, working], "10.0.0.1", incoming=True, now=NOW)
    assert (admission.refused, admission.shed) == (0, 0)
    accepted = Conn("10.0.0.7", in_handshake=True, busy=True)
    # Now one accepted connection is in its handshake: the limit is reached, nobody to shed.
    assert not admission.admit([dialled, working, accepted], "10.0.0.1", incoming=True, now=NOW)
    assert (admission.refused, admission.shed) == (1, 0)
    assert not accepted.closed


def test_limits_of_zero_refuse_everyone() -> None:
    no_connections = Admission(max_connections=0, max_handshakes=10)
    assert not no_connections.admit([], "10.0.0.1", incoming=False, now=NOW)
    assert no_connections.refused == 1
    no_handshakes = Admission(max_connections=10, max_handshakes=0)
    assert not no_handshakes.admit([], "10.0.0.1", incoming=True, now=NOW)
    assert no_handshakes.admit([], "10.0.0.1", incoming=False, now=NOW)  # a dial has no handshake here
    assert (no_handshakes.refused, no_handshakes.shed) == (1, 0)
    assert not Admission(10, 10).shed_one([], NOW, "no file descriptor left")


# --- the budget --------------------------------------------------------------------------------


def test_over_by_count_alone_and_by_bytes_alone() -> None:
    by_count = Budget(max_count=1, max_bytes=100, connections=2, max_msg_size=10)
    by_count.take(1)
    assert not by_count.over
    by_count.take(1)
    assert by_count.over  # 2 messages > 1, 2 bytes <= 100
    by_bytes = Budget(max_count=10, max_bytes=100, connections=2, max_msg_size=10)
    by_bytes.take(100)
    assert not by_bytes.over
    by_bytes.take(1)
    assert by_bytes.over  # 2 messages <= 10, 101 bytes > 100
    assert (by_bytes.first_max_count, by_bytes.first_max_bytes) == (12, 120)


async def test_giving_room_back_wakes_every_waiting_reader() -> None:
    budget = Budget(max_count=1, max_bytes=100, connections=1, max_msg_size=10)
    budget.take(10)
    woken: list[int] = []

    async def reader(i: int) -> None:
        await budget.wait()
        woken.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(reader, i)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        budget.give(10)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == [0, 1, 2]
    assert (budget.count, budget.size) == (0, 0)


# --- the inbox ---------------------------------------------------------------------------------


def test_a_new_inbox_is_open_and_empty() -> None:
    inbox = Inbox()
    assert not inbox.closed
    assert inbox.leftovers == 0
    assert len(inbox) == 0
    assert repr(LEFTOVERS) == "<leftovers of closed connections>"


async def test_a_put_wakes_one_waiting_receiver_and_close_wakes_them_all() -> None:
    inbox = Inbox()
    woken: list[int] = []

    async def receiver(i: int) -> None:
        await inbox.wait()
        woken.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(receiver, i)
        await trio.testing.wait_all_tasks_blocked()
        inbox.put(object(), _msg("x"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(woken) == 1
        inbox.close()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == [0, 1, 2]


def test_dropping_the_last_leftover_leaves_the_others_served() -> None:
    inbox = Inbox()
    closed, live = object(), object()
    inbox.put(closed, _msg("left"))
    inbox.retire(closed, lambda m: True)
    inbox.put(live, _msg("live"))
    assert len(inbox) == 2
    dropped = inbox.drop_oldest_leftover()
    assert dropped is not None
    assert dropped.data == b"left"
    assert (len(inbox), inbox.leftovers) == (1, 0)
    taken = inbox.take_nowait()
    assert taken is not None
    assert taken.data == b"live"
    assert inbox.take_nowait() is None
    assert len(inbox) == 0


def test_close_forgets_the_leftovers_too() -> None:
    inbox = Inbox()
    inbox.put(LEFTOVERS, _msg("y"))
    assert inbox.leftovers == 1
    assert [m.data for m in inbox.close()] == [b"y"]
    assert inbox.leftovers == 0
    assert inbox.drop_oldest_leftover() is None


async def test_the_waiting_counts_stay_equal_to_the_tasks_parked() -> None:
    # put() and a slot's release test a counter instead of the lot (a Python call): it
    # must follow wakes, cancellations and close exactly, or a waiter would be missed.
    inbox = Inbox()
    budget = Budget(max_count=1, max_bytes=100, connections=1, max_msg_size=10)

    def parked(lot: trio.lowlevel.ParkingLot) -> int:
        return lot.statistics().tasks_waiting

    async with trio.open_nursery() as nursery:
        scopes = [trio.CancelScope() for _ in range(3)]

        async def receiver(scope: trio.CancelScope) -> None:
            with scope:
                await inbox.wait()

        async def reader(scope: trio.CancelScope) -> None:
            with scope:
                await budget.wait()

        for scope in scopes:
            nursery.start_soon(receiver, scope)
        budget_scopes = [trio.CancelScope() for _ in range(2)]
        for scope in budget_scopes:
            nursery.start_soon(reader, scope)
        await trio.testing.wait_all_tasks_blocked()
        assert (inbox.waiting, budget.waiting) == (3, 2)
        inbox.put(object(), _msg("a"))
        inbox.put(object(), _msg("b"))  # before the first woken one ran: wakes another
        assert inbox.waiting == parked(inbox.lot) == 1
        await trio.testing.wait_all_tasks_blocked()
        budget_scopes[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert budget.waiting == parked(budget.lot) == 1
        budget.take(10)
        budget.give(10)
        assert budget.waiting == parked(budget.lot) == 0
        for scope in scopes:
            scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting == parked(inbox.lot) == 0
    inbox.close()
    assert inbox.waiting == 0
