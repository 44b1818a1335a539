"""Requests and replies: a response goes to the one ``request()`` waiting for it.

libchirp matches a response to a request by identity alone, from any sender. Here a
response is a message with the request's identity *from the peer the request went to*;
the node offers every received message to the ``RequestTable`` (through ``Requests``)
before queueing it for ``receive()``, so the waiting task is woken from the reader without a round through the
application's channel, and routers can catch responses the same way.

A request that gave up (deadline, cancellation) leaves only its identity behind, for a
bounded time in a bounded table, so a late response is released without reaching the
application; after that a late response is an ordinary message, as with libchirp.

``reply()`` writes the response before it releases the request, so the ACK follows the
response on the wire: a synchronous requester that gets the ACK already has its response.
An *error response* (our header map with an ``error`` key) settles a request or a
synchronous send at once when a trio_chirp hop downstream cannot deliver it; it is only
ever sent to a peer whose frame carried our map.

``Requests`` is the one place for all of it: the table, ``request()``/``reply()``, error
responses in both directions, failing a message that cannot be handled, and their counters.
It sends through the node's internal send and learns about the synchronous message in
flight through ``SendState``; routers and workers reach it through the node's services.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import trio

from ._address import RemoteKey, destination_of, format_peer
from ._config import Config
from ._errors import ChirpError, ChirpTimeoutError, MessageInUseError, RemoteError
from ._header import ChirpMeta, ErrorInfo
from ._inbox import Seat
from ._message import Buffer, Message, SendOptions, meta_of
from ._ratelimit import LimitedLog
from ._reading import FrameReader

__all__ = ["RequestTable", "Requests", "SendState", "describe_hop", "destination_key", "remote_error"]

logger = logging.getLogger("trio_chirp.requests")
node_logger = logging.getLogger("trio_chirp.node")

ABANDONED_CAPACITY: Final = 4096
"""Identities of requests that gave up, remembered to drop their late responses."""


class Pending:
    """One identity whose response is awaited, by a ``request()`` or by a router."""

    __slots__ = (
        "auto_release",
        "error",
        "event",
        "key",
        "on_response",
        "reading_scope",
        "response",
        "response_first",
        "seat",
    )

    def __init__(
        self, key: RemoteKey, on_response: Callable[[Message], None] | None, auto_release: bool = True
    ) -> None:
        self.key = key
        self.on_response = on_response
        """A router's hook: called (in the reader task) with the response, or the error response."""
        self.auto_release = auto_release
        self.response: Message | None = None
        self.error: ChirpError | None = None
        """An error response (``RemoteError``), or the node's close (``ShutdownError``)."""
        self.response_first = False
        """The response arrived while the request still waited for its ACK (the rule)."""
        self.event = trio.Event()
        self.seat: Seat | None = None
        """Where the waiting ``request()`` sits at its connection's reader (``_inbox.Seat``)."""
        self.reading_scope: trio.CancelScope | None = None
        """The scope of the waiting ``request()`` while it reads its connection itself."""

    def settle(self) -> None:
        """The response (or error) is in: wake the waiting ``request()``, wherever it waits."""
        self.event.set()
        if self.seat is not None:
            self.seat.woken = True  # its connection's reader may stand aside for it
        if self.reading_scope is not None:
            self.reading_scope.cancel()  # it reads another connection (or this one: harmless)


