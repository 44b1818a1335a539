"""Sending: from ``send()`` to a remote's queue, and what a send that did not complete raises.

The fast path (an asynchronous message that finds room) is a few checks and an append;
the slow path waits for queue room and, when synchronous, for the ACK, under the sooner
of the caller's deadline and ``config.timeout``. Errors say how far the message got
(``Remote.timeout_error``) and are counted before they are raised, so ``statistics()``
already shows them. docs/deadlines.md says which deadline travels in our header map.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

import trio

from .._address import RemoteKey, destination_of
from .._connection import Connection
from .._deadline import effective_deadline
from .._errors import ChirpError, ChirpTimeoutError, MessageInUseError, ShutdownError
from .._header import ChirpMeta
from .._message import Message, SendOptions, in_use, payload_of, set_in_use
from .._protocol import check_frame_lengths
from .._protocol.constants import MAX_DATA_LEN, MAX_HEADER_LEN
from .._remote import Outgoing, OutgoingState, too_large_error
from ._encryption import Encryption
from ._remotes import NodeRemote, RemoteTable, copy_error
from ._state import NodeState

__all__ = ["YIELD_EVERY", "Pacer", "Sender", "Waiting"]

Waiting = tuple[NodeRemote, RemoteKey, Outgoing, float]
"""A send that must wait (for room, or for its ACK): its remote, key, capture and timeout."""

NO_FIELDS: Final = ChirpMeta()
"""The map of a send with nothing but a travelling deadline (shared: a ``ChirpMeta`` is frozen,
and building one per send cost as much as a third of what the map costs)."""

YIELD_EVERY: Final = 64
"""A send or receive that need not wait still yields to the scheduler this often."""


class Pacer:
    """Counts sends and receives that did not wait, so every ``YIELD_EVERY``-th one yields.

    One counter for both, shared by ``Sender`` and ``receive()``: a loop that sends and
    receives without waiting still lets other tasks run.
    """

    __slots__ = ("_unyielded",)

    def __init__(self) -> None:
        self._unyielded = 0

    def due(self) -> bool:
        """Count one send or receive that did not wait: True when it must yield now.

        A plain function, not a coroutine: the caller awaits
        ``trio.lowlevel.cancel_shielded_checkpoint()`` only when it is due.
        """
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            return True
        return False


class Sender:
    """The node's ``send()``, for applications (no options) and its own senders (with options)."""

    def __init__(self, state: NodeState, remotes: RemoteTable, encryption: Encryption, pacer: Pacer) -> None:
        self._state = state
        self._config = config = state.config
        self._remotes = remotes
        self._find = remotes.find
        self._encryption = encryption
        self._plaintext_only = not encryption.can_serve_tls
        self._pacer = pacer
        self._header_map = config.header_map
        self._clock = trio.lowlevel.current_clock().current_time  # trio.current_time(), one call less
        self.send_errors: Counter[str] = Counter()

    async def send(self, message: Message, synchronous: bool | None, options: SendOptions | None) -> None:
        """``Chirp.send()`` with ``options``, for trio_chirp's own senders (see ``SendOptions``).

        ``Chirp.send()`` repeats these few lines instead of awaiting this coroutine: one
        coroutine less per send is measurable on the asynchronous fast path.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waiting = self.accept(message, synchronous, options)
        if waiting is not None:
            await self.send_waiting(waiting)
        elif self._pacer.due():
            await trio.lowlevel.cancel_shielded_checkpoint()

    def accept(
        self, message: Message, synchronous: bool | None, options: SendOptions | None
    ) -> Waiting | None:
        """Check and capture a send; enqueue it at once if it need not wait (then None).

        The fast path: an asynchronous message that finds room is accepted here, with no
        coroutine; otherwise what ``send_waiting`` needs is returned. Errors are counted
        here, before they are raised, so ``statistics()`` already shows them.
        """
        remote: NodeRemote | None = None
        try:
            state = self._state
            if state.closing:
                raise ShutdownError(f"{state} is closed")
            key = destination_of(message.address, message.port)
            header, data = payload_of(message)
            header_len, data_len = len(header), len(data)
            if header_len > MAX_HEADER_LEN or data_len > MAX_DATA_LEN:
                check_frame_lengths(header_len, data_len)  # raises, saying which
            if self._plaintext_only and self._encryption.needs_tls(key[0]):
                raise self._encryption.missing_tls_error(key[0])
            if in_use(message):
                raise MessageInUseError(f"{message!r} is already being sent")
            config = self._config
            sync = config.synchronous if synchronous is None else synchronous
            timeout_at = self._clock() + config.timeout
            out = self._outgoing(message, sync, timeout_at, options)
            remote = self._find(key)
            if remote is None:
                remote = self._remotes.get(key)
            if remote.connect_error is not None and remote.current is None:
                raise copy_error(remote.connect_error)
            if header_len + data_len > remote.peer_max_msg_size:
                raise too_large_error(header_len + data_len, remote)
            if (
                not sync
                and not out.confirm
                and not remote.closed
                and remote.has_room()
                and not remote.room_lot
            ):
                # Fast path: accepted at once. Yielding only every YIELD_EVERY sends (the
                # caller's Pacer.due()) lets the writer coalesce what a tight loop queues.
                remote.enqueue(out)
                return None
            return remote, key, out, timeout_at
        except ChirpError as error:
            self._count(error, remote)
            raise

    async def send_waiting(self, waiting: Waiting) -> None:
        """The slow path of a send ``accept`` returned: wait for room and, if synchronous, the ACK."""
        remote, key, out, timeout_at = waiting
        try:
            await self._send_waiting(remote, key, out, timeout_at)
        except ChirpError as error:
            self._count(error, remote)
            raise

    def _count(self, error: ChirpError, remote: NodeRemote | None) -> None:
        self.send_errors[type(error).__name__] += 1
        if remote is not None:
            remote.note_error(error)

    def _outgoing(
        self, message: Message, sync: bool, timeout_at: float, options: SendOptions | None
    ) -> Outgoing:
        """Capture a send: its deadline, and what our header map carries (docs/deadlines.md).

        Only a deadline from the caller's cancel scope travels (as the sooner of it and
        ``config.timeout``); ``config.timeout`` alone adds nothing to the wire.
        """
        deadline = timeout_at
        caller = effective_deadline()  # trio.current_effective_deadline(), cheaper
        travel: float | None = None
        if caller != math.inf:
            deadline = min(caller, timeout_at)
            travel = deadline
        meta: ChirpMeta | None = None
        confirm = overtakes = False
        if options is not None:
            meta = options.meta
            confirm = options.wait_until_written
            overtakes = options.overtakes
            if not options.deadline_travels:
                travel = None
            elif options.travel_at is not None:
                travel = options.travel_at  # a router's: earlier than its own wait
        if not self._header_map:
            return Outgoing(message, sync, deadline, None, None, confirm, overtakes)
        if meta is None:
            if message.destination is not None:
                meta = ChirpMeta(destination=message.destination)
            elif travel is not None:
                meta = NO_FIELDS  # a deadline alone: it is stamped as the frame is written
        return Outgoing(message, sync, deadline, travel, meta, confirm, overtakes)

    async def _send_waiting(self, remote: NodeRemote, key: RemoteKey, out: Outgoing, deadline: float) -> None:
        """The slow path: wait for queue room and, if synchronous, the ACK."""
        message = out.message
        state = self._state
        set_in_use(message, True)
        try:
            # With room, the message is queued (and, with the writer idle, written) before
            # the cancel scope's cost: no await comes between, so nothing else changes.
            queued = remote.has_room() and not remote.closed
            if queued:
                remote.enqueue(out)
            unscoped = queued and _bounded_by_the_ack_timer(remote, out)
            if unscoped:
                await self._await_outcome(out)  # no scope of its own: see the function
            else:
                with trio.move_on_at(deadline):
                    while not queued and (not remote.has_room() or remote.closed):
                        if not remote.closed:
                            await remote.room_lot.park()
                        if state.closing:
                            raise ShutdownError(f"{state} closed while {message!r} waited for queue room")
                        remote = self._remotes.get(key)
                        if remote.connect_error is not None and remote.current is None:
                            raise copy_error(remote.connect_error)
                    if not queued:
                        remote.enqueue(out)
                    if not out.synchronous and not out.confirm:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return
                    await self._await_outcome(out)
        except BaseException:
            self._abandon(remote, out, None)
            raise
        finally:
            set_in_use(message, False)
        if out.state is OutgoingState.DONE or out.state is OutgoingState.WITHDRAWN:
            failure = out.error
            if failure is None:
                return
            if unscoped and _ack_timer_ended(out, failure):  # said as the scope would have
                raise remote.timeout_error(out, self._config.timeout) from failure
            raise failure
        error = remote.timeout_error(out, self._config.timeout)
        self._abandon(remote, out, error)
        raise error

    @staticmethod
    async def _await_outcome(out: Outgoing) -> None:
        """Wait for the ACK (or the failure) of ``out``; a synchronous message written on a
        connection reads it there itself when nobody else does (``_reading.py``): the ACK
        then wakes this task directly, saving the reader task's round per message."""
        conn = out.connection
        if out.synchronous and isinstance(conn, Connection):
            await conn.reading.await_settled(out)
        else:
            await out.wait()

    @staticmethod
    def _abandon(remote: NodeRemote, out: Outgoing, error: ChirpError | None) -> None:
        """The caller left: a queued message is withdrawn; one on the wire keeps its place
        (a synchronous one until its ACK or its write + timeout), and its outcome is dropped."""
        if out.state is OutgoingState.QUEUED:
            remote.withdraw(out, error or ShutdownError("the sender was cancelled"))
            remote.kick()


def _bounded_by_the_ack_timer(remote: NodeRemote, out: Outgoing) -> bool:
    """Whether a send may wait for its ACK without a cancel scope of its own.

    True for a synchronous message written the moment it was accepted and alone in flight
    (the peer grants one: libchirp, a synchronous receiver): its connection's ACK timer
    then closes the connection ``timeout`` after that write, which fails the message with
    that timeout, within microseconds of the deadline the scope would have had
    (``config.timeout`` from the accept). A caller's own deadline never needed this scope:
    the caller's cancel scope ends the wait. Entering and leaving a cancel scope costs about
    5 us on the critical path of every round trip (docs/performance.md).
    """
    return out.state is OutgoingState.AWAITING_ACK and remote.window == 1


def _ack_timer_ended(out: Outgoing, failure: ChirpError) -> bool:
    """Whether ``failure`` is the ACK timeout with which ``out``'s connection closed."""
    conn = out.connection
    return isinstance(failure, ChirpTimeoutError) and isinstance(conn, Connection) and failure is conn.failure
