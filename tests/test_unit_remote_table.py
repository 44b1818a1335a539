"""Unit tests of the node's remote table (``trio_chirp._node._remotes``): GC, debounce, fail-fast.

Driven directly, with fake connections and a seeded ``rng``, under MockClock, so each
time is exact and no network is involved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from trio_chirp import CannotConnectError, ChirpTimeoutError, Config, Message, ShutdownError
from trio_chirp._errors import ChirpError
from trio_chirp._node._log import NodeLog
from trio_chirp._node._remotes import DEBOUNCE_BASE, DEBOUNCE_JITTER, RemoteTable
from trio_chirp._node._state import NodeState
from trio_chirp._remote import Outgoing, OutgoingState

KEY = ("127.0.0.1", 3000)
SEED = 1234


@dataclass(eq=False)
class FakeConnection:
    """What the table's GC uses of a connection."""

    last_activity: float
    closed_with: list[ChirpError] = field(default_factory=list)
    writer_idle: bool = False

    def close(self, cause: ChirpError) -> None:
        self.closed_with.append(cause)

    def write_now(self) -> None:
        raise AssertionError("not written in these tests")

    def ack_awaited(self, deadline: float) -> None:
        pass

    def ack_settled(self, more_awaited: bool) -> None:
        pass

    def unread_ack_hint(self) -> str:
        return ""


class Harness:
    def __init__(self, nursery: trio.Nursery, *, reuse_time: float = 10.0) -> None:
        self.config = Config(port=2000, reuse_time=reuse_time, timeout=2.0)  # R = max(reuse, 3 * timeout)
        self.state = NodeState(self.config)
        self.dials: list[object] = []
        self.table = RemoteTable(
            self.state, self.config, random.Random(SEED), NodeLog(nursery.start_soon), nursery.start_soon
        )

        async def dial(remote: object) -> None:
            self.dials.append(remote)
            await trio.lowlevel.checkpoint()

        self.table.set_dialer(dial)  # type: ignore[arg-type]


def queued(table: RemoteTable, deadline: float) -> Outgoing:
    remote = table.get(KEY)
    remote.blocked = True  # keep it from asking for a connection while we queue
    out = Outgoing(Message(b"x", address=KEY[0], port=KEY[1]), True, deadline)
    remote.enqueue(out)
    remote.blocked = False
    return out


async def test_a_remote_is_made_once_with_a_serial_from_the_rng(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        remote = h.table.get(KEY)
        assert h.table.get(KEY) is remote
        assert h.table.find(KEY) is remote
        assert h.table.find(("127.0.0.1", 3001)) is None
        assert remote.next_serial() == random.Random(SEED).getrandbits(32)
        nursery.cancel_scope.cancel()


async def test_a_failed_attempt_fails_queued_messages_at_once_and_debounces(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        out = queued(h.table, deadline=trio.current_time() + 100)
        remote = h.table.get(KEY)
        error = CannotConnectError("refused")
        start = trio.current_time()
        h.table.on_attempt_failed(remote, error)
        assert out.state is OutgoingState.WITHDRAWN
        assert isinstance(out.error, CannotConnectError)
        assert out.error is not error, "each waiter gets its own copy to raise"
        assert str(out.error) == "refused"
        assert remote.blocked
        assert remote.connect_error is error
        rng = random.Random(SEED)
        rng.getrandbits(32)  # the remote's serial was drawn first
        expected = DEBOUNCE_BASE + rng.uniform(0.0, DEBOUNCE_JITTER)
        await trio.sleep_until(start + expected - 1e-6)
        assert remote.blocked, "the debounce ended early"
        await trio.sleep_until(start + expected + 1e-6)
        assert not remote.blocked
        assert remote.connect_error is None
        nursery.cancel_scope.cancel()


async def test_a_failed_connection_keeps_queued_messages_until_their_own_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        now = trio.current_time()
        late = queued(h.table, deadline=now + 100)
        due = queued(h.table, deadline=now)
        remote = h.table.get(KEY)
        h.table.on_connection_failed(remote, ChirpTimeoutError("connect timed out"))
        assert late.state is OutgoingState.QUEUED
        assert due.state is OutgoingState.WITHDRAWN
        assert isinstance(due.error, ChirpTimeoutError)
        assert "still connecting" in str(due.error)
        assert remote.blocked
        assert remote.connect_error is None, "only a failed attempt makes sends fail at once"
        nursery.cancel_scope.cancel()


async def test_no_debounce_and_no_dial_once_the_node_is_closing(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery)
        remote = h.table.get(KEY)
        h.state.closing = True
        h.table.on_attempt_failed(remote, CannotConnectError("refused"))
        assert not remote.blocked
        assert remote.connect_error is None
        queued(h.table, deadline=trio.current_time() + 1)
        await trio.testing.wait_all_tasks_blocked()
        assert h.dials == []
        nursery.cancel_scope.cancel()


async def test_gc_forgets_idle_remotes_and_closes_their_connections(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, reuse_time=10.0)
        remote = h.table.get(KEY)
        conn = FakeConnection(last_activity=trio.current_time())
        remote.current = conn  # type: ignore[assignment]
        start = trio.current_time()
        h.table.collect(start + 10.0)
        assert h.table.find(KEY) is remote, "idle for exactly the reuse time: kept"
        h.table.collect(start + 10.001)
        assert h.table.find(KEY) is None
        assert remote.closed
        assert len(conn.closed_with) == 1
        assert isinstance(conn.closed_with[0], ShutdownError)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("busy", ["blocked", "connecting", "in_flight"])
async def test_gc_keeps_a_remote_that_is_busy(autojump_clock: trio.abc.Clock, busy: str) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, reuse_time=10.0)
        remote = h.table.get(KEY)
        if busy == "in_flight":
            out = Outgoing(Message(b""), True, 0.0)
            remote.in_flight[out.identity] = out
        else:
            setattr(remote, busy, True)
        h.table.collect(trio.current_time() + 1000)
        assert h.table.find(KEY) is remote
        nursery.cancel_scope.cancel()


async def test_gc_closes_replaced_connections_idle_past_the_reuse_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, reuse_time=10.0)
        remote = h.table.get(KEY)
        out = Outgoing(Message(b""), True, 0.0)
        remote.in_flight[out.identity] = out  # the remote itself stays
        now = trio.current_time()
        stale = FakeConnection(last_activity=now - 11)
        fresh = FakeConnection(last_activity=now - 9)
        remote.old.update({stale, fresh})  # type: ignore[arg-type]
        h.table.collect(now)
        assert len(stale.closed_with) == 1
        assert "replaced and idle" in str(stale.closed_with[0])
        assert fresh.closed_with == []
        nursery.cancel_scope.cancel()


async def test_the_gc_task_runs_at_jittered_intervals_from_the_rng(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        h = Harness(nursery, reuse_time=10.0)
        remote = h.table.get(KEY)
        start = trio.current_time()
        remote.last_activity = start - 100  # collectable at the first round
        nursery.start_soon(h.table.collect_garbage)
        rng = random.Random(SEED)
        rng.getrandbits(32)
        first_round = rng.uniform(5.0, 10.0)
        await trio.sleep_until(start + first_round - 1e-6)
        assert h.table.find(KEY) is remote, "collected before its first round"
        await trio.sleep_until(start + first_round + 1e-6)
        assert h.table.find(KEY) is None
        nursery.cancel_scope.cancel()
