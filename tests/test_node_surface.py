"""The node as a Trio user meets it: exception shapes, shutdown paths, fail-fast connects,
rate-limited failure logs and the statistics that count everything (issue 7)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, FakePeer, LowRandom, node, to

from trio_chirp import (
    CannotConnectError,
    Chirp,
    ChirpError,
    ChirpTimeoutError,
    Config,
    NodeStats,
    ShutdownError,
    TLSError,
    Transport,
    open_chirp,
    serve_chirp,
)
from trio_chirp._ratelimit import LogLimiter
from trio_chirp.testing import MemoryNetwork

# --- exceptions leave the block exactly as plain Trio would -------------------------------


def shape(exc: BaseException) -> object:
    """What a user can observe of an exception: class, text, members, chaining."""
    # Sorted: Trio's scheduler may finish sibling tasks in either order.
    members = sorted(map(repr, map(shape, exc.exceptions))) if isinstance(exc, BaseExceptionGroup) else None
    return (type(exc), str(exc), members, exc.__cause__ is None, exc.__context__ is None)


async def _fail(text: str) -> None:
    raise ValueError(text)  # no checkpoint first: siblings all fail, none is cancelled


async def _bare(chirp: Chirp | None) -> None:
    raise ValueError("bare")


async def _one_child(chirp: Chirp | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fail, "one")


async def _two_children(chirp: Chirp | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fail, "one")
        nursery.start_soon(_fail, "two")


async def _keyboard_interrupt(chirp: Chirp | None) -> None:
    raise KeyboardInterrupt


async def _caught_group(chirp: Chirp | None) -> None:
    try:
        await _two_children(chirp)
    except* ValueError as group:
        raise RuntimeError("handled") from group


BODIES = [_bare, _one_child, _two_children, _keyboard_interrupt, _caught_group]


@asynccontextmanager
async def _plain() -> AsyncIterator[None]:
    yield None


def _memory_node(net: MemoryNetwork) -> AbstractAsyncContextManager[Chirp]:
    return open_chirp(Config(port=PORT, disable_encryption=True), transport=net.host(A), rng=LowRandom())


async def _raised(
    cm: AbstractAsyncContextManager[Any], body: Callable[[Any], Awaitable[None]]
) -> BaseException:
    with pytest.raises(BaseException) as info:  # noqa: PT011 - every shape is compared below
        async with cm as value:
            await body(value)
    return info.value


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__.strip("_"))
async def test_open_chirp_leaves_the_blocks_exception_as_plain_trio_does(
    body: Callable[[Any], Awaitable[None]], autojump_clock: trio.abc.Clock
) -> None:
    expected = await _raised(_plain(), body)
    got = await _raised(_memory_node(MemoryNetwork()), body)
    assert shape(got) == shape(expected)
    # Printed once: no "During handling of the above exception" from a rewrapping.
    printed = "".join(traceback.format_exception(got))
    assert "During handling" not in printed
    assert "trio_chirp/_node.py" not in printed.split("\n", 3)[1]  # traceback starts in the test


async def test_a_group_from_the_block_is_the_same_object(autojump_clock: trio.abc.Clock) -> None:
    captured: list[BaseException] = []

    async def body(chirp: Chirp) -> None:
        try:
            await _one_child(chirp)
        except BaseException as exc:
            captured.append(exc)
            raise

    got = await _raised(_memory_node(MemoryNetwork()), body)
    assert got is captured[0]
    assert isinstance(got, ExceptionGroup)


async def _sibling_failure(runner: Callable[..., Awaitable[Any]]) -> BaseException:
    with pytest.raises(BaseException) as info:  # noqa: PT011, PT012 - compared by shape
        async with trio.open_nursery() as nursery:
            await nursery.start(runner)
            nursery.start_soon(_fail, "sibling")
    return info.value


async def test_serve_chirp_in_a_failing_nursery_looks_like_any_task(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()

    async def plain(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def chirp(task_status: trio.TaskStatus[Chirp] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config(port=PORT, disable_encryption=True)
        await serve_chirp(config, transport=net.host(A), task_status=task_status)

    assert shape(await _sibling_failure(chirp)) == shape(await _sibling_failure(plain))


async def test_cancelled_block_is_caught_by_the_callers_scope(autojump_clock: trio.abc.Clock) -> None:
    with trio.move_on_after(1) as scope:
        async with _memory_node(MemoryNetwork()) as chirp:
            await chirp.receive()
    assert scope.cancelled_caught


async def test_idle_receive_cancelled_carries_no_stray_context(autojump_clock: trio.abc.Clock) -> None:
    seen: list[BaseException] = []
    async with _memory_node(MemoryNetwork()) as chirp:
        with trio.move_on_after(1):
            try:
                await chirp.receive()
            except trio.Cancelled as exc:
                seen.append(exc)
                raise
    assert len(seen) == 1
    assert seen[0].__context__ is None


async def test_loopback_but_not_a_libchirp_local_literal_is_explained(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with open_chirp(Config(port=PORT), transport=net.host(A)) as chirp:
        with pytest.raises(TLSError, match=r"127\.0\.0\.2 is a loopback address, but libchirp") as info:
            await chirp.send(to("127.0.0.2"))
        assert "not a loopback" not in str(info.value)
        with pytest.raises(TLSError, match=r"10\.9\.9\.9 is not 127\.0\.0\.1 or ::1"):
            await chirp.send(to("10.9.9.9"))


# --- shutdown -------------------------------------------------------------------------------


async def _send_in_flight(
    net: MemoryNetwork, a: Chirp, nursery: trio.Nursery, outcome: list[BaseException | None]
) -> None:
    """Start a synchronous send to the never-ACKing fake peer B and wait until it is written."""

    async def send() -> None:
        try:
            await a.send(to(B))
        except ChirpError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert a.statistics().in_flight == 1


@pytest.mark.parametrize("how", ["error", "cancelled"])
async def test_leaving_with_an_exception_or_cancellation_closes_at_once(
    how: str, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    outcome: list[BaseException | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        start = trio.current_time()
        with (
            trio.CancelScope() as scope,
            pytest.raises(ValueError, match="app failed") if how == "error" else nullcontext(),
        ):
            async with node(net, A, timeout=30) as a:
                await _send_in_flight(net, a, nursery, outcome)
                if how == "error":
                    raise ValueError("the app failed")
                scope.cancel()
                await trio.sleep_forever()
        assert trio.current_time() == start  # no grace period: not a virtual second passed
        await trio.testing.wait_all_tasks_blocked()
        assert len(outcome) == 1
        assert isinstance(outcome[0], ShutdownError)
        nursery.cancel_scope.cancel()


async def test_clean_exit_waits_for_the_ack_grace(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    outcome: list[BaseException | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        start = trio.current_time()
        async with node(net, A, timeout=3) as a:
            await _send_in_flight(net, a, nursery, outcome)
        # The grace runs to config.timeout from the start of the close (never ACKed).
        assert trio.current_time() - start == pytest.approx(3)
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcome[0], ChirpTimeoutError | ShutdownError)
        nursery.cancel_scope.cancel()


async def test_cancelling_the_grace_makes_it_an_immediate_close(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    outcome: list[BaseException | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=30) as a:
            await _send_in_flight(net, a, nursery, outcome)
            start = trio.current_time()
            with trio.move_on_after(0.5) as scope:
                await a.aclose()
            assert scope.cancelled_caught
            assert trio.current_time() - start == pytest.approx(0.5)
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(outcome[0], ShutdownError)
            assert a.statistics().connections == 0
            with pytest.raises(ShutdownError):
                await a.receive()
        nursery.cancel_scope.cancel()


async def test_serve_chirp_returns_after_aclose_and_closes_at_once_when_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    outcome: list[BaseException | None] = []
    config = Config(port=PORT, disable_encryption=True, timeout=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        # Graceful: aclose() first; serve_chirp then returns by itself.
        done = trio.Event()

        async def serve(task_status: trio.TaskStatus[Chirp] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_chirp(config, transport=net.host(A), rng=LowRandom(), task_status=task_status)
            done.set()

        chirp: Chirp = await nursery.start(serve)
        await chirp.aclose()
        await done.wait()
        # Cancelled: at once, with a send in flight.
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                chirp = await inner.start(serve)
                await _send_in_flight(net, chirp, nursery, outcome)
                start = trio.current_time()
                scope.cancel()
        assert trio.current_time() == start
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcome[0], ShutdownError)
        nursery.cancel_scope.cancel()


# --- fail fast --------------------------------------------------------------------------------


async def test_refused_connect_fails_waiting_sends_at_once_and_during_the_debounce(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b:
        net.refuse(B, PORT)
        async with node(net, A, timeout=30, send_queue_size=2) as a:
            start = trio.current_time()
            results: dict[str, BaseException | None] = {}

            async def send(name: str, **kw: bool) -> None:
                try:
                    await a.send(to(B, name.encode()), **kw)
                except CannotConnectError as exc:
                    results[name] = exc
                else:
                    results[name] = None

            async with trio.open_nursery() as nursery:
                for name in ("sync1", "sync2", "waits-for-room"):
                    nursery.start_soon(send, name)
            # All three, including the one that waited for queue room, failed at once.
            assert trio.current_time() == start
            assert set(results) == {"sync1", "sync2", "waits-for-room"}
            for exc in results.values():
                assert isinstance(exc, CannotConnectError)
                assert isinstance(exc.__cause__, ConnectionRefusedError)
            # During the debounce (50 ms with LowRandom) sync and async sends fail at once, no dial.
            net.unrefuse(B, PORT)
            with pytest.raises(CannotConnectError, match="refused"):
                await a.send(to(B))
            with pytest.raises(CannotConnectError, match="refused"):
                await a.send(to(B), synchronous=False)
            assert trio.current_time() == start
            stats = a.statistics()
            assert stats.errors == {"CannotConnectError": 1}
            assert stats.send_errors == {"CannotConnectError": 5}
            assert stats.remotes[0].reconnect_blocked
            # After the debounce the peer, back now, is reached by the next send.
            await trio.sleep(0.05)
            await trio.testing.wait_all_tasks_blocked()  # the debounce task has run
            await a.send(to(B, b"back"), synchronous=False)
            msg = await b.receive()
            assert msg.data == b"back"
            msg.release()


async def test_queued_async_message_failed_by_a_refusal_is_counted_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.refuse(B)
    async with node(net, A, synchronous=False, timeout=30) as a:
        await a.send(to(B))  # accepted; the dial it triggers is refused
        with pytest.raises(Exception, match="1 asynchronous message") as info:
            await a.flush(B, PORT)
        assert isinstance(info.value.__cause__, CannotConnectError)
        assert trio.current_time() == 0 or a.statistics().messages_lost == 1
        assert a.statistics().messages_lost == 1


async def test_connection_closed_during_the_handshake_fails_at_once(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:

        def close_at_once(stream: trio.abc.Stream, peer: str) -> None:
            nursery.start_soon(stream.aclose)

        await nursery.start(
            lambda task_status: net.host(B).serve(
                port=PORT,
                bind_v4="0.0.0.0",
                bind_v6=None,
                backlog=8,
                on_accept=close_at_once,
                task_status=task_status,
            )
        )
        async with node(net, A, timeout=30) as a:
            start = trio.current_time()
            with pytest.raises(CannotConnectError, match="ended before the peer's chirp handshake"):
                await a.send(to(B))
            assert trio.current_time() == start
            assert a.statistics().errors == {"CannotConnectError": 1}
        nursery.cancel_scope.cancel()


# --- rate-limited logs ------------------------------------------------------------------------


def test_log_limiter_first_of_each_key_then_a_summary() -> None:
    limiter = LogLimiter(window=10.0, cap=2)
    assert limiter.record(0.0, "10.0.0.1", "CannotConnectError", "refusals") == (True, False)
    assert limiter.record(1.0, "10.0.0.1", "CannotConnectError", "refusals") == (False, True)
    assert limiter.record(2.0, "10.0.0.1", "ChirpTimeoutError", "timeouts") == (True, False)
    assert limiter.record(3.0, "10.0.0.2", "CannotConnectError", "refusals") == (False, True)  # cap
    assert limiter.record(4.0, "10.0.0.3", "CannotConnectError", "refusals") == (False, True)
    assert limiter.window_end == 10.0
    assert limiter.summarise() == [
        "1 more refusals with 10.0.0.1 in the last 10 s",
        "2 refusals with 2 other peer(s) in the last 10 s (log cap reached)",
    ]
    assert not limiter.pending
    # A new window logs the first again.
    assert limiter.record(11.0, "10.0.0.1", "CannotConnectError", "refusals") == (True, False)
    assert limiter.window_end == 21.0


def _node_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "trio_chirp.node" and r.levelno >= logging.WARNING
    ]


async def test_one_unreachable_peer_logs_one_line_and_a_summary(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.refuse(B)
    async with node(net, A, timeout=30) as a:
        attempts = 0
        while trio.current_time() < 3.0:  # an app retrying for 3 s
            with pytest.raises(CannotConnectError):
                await a.send(to(B))
            await trio.sleep(0.02)
            attempts += 1
        dials = a.statistics().errors["CannotConnectError"]
        assert 5 <= dials < attempts  # sends during each debounce did not dial
        assert len(_node_warnings(caplog)) == 1
        await trio.sleep(7.5)
        lines = _node_warnings(caplog)
        assert lines[1:] == [
            f"{dials - 1} more CannotConnectError connection failures with {B} in the last 10 s"
        ]
        assert a.statistics().send_errors == {"CannotConnectError": attempts}


async def test_many_failing_peers_are_capped_node_wide(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    peers = [f"10.0.1.{i}" for i in range(1, 41)]
    for ip in peers:
        net.host(ip)
        net.refuse(ip)
    async with node(net, A, timeout=30) as a:
        for ip in peers:
            with pytest.raises(CannotConnectError):
                await a.send(to(ip))
        assert len(_node_warnings(caplog)) == 20
        await trio.sleep(10.5)
        summary = "20 CannotConnectError connection failures with 20 other peer(s) in the last 10 s"
        assert _node_warnings(caplog)[20:] == [f"{summary} (log cap reached)"]
        assert a.statistics().errors == {"CannotConnectError": 40}


# --- statistics -------------------------------------------------------------------------------


async def test_statistics_count_messages_acks_and_noops_apart(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, reuse_time=4.0, timeout=1.0) as a:

        async def consume() -> None:
            async for msg in b:
                msg.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for _ in range(3):
                await a.send(to(B))
            await trio.sleep(3.5)  # idle past 3/4 R = 3 s: the next frame is preceded by a NOOP
            await a.send(to(B))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        sa, sb = a.statistics(), b.statistics()
        assert (sa.messages_out, sa.acks_in, sa.noops_out, sa.messages_in, sa.acks_out) == (4, 4, 1, 0, 0)
        assert (sb.messages_in, sb.acks_out, sb.noops_in, sb.messages_out, sb.acks_in) == (4, 4, 1, 0, 0)
        assert sa.frames_out == 5
        assert sb.frames_in == 5


async def test_a_failed_send_is_in_the_statistics_before_it_raises(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, timeout=2.0) as a:
            seen: list[object] = []
            try:
                await a.send(to(B))
            except ChirpTimeoutError as exc:
                seen = [exc, a.statistics()]  # taken before anything else ran
            error, stats = seen
            assert isinstance(stats, NodeStats)
            assert stats.send_errors == {"ChirpTimeoutError": 1}
            (remote,) = stats.remotes
            assert remote.last_error == str(error)
            assert remote.last_error_at == pytest.approx(2.0)
        nursery.cancel_scope.cancel()


# --- regressions found by attacking the above -------------------------------------------------


class _BuggyTransport(Transport):
    """Its connect() has a bug: a RuntimeError, which must crash the node, unwrapped."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    async def connect(
        self, address: str, port: int, *, bind: str | None = None
    ) -> tuple[trio.abc.Stream, str]:
        await trio.sleep(0.1)
        raise RuntimeError("transport bug")

    async def serve(self, **kwargs: Any) -> None:
        await self.inner.serve(**kwargs)


