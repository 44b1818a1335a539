"""The node's rate-limited log (``_node._log.NodeLog``): one summary timer at a time, one
summary per window, and a new timer for the next window's repeats."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trio_chirp._node._log import NodeLog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trio_chirp.node"]


async def test_one_summary_timer_per_window_and_a_new_one_after_it(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    started: list[Callable[[], Awaitable[None]]] = []
    async with trio.open_nursery() as nursery:

        def start_soon(fn: Callable[[], Awaitable[None]]) -> None:
            started.append(fn)
            nursery.start_soon(fn)

        log = NodeLog(start_soon)
        for _ in range(3):
            log.limited("10.0.0.1", "E", "failures", "failed: %s", "x")
        assert len(started) == 1  # the first repeat started the timer; the second found it running
        assert _lines(caplog) == ["failed: x"]
        await trio.sleep(10.0 + 0.001)  # the window ends: one summary, the timer ends
        await trio.testing.wait_all_tasks_blocked()
        assert _lines(caplog) == ["failed: x", "2 more failures with 10.0.0.1 in the last 10 s"]
        # The next window: logged in full again, and its repeat starts a new timer.
        log.limited("10.0.0.1", "E", "failures", "failed: %s", "y")
        log.limited("10.0.0.1", "E", "failures", "failed: %s", "z")
        assert len(started) == 2
        await trio.sleep(10.0 + 0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert _lines(caplog)[2:] == ["failed: y", "1 more failures with 10.0.0.1 in the last 10 s"]
        nursery.cancel_scope.cancel()


async def test_flush_writes_what_is_pending_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        log = NodeLog(nursery.start_soon)
        log.flush()
        assert _lines(caplog) == []
        log.limited("10.0.0.1", "E", "failures", "failed")
        log.limited("10.0.0.1", "E", "failures", "failed")
        log.flush()
        assert _lines(caplog) == ["failed", "1 more failures with 10.0.0.1 in the last 10 s"]
        nursery.cancel_scope.cancel()


async def test_a_summary_goes_to_the_logger_its_first_event_went_to(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A router's or a worker's failures are logged on its own logger; their summary line
    must be found there too, not on the node's (``log=`` of ``limited``)."""
    caplog.set_level(logging.WARNING)
    router_log = logging.getLogger("trio_chirp.router")
    async with trio.open_nursery() as nursery:
        log = NodeLog(nursery.start_soon)
        log.limited("10.0.0.1", "E", "forwarding failures", "forwarding failed: %s", "x", log=router_log)
        log.limited("10.0.0.1", "E", "forwarding failures", "forwarding failed: %s", "y", log=router_log)
        log.limited("10.0.0.2", "F", "failures", "failed: %s", "z")
        log.limited("10.0.0.2", "F", "failures", "failed: %s", "w")
        await trio.sleep(10.0 + 0.001)
        await trio.testing.wait_all_tasks_blocked()
        lines = [(r.name, r.getMessage()) for r in caplog.records]
        assert lines == [
            ("trio_chirp.router", "forwarding failed: x"),
            ("trio_chirp.node", "failed: z"),
            ("trio_chirp.router", "1 more forwarding failures with 10.0.0.1 in the last 10 s"),
            ("trio_chirp.node", "1 more failures with 10.0.0.2 in the last 10 s"),
        ]
        # The next window: the same key's first event on the node's own logger takes its
        # summary there (the last window's channel is forgotten).
        log.limited("10.0.0.1", "E", "forwarding failures", "forwarding failed: %s", "v")
        log.limited("10.0.0.1", "E", "forwarding failures", "forwarding failed: %s", "u")
        log.flush()
        assert [(r.name, r.getMessage()) for r in caplog.records][4:] == [
            ("trio_chirp.node", "forwarding failed: v"),
            ("trio_chirp.node", "1 more forwarding failures with 10.0.0.1 in the last 10 s"),
        ]
        nursery.cancel_scope.cancel()


async def test_a_window_that_ended_without_repeats_leaves_no_channel_behind(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A window with no repeats ends silently (no summary); the logger its key used then must
    not take the summary of the same key's repeats in a later window."""
    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        log = NodeLog(nursery.start_soon)
        log.limited(
            "10.0.0.1", "E", "failures", "failed: %s", "x", log=logging.getLogger("trio_chirp.workers")
        )
        await trio.sleep(10.0 + 0.001)  # that window ends with nothing to summarise
        log.limited("10.0.0.1", "E", "failures", "failed: %s", "y")
        log.limited("10.0.0.1", "E", "failures", "failed: %s", "z")
        await trio.sleep(10.0 + 0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert [(r.name, r.getMessage()) for r in caplog.records] == [
            ("trio_chirp.workers", "failed: x"),
            ("trio_chirp.node", "failed: y"),
            ("trio_chirp.node", "1 more failures with 10.0.0.1 in the last 10 s"),
        ]
        nursery.cancel_scope.cancel()
