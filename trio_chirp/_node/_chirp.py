"""``Chirp``: the node as applications see it, wired from the services of this package.

The services, each with one job: ``Links`` (accepting, dialling, handshake trust, the
connection limit, what a close means), ``Encryption`` (the plaintext rule, sniffing and
TLS preludes), ``RemoteTable`` (remotes, the reconnect debounce, fail-fast, GC),
``Delivery`` (inbox, budget, leftovers), ``Sender`` (``send()`` and its errors),
``NodeLog`` (the rate-limited log) and, from the layer below the node, ``Requests``.
This module wires them, offers the public API, gathers ``statistics()`` and closes.
``open_chirp``/``serve_chirp`` (``_lifecycle.py``) are the only ways to get a ``Chirp``.

Routers and workers, which sit above the node, reach the services they need through
``node_services()``, never through the node's private members.
"""

from __future__ import annotations

import random
from abc import ABCMeta
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, final

import trio

from .._address import format_peer, normalize_address
from .._config import Config
from .._errors import ConnectionLostError, ShutdownError
from .._message import Buffer, Message
from .._ratelimit import LimitedLog
from .._requests import Requests, Send
from .._stats import NodeStats
from .._tls import TLSLayer
from .._transport import Transport
from ._delivery import Delivery
from ._encryption import Encryption
from ._links import Links
from ._log import NodeLog
from ._remotes import RemoteTable
from ._sending import Pacer, Sender
from ._state import NodeState
from ._statistics import node_statistics

__all__ = ["Chirp", "NodeServices", "node_services"]

T = TypeVar("T")


class NoPublicConstructor(ABCMeta):
    """A metaclass whose classes cannot be called; their module makes instances with ``_create``.

    A ``Chirp`` only works inside the nursery ``open_chirp`` opens for it, so calling
    ``Chirp(...)`` directly is an error that says where nodes come from.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: use"
            " `async with trio_chirp.open_chirp(config) as chirp:` or"
            " `chirp = await nursery.start(trio_chirp.serve_chirp, config)`"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


@final
@dataclass(frozen=True, slots=True)
class NodeServices:
    """What the layers above the node (routers, workers) may use of it, besides its public API."""

    requests: Requests
    """Request/response matching, error responses, failing a message (``_requests.py``)."""
    send: Send
    """The node's send with ``SendOptions`` (a router forwarding under the producer's deadline)."""
    log: LimitedLog
    """The node's one rate-limited log, so its cap holds for everything on the node."""


