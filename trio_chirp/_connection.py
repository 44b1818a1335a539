"""One byte stream to a peer: a nursery with a reader, a writer and a timer task.

* The **reader** feeds the parser. At a data frame's fixed part it takes a receive slot
  of *this* connection before the payload is consumed; with none free it stops reading,
  so TCP pushes back on the sender. It never waits on anything shared with other
  connections: delivery to the application cannot block (the slots bound it). The frame
  loop is ``_reading.FrameReader``: a synchronous ``send()`` waiting for its ACK here
  runs it itself while the reader task stands aside, one task at a time.
* The **writer** is the only task that writes. It sends our handshake first, in one
  write, then pulls coalesced batches from its remote while it is the remote's current
  connection. A frame is written whole or the connection is closed.
* The **timer** enforces the handshake deadline and the ACK deadline of the synchronous
  message written here; its cancel scope's deadline is moved instead of restarting it.

Any contained failure (``ChirpError``, ``OSError``, ``ssl.SSLError``,
``trio.BrokenResourceError``) ends only this connection (a TLS failure as ``TLSError``);
anything else is a bug and propagates to crash the node.

The connection talks upward only through ``ConnectionOwner``, a protocol defined here
(the node's link service implements it): the peer's handshake, a received message, a
malformed header map, a ClientHello where a plaintext handshake was due, and its close.

A **prelude** given by the node runs before the reader and the writer, under the handshake
timer: sniffing an accepted stream's first bytes and the TLS handshake (``_tls.py``). It
may replace the stream (by a ``_tlsstream.TLSStream``) and hand over bytes it already
read; meanwhile the connection is a handshake in progress like any other.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import trio

from ._address import format_peer
from ._batching import DIRECT_WRITE, GATHER_MIN, join_small
from ._config import Config
from ._errors import (
    ChirpError,
    ChirpTimeoutError,
    ShutdownError,
    TLSError,
)
from ._inbox import Budget, Inbox
from ._message import Message, cost_of
from ._protocol import (
    Announcement,
    FrameHead,
    FrameParser,
    Handshake,
    encode_announcement,
    encode_handshake,
)
from ._reading import CONTAINED_ERRORS, FrameReader
from ._remote import Outgoing, Remote, lost_error
from ._slots import SlotPool
from ._sniff import HELLO_PORT, client_hello_verdict
from ._stats import Traffic
from ._tls import describe_tls_failure, ssl_cause

__all__ = ["CONTAINED_ERRORS", "Connection", "ConnectionOwner", "Prelude", "aclose_quietly"]

logger = logging.getLogger("trio_chirp.connection")


SKIP_OVERSIZED_UP_TO: Final = 64 * 1024 * 1024
"""The largest frame an announced peer may send above our ``max_msg_size`` and only have
refused (skipped unread); anything larger still closes the connection."""


Prelude = Callable[["Connection"], Awaitable[tuple[trio.abc.Stream, bytes]]]
"""What runs on a connection before its reader and writer (sniffing, the TLS handshake)."""


class ConnectionOwner(Protocol):
    """What a connection asks of the node above it; every call comes from the connection's tasks."""

    def our_handshake(self) -> bytes:
        """The handshake this node sends (its listening port and identity)."""

    def on_handshake(self, conn: Connection, handshake: Handshake) -> Remote[Connection]:
        """The peer's handshake arrived: the remote the connection now belongs to.

        Raises a ``ChirpError`` to refuse the peer (the connection then closes with it)."""

    def deliver(self, conn: Connection, message: Message) -> None:
        """A message was received; it holds a slot of ``conn`` until released. Must not block."""

    def on_bad_header(self, conn: Connection) -> None:
        """A header started like our map but was malformed (the message is delivered untouched)."""

    def on_oversized(self, conn: Connection, head: FrameHead) -> bool:
        """An announced peer sent a frame above our ``max_msg_size``; it was skipped unread.

        False: it cannot be answered now (too many refusals pending): the connection closes."""

    def client_hello_refused(self, address: str) -> ChirpError:
        """The error for a TLS ClientHello where this node expected a plaintext handshake."""

    def on_closed(self, conn: Connection, cause: ChirpError) -> None:
        """The connection ended with ``cause``; called once, shielded, before its stream closes."""


async def aclose_quietly(stream: trio.abc.AsyncResource) -> None:
    """Close ``stream``; a contained failure while closing costs nothing more."""
    with contextlib.suppress(*CONTAINED_ERRORS):
        await stream.aclose()


