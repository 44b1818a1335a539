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
from .._errors import ChirpError, MessageInUseError, ShutdownError
from .._header import ChirpMeta
from .._message import Message, SendOptions, in_use, set_in_use
from .._protocol import check_frame_lengths
from .._remote import Outgoing, OutgoingState, too_large_error
from ._encryption import Encryption
from ._remotes import NodeRemote, RemoteTable, copy_error
from ._state import NodeState

__all__ = ["YIELD_EVERY", "Pacer", "Sender"]

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

    async def maybe_yield(self) -> None:
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()


class Sender:
    """The node's ``send()``, for applications (no options) and its own senders (with options)."""

    def __init__(self, state: NodeState, remotes: RemoteTable, encryption: Encryption, pacer: Pacer) -> None:
        self._state = state
        self._config = config = state.config
        self._remotes = remotes
        self._encryption = encryption
        self._plaintext_only = not encryption.can_serve_tls
        self._pacer = pacer
        self._header_map = config.header_map
        self.send_errors: Counter[str] = Counter()

    async def send(self, message: Message, synchronous: bool | None, options: SendOptions | None) -> None:
        """``Chirp.send()``, with ``options`` for trio_chirp's own senders (see ``SendOptions``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        remote: NodeRemote | None = None
        try:
            state = self._state
            if state.closing:
                raise ShutdownError(f"{state} is closed")
            key = destination_of(message.address, message.port)
            header_len, data_len = len(message.header), len(message.data)
            check_frame_lengths(header_len, data_len)
            if self._plaintext_only and self._encryption.needs_tls(key[0]):
                raise self._encryption.missing_tls_error(key[0])
            if in_use(message):
                raise MessageInUseError(f"{message!r} is already being sent")
            config = self._config
            sync = config.synchronous if synchronous is None else synchronous
            timeout_at = trio.current_time() + config.timeout
            out = self._outgoing(message, sync, timeout_at, options)
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
                # Fast path: accepted at once. Yielding only every YIELD_EVERY sends lets the
                # writer coalesce what a tight loop queues into one write.
                remote.enqueue(out)
                await self._pacer.maybe_yield()
                return
            await self._send_waiting(remote, key, out, timeout_at)
        except ChirpError as error:
            self.send_errors[type(error).__name__] += 1
            if remote is not None:
                remote.note_error(error)
            raise

    def _outgoing(
        self, message: Message, sync: bool, timeout_at: float, options: SendOptions | None
    ) -> Outgoing:
        """Capture a send: its deadline, and what our header map carries (docs/deadlines.md).

        Only a deadline from the caller's cancel scope travels (as the sooner of it and
        ``config.timeout``); ``config.timeout`` alone adds nothing to the wire.
        """
        deadline = timeout_at
        caller = trio.current_effective_deadline()
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
        if meta is None and (travel is not None or message.destination is not None):
            meta = ChirpMeta(destination=message.destination)
        return Outgoing(message, sync, deadline, travel, meta, confirm, overtakes)

    async def _send_waiting(self, remote: NodeRemote, key: RemoteKey, out: Outgoing, deadline: float) -> None:
        """The slow path: wait for queue room and, if synchronous, the ACK."""
        message = out.message
        state = self._state
        set_in_use(message, True)
        try:
            with trio.move_on_at(deadline):
                while not remote.has_room() or remote.closed:
                    if not remote.closed:
                        await remote.room_lot.park()
                    if state.closing:
                        raise ShutdownError(f"{state} closed while {message!r} waited for queue room")
                    remote = self._remotes.get(key)
                    if remote.connect_error is not None and remote.current is None:
                        raise copy_error(remote.connect_error)
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
            if out.error is not None:
                raise out.error
            return
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