@final
class Chirp(trio.abc.AsyncResource, metaclass=NoPublicConstructor):
    """A running node. Made by ``open_chirp()`` / ``serve_chirp()``, not directly.

    A ``trio.abc.AsyncResource``: ``aclose()`` closes it gracefully (as leaving the
    ``open_chirp`` block normally does).
    """

    def __init__(
        self,
        config: Config,
        transport: Transport,
        rng: random.Random,
        nursery: trio.Nursery,
        tls: TLSLayer | None,
    ) -> None:
        start_soon = nursery.start_soon
        self._nursery = nursery
        self._state = state = NodeState(config)
        self._log = log = NodeLog(start_soon)
        self._remotes = remotes = RemoteTable(state, config, rng, log, start_soon)
        encryption = Encryption(config, tls)
        self._pacer = pacer = Pacer()
        self._sender = sender = Sender(state, remotes, encryption, pacer)
        self._accept = sender.accept
        self._send_waiting = sender.send_waiting
        self._requests = requests = Requests(config, sender.send, remotes, log)
        self._delivery = delivery = Delivery(config, requests, log, start_soon)
        self._inbox = delivery.inbox
        self._links = Links(state, transport, encryption, remotes, delivery, log, start_soon)
        self._services = NodeServices(requests=requests, send=sender.send, log=log)

    def __repr__(self) -> str:
        return repr(self._state)

    @property
    def config(self) -> Config:
        """The node's configuration (read-only)."""
        return self._state.config

    @property
    def identity(self) -> bytes:
        """The 16 bytes this node announces in its handshake (``config.identity``, or random)."""
        return self._state.identity

    @property
    def port(self) -> int:
        """The port this node listens on and announces (the OS's choice when ``config.port`` is 0)."""
        return self._state.port

    # --- start and close (called by _lifecycle) ------------------------------------------
    async def _start(self) -> None:
        self._state.port = await self._nursery.start(self._links.serve)
        self._nursery.start_soon(self._remotes.collect_garbage)

    async def _wait_closed(self) -> None:
        await self._state.closed.wait()

    def _close_now(self) -> None:
        """The immediate close (cancellation, KeyboardInterrupt, an error leaving the block)."""
        if not self._state.closing:
            self._begin_close()
        self._finish_close()

    def _begin_close(self) -> None:
        state = self._state
        state.closing = True
        self._links.listen_scope.cancel()
        self._remotes.fail_all_queued(lambda: ShutdownError(f"{state} is closing"))

    def _finish_close(self) -> None:
        state = self._state
        if state.closed.is_set():
            return
        self._log.flush()
        self._requests.table.fail_waiting(lambda: ShutdownError(f"{state} closed while a request waited"))
        self._remotes.close_all()
        self._links.close_all(lambda: ShutdownError(f"{state} is closing"))
        self._delivery.close()
        state.closed.set()

    # --- public API ----------------------------------------------------------------------
    async def send(self, message: Message, *, synchronous: bool | None = None) -> None:
        """Send ``message`` to ``(message.address, message.port)``.

        Synchronous (the node's default unless overridden): returns when the receiving
        application released the message with an ACK. Asynchronous: returns when the
        message is accepted for sending (see ``flush()``). Waits for room when the
        remote's queue is full. An asynchronous send that finds room is a cancellation
        point but yields to the scheduler only every 64 such sends, so the writer can
        coalesce a burst into one write. Deadline: the sooner of the caller's cancel scope and
        ``config.timeout`` from now; the latter raises ``ChirpTimeoutError``.
        """
        # Sender.send()'s lines, not an await of it: a coroutine less per send.
        await trio.lowlevel.checkpoint_if_cancelled()
        waiting = self._accept(message, synchronous, None)
        if waiting is not None:
            await self._send_waiting(waiting)
        elif self._pacer.due():
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def request(
        self, message: Message, *, synchronous: bool | None = None, auto_release: bool = True
    ) -> Message:
        """Send ``message`` and return the response: a message with its identity from that peer.

        Synchronous (the node's mode unless overridden): the request asks for an ACK and
        keeps its in-flight place (one of the peer's window) until it arrives; a peer following the rule
        has sent the response before the ACK. Asynchronous: no ACK, the response alone
        completes it, so many requests may be in flight to one peer. The deadline is the
        sooner of the caller's cancel scope and ``config.timeout``; it travels to the peer
        (``msg.deadline``) in our header map. The response's slot is released unless
        ``auto_release=False``. A trio_chirp hop that cannot deliver it answers with an
        error response, raised here as ``RemoteError``. See docs/requests.md.
        """
        return await self._requests.request(message, synchronous=synchronous, auto_release=auto_release)

    async def reply(self, request: Message, data: Buffer, *, header: Buffer = b"") -> None:
        """Answer a received ``request``: write the response, then release the request with ACK.

        Returns once the response is handed to the OS and the request is released, so the
        ACK follows the response on the wire. Runs under the request's deadline
        (``ChirpTimeoutError`` when it passes first); if the write fails or is cancelled,
        the request is released without ACK and the error propagates.
        """
        await self._requests.reply(request, data, header=header)

    async def receive(self) -> Message:
        """The next received message; it holds a slot until ``release()``.

        Raises ``ShutdownError`` once the node is closed. Like an asynchronous ``send()``
        that finds room, a ``receive()`` that finds a message waiting is a cancellation
        point but yields to the scheduler only every 64 calls.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        message = inbox.take_nowait()
        if message is not None:
            if self._pacer.due():
                await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        sole_reading = self._links.sole_reading
        while not inbox.closed:
            # With one connection, read it here when nobody else does: the message then
            # wakes this task, not a reader task first (``_reading.py``).
            reading = sole_reading()
            if reading is not None and reading.claimable():
                await reading.read_for_receiver()
            elif (
                reading is not None
                and inbox.seat.task is None
                and not inbox.waiting
                and reading.take_seat(inbox.seat)
            ):
                try:
                    await inbox.wait()
                finally:
                    reading.leave_seat(inbox.seat)
            else:
                await inbox.wait()
            message = inbox.take_nowait()
            if message is not None:
                return message
        raise ShutdownError(f"{self} is closed")

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ShutdownError:
            raise StopAsyncIteration from None

    async def flush(self, address: str, port: int) -> None:
        """Wait until every asynchronous message accepted for this peer is written.

        Raises ``ConnectionLostError`` if any accepted since the last ``flush()`` was not
        (its ``__cause__`` is the first failure); each such message was also logged.
        """
        key = normalize_address(address), port
        remote = self._remotes.find(key)
        if remote is None:
            await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while remote.unwritten_async:
            await remote.flush_lot.park()
        failures, remote.async_failures = remote.async_failures, []
        await trio.lowlevel.cancel_shielded_checkpoint()
        if failures:
            error = ConnectionLostError(
                f"{len(failures)} asynchronous message(s) to {format_peer(*key)} were not written;"
                f" first: {failures[0]}"
            )
            raise error from failures[0]

    def statistics(self) -> NodeStats:
        """A frozen snapshot of the node: connections, remotes, slots, traffic, requests, errors."""
        return node_statistics(
            self._state, self._links, self._remotes, self._delivery, self._requests, self._sender
        )

    async def aclose(self) -> None:
        """Close the node gracefully: libchirp's "abort all" (docs/protocol.md, section 7.4), with a grace.

        Stops accepting, fails queued messages with ``ShutdownError``, waits at most
        ``config.timeout`` for the ACKs of written synchronous messages, then fails every
        ``request()`` still waiting for its response with ``ShutdownError`` and closes
        every connection. Messages the application did not release are never ACKed.
        The wait is cancellable, as Trio's ``aclose()`` contract asks: cancelled, it
        becomes an immediate close (in-flight sends fail with ``ShutdownError``) and the
        cancellation propagates. Closing twice is harmless.
        """
        state = self._state
        if state.closing:
            await state.closed.wait()
            return
        self._begin_close()
        try:
            with trio.move_on_after(state.config.timeout):
                for remote in list(self._remotes):
                    while remote.in_flight and remote.current is not None:
                        await remote.ack_lot.park()
            await trio.lowlevel.checkpoint()
        finally:
            self._finish_close()


def node_services(chirp: Chirp) -> NodeServices:
    """The services of ``chirp`` that routers and workers build on (see ``NodeServices``)."""
    return chirp._services  # noqa: SLF001 -- the node's own module: the one door to its services