class Connection:
    """State and tasks of one stream; created by the node for accepted and dialled streams."""

    def __init__(
        self,
        owner: ConnectionOwner,
        stream: trio.abc.Stream,
        *,
        config: Config,
        budget: Budget,
        inbox: Inbox,
        peer_address: str,
        outgoing_remote: Remote[Connection] | None,
        handshake_deadline: float,
        prelude: Prelude | None = None,
        refuse_client_hello: bool = False,
    ) -> None:
        """``prelude`` runs first, within the handshake deadline, before anything is read or
        written: it may replace the stream (TLS) and return bytes it already read from it
        (sniffed, or the first TLS read), which the reader takes first. Until it is done the
        connection is a handshake in progress like any other (limits, statistics, close).
        ``refuse_client_hello``: an accepted plaintext stream nobody sniffed; a ClientHello
        in place of the peer's handshake closes it with the node's ``TLSError``."""
        self._owner = owner
        self.config = config
        self.stream = stream
        self.peer_address = peer_address
        local = getattr(stream, "local", None)  # (ip, port) where the stream offers it
        self.local_address: str | None = str(local[0]) if isinstance(local, tuple) else None
        self.outgoing_remote = outgoing_remote
        self.outgoing = outgoing_remote is not None
        self.remote: Remote[Connection] | None = None
        self.peer_identity: bytes | None = None
        self.peer_announcement: Announcement | None = None
        """What a trio_chirp peer announced on this connection (``_protocol/announce.py``);
        None until it arrives, and for libchirp and older trio_chirp peers."""
        self.peer_port: int | None = None
        self.slots = SlotPool(config.effective_slots, budget)
        self.inbox = inbox
        """The node's inbox, where ``receive()`` may read this connection itself (``_reading.py``)."""
        is_broken = getattr(stream, "is_broken", None)
        self._is_broken: Callable[[], bool] | None = is_broken if callable(is_broken) else None
        self.closed = False
        self.peer_closed = False  # the peer ended the stream cleanly (EOF)
        self.failure: ChirpError | None = None
        self.messages_being_written: list[Outgoing] = []
        """The data messages of the batch the writer is writing now."""
        self._writing_what = ""
        self.writer_idle = False  # parked with nothing to do: write_now() may write
        self._handoff: tuple[memoryview, list[Outgoing], int, int, int, float] | None = None
        self._send_parts: Callable[[list[bytes | memoryview]], Awaitable[None]] | None = None
        self._send_nowait: Callable[[bytes], int] | None = None
        self._adopt(stream)
        self.last_activity = trio.current_time()
        self.traffic = Traffic()
        self._handshake_deadline = handshake_deadline
        self._ack_deadline = math.inf
        self._write_deadline = math.inf
        self._stall_deadline = math.inf
        self.waiting_for_slot = False
        """The reader stopped: every receive slot is held by a message not yet released."""
        self._timer_scope: trio.CancelScope | None = None
        self._nursery_scope: trio.CancelScope | None = None
        self._attached = trio.Event()
        self._prelude = prelude
        self.prelude_done = prelude is None
        self.waiting_for = ""
        """What the prelude waits for, for the timeout's message (e.g. "the TLS handshake")."""
        self._refuse_client_hello = refuse_client_hello
        self.reading = FrameReader(self)
        """The frame loop and who runs it: the reader task, or a task waiting for an ACK here."""

    def _adopt(self, stream: trio.abc.Stream) -> None:
        """Write to ``stream`` from now on, with its optional fast paths (``_transport.py``).

        ``local`` and ``is_broken`` stay those of the stream the connection was made with:
        they are about the transport, which a TLS stream wraps.
        """
        self.stream = stream
        send_parts = getattr(stream, "send_parts", None)
        self._send_parts = send_parts if callable(send_parts) else None
        send_nowait = getattr(stream, "send_nowait", None)
        self._send_nowait = send_nowait if callable(send_nowait) else None

    def __repr__(self) -> str:
        direction = "to" if self.outgoing else "from"
        return f"<Connection {direction} {format_peer(self.peer_address, self.peer_port or None)}>"

    # --- lifecycle ---------------------------------------------------------------------
    @trio.lowlevel.enable_ki_protection
    async def run(self) -> None:
        """Serve the stream until it fails or is closed; then report to the node."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery_scope = nursery.cancel_scope
                if self.closed:  # closed before it started
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._guard, self._timer)
                if self._prelude is not None:
                    await self._guard(self._run_prelude)
                if not self.closed:
                    nursery.start_soon(self._guard, self.reading.run)
                    nursery.start_soon(self._guard, self._writer)
        finally:
            self.closed = True
            cause = self.failure or ShutdownError("connection closed")
            with trio.CancelScope(shield=True):
                self._owner.on_closed(self, cause)
                with trio.move_on_after(1.0):
                    await aclose_quietly(self.stream)

    def learn(self, announcement: Announcement, parser: FrameParser) -> None:
        """The peer announced itself (docs/protocol.md, section 12): remember it for this connection."""
        self.peer_announcement = announcement
        if self.config.header_map:
            # A trio_chirp peer is told about an oversized message (an error response, which
            # needs our map) instead of losing the connection and everything else on it.
            parser.skip_oversized_up_to = SKIP_OVERSIZED_UP_TO
        if self.remote is not None and self.remote.current is self:
            self.remote.learn_peer(announcement.max_msg_size, announcement.window)

    def unread_ack_hint(self) -> str:
        """Why an ACK may have come and not been read: our reader waits for a slot (docs/lockups.md)."""
        return self.slots.why_reading_stopped() if self.waiting_for_slot else ""

    @property
    def in_handshake(self) -> bool:
        """No chirp handshake from the peer yet (preludes included)."""
        return self.remote is None

    def holds_nothing(self) -> bool:
        """No slot in use, nothing being written, no message in flight: closing it costs only a reconnect."""
        remote = self.remote
        return (
            not self.slots.in_use
            and not self.messages_being_written
            and not (remote is not None and remote.in_flight_on(self))
        )

    def is_broken(self) -> bool:
        """Whether the stream says the peer reset it (False when the stream cannot tell)."""
        return self._is_broken is not None and self._is_broken()

    def close(self, cause: ChirpError) -> None:
        """End the connection from outside (GC, node shutdown, a duplicate)."""
        if self.failure is None:
            self.failure = cause
        self.closed = True
        if self._nursery_scope is not None:
            self._nursery_scope.cancel()

    def fail(self, exc: BaseException) -> None:
        """A contained failure: the connection closes with it (the first failure is kept)."""
        self.close(self._failure(exc))

    @trio.lowlevel.enable_ki_protection
    async def _guard(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except CONTAINED_ERRORS as exc:
            self.fail(exc)

    async def _run_prelude(self) -> None:
        assert self._prelude is not None
        stream, initial_data = await self._prelude(self)
        self._adopt(stream)
        self.reading.feed(initial_data)
        self.prelude_done = True
        self.waiting_for = ""

    def _failure(self, exc: BaseException) -> ChirpError:
        tls = None if isinstance(exc, ChirpError) else ssl_cause(exc)
        if tls is None:
            return lost_error(exc)
        error = TLSError(f"{self}: {describe_tls_failure(tls)}")
        error.__cause__ = tls
        return error

    # --- reading (the frame loop is ``_reading.FrameReader``) ----------------------------
    @property
    def slot_probe(self) -> Callable[[], bool] | None:
        return self._is_broken

    def watch_stall(self, deadline: float) -> None:
        self._stall_deadline = deadline
        self._arm(deadline)

    def on_peer_handshake(self, handshake: Handshake) -> None:
        if (
            self._refuse_client_hello
            and handshake.port == HELLO_PORT
            and client_hello_verdict(encode_handshake(handshake.port, handshake.identity))
        ):
            raise self._owner.client_hello_refused(self.peer_address)
        self.peer_identity = handshake.identity
        self.peer_port = handshake.port
        self._handshake_deadline = math.inf
        self.remote = self._owner.on_handshake(self, handshake)
        self._attached.set()

    def deliver(self, message: Message) -> None:
        self._owner.deliver(self, message)

    def on_bad_header(self) -> None:
        self._owner.on_bad_header(self)

    def on_oversized(self, head: FrameHead) -> bool:
        return self._owner.on_oversized(self, head)

    def release_message(self, msg: Message, ack: bool) -> None:
        self.slots.release(cost_of(msg))
        remote = self.remote
        if ack and msg.ack_requested and not self.closed and remote is not None and not remote.closed:
            remote.queue_ack(msg.identity)

    # --- writer ------------------------------------------------------------------------
    async def _writer(self) -> None:
        # Our handshake, and in the same write our announcement: the peer learns that we are
        # trio_chirp before any other frame of ours (libchirp takes it for a keep-alive).
        config = self.config
        opening = [
            self._owner.our_handshake(),
            encode_announcement(config.effective_slots, config.max_msg_size),
        ]
        await self._write(opening, what="handshake", start=trio.current_time())
        await self._attached.wait()
        remote = self.remote
        assert remote is not None
        while True:
            handoff = self._handoff
            if handoff is not None:
                # The rest of a batch that write_now() could not finish.
                self._handoff = None
                rest, outs, acks, noops, size, start = handoff
                await self._write([rest], what=f"{acks + noops + len(outs)} frame(s)", start=start)
                self._written(outs, acks, noops, size, start)
                continue
            batch = remote.take_batch(self)
            if batch is None:
                self.writer_idle = True
                try:
                    await remote.writer_lot.park()
                finally:
                    self.writer_idle = False
                continue
            parts, outs, acks, noops = batch
            self.messages_being_written = outs
            start = trio.current_time()
            size = await self._write(parts, what=f"{acks + noops + len(outs)} frame(s)", start=start)
            self._written(outs, acks, noops, size, start)

    def _written(self, outs: list[Outgoing], acks: int, noops: int, size: int, start: float) -> None:
        self.messages_being_written = []
        traffic = self.traffic
        traffic.messages_out += len(outs)
        traffic.acks_out += acks
        traffic.noops_out += noops
        traffic.bytes_out += size
        self.last_activity = trio.current_time()
        assert self.remote is not None
        self.remote.on_written(self, outs, start + self.config.timeout)

    def write_now(self) -> None:
        """Write urgent work (ACKs, a synchronous message) from the caller's task.

        Called by the remote only while this connection's writer is parked, so nothing
        else is writing: a non-blocking send of the batch saves two task switches per
        frame. What the stream does not take at once is handed to the writer, which
        finishes it before anything else; without ``send_nowait`` the writer is woken.
        """
        remote = self.remote
        assert remote is not None
        send_nowait = self._send_nowait
        if send_nowait is None or self.closed:
            remote.writer_lot.unpark_all()
            return
        batch = remote.take_batch(self)
        if batch is None:
            return
        parts, outs, acks, noops = batch
        data = b"".join(parts)
        start = trio.current_time()
        self.messages_being_written = outs
        try:
            sent = send_nowait(data)
        except CONTAINED_ERRORS as exc:
            self.close(lost_error(exc))
            return
        if sent < len(data):
            self.writer_idle = False
            self._handoff = (memoryview(data)[sent:], outs, acks, noops, len(data), start)
            remote.writer_lot.unpark_all()
            return
        self._written(outs, acks, noops, len(data), start)

    async def _write(self, parts: list[bytes] | list[memoryview], *, what: str, start: float) -> int:
        """Write whole frames; the timer closes the connection if it takes over ``timeout``."""
        self._writing_what = what
        self._write_deadline = deadline = start + self.config.timeout
        self._arm(deadline)
        send_parts = self._send_parts
        groups = join_small(parts, GATHER_MIN if send_parts is not None else DIRECT_WRITE)
        if send_parts is not None and len(groups) > 1:
            await send_parts(groups)
        else:
            for group in groups:
                await self.stream.send_all(group)
        self._write_deadline = math.inf
        return sum(len(part) for part in parts)

    # --- timer -------------------------------------------------------------------------
    async def _timer(self) -> None:
        """Sleep until the earliest deadline; raise for the one that passed.

        Deadlines are only ever moved *earlier* on the running scope (``_arm``); one that
        was cleared meanwhile makes the timer wake early, find nothing due, and sleep
        again. That keeps the per-message cost to a comparison.
        """
        while True:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            now = trio.current_time()
            timeout = self.config.timeout
            if now >= self._handshake_deadline:
                what = "connect" if self.outgoing else "handshake"
                limit = (
                    self.config.connect_timeout if self.outgoing else self.config.effective_handshake_timeout
                )
                waiting = f", waiting for {self.waiting_for}" if self.waiting_for else ""
                raise ChirpTimeoutError(
                    f"{self}: no chirp handshake within the {what} timeout ({limit}s){waiting}"
                )
            if now >= self._write_deadline:
                raise ChirpTimeoutError(
                    f"writing {self._writing_what} to {self} took longer than timeout={timeout}s"
                )
            if now >= self._ack_deadline:
                raise ChirpTimeoutError(
                    f"{self}: no ACK within timeout={timeout}s of writing a synchronous message"
                    + self.unread_ack_hint()
                )
            if now >= self._stall_deadline:
                raise ChirpTimeoutError(f"{self}: peer stalled mid-frame for timeout={timeout}s")

    def _deadline(self) -> float:
        return min(self._handshake_deadline, self._ack_deadline, self._write_deadline, self._stall_deadline)

    def _arm(self, deadline: float) -> None:
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def ack_awaited(self, deadline: float) -> None:
        if self._ack_deadline == math.inf:
            self._ack_deadline = deadline
            self._arm(deadline)

    def ack_settled(self, more_awaited: bool) -> None:  # moved later only: see _timer
        self._ack_deadline = trio.current_time() + self.config.timeout if more_awaited else math.inf
