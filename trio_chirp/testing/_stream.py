"""In-memory byte streams that behave like a TCP connection, minus the sockets.

A connection is two one-way ``_Pipe``\\ s. Each pipe holds the bytes one end has sent and
the other end has not consumed yet, bounded by a window (so a sender blocks when its
peer stops reading, as with TCP's receive window), timestamped per ``send_all`` chunk
(so latency costs one timer per chunk, not per byte, and keeps the order), and counted
(so a test can prove what was and was not consumed).

Everything blocks on trio primitives only (``ParkingLot``, ``move_on_at``), so a whole
network runs deterministically under ``trio.testing.MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import final

import trio

from .._address import format_peer

__all__ = ["MemoryStream", "StreamStats"]

Address = tuple[str, int]
"""``(ip, port)``, the IP in ``ipaddress``'s normal (compressed) text form."""


class _Path:
    """Conditions between two hosts, shared by every stream between them, both directions.

    The network mutates these and pipes read them live, so a change to the window, the
    latency or a stall (partition, black hole) applies to existing streams too.
    """

    __slots__ = ("latency", "stalled", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.latency = 0.0
        self.stalled = False


class _Pipe:
    """One direction of a connection: bytes sent by one end, not yet consumed by the other.

    A single ``ParkingLot`` serves both the (one) blocked writer and the (one) blocked
    reader: every state change wakes both and each re-checks its own condition.
    """

    def __init__(self, path: _Path) -> None:
        self.path = path
        self.chunks: deque[tuple[float, memoryview]] = deque()  # (readable at, bytes)
        self.buffered = 0
        self.last_ready = -math.inf
        self.eof_at: float | None = None  # when the FIN becomes visible to the reader
        self.reset = False
        self.reader_closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.lot = trio.lowlevel.ParkingLot()

    def room(self) -> int:
        return max(0, self.path.window - self.buffered)

    def _arrival(self) -> float:
        # Never earlier than what is already queued: lowering the latency keeps the order.
        self.last_ready = max(trio.current_time() + self.path.latency, self.last_ready)
        return self.last_ready

    def push(self, data: memoryview) -> None:
        self.chunks.append((self._arrival(), data))
        self.buffered += len(data)
        self.bytes_in += len(data)
        self.lot.unpark_all()

    def finish(self) -> None:
        """Queue the FIN behind the data already sent."""
        if self.eof_at is None:
            self.eof_at = self._arrival()
            self.lot.unpark_all()

    def pull(self, max_bytes: int | None, now: float) -> bytes:
        """Take up to ``max_bytes`` of the bytes that have arrived by ``now``."""
        limit = self.buffered if max_bytes is None else max_bytes
        out = bytearray()
        while self.chunks and len(out) < limit:
            ready, data = self.chunks[0]
            if ready > now:
                break
            take = limit - len(out)
            if len(data) <= take:
                out += data
                self.chunks.popleft()
            else:
                out += data[:take]
                self.chunks[0] = (ready, data[take:])
        self.buffered -= len(out)
        self.bytes_out += len(out)
        self.lot.unpark_all()
        return bytes(out)

    def discard(self) -> None:
        """Drop unconsumed bytes (they stay counted as sent, never as delivered)."""
        self.chunks.clear()
        self.buffered = 0
        self.lot.unpark_all()

    def break_(self) -> None:
        self.reset = True
        self.discard()


class _Guard:
    """Raise ``BusyResourceError`` when two tasks use the same half of a stream at once."""

    __slots__ = ("_busy", "_what")

    def __init__(self, what: str) -> None:
        self._busy = False
        self._what = what

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(f"another task is already {self._what} on this stream")
        self._busy = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._busy = False


@final
@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of one stream end's byte counters."""

    bytes_sent: int
    """Bytes this end's ``send_all`` put into the network."""
    bytes_delivered: int
    """Of ``bytes_sent``, the bytes the peer's ``receive_some`` has consumed."""
    bytes_received: int
    """Bytes this end's ``receive_some`` has consumed."""

    @property
    def bytes_unconsumed(self) -> int:
        """Sent but never consumed by the peer: still buffered, or dropped by a close or reset."""
        return self.bytes_sent - self.bytes_delivered


@final
class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection, with ``trio.SocketStream``'s semantics.

    ``aclose`` is a graceful close (FIN): the peer reads what was sent, then ``b""``; bytes
    this end had not read are dropped and the peer's next send raises
    ``BrokenResourceError``. A reset (``MemoryNetwork.cut``/``crash``) makes both ends
    raise ``BrokenResourceError`` at once and drops everything in flight. Flow control
    wakes the sender as soon as the receiver consumes (no ACK delay).
    """

    def __init__(self, local: Address, remote: Address, send: _Pipe, receive: _Pipe) -> None:
        self._local = local
        self._remote = remote
        self._out = send
        self._in = receive
        self._closed = False
        self._eof_sent = False
        self._send_guard = _Guard("sending")
        self._receive_guard = _Guard("receiving")
        self._peer: MemoryStream | None = None

    @classmethod
    def _pair(cls, path: _Path, a: Address, b: Address) -> tuple[MemoryStream, MemoryStream]:
        a_to_b, b_to_a = _Pipe(path), _Pipe(path)
        end_a, end_b = cls(a, b, a_to_b, b_to_a), cls(b, a, b_to_a, a_to_b)
        end_a._peer, end_b._peer = end_b, end_a
        return end_a, end_b

    def __repr__(self) -> str:
        state = " closed" if self._closed else " reset" if self.broken else ""
        return f"<MemoryStream {format_peer(*self._local)} -> {format_peer(*self._remote)}{state}>"

    @property
    def local(self) -> Address:
        """This end's ``(ip, port)``; the connecting side has an ephemeral port."""
        return self._local

    @property
    def remote(self) -> Address:
        """The peer's ``(ip, port)``."""
        return self._remote

    @property
    def peer(self) -> MemoryStream:
        """The other end of the connection."""
        assert self._peer is not None
        return self._peer

    @property
    def closed(self) -> bool:
        """``aclose`` was called on this end."""
        return self._closed

    @property
    def broken(self) -> bool:
        """The connection was reset (``cut``/``crash``, or aborted during connect/listen)."""
        return self._in.reset

    @property
    def stats(self) -> StreamStats:
        """Byte counters now (a snapshot)."""
        return StreamStats(self._out.bytes_in, self._out.bytes_out, self._in.bytes_out)

    def is_broken(self) -> bool:
        """Whether the connection was reset (``TCPStream.is_broken``'s twin); never blocks."""
        return self._in.reset

    def _reset(self) -> None:
        """Break both directions, like a TCP RST seen by both ends."""
        self._out.break_()
        self._in.break_()

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof was called on this stream")
        if self._out.reset:
            raise trio.BrokenResourceError("connection reset")
        if self._out.reader_closed:
            raise trio.BrokenResourceError("peer closed the stream")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Copy what fits into the window, then wait for the peer to consume, until done."""
        with self._send_guard:
            await trio.lowlevel.checkpoint()
            remaining = memoryview(bytes(data))
            while True:
                self._check_can_send()
                if not remaining:
                    return
                room = self._out.room()
                if room:
                    self._out.push(remaining[:room])
                    remaining = remaining[room:]
                else:
                    await self._out.lot.park()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Copy what fits into the window now and return how much; never blocks.

        The in-memory twin of a non-blocking socket ``send()``: a chirp connection
        writes with it from the task that queued urgent work (an ACK, a synchronous
        message) while its writer task is idle, saving a task switch.
        """
        with self._send_guard:
            self._check_can_send()
            take = min(self._out.room(), len(data))
            if take:
                self._out.push(memoryview(bytes(data[:take])))
            return take

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the window has room (or the stream is broken, so send_all won't block)."""
        with self._send_guard:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                out = self._out
                if self._eof_sent or out.reset or out.reader_closed or out.room():
                    return
                await out.lot.park()

    async def send_eof(self) -> None:
        """Half-close: the peer reads the bytes sent so far, then ``b""``; it may still send."""
        with self._send_guard:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            if self._out.reset:
                raise trio.BrokenResourceError("connection reset")
            self._eof_sent = True
            self._out.finish()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return 1..max_bytes arrived bytes (all arrived bytes if None); ``b""`` at EOF.

        Bytes "arrive" once their latency has passed and no partition/black hole stalls
        the path; the wait is a deadline on a trio timer, so ``MockClock`` autojumps it.
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receive_guard:
            await trio.lowlevel.checkpoint()
            pipe = self._in
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                if pipe.reset:
                    raise trio.BrokenResourceError("connection reset")
                wake_at = math.inf
                if not pipe.path.stalled:
                    now = trio.current_time()
                    if pipe.chunks:
                        wake_at = pipe.chunks[0][0]
                        if wake_at <= now:
                            return pipe.pull(max_bytes, now)
                    elif pipe.eof_at is not None:
                        wake_at = pipe.eof_at
                        if wake_at <= now:
                            return b""
                with trio.move_on_at(wake_at):
                    await pipe.lot.park()

    async def aclose(self) -> None:
        """Graceful close (FIN); idempotent; closes even when cancelled."""
        if not self._closed:
            self._closed = True
            self._out.finish()
            self._in.reader_closed = True
            self._in.discard()
            self._out.lot.unpark_all()
        await trio.lowlevel.checkpoint()
