"""One peer node, as (address, announced port): its queues, its message in flight, its connections.

The remote is where sending is decided (docs/protocol.md, section 7.1): a bounded FIFO of data
messages, a FIFO of control frames (ACK, NOOP) that overtake data, the synchronous
messages waiting for their ACKs (at most one to libchirp, up to the window a trio_chirp
peer announced: ``window``), the serial counter, the current connection (the only one
written on) and old ones (still read until collected).

Connections pull work from here (``take_batch``) instead of the remote pushing into
them, so a remote never blocks on a connection and a connection never blocks on
anything but its own stream.

The remote knows its connections only through ``Link``, the few things it asks of one
(defined here, so this module never imports the connection that implements it); it is
generic in the link type, so its owner gets its own connection type back.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

import trio

from ._address import RemoteKey, format_peer
from ._errors import ChirpError, ChirpTimeoutError, ConnectionLostError, MessageTooLargeError, ShutdownError
from ._header import ChirpMeta, add_to_header
from ._message import Message, payload_of
from ._protocol import FRAME_HEAD_SIZE, TYPE_ACK, TYPE_NOOP, TYPE_REQ_ACK, ZERO_IDENTITY, pack_frame_head
from ._protocol.constants import MAX_SERIAL

__all__ = [
    "MAX_WINDOW",
    "NO_LIMIT",
    "Link",
    "Outgoing",
    "OutgoingState",
    "Remote",
    "lost_error",
    "too_large_error",
]

NO_LIMIT: Final = 1 << 64
"""``peer_max_msg_size`` of a peer that announced none (libchirp): the wire's own limits apply."""

MAX_WINDOW: Final = 64
"""The most synchronous messages in flight to one remote, whatever window its peer announced
(ours grant at most 32: ``Config.max_slots``); more would only hold more senders' messages."""

COALESCE_BYTES: Final = 256 * 1024
"""The writer joins queued frames into one write up to about this many bytes."""


class Link(Protocol):
    """What a remote needs of a connection it writes on (``_connection.Connection`` is one)."""

    writer_idle: bool
    """Its writer is parked with nothing to do, so ``write_now()`` may write from the caller."""

    def write_now(self) -> None:
        """Write urgent work (ACKs, a synchronous message) at once, from the calling task."""

    def ack_awaited(self, deadline: float) -> None:
        """A synchronous message written here waits for its ACK: unless one was already
        waited for, close the connection if no ACK comes by ``deadline``."""

    def ack_settled(self, more_awaited: bool) -> None:
        """An ACK (or error response) settled a message written here. ``more_awaited``:
        others still wait, and get ``timeout`` again from now (ACKs keep coming, so the
        peer is alive; each ``send()`` still fails at its own deadline)."""

    def unread_ack_hint(self) -> str:
        """Why an ACK on this connection may go unread (our own receive slots are held), or ""."""


L = TypeVar("L", bound=Link)


class OutgoingState(enum.Enum):
    NEW = "waiting for queue room"
    QUEUED = "queued"
    WRITING = "writing"
    AWAITING_ACK = "awaiting ACK"
    DONE = "done"
    WITHDRAWN = "withdrawn"


class Outgoing:
    """One accepted ``send()``: the payload captured at submission and how it ended."""

    __slots__ = (
        "confirm",
        "connection",
        "data",
        "deadline",
        "error",
        "header",
        "identity",
        "message",
        "meta",
        "overtakes",
        "state",
        "synchronous",
        "travel",
        "waiter",
    )

    def __init__(
        self,
        message: Message,
        synchronous: bool,
        deadline: float,
        travel: float | None = None,
        meta: ChirpMeta | None = None,
        confirm: bool = False,
        overtakes: bool = False,
    ) -> None:
        self.message = message
        # Captured now: the caller may mutate the message once send() returned.
        self.identity = message.identity
        self.header, self.data = payload_of(message)  # the properties' values, without their frames
        self.synchronous = synchronous
        self.deadline = deadline
        self.travel = travel
        """The deadline that travels in our header map (stamped as remaining time when written)."""
        self.meta = meta
        """Our header map's other fields; None: the header goes as the application gave it."""
        self.confirm = confirm
        """An asynchronous message whose sender waits until it is written (``reply()``)."""
        self.overtakes = overtakes
        """A response (plain or error): written even while a synchronous message is in flight."""
        self.state = OutgoingState.NEW
        self.error: ChirpError | None = None
        self.connection: Link | None = None
        self.waiter: trio.Event | None = None

    def finish(self, error: ChirpError | None) -> None:
        if self.state is OutgoingState.DONE:
            return
        self.state = OutgoingState.DONE
        self.error = error
        if self.waiter is not None:
            self.waiter.set()

    async def wait(self) -> None:
        if self.state is OutgoingState.DONE or self.state is OutgoingState.WITHDRAWN:
            await trio.lowlevel.checkpoint()
            return
        if self.waiter is None:
            self.waiter = trio.Event()
        await self.waiter.wait()


