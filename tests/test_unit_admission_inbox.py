"""Unit tests of admission and shedding (``_limits``), and of the inbox and budget (``_inbox``).

Driven directly with fake connections and messages: which connection goes first at the
limits, the budget's edges, round-robin delivery and what a closed connection leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from trio_chirp import Message, ShutdownError
from trio_chirp._errors import ChirpError
from trio_chirp._inbox import LEFTOVERS, Budget, Inbox
from trio_chirp._limits import IDLE_SHED_AFTER, Admission

NOW = 100.0


@dataclass(eq=False)
class Conn:
    peer_address: str
    in_handshake: bool = False
    busy: bool = False
    last_activity: float = NOW
    outgoing: bool = False
    closed: bool = False
    closed_with: list[ChirpError] = field(default_factory=list)

    def holds_nothing(self) -> bool:
        return not self.busy

    def close(self, cause: ChirpError) -> None:
        self.closed = True
        self.closed_with.append(cause)


# --- admission ---------------------------------------------------------------------------------


def test_below_the_limit_everyone_is_admitted() -> None:
    admission = Admission(max_connections=3, max_handshakes=3)
    conns = [Conn("10.0.0.1", busy=True), Conn("10.0.0.2", busy=True)]
    assert admission.admit(conns, "10.0.0.3", incoming=True, now=NOW)
    assert (admission.refused, admission.shed) == (0, 0)
    assert not any(c.closed for c in conns)


def test_at_the_limit_the_heaviest_address_sheds_its_handshake_first() -> None:
    admission = Admission(max_connections=4, max_handshakes=10)
    working = Conn("10.0.0.1", busy=True, last_activity=NOW - 50)
    idle = Conn("10.0.0.1", last_activity=NOW - 40)
    pending = Conn("10.0.0.1", in_handshake=True, last_activity=NOW)
    other = Conn("10.0.0.2", busy=True)
    conns = [working, idle, pending, other]
    assert admission.admit(conns, "10.0.0.3", incoming=True, now=NOW)
    assert [c.closed for c in conns] == [False, False, True, False]
    assert isinstance(pending.closed_with[0], ShutdownError)
    assert "at the connection limit" in str(pending.closed_with[0])
    assert admission.shed == 1


def test_among_working_connections_of_the_heaviest_the_idle_one_then_the_oldest_goes() -> None:
    admission = Admission(max_connections=4, max_handshakes=10)
    busy_old = Conn("10.0.0.1", busy=True, last_activity=NOW - 90)
    idle_new = Conn("10.0.0.1", last_activity=NOW - 1)
    idle_old = Conn("10.0.0.1", last_activity=NOW - 5)
    other = Conn("10.0.0.2", busy=True)
    assert admission.admit([busy_old, idle_new, idle_old, other], "10.0.0.3", incoming=False, now=NOW)
    assert idle_old.closed
    assert not busy_old.closed
    assert not idle_new.closed


def test_an_address_holding_no_more_than_the_newcomer_would_is_not_shed_for_it() -> None:
    # The heaviest address is the newcomer's own (2 connections): 2 > 2 + 1 fails, nothing idle.
    admission = Admission(max_connections=3, max_handshakes=10)
    conns = [Conn("10.0.0.1", busy=True), Conn("10.0.0.1", busy=True), Conn("10.0.0.2", busy=True)]
    assert not admission.admit(conns, "10.0.0.1", incoming=True, now=NOW)
    assert admission.refused == 1
    assert not any(c.closed for c in conns)


def test_an_idle_connection_of_anyone_goes_only_after_idle_shed_after() -> None:
    admission = Admission(max_connections=2, max_handshakes=10)
    a = Conn("10.0.0.1", last_activity=NOW - IDLE_SHED_AFTER + 0.01)
    b = Conn("10.0.0.2", busy=True, last_activity=NOW - 100)
    assert not admission.admit([a, b], "10.0.0.3", incoming=True, now=NOW)
    assert admission.refused == 1
    a.last_activity = NOW - IDLE_SHED_AFTER
    assert admission.admit([a, b], "10.0.0.3", incoming=True, now=NOW)
    assert a.closed
    assert not b.closed


def test_the_handshake_limit_counts_accepted_connections_still_in_their_handshake_only() -> None:
    admission = Admission(max_connections=100, max_handshakes=2)
    dialled = Conn("10.0.0.9", in_handshake=True, outgoing=True)
    slow = [Conn("10.0.0.1", in_handshake=True, last_activity=NOW - i) for i in range(2)]
    conns = [dialled, *slow]
    assert admission.admit(conns, "10.0.0.1", incoming=False, now=NOW), "a dial is not a handshake"
    assert not any(c.closed for c in conns)
    # An incoming newcomer from another address: 10.0.0.1 holds 2 > 0 + 1, its oldest goes.
    assert admission.admit(conns, "10.0.0.2", incoming=True, now=NOW)
    assert [c.closed for c in slow] == [False, True]
    assert "at the limit of handshakes" in str(slow[1].closed_with[0])
    assert not dialled.closed


def test_closed_connections_do_not_count() -> None:
    admission = Admission(max_connections=1, max_handshakes=1)
    gone = Conn("10.0.0.1", busy=True, closed=True)
    assert admission.admit([gone], "10.0.0.2", incoming=True, now=NOW)
    assert admission.shed == 0


def test_shed_one_frees_the_cheapest_for_a_file_descriptor() -> None:
    admission = Admission(max_connections=10, max_handshakes=10)
    busy = Conn("10.0.0.1", busy=True, last_activity=NOW - 100)
    idle = Conn("10.0.0.2", last_activity=NOW - 2)
    assert admission.shed_one([busy, idle], NOW, "no file descriptor left")
    assert idle.closed
    assert not busy.closed
    assert not admission.shed_one([busy], NOW, "no file descriptor left")


# --- the budget --------------------------------------------------------------------------------


def test_budget_edges_at_exactly_the_count_and_bytes() -> None:
    budget = Budget(max_count=2, max_bytes=100, connections=3, max_msg_size=10)
    assert budget.fits(100)
    assert not budget.fits(101)
    budget.take(60)
    assert budget.fits(40)
    assert not budget.fits(41)
    budget.take(40)
    assert budget.count == 2
    assert budget.size == 100
    assert not budget.fits(0), "the count is at its maximum"
    assert not budget.over, "exactly at both limits is not over"
    # A connection's first slot: the budget plus one max_msg_size message per connection.
    assert budget.fits_first(30)
    assert not budget.fits_first(31)
    budget.take(30)
    assert budget.over
    budget.give(30)
    budget.give(40)
    assert (budget.count, budget.size) == (1, 60)


def test_the_first_slot_is_bounded_by_count_too() -> None:
    budget = Budget(max_count=1, max_bytes=10**6, connections=2, max_msg_size=10)
    for _ in range(3):
        assert budget.fits_first(1)
        budget.take(1)
    assert not budget.fits_first(1), "max_count + connections messages at most"


# --- the inbox ---------------------------------------------------------------------------------


def _msg(tag: str, *, ack: bool = False) -> Message:
    msg = Message(tag.encode())
    msg.ack_requested = ack
    return msg


def _drain(inbox: Inbox) -> list[str]:
    out = []
    while (msg := inbox.take_nowait()) is not None:
        out.append(msg.data.decode())
    return out


def test_the_inbox_serves_sources_round_robin() -> None:
    inbox = Inbox()
    flood, quiet = object(), object()
    for i in range(3):
        inbox.put(flood, _msg(f"f{i}"))
    inbox.put(quiet, _msg("q0"))
    assert len(inbox) == 4
    assert _drain(inbox) == ["f0", "q0", "f1", "f2"]
    assert len(inbox) == 0


def test_retire_keeps_asynchronous_messages_as_leftovers_and_returns_the_rest() -> None:
    inbox = Inbox()
    closed, live = object(), object()
    inbox.put(closed, _msg("a1"))
    inbox.put(closed, _msg("s1", ack=True))
    inbox.put(live, _msg("l1"))
    inbox.put(closed, _msg("a2"))
    dropped = inbox.retire(closed, lambda m: not m.ack_requested)
    assert [m.data for m in dropped] == [b"s1"]
    assert inbox.leftovers == 2
    assert len(inbox) == 3
    assert _drain(inbox) == ["l1", "a1", "a2"]
    assert inbox.retire(closed, lambda m: True) == []


def test_the_oldest_leftover_goes_first() -> None:
    inbox = Inbox()
    closed = object()
    for tag in ("old", "new"):
        inbox.put(closed, _msg(tag))
    inbox.retire(closed, lambda m: True)
    first = inbox.drop_oldest_leftover()
    assert first is not None
    assert first.data == b"old"
    assert inbox.leftovers == 1
    second = inbox.drop_oldest_leftover()
    assert second is not None
    assert second.data == b"new"
    assert inbox.drop_oldest_leftover() is None
    assert LEFTOVERS not in inbox._queues


def test_close_returns_every_waiting_message_and_marks_it_closed() -> None:
    inbox = Inbox()
    inbox.put(object(), _msg("x"))
    inbox.put(LEFTOVERS, _msg("y"))
    waiting = inbox.close()
    assert sorted(m.data for m in waiting) == [b"x", b"y"]
    assert inbox.closed
    assert len(inbox) == 0
    assert inbox.take_nowait() is None


@pytest.mark.parametrize("count", [1, 5])
def test_len_counts_every_source(count: int) -> None:
    inbox = Inbox()
    for i in range(count):
        inbox.put(i, _msg(str(i)))
    assert len(inbox) == count


def test_a_source_whose_messages_were_all_taken_retires_cleanly() -> None:
    # take_nowait() keeps an emptied queue until its source is retired (no deque per
    # message); retiring it must not touch the ring nor turn anything into leftovers.
    inbox = Inbox()
    emptied, busy = object(), object()
    inbox.put(emptied, _msg("a"))
    inbox.put(busy, _msg("b1"))
    inbox.put(busy, _msg("b2"))
    taken = inbox.take_nowait()
    assert taken is not None
    assert taken.data == b"a"
    assert inbox.retire(emptied, lambda m: True) == []
    assert emptied not in inbox._queues
    assert (len(inbox), inbox.leftovers) == (2, 0)
    rest = [inbox.take_nowait(), inbox.take_nowait(), inbox.take_nowait()]
    assert [m.data if m is not None else None for m in rest] == [b"b1", b"b2", None]


async def test_budget_a_cancelled_reader_and_a_give_in_the_same_step_do_not_lose_the_next_wake() -> None:
    """The counted waiters' race (``_inbox._CountedWaiters``), in ``Budget``: a reader waiting
    for budget is cancelled (its connection closes) and in the same step a slot is given
    back; a reader that waits for budget afterwards must be woken by the next ``give``
    (it was not, before the wakers counted out only whom the lot woke)."""
    budget = Budget(max_count=1, max_bytes=100, connections=2, max_msg_size=10)
    budget.take(5)
    woken: list[str] = []
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def reader(name: str, scope: trio.CancelScope) -> None:
            with scope:
                await budget.wait()
                woken.append(name)

        nursery.start_soon(reader, "first", first)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # trio takes it out of the lot now; it counts itself out when it runs
        budget.give(5)  # same step: it still counts the cancelled reader and "wakes" it
        await trio.testing.wait_all_tasks_blocked()
        budget.take(5)
        nursery.start_soon(reader, "second", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        budget.give(5)  # room again: the second reader must wake
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["second"], f"waiting={budget.waiting}, parked={len(budget.lot)}"
        nursery.cancel_scope.cancel()


async def test_inbox_a_cancelled_receive_and_a_put_in_the_same_step_do_not_lose_the_next_wake() -> None:
    """The same race in ``Inbox``: the next ``put`` must wake the next ``receive()``."""
    inbox = Inbox()
    woken: list[str] = []
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def waiter(name: str, scope: trio.CancelScope) -> None:
            with scope:
                await inbox.wait()
                woken.append(name)

        nursery.start_soon(waiter, "first", first)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()
        inbox.put("source", object())  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.take_nowait() is not None
        nursery.start_soon(waiter, "second", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        inbox.put("source", object())  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["second"], f"waiting={inbox.waiting}, parked={len(inbox.lot)}"
        nursery.cancel_scope.cancel()