@pytest.mark.parametrize("with_nursery", [False, True])
async def test_a_node_crash_comes_out_bare_without_the_blocks_cancellation(
    with_nursery: bool, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    config = Config(port=PORT, disable_encryption=True)
    with pytest.raises(RuntimeError, match="transport bug") as info:  # noqa: PT012
        async with open_chirp(config, transport=_BuggyTransport(net.host(A))) as chirp:
            await chirp.send(to(B), synchronous=False)
            if with_nursery:  # the block's nursery is cancelled too: its Cancelled group is ours
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(chirp.receive)
                    nursery.start_soon(trio.sleep_forever)
            else:
                await chirp.receive()
    assert info.value.__context__ is None
    printed = "".join(traceback.format_exception(info.value))
    assert "During handling" not in printed
    assert "Cancelled" not in printed


async def test_a_refused_dial_does_not_fail_sends_once_the_peers_own_connection_attached(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 0.2)
    async with node(net, A) as a, node(net, B) as b, trio.open_nursery() as nursery:
        for chirp in (a, b):
            nursery.start_soon(_release_all, chirp)
        net.refuse(B, PORT)  # B is up; only its listener refuses A
        nursery.start_soon(b.send, to(A))  # B's own connection to A attaches at 0.6 s
        await trio.sleep(0.3)
        nursery.start_soon(a.send, to(B))  # A's dial is refused at 0.7 s: B's link carries it
        await trio.sleep(0.42)  # 0.72 s: within the 50 ms debounce after the refusal
        (remote,) = [r for r in a.statistics().remotes if r.address == B]
        assert (remote.connected, remote.reconnect_blocked) == (True, True)
        await a.send(to(B), synchronous=False)  # connected: no CannotConnectError
        await a.send(to(B))
        assert a.statistics().send_errors == {}
        nursery.cancel_scope.cancel()


async def _release_all(chirp: Chirp) -> None:
    async for msg in chirp:
        msg.release()


async def test_still_connecting_timeouts_do_not_chain_each_other(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.black_hole(B)
    errors: list[ChirpTimeoutError] = []
    async with node(net, A, timeout=1.0) as a:

        async def send() -> None:
            with pytest.raises(ChirpTimeoutError, match="still connecting") as info:
                await a.send(to(B))
            errors.append(info.value)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(send)
                await trio.sleep(0.1)
    assert len(errors) == 20
    for error in errors:
        assert not isinstance(error.__cause__, ChirpTimeoutError) or error.__cause__.__cause__ is None
        assert len(str(error)) < 300


async def test_a_pending_log_summary_is_written_when_the_node_closes(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.refuse(B)
    async with node(net, A) as a:
        for _ in range(5):
            with pytest.raises(CannotConnectError):
                await a.send(to(B))
            await trio.sleep(0.1)
    assert _node_warnings(caplog)[1:] == [
        f"4 more CannotConnectError connection failures with {B} in the last 10 s"
    ]