class Remote(Generic[L]):
    """Sending state for one peer node; owned by the node, used by its connections (``L``)."""

    def __init__(
        self,
        key: RemoteKey,
        *,
        serial: int,
        queue_size: int,
        noop_threshold: float,
        on_needs_connection: Callable[[Remote[L]], None],
        on_lost: Callable[[Remote[L], Outgoing, ChirpError], None],
    ) -> None:
        self.key = key
        self.address, self.port = key
        self._serial = serial
        self._queue_size = queue_size
        self._noop_threshold = noop_threshold
        self._on_needs_connection = on_needs_connection
        self._on_lost = on_lost
        self.queue: deque[Outgoing] = deque()
        self.overtaking: deque[Outgoing] = deque()
        """Responses: written even while a synchronous message is in flight (see enqueue)."""
        self.queued = 0  # entries in ``queue`` not withdrawn
        self.control: deque[bytes] = deque()  # identities to ACK; ZERO_IDENTITY + NOOP marker
        self._noop_pending = False
        self.in_flight: dict[bytes, Outgoing] = {}
        """Synchronous messages written (or being written) and waiting for their ACKs, by
        identity, oldest first; at most ``window`` (an ACK is matched by identity alone)."""
        self.window = 1
        """How many synchronous messages may be in flight: 1 (libchirp's rule: a second
        REQ_ACK in flight corrupts its control queue) until the current connection's peer
        announces itself as trio_chirp with its receive slots (docs/protocol.md, section 12)."""
        self.current: L | None = None
        self.old: set[L] = set()
        self._clock = trio.lowlevel.current_clock().current_time  # trio.current_time(), one call less
        self.last_activity = self._clock()
        self.blocked = False
        self.connecting = False
        self.closed = False
        self.last_error: ChirpError | None = None
        """The most recent failure of any kind (for statistics)."""
        self.last_error_at: float | None = None
        self.last_connection_error: ChirpError | None = None
        """The most recent failure of a connection or connection attempt: the ``__cause__`` of
        a "still connecting" timeout (never a send's own error, which would chain them)."""
        self.connect_error: ChirpError | None = None
        """Set while debouncing after a failed connection attempt: sends raise it at once."""
        self.peer_max_msg_size = NO_LIMIT
        """What the peer announced on the current connection it accepts (header + data)."""
        self.unwritten_async = 0  # async messages accepted and not yet written or failed
        self.async_failures: list[ChirpError] = []
        self.writer_lot = trio.lowlevel.ParkingLot()  # writers wait here for work
        self.room_lot = trio.lowlevel.ParkingLot()  # senders wait here for queue room
        self.flush_lot = trio.lowlevel.ParkingLot()  # flush() waits here
        self.ack_lot = trio.lowlevel.ParkingLot()  # node shutdown waits for in-flight ACKs

    def __repr__(self) -> str:
        return f"<Remote {format_peer(self.address, self.port)}>"

    def note_error(self, error: ChirpError, *, connection: bool = False) -> None:
        self.last_error = error
        self.last_error_at = trio.current_time()
        if connection:
            self.last_connection_error = error

    # --- submitting ---------------------------------------------------------------------
    def has_room(self) -> bool:
        return self.queued < self._queue_size

    def enqueue(self, out: Outgoing) -> None:
        """Append an accepted message; the caller has checked for room."""
        if not self._noop_pending and self._clock() - self.last_activity > self._noop_threshold:
            self._probe()  # _maybe_probe() written out: this runs for every send
        out.state = OutgoingState.QUEUED
        if out.overtakes and not out.synchronous:
            # A response (plain or error) answers a message the peer is waiting on; it asks
            # for no ACK, so writing it ahead of our own message in flight pipelines no
            # REQ_ACK (libchirp included: it is an ordinary type-0 frame). Queued behind that
            # message it could wait for an ACK that waits for it (two routers forwarding to
            # each other lock up so).
            self.overtaking.append(out)
        else:
            self.queue.append(out)
        self.queued += 1
        if not out.synchronous:
            self.unwritten_async += 1
        # Someone waits for a synchronous message's ACK, or for a request's or a response's
        # write (``confirm``): written from the caller's task when the writer is idle.
        self.kick(urgent=out.synchronous or out.confirm)

    def queue_ack(self, identity: bytes) -> None:
        self._maybe_probe()
        self.control.append(identity)
        self.kick(urgent=True)

    def _maybe_probe(self) -> None:
        """Put a NOOP first when idle long enough that the peer may be collecting us (7.2)."""
        if not self._noop_pending and self._clock() - self.last_activity > self._noop_threshold:
            self._probe()

    def _probe(self) -> None:
        self._noop_pending = True
        self.control.append(ZERO_IDENTITY)

    def kick(self, *, urgent: bool = False) -> None:
        """Something changed: wake the writer, or ask the node for a connection.

        ``urgent`` work (an ACK, a synchronous message, a message whose sender waits for its
        write: someone waits on it) is written
        at once from the calling task when the writer is idle; other work wakes the
        writer, so a burst of asynchronous sends is coalesced into one write.
        """
        current = self.current
        if current is not None:
            if self.queued or self.control:
                if urgent and current.writer_idle:
                    current.write_now()
                elif self.writer_lot:  # asking an empty lot costs two calls per message
                    self.writer_lot.unpark_all()
        elif not self.blocked and not self.connecting and not self.closed and (self.queued or self.control):
            self._on_needs_connection(self)

    def withdraw(self, out: Outgoing, error: ChirpError) -> None:
        """Take a still-queued message back (its deadline passed or its caller left)."""
        if out.state is not OutgoingState.QUEUED:
            return
        out.state = OutgoingState.WITHDRAWN
        self.queued -= 1
        self.room_lot.unpark()
        out.error = error
        if not out.synchronous:
            self._async_lost(out, error)
        if out.waiter is not None:
            out.waiter.set()

    def expire_queued(self, now: float, describe: Callable[[Outgoing], ChirpError]) -> None:
        """Withdraw every queued message whose own deadline has passed."""
        for out in [*self.queue, *self.overtaking]:
            if out.state is OutgoingState.QUEUED and out.deadline <= now:
                self.withdraw(out, describe(out))
        self._compact()

    def _refuse(self, out: Outgoing, error: ChirpError) -> None:
        """A message taken from the queue that cannot be written: it fails, nothing is sent."""
        out.state = OutgoingState.WITHDRAWN
        out.error = error
        if out.synchronous:
            if out.waiter is not None:
                out.waiter.set()
        else:
            self._async_lost(out, error)

    def _compact(self) -> None:
        queue = self.queue
        while queue and queue[0].state is not OutgoingState.QUEUED:
            queue.popleft()

    def _async_lost(self, out: Outgoing, error: ChirpError) -> None:
        self.unwritten_async -= 1
        if out.confirm:
            out.finish(error)  # its sender waits and raises it: not lost silently
        else:
            self.async_failures.append(error)
            self._on_lost(self, out, error)
        if not self.unwritten_async:
            self.flush_lot.unpark_all()

    # --- writing (called by the current connection's writer) ----------------------------
    def next_serial(self) -> int:
        serial = self._serial
        self._serial = (serial + 1) & MAX_SERIAL
        return serial

    def take_batch(self, conn: L) -> tuple[list[bytes], list[Outgoing], int, int] | None:
        """Frames for one coalesced write: all control frames, then data in FIFO order.

        Returns the frames' parts, the data messages, and the number of ACKs and NOOPs.

        Data is written in the order it was accepted (FIFO per remote) while fewer than
        ``window`` synchronous messages wait for their ACKs; at the window, nothing more
        of the queue is written until an ACK arrives. Responses (``overtaking``) do not
        wait for the window. A synchronous message whose identity is already in flight
        waits at the head of the queue until that one settles (ACKs match by identity).
        """
        if self.current is not conn:
            return None
        parts: list[bytes] = []
        control = self.control
        noops = 0
        while control:
            identity = control.popleft()
            if identity is ZERO_IDENTITY:
                self._noop_pending = False
                noops += 1
                parts.append(pack_frame_head(identity, self.next_serial(), 0, 0, TYPE_NOOP))
            else:
                parts.append(pack_frame_head(identity, self.next_serial(), 0, 0, TYPE_ACK))
        acks = len(parts) - noops
        queue = self.queue
        overtaking = self.overtaking
        if not queue and not overtaking:  # control frames only: an ACK, on a receiver's release
            return (parts, [], acks, noops) if parts else None
        outs: list[Outgoing] = []
        size = 0
        taken = 0
        now = trio.current_time()
        in_flight = self.in_flight
        while size < COALESCE_BYTES:
            if overtaking:
                out = overtaking.popleft()
            elif queue and len(in_flight) < self.window:
                out = queue[0]
                if out.synchronous and out.identity in in_flight and out.state is OutgoingState.QUEUED:
                    break
                queue.popleft()
            else:
                break
            if out.state is not OutgoingState.QUEUED:
                continue
            self.queued -= 1
            taken += 1
            if out.deadline <= now and not out.synchronous:
                # Nobody waits on an async message; it expired in the queue.
                out.state = OutgoingState.WITHDRAWN
                self._async_lost(out, ChirpTimeoutError(f"message expired in the queue for {self}"))
                continue
            header, data = out.header, out.data
            meta = out.meta
            if meta is not None:
                # A travelling deadline is stamped now, as the frame is serialized (a relative duration).
                remaining = None if out.travel is None else max(0.0, out.travel - now)
                mapped = add_to_header(header, meta, remaining)
                if mapped is not None:
                    header = mapped
            if len(header) + len(data) > self.peer_max_msg_size:
                # Queued before the peer's announcement said what it takes, or over it only
                # with our header map: what the peer would refuse is not written.
                ours = len(header) - len(out.header)
                self._refuse(out, too_large_error(len(header) + len(data), self, ours))
                continue
            type_ = TYPE_REQ_ACK if out.synchronous else 0
            out.message.serial = serial = self.next_serial()
            parts.append(pack_frame_head(out.identity, serial, len(data), len(header), type_))
            if header:
                parts.append(header)
            if data:
                parts.append(data)
            size += FRAME_HEAD_SIZE + len(header) + len(data)
            out.state = OutgoingState.WRITING
            out.connection = conn
            outs.append(out)
            if out.synchronous:
                in_flight[out.identity] = out
        if taken:
            self.room_lot.unpark(count=taken)
        if not parts:
            return None
        return parts, outs, acks, noops

    def on_written(self, conn: L, outs: list[Outgoing], ack_deadline: float) -> None:
        self.last_activity = trio.current_time()
        awaited = False
        for out in outs:
            if out.synchronous:
                if out.state is OutgoingState.WRITING:
                    out.state = OutgoingState.AWAITING_ACK
                    awaited = True
            else:
                self.unwritten_async -= 1
                out.finish(None)
        if awaited:
            conn.ack_awaited(ack_deadline)
        if not self.unwritten_async:
            self.flush_lot.unpark_all()

    # --- receiving ----------------------------------------------------------------------
    def on_ack(self, identity: bytes) -> bool:
        """Match an ACK by identity only, as libchirp does; unknown ACKs are ignored."""
        return self._settle_in_flight(identity, None)

    def on_error_response(self, identity: bytes, error: ChirpError) -> bool:
        """An error response for a message in flight: fail it now and free its place.

        The place is not kept for the ACK that follows (a trio_chirp hop writes the error
        response, then releases with ACK): that ACK then matches nothing and is ignored.
        """
        return self._settle_in_flight(identity, error)

    def in_flight_on(self, conn: Link) -> bool:
        """Whether a synchronous message in flight was written on ``conn`` (its ACK comes there)."""
        return any(out.connection is conn for out in self.in_flight.values())

    def awaiting_ack(self, identity: bytes) -> bool:
        """Whether a synchronous message with ``identity`` is in flight (its ACK not read yet)."""
        return identity in self.in_flight

    def learn_peer(self, max_msg_size: int, window: int) -> None:
        """The current connection's peer announced itself (docs/protocol.md, section 12)."""
        self.peer_max_msg_size = max_msg_size
        self.window = min(max(window, 1), MAX_WINDOW)
        self.writer_lot.unpark_all()  # a wider window may let queued messages go

    def _forget_peer(self) -> None:
        """Nothing is known of a new (or no) current connection's peer until it announces."""
        self.peer_max_msg_size = NO_LIMIT
        self.window = 1

    def _settle_in_flight(self, identity: bytes, error: ChirpError | None) -> bool:
        out = self.in_flight.pop(identity, None)
        if out is None:
            return False
        conn = out.connection
        if conn is not None:
            conn.ack_settled(bool(self.in_flight) and self.in_flight_on(conn))
        out.finish(error)
        self.ack_lot.unpark_all()
        self.kick(urgent=True)
        return True

    def timeout_error(self, out: Outgoing, timeout: float) -> ChirpTimeoutError:
        """Why ``out`` did not complete within ``timeout``, by how far it got."""
        where = format_peer(self.address, self.port)
        if out.state is OutgoingState.QUEUED or out.state is OutgoingState.NEW:
            if self.current is None:
                last = self.last_connection_error
                detail = f"; last attempt: {last}" if last is not None else ""
                error = ChirpTimeoutError(
                    f"send to {where} timed out after {timeout}s still connecting{detail}"
                )
                error.__cause__ = last
                return error
            return ChirpTimeoutError(
                f"send to {where} timed out after {timeout}s still queued ({self.queued} queued,"
                f" {len(self.in_flight)} in flight)"
            )
        if out.state is OutgoingState.WRITING:
            return ChirpTimeoutError(f"send to {where} timed out after {timeout}s while being written")
        hint = "" if out.connection is None else out.connection.unread_ack_hint()
        return ChirpTimeoutError(f"send to {where}: no ACK within timeout={timeout}s{hint}")

    # --- connections --------------------------------------------------------------------
    def attach(self, conn: L) -> None:
        """The connection whose handshake came last becomes current (2.5)."""
        previous = self.current
        if previous is not None and previous is not conn:
            self.old.add(previous)
        self.old.discard(conn)
        self.current = conn
        self._forget_peer()  # learned afresh from this connection's announcement
        self.connect_error = None  # reachable after all (e.g. its own dial reached us)
        self.last_activity = trio.current_time()
        self.writer_lot.unpark_all()

    def on_connection_closed(self, conn: L, cause: ChirpError, written: list[Outgoing]) -> None:
        """Fail what this connection carried; queued messages stay for the next connection."""
        self.old.discard(conn)
        if self.current is conn:
            self.current = None
            self._forget_peer()  # learned again from the next connection
            self.control.clear()  # ACKs for this link die with it (docs/protocol.md, section 5.3)
            self._noop_pending = False
        carried = [out for out in self.in_flight.values() if out.connection is conn]
        for out in carried:
            del self.in_flight[out.identity]
            out.finish(cause)
        if carried:
            self.ack_lot.unpark_all()
        for out in written:
            if out.state is OutgoingState.WRITING:
                if out.synchronous:
                    out.finish(cause)
                else:
                    if not out.confirm:
                        out.state = OutgoingState.DONE
                    self._async_lost(out, cause)

    def fail_all_queued(self, error_factory: Callable[[], ChirpError]) -> None:
        for out in [*self.queue, *self.overtaking]:
            if out.state is OutgoingState.QUEUED:
                self.withdraw(out, error_factory())
        self.queue.clear()
        self.overtaking.clear()
        self.room_lot.unpark_all()

    def close(self) -> None:
        """Forget this remote (GC or node shutdown): nothing more may be queued."""
        self.closed = True
        self.fail_all_queued(lambda: ShutdownError(f"{self} is closing"))
        self.flush_lot.unpark_all()
        self.ack_lot.unpark_all()


def lost_error(cause: BaseException) -> ChirpError:
    """The error a message carried by a failed connection reports."""
    if isinstance(cause, ChirpError):
        return cause
    error = ConnectionLostError(f"connection lost: {cause!r}")
    error.__cause__ = cause
    return error


def too_large_error(size: int, remote: Remote[L], map_size: int = 0) -> MessageTooLargeError:
    """A message the peer announced it would refuse: said before a byte of it is written."""
    ours = f", {map_size} of them trio_chirp's header map" if map_size else ""
    return MessageTooLargeError(
        f"message of {size} bytes (header + data{ours}) is above the max_msg_size of"
        f" {format_peer(remote.address, remote.port)} ({remote.peer_max_msg_size} bytes, as it"
        " announced); not sent"
    )
