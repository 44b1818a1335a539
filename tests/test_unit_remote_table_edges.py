"""More of the node's remote table (``_node._remotes``): what a failure records, the kick
after the debounce, the in-flight queries, GC at exactly the reuse time, closing all."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from test_unit_remote_table import KEY, SEED, FakeConnection, Harness, queued

from trio_chirp import CannotConnectError, ChirpTimeoutError, Message, RemoteError
from trio_chirp._node._remotes import DEBOUNCE_BASE, DEBOUNCE_JITTER
from trio_chirp._remote import Outgoing, OutgoingState

OTHER = ("127.0.0.1", 3001)


def test_the_debounce_is_50_ms_plus_up_to_half_a_second() -> None:
    assert (DEBOUNCE_BASE, DEBOUNCE_JITTER) == (0.05, 0.5)


@pytest.mark.parametrize("attempt", [True, False])
async def test_a_failure_is_recorded_as_the_remotes_connection_error(
    autojump_clock: trio.abc.Clock, attempt: bool
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        remote = h.table.get(KEY)
        error = CannotConnectError("refused") if attempt else ChirpTimeoutError("connect timed out")
        (h.table.on_attempt_failed if attempt else h.table.on_connection_failed)(remote, error)
        assert remote.last_error is error
        assert remote.last_connection_error is error
        nursery.cancel_scope.cancel()


async def test_after_the_debounce_a_remote_with_queued_messages_dials_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        out = queued(h.table, deadline=trio.current_time() + 100)
        remote = h.table.get(KEY)
        dials = len(h.dials)
        h.table.on_connection_failed(remote, ChirpTimeoutError("connect timed out"))
        await trio.sleep(DEBOUNCE_BASE + DEBOUNCE_JITTER + 0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert not remote.blocked
        assert len(h.dials) == dials + 1  # kicked: it asks for a connection again
        assert out.state is OutgoingState.QUEUED
        nursery.cancel_scope.cancel()


async def test_the_in_flight_queries_match_key_and_identity(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        table = h.table
        error = RemoteError("failed there", kind="X", text="y", hop="z")
        assert not table.awaiting_ack(KEY, b"\1" * 16)  # no remote
        assert not table.settle_in_flight(KEY, b"\1" * 16, error)
        remote = table.get(KEY)
        assert not table.awaiting_ack(KEY, b"\1" * 16)  # nothing in flight
        out = Outgoing(Message(b"x", address=KEY[0], port=KEY[1]), True, trio.current_time() + 100)
        remote.in_flight[out.identity] = out
        out.state = OutgoingState.AWAITING_ACK
        identity = out.identity
        assert table.awaiting_ack(KEY, identity)
        assert not table.awaiting_ack(KEY, b"\2" * 16)
        assert not table.awaiting_ack(OTHER, identity)
        assert not table.settle_in_flight(KEY, b"\2" * 16, error)
        assert not table.settle_in_flight(OTHER, identity, error)
        assert table.settle_in_flight(KEY, identity, error)
        assert out.error is error
        assert not remote.in_flight
        nursery.cancel_scope.cancel()


async def test_gc_at_exactly_the_reuse_time_keeps_and_a_busy_remote_does_not_stop_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, reuse_time=10.0)
        busy = h.table.get(OTHER)
        busy.blocked = True  # first in the table, and not collectable
        idle = h.table.get(KEY)
        old = FakeConnection(last_activity=trio.current_time())
        idle.old.add(old)  # type: ignore[arg-type]
        now = idle.last_activity + 10.0
        h.table.collect(now)  # exactly the reuse time: not more than it
        assert not idle.closed
        assert old.closed_with == []
        h.table.collect(now + 0.001)
        assert idle.closed  # collected although a busy remote came first
        assert len(old.closed_with) == 1
        assert not busy.closed
        h.table.close_all()
        assert busy.closed
        nursery.cancel_scope.cancel()


async def test_failures_during_a_debounce_share_its_one_timer(autojump_clock: trio.abc.Clock) -> None:
    """One timer (one draw of the rng) for every remote that fails while it runs."""
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        first, second = h.table.get(KEY), h.table.get(OTHER)
        rng = random.Random(SEED)
        rng.getrandbits(32)  # the two remotes' serials were drawn first
        rng.getrandbits(32)
        start = trio.current_time()
        h.table.on_attempt_failed(first, CannotConnectError("refused"))
        h.table.on_attempt_failed(second, CannotConnectError("refused"))
        shared = DEBOUNCE_BASE + rng.uniform(0.0, DEBOUNCE_JITTER)
        await trio.sleep_until(start + shared + 1e-6)
        assert not first.blocked
        assert not second.blocked
        # The next failure draws the next delay: only one was drawn for both.
        again = trio.current_time()
        h.table.on_attempt_failed(first, CannotConnectError("refused"))
        following = DEBOUNCE_BASE + rng.uniform(0.0, DEBOUNCE_JITTER)
        await trio.sleep_until(again + following - 1e-6)
        assert first.blocked
        await trio.sleep_until(again + following + 1e-6)
        assert not first.blocked
        nursery.cancel_scope.cancel()