class RequestTable:
    """Identities awaiting a response, and those recently abandoned (both bounded)."""

    def __init__(self, remember_for: float, capacity: int = ABANDONED_CAPACITY) -> None:
        self._pending: dict[bytes, Pending] = {}
        self._abandoned: OrderedDict[bytes, tuple[RemoteKey, float]] = OrderedDict()
        self._remember_for = remember_for
        self._capacity = capacity
        self.completed = 0
        self.failed = 0
        self.late_responses = 0
        self.acks_before_response = 0
        self.forgotten = 0
        """Abandoned identities dropped early because the table was full."""

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> bool:
        """Whether any message could be a response (checked before ``offer`` on every message)."""
        return bool(self._pending or self._abandoned)

    def expect(
        self,
        identity: bytes,
        key: RemoteKey,
        on_response: Callable[[Message], None] | None = None,
        *,
        auto_release: bool = True,
    ) -> Pending:
        if identity in self._pending:
            raise MessageInUseError(f"a response to identity {identity.hex()} is already awaited")
        self._abandoned.pop(identity, None)
        pending = self._pending[identity] = Pending(key, on_response, auto_release)
        return pending

    def fail_waiting(self, error: Callable[[], ChirpError]) -> None:
        """The node is closing: every ``request()`` still waiting for its response fails
        with ``error()`` now, as queued sends do, instead of at its deadline. (A router's
        pending identities have a hook instead; the router ends with its node.)"""
        for pending in self._pending.values():
            if pending.on_response is None and pending.response is None and pending.error is None:
                pending.error = error()
                pending.settle()

    def forget(self, identity: bytes, *, abandoned: bool) -> None:
        """Stop waiting; an abandoned identity's late response is dropped for a while."""
        pending = self._pending.pop(identity, None)
        if pending is None or not abandoned:
            return
        table = self._abandoned
        table[identity] = (pending.key, trio.current_time() + self._remember_for)
        table.move_to_end(identity)
        while len(table) > self._capacity:
            table.popitem(last=False)
            self.forgotten += 1

    def offer(self, message: Message, awaiting_ack: bool = False) -> bool:
        """Take ``message`` if it is an awaited (or abandoned) response; True if taken.

        ``awaiting_ack``: the request with this identity is still in flight, waiting for its
        ACK (the node knows; it tells which came first). A response taken for a
        ``request()`` with ``auto_release`` is released at once, here in the reader: held
        until the request returns, it would keep the producer's (only) slot, so a frame
        behind it could not be read, nor the ACK behind that frame which the request waits
        for.
        """
        identity = message.identity
        meta = meta_of(message)
        if meta is not None and meta.hops and meta.error is None:
            # Forwarded by a router (e.g. looping back): a message, not a response. An error
            # response carries the hop count of the message it answers, but is never forwarded.
            return False
        key = (message.address, message.port)
        pending = self._pending.get(identity)
        if pending is not None and pending.key == key:
            if pending.on_response is not None:
                del self._pending[identity]
                pending.on_response(message)
                return True
            if pending.response is None and pending.error is None:
                if meta is not None and meta.error is not None:
                    pending.error = remote_error(meta.error)
                    message.release()
                else:
                    pending.response = message
                    pending.response_first = awaiting_ack
                    if pending.auto_release:
                        message.release()
                pending.settle()
                return True
            return False  # a second response: the application sees it
        abandoned = self._abandoned.get(identity)
        if abandoned is None:
            return False
        del self._abandoned[identity]
        if abandoned[0] != key or abandoned[1] < trio.current_time():
            return False
        self.late_responses += 1
        logger.info(
            "late response %s from %s released: its request had given up", identity.hex(), format_peer(*key)
        )
        message.release()
        return True


def remote_error(info: ErrorInfo) -> RemoteError:
    """The exception an error response raises where it lands."""
    return RemoteError(
        f"the message failed at {info.hop}: {info.kind}: {info.text}",
        hop=info.hop,
        kind=info.kind,
        text=info.text,
    )


def destination_key(message: Message) -> RemoteKey:
    """The remote key ``message`` goes to, by the node's own validation (``ValueError`` if bad)."""
    return destination_of(message.address, message.port)


def describe_hop(role: str, port: int, identity: bytes) -> str:
    """How a router or worker names itself in error responses: ``"worker on port 2998 (node 1a2b3c4d)"``."""
    return f"{role} on port {port} (node {identity.hex()[:8]})"


Send = Callable[[Message, "bool | None", "SendOptions | None"], Awaitable[None]]
"""The node's internal send: ``send(message, synchronous, options)``."""


class SendState(Protocol):
    """What requests need to know of the synchronous message in flight to a peer (the remote table)."""

    def awaiting_ack(self, key: RemoteKey, identity: bytes) -> bool:
        """Whether the synchronous message in flight to ``key`` has ``identity``."""

    def settle_in_flight(self, key: RemoteKey, identity: bytes, error: ChirpError) -> bool:
        """Fail that message with ``error`` if it has ``identity``; True if it did."""

    def reading_of(self, key: RemoteKey) -> FrameReader | None:
        """The frame reader of the current connection to ``key``, where its responses come."""

    def peer_announced(self, key: RemoteKey) -> bool:
        """Whether the peer at ``key`` announced itself as trio_chirp (so it reads error responses)."""


_RESPONSE = SendOptions(wait_until_written=True, deadline_travels=False, overtakes=True)
"""A response: written before its request is released, no deadline travels back, ahead of
our own synchronous message in flight to that peer."""


def _error_response(info: ErrorInfo, hops: int = 0) -> SendOptions:
    """An error response: like a response, with our map's ``error`` key."""
    return SendOptions(
        ChirpMeta(error=info, hops=hops), wait_until_written=True, deadline_travels=False, overtakes=True
    )


