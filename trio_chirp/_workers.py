"""Workers: N handler tasks in the caller's nursery, each message handled under its deadline.

The rule that keeps a chirp network free of lock-ups puts consumers on *asynchronous*
nodes. This helper is the consumer side done right: each received message is handled
inside a cancel scope whose deadline is the message's own (``msg.deadline``, the
producer's deadline that travelled with it), so no handler works on after its producer
gave up; a message that arrives with its deadline already passed is released at once.

A handler that returns released the message with ACK (or answered it with ``reply()``,
which writes the response first). A handler that raises gets its message released without
ACK, or, for a trio_chirp producer that waits (a request, a synchronous send), answered
with an error response first, so the producer fails at once instead of at its timeout.
The error is logged (rate-limited) and counted; the node and the other handlers go on.

Stopping (cancelling ``run()``) drains: handlers in progress get ``grace`` seconds more
(never past their message's deadline), then are cancelled; their messages fail as above.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import final

import trio

from ._address import format_peer
from ._errors import ChirpError, ChirpTimeoutError, ShutdownError
from ._message import Message
from ._node import Chirp, node_services
from ._requests import describe_hop

__all__ = ["Handler", "WorkerStats", "Workers"]

logger = logging.getLogger("trio_chirp.workers")

Handler = Callable[[Message], Awaitable[None]]


@final
@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What ``Workers.statistics()`` returns."""

    handled: int
    """Handlers that returned normally."""
    failed: int
    """Handlers that raised, passed their message's deadline, or were stopped."""
    expired: int
    """Messages whose deadline had passed when a worker took them (released at once, no ACK)."""
    error_responses: int
    """Error responses written for failed messages whose producer waits and understands them."""
    running: int
    """Handlers running now."""


@final
class Workers:
    """Run ``count`` handler tasks that take messages from ``chirp`` until cancelled.

    ``await nursery.start(Workers(chirp, handle, count=8).run)``. ``grace`` (default
    ``config.timeout``) bounds how long handlers in progress may finish after a stop.
    ``expected_errors``: exception classes that are part of the handler's contract (a
    business error such as "not found"): logged in one line without a traceback, still
    counted, rate-limited and answered with an error response like any other failure.

    Parallelism: ``count`` handlers run at once only if messages arrive at once. A
    trio_chirp producer's synchronous sends from many tasks are in flight together, up to
    this node's receive slots (the window it announces); one task, or a libchirp producer
    (one synchronous message in flight per remote), sends one at a time: there, send
    asynchronous requests (``request(msg, synchronous=False)``, the response completes
    each) to have several handled in parallel (docs/requests.md).
    """

    def __init__(
        self,
        chirp: Chirp,
        handler: Handler,
        *,
        count: int = 1,
        grace: float | None = None,
        expected_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        if count < 1:
            raise ValueError(f"Workers count must be >= 1, got {count}")
        self._expected_errors = expected_errors
        self._chirp = chirp
        services = node_services(chirp)
        self._requests = services.requests
        self._log = services.log
        self._handler = handler
        self._count = count
        self._grace = chirp.config.timeout if grace is None else grace
        self._scopes: set[trio.CancelScope] = set()
        self._handled = self._failed = self._expired = self._error_responses = 0

    def statistics(self) -> WorkerStats:
        """A frozen snapshot of what these workers handled, failed and have running (``WorkerStats``)."""
        return WorkerStats(
            handled=self._handled,
            failed=self._failed,
            expired=self._expired,
            error_responses=self._error_responses,
            running=len(self._scopes),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handle messages until cancelled (then drain) or until the node closes."""
        loops = self._count
        async with trio.open_nursery() as nursery:
            watch = trio.CancelScope()

            async def loop() -> None:
                nonlocal loops
                try:
                    await self._loop()
                finally:
                    loops -= 1
                    if not loops:
                        watch.cancel()  # the node closed: nothing more to wait for

            async def watch_for_stop() -> None:
                with watch:
                    try:
                        await trio.sleep_forever()
                    finally:
                        self.drain()  # cancelled from outside: the grace starts now

            nursery.start_soon(watch_for_stop)
            for _ in range(self._count):
                nursery.start_soon(loop)
            task_status.started()

    async def _loop(self) -> None:
        chirp = self._chirp
        while True:
            try:
                msg = await chirp.receive()
            except ShutdownError:
                return
            await self._handle(msg)

    async def _handle(self, msg: Message) -> None:
        now = trio.current_time()
        deadline = math.inf if msg.deadline is None else msg.deadline
        if deadline <= now:
            self._expired += 1
            await self._fail(
                msg, ChirpTimeoutError("the message's deadline had passed when a worker took it")
            )
            return
        # Shielded from the stop so handlers drain; bounded by the message's deadline, and
        # by the grace once stopping (``_drain`` moves the deadline).
        scope = trio.CancelScope(deadline=deadline, shield=True)
        self._scopes.add(scope)
        failure: BaseException | None = None
        try:
            with scope:
                try:
                    await self._handler(msg)
                except Exception as exc:
                    failure = exc
            if scope.cancelled_caught and failure is None:
                stopped = deadline > trio.current_time()
                failure = ChirpTimeoutError(
                    "the worker was stopped and its grace ran out"
                    if stopped
                    else "the handler ran past the message's deadline"
                )
        except BaseException:
            # KeyboardInterrupt and the like: never ACK unfinished work.
            msg.release(ack=False)
            raise
        finally:
            self._scopes.discard(scope)
        if failure is None and msg.has_slot and self._requests.is_request(msg):
            # The requester waits for a response that will never come: tell it now, before
            # the ACK (the rule: an ACK with no response before it is an error).
            failure = ChirpError("the handler returned without replying to the request (use chirp.reply())")
        if failure is None:
            self._handled += 1
            msg.release()
            return
        self._failed += 1
        self._log_failure(msg, failure)
        await self._fail(msg, failure)

    def drain(self) -> None:
        """Start the grace: handlers in progress must finish within ``grace`` seconds."""
        end = trio.current_time() + self._grace
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, end)

    async def _fail(self, msg: Message, error: BaseException) -> None:
        """Error response first where the producer understands one, then release."""
        if not msg.has_slot:  # reply() already answered and released it
            await trio.lowlevel.checkpoint()
            return
        if await self._requests.fail_message(msg, error, self._hop()):
            self._error_responses += 1

    def _hop(self) -> str:
        return describe_hop("worker", self._chirp.port, self._chirp.identity)

    def _log_failure(self, msg: Message, error: BaseException) -> None:
        kind = type(error).__name__
        self._log.limited(
            msg.address,
            f"handler: {kind}",
            f"handler failures ({kind})",
            "handler failed on message %s from %s: %r",
            msg.identity.hex(),
            format_peer(msg.address, msg.port),
            error,
            log=logger,
            exc_info=None if isinstance(error, (ChirpError, *self._expected_errors)) else error,
        )