class Requests:
    """A node's requests and replies, error responses both ways, and failing undeliverable messages."""

    def __init__(self, config: Config, send: Send, in_flight: SendState, log: LimitedLog) -> None:
        self._config = config
        self._send = send
        self._in_flight = in_flight
        self._log = log
        self.table = RequestTable(remember_for=config.timeout)
        self.error_responses_in = 0
        self.error_responses_out = 0
        self.unmatched_error_responses = 0

    # --- what arrives -------------------------------------------------------------------
    def offer(self, message: Message) -> bool:
        """Take ``message`` if it is a response someone waits for (or a late one); True if taken."""
        key = (message.address, message.port)
        return self.table.offer(message, self._in_flight.awaiting_ack(key, message.identity))

    def on_error_response(self, message: Message, info: ErrorInfo) -> None:
        """Fail what it answers at once: the synchronous send in flight, or a request; never delivered."""
        self.error_responses_in += 1
        key = (message.address, message.port)
        if self._in_flight.settle_in_flight(key, message.identity, remote_error(info)):
            message.release()
            return
        if self.table.active and self.table.offer(message):
            return
        self.unmatched_error_responses += 1
        self._log.limited(
            message.address,
            "unmatched error response",
            "error responses that matched nothing",
            "error response %s from %s matched no waiting send or request: %s: %s",
            message.identity.hex(),
            format_peer(message.address, message.port),
            info.kind,
            info.text,
            log=node_logger,
        )
        message.release()

    # --- for routers ----------------------------------------------------------------------
    def expect(self, identity: bytes, key: RemoteKey, on_response: Callable[[Message], None]) -> None:
        """Route the response to ``identity`` from ``key`` to ``on_response`` (in the reader task).

        Raises ``MessageInUseError`` if a response to ``identity`` is already awaited."""
        self.table.expect(identity, key, on_response)

    def forget(self, identity: bytes) -> None:
        """Stop expecting that response; a late one is dropped for a while."""
        self.table.forget(identity, abandoned=True)

    # --- request and reply ------------------------------------------------------------------
    async def request(self, message: Message, *, synchronous: bool | None, auto_release: bool) -> Message:
        """``Chirp.request()``: send ``message`` and return the response from that peer."""
        await trio.lowlevel.checkpoint_if_cancelled()
        key = destination_key(message)
        table = self.table
        config = self._config
        sync = config.synchronous if synchronous is None else synchronous
        timeout_at = trio.current_time() + config.timeout
        pending = table.expect(message.identity, key, auto_release=auto_release)
        answered = False
        try:
            # Written before it returns: a request whose frame cannot go (a peer's announced
            # limit, a lost connection) fails now, not at its deadline.
            meta = ChirpMeta(request=True, destination=message.destination)
            options = SendOptions(meta, wait_until_written=True)
            await self._send(message, sync, options)
            if sync and pending.error is None and (pending.response is None or not pending.response_first):
                table.acks_before_response += 1  # the peer ACKed first (libchirp's queue API does)
            waited = pending.response is None and pending.error is None
            if waited:
                with trio.move_on_at(timeout_at):
                    await self._await_response(pending, key)
            if pending.error is not None:
                raise pending.error
            response = pending.response
            if response is None:
                raise ChirpTimeoutError(
                    f"request to {format_peer(*key)}: no response within timeout={config.timeout}s"
                )
            answered = True
        except ChirpError:
            table.failed += 1
            raise
        finally:
            table.forget(message.identity, abandoned=not answered and pending.response is None)
            if not answered and pending.response is not None:
                pending.response.release()  # arrived, but the caller is gone
        table.completed += 1
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()  # a schedule point, whatever the send did
        # Having waited, no second yield: it would let the connection's reader take the
        # reading back before this task's next request could read its response (``_reading.py``).
        return response

    async def _await_response(self, pending: Pending, key: RemoteKey) -> None:
        """Wait until ``pending`` is settled, reading its connection meanwhile when nobody else
        does (``_reading.py``): the response then wakes this task, not a reader task first.

        The read runs under a cancel scope that ``Pending.settle`` cancels, so a response on
        another connection ends it at once; finding the reading taken, the task sits in the
        connection's seat, so the reader stands aside for it once the response is in."""
        event = pending.event
        reading = self._in_flight.reading_of(key)
        if reading is not None and reading.claimable():
            with trio.CancelScope() as scope:
                pending.reading_scope = scope
                try:
                    await reading.read_for_response(event.is_set)
                finally:
                    pending.reading_scope = None
        elif reading is not None:  # (not settled yet: this is only called then)
            seat = Seat()
            if reading.take_seat(seat):
                pending.seat = seat
                try:
                    await event.wait()
                finally:
                    pending.seat = None
                    reading.leave_seat(seat)
        if not event.is_set():  # (a set Event's wait() would still yield: a round lost)
            # No connection, another task has the seat, or the read stopped (the connection
            # failed, or a frame found no free slot and the reader took it over).
            await event.wait()

    async def reply(self, request_msg: Message, data: Buffer, *, header: Buffer = b"") -> None:
        """``Chirp.reply()``: write the response, then release the request with ACK."""
        response = Message(data, header=header, address=request_msg.address, port=request_msg.port)
        response.identity = request_msg.identity
        deadline = math.inf if request_msg.deadline is None else request_msg.deadline
        try:
            with trio.move_on_at(deadline) as scope:
                await self._send(response, False, _RESPONSE)
            if scope.cancelled_caught:
                raise ChirpTimeoutError(
                    f"reply to {format_peer(request_msg.address, request_msg.port)}: the request's"
                    " deadline passed before the response was written"
                )
        except BaseException:
            request_msg.release(ack=False)
            raise
        request_msg.release(ack=True)

    async def send_response(self, response: Message, *, error: ErrorInfo | None = None) -> None:
        """Write ``response`` (a router returning one), as an error response if ``error`` is given."""
        options = _RESPONSE if error is None else _error_response(error)
        await self._send(response, False, options)

    @staticmethod
    def is_request(message: Message) -> bool:
        """Whether ``message`` came from a trio_chirp ``request()`` (our map says so), so its
        sender waits for a response."""
        meta = meta_of(message)
        return meta is not None and meta.request

    async def refuse_oversized(
        self, key: RemoteKey, identity: bytes, size: int, limit: int, hop: str
    ) -> None:
        """Tell a trio_chirp sender that its message ``identity`` was refused for its size.

        Its ``send()``/``request()`` fails at once with ``RemoteError`` (kind
        ``MessageTooLargeError``); the message was never ACKed. A failure to write this
        only costs the sender its timeout, as without it.
        """
        if not self._config.header_map:  # it would go out as an empty "response": a false success
            await trio.lowlevel.checkpoint()
            return
        info = ErrorInfo(
            kind="MessageTooLargeError",
            text=f"{size} bytes (header + data) is above the receiver's max_msg_size of {limit} bytes;"
            " refused unread, the connection kept",
            hop=hop,
        )
        response = Message(b"", address=key[0], port=key[1])
        response.identity = identity
        try:
            await self._send(response, False, _error_response(info))
        except ChirpError as exc:
            logger.info("error response for oversized message %s not sent: %s", identity.hex(), exc)
            return
        self.error_responses_out += 1

    # --- failing a message --------------------------------------------------------------------
    def can_answer_with_error(self, request_msg: Message) -> bool:
        """Only a trio_chirp peer understands an error response (its frame carried our map, or
        it announced itself on the connection), and only one that waits for the message (a
        request, or one that asked for an ACK) needs it. libchirp never gets one."""
        if not self._config.header_map:
            return False
        meta = meta_of(request_msg)
        waits = (meta is not None and meta.request) or request_msg.ack_requested
        return waits and self.understands_error_responses(request_msg)

    def understands_error_responses(self, msg: Message) -> bool:
        """Whether the sender of ``msg`` is trio_chirp: its frame carried our map, or it
        announced itself on its connection."""
        return meta_of(msg) is not None or self._in_flight.peer_announced((msg.address, msg.port))

    async def fail_message(self, msg: Message, error: BaseException, hop: str) -> bool:
        """Settle a message that could not be delivered or handled here; True if an error response went.

        An error response first where the producer waits and understands one, then the
        release: with ACK after an error response (which is on the wire first), without ACK
        otherwise, so the producer never sees success. Shielded, as cleanup: the producer
        must learn the outcome even when our caller is being cancelled; bounded by
        ``config.timeout``.
        """
        wrote = False
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._config.timeout):
                try:
                    wrote = await self.send_error_response(msg, error, hop)
                except ChirpError:
                    wrote = False
        msg.release(ack=wrote)
        return wrote

    async def send_error_response(self, request_msg: Message, error: BaseException, hop: str) -> bool:
        """Tell the sender of ``request_msg`` that it failed here; True if one was written.

        The caller then releases ``request_msg`` with ACK: the error response is on the wire
        first, so the sender's ``send()``/``request()`` fails with ``RemoteError`` at once.
        """
        if not self.can_answer_with_error(request_msg):
            await trio.lowlevel.checkpoint()
            return False
        meta = meta_of(request_msg)
        if isinstance(error, RemoteError):  # passed on from further downstream: keep its hop
            info = ErrorInfo(kind=error.kind, text=error.text, hop=error.hop)
        else:
            info = ErrorInfo(kind=type(error).__name__, text=str(error), hop=hop)
        response = Message(b"", address=request_msg.address, port=request_msg.port)
        response.identity = request_msg.identity
        hops = 0 if meta is None else meta.hops
        await self._send(response, False, _error_response(info, hops))
        self.error_responses_out += 1
        return True
