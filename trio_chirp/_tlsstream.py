"""TLS over any byte stream, with ``ssl.SSLObject`` and memory BIOs: the stream a TLS connection uses.

Why not ``trio.SSLStream``: it serves any number of tasks, so every read and write takes
locks that are schedule points, and it offers neither ``send_nowait`` nor a way to run the
handshake's CPU work in turns. A chirp connection has exactly one reading task at a time
(``_reading.py``) and one writer task (``_connection.py``), so this stream needs no more
than one lock, taken without a schedule point when free, for the one case where the reader
must write (a TLS message after the handshake that asks for an answer).

A ``receive_some`` cancelled while it waits loses nothing: what the transport delivered
is already in the memory BIO, and decrypted bytes are always returned.

Semantics, as libchirp needs them (docs/protocol.md, section 2.3): a peer's EOF, with or without
``close_notify``, is a clean end of stream (``b""``); ``aclose`` sends no ``close_notify``
(libchirp never sends one either) and closes the transport. Every TLS failure is a
``trio.BrokenResourceError`` whose ``__cause__`` is the ``ssl.SSLError``. A failed
handshake still sends the alert OpenSSL wrote, so the peer learns the reason.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import trio

__all__ = ["HandshakeTurns", "TLSStream"]

RECEIVE_SIZE: Final = 65536
WRITE_CHUNK: Final = 64 * 1024
"""Plaintext encrypted per step of a large ``send_all``, so ciphertext is sent as it is made.

Measured (bench_node.py --tls async-64k): 256 KiB steps ran at half the speed, with most of
the sender's time in the kernel: buffers above glibc's mmap threshold (128 KiB) are mapped
and unmapped for every step."""
ALERT_SECONDS: Final = 1.0


T = TypeVar("T")


class HandshakeTurns:
    """A node's handshakes compute one step at a time, and while they queue, at most ``share`` of the time.

    OpenSSL computes (signatures, key exchange) in ``do_handshake()`` calls, on what has
    arrived; waiting for the peer happens between them, holding nothing. A step holds the
    turn only while it computes, so each scheduler pass runs at most one handshake step
    besides everyone else's work. When other handshakes are waiting, the next step may
    start only after a pause of ``spent * (1 - share) / share``, so a flood of handshakes
    gets at most ``share`` of the thread and established peers the rest (``timer``
    measures the step; tests give a fake one).
    """

    def __init__(self, share: float = 0.5, timer: Callable[[], float] = time.perf_counter) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._lock = trio.Lock()
        self._share = share
        self._timer = timer
        self._free_at = -math.inf

    def locked(self) -> bool:
        """Whether a step holds the turn (or waits for its pause to end)."""
        return self._lock.locked()

    async def run(self, step: Callable[[], T]) -> T:
        async with self._lock:
            if trio.current_time() < self._free_at:
                await trio.sleep_until(self._free_at)
            start = self._timer()
            try:
                return step()
            finally:
                spent = self._timer() - start
                if self._lock.statistics().tasks_waiting:
                    self._free_at = trio.current_time() + spent * (1 - self._share) / self._share


class TLSStream(trio.abc.Stream):
    """A TLS client or server on ``transport``; for one reader task and one writer task."""

    send_nowait: Callable[[bytes | bytearray | memoryview], int]
    """Present when the transport has ``send_nowait`` (``_transport.py``): see ``_send_nowait``."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        received: bytes = b"",
    ) -> None:
        """``received``: bytes already read from ``transport`` (a sniffed ClientHello)."""
        self.transport = transport
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        if received:
            self._in.write(received)
        self._send_lock = trio.StrictFIFOLock()
        self._tail = b""  # ciphertext that send_nowait could not hand to the transport
        self._owed = 0  # plaintext bytes send_nowait encrypted but reported as not taken
        self._broken = False
        self._closed = False
        self._deferred: ssl.SSLError | None = None  # what ended a read that returned data first
        raw_nowait = getattr(transport, "send_nowait", None)
        self._raw_nowait: Callable[[bytes | bytearray | memoryview], int] | None = (
            raw_nowait if callable(raw_nowait) else None
        )
        if self._raw_nowait is not None:
            self.send_nowait = self._send_nowait

    # --- what the peer presented --------------------------------------------------------
    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._obj.cipher()

    # --- handshake ---------------------------------------------------------------------
    async def do_handshake(self, turns: HandshakeTurns | None = None) -> None:
        """Run the TLS handshake; with ``turns``, each computing step takes a turn (``HandshakeTurns``)."""
        while True:
            try:
                if turns is None:
                    finished = self._step()
                else:
                    finished = await turns.run(self._step)
            except ssl.SSLError as failure:
                self._broken = True
                with (
                    trio.move_on_after(ALERT_SECONDS),
                    contextlib.suppress(trio.BrokenResourceError, OSError),
                ):
                    await self._flush()  # the alert
                raise trio.BrokenResourceError(f"TLS handshake failed: {failure}") from failure
            await self._flush()
            if finished:
                return
            data = await self.transport.receive_some(RECEIVE_SIZE)
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()

    def _step(self) -> bool:
        """One computing step of the handshake, on what has arrived: True when it is done."""
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    # --- reading (the reader task) --------------------------------------------------------
    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Decrypted bytes; ``b""`` once the peer closed (``close_notify`` or not)."""
        size = max_bytes or RECEIVE_SIZE
        read_from_transport = False
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this TLS stream was closed")
            try:
                if self._deferred is not None:
                    raise self._deferred
                data = self._obj.read(size)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                await trio.lowlevel.checkpoint()
                return b""
            except ssl.SSLError as exc:
                self._broken = True
                raise trio.BrokenResourceError(f"TLS failure: {exc}") from exc
            else:
                # Decrypted bytes are returned whatever happens now: a cancellation from here
                # on would lose them (a task waiting for its ACK may read and be cancelled,
                # ``_reading.py``), so the rest is shielded and the cancellation is left to
                # the caller's next checkpoint, as trio's own streams do.
                if len(data) < size:
                    data = self._read_more(data, size)
                if self._out.pending:  # a message after the handshake that OpenSSL answers
                    with trio.CancelScope(shield=True):
                        await self._flush()
                if not read_from_transport:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            chunk = await self.transport.receive_some(RECEIVE_SIZE)
            read_from_transport = True
            if chunk:
                self._in.write(chunk)
            else:
                self._in.write_eof()

    def _read_more(self, first: bytes, size: int) -> bytes:
        """More records that already arrived, up to ``size`` bytes in all (a read returns one record).

        A failure or the end of the stream is left for the next ``receive_some`` to report.
        """
        parts = [first]
        have = len(first)
        while have < size and (self._in.pending or self._obj.pending()):
            try:
                more = self._obj.read(size - have)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:  # the end, or a failure: reported by the next call
                self._deferred = exc
                break
            if not more:
                break
            parts.append(more)
            have += len(more)
        return first if len(parts) == 1 else b"".join(parts)

    # --- writing (the writer task) --------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_writable()
        view = memoryview(data)
        if self._owed:  # the start of ``data`` is what send_nowait already encrypted
            owed, self._owed = self._owed, 0
            view = view[owed:]
        if not view and not self._tail and not self._out.pending:
            await trio.lowlevel.checkpoint()
            return
        for start in range(0, len(view), WRITE_CHUNK):
            self._encrypt(view[start : start + WRITE_CHUNK])
            if self._out.pending >= WRITE_CHUNK:
                await self._flush()
        await self._flush()

    def _send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` and hand it to the transport without blocking; how much was taken.

        As for a socket, the caller passes what was not taken to the next ``send_all``,
        before anything else. When the transport takes only part of the ciphertext, the rest
        is kept and one plaintext byte is reported as not taken: the caller's ``send_all``
        of that byte sends the kept ciphertext (and does not encrypt the byte again).
        """
        self._check_writable()
        raw_nowait = self._raw_nowait
        if not data or raw_nowait is None or self._tail or self._owed or self._send_lock.locked():
            return 0
        self._encrypt(data)
        out = self._out.read()
        sent = raw_nowait(out)
        if sent == len(out):
            return len(data)
        self._tail = out[sent:]
        self._owed = 1
        return len(data) - 1

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    def _check_writable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        failure = self._deferred
        if failure is not None and not isinstance(failure, ssl.SSLZeroReturnError | ssl.SSLEOFError):
            # A read already met a failure (not yet reported): that is the reason, not the write.
            self._broken = True
            raise trio.BrokenResourceError(f"TLS failure: {failure}") from failure
        if self._broken:
            raise trio.BrokenResourceError("this TLS stream failed earlier")

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            self._broken = True
            raise trio.BrokenResourceError(f"TLS failure: {exc}") from exc

    async def _flush(self) -> None:
        """Send every ciphertext byte made so far, in order (the reader may flush too)."""
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._tail:
                tail, self._tail = self._tail, b""
                await self.transport.send_all(tail)
            while self._out.pending:
                await self.transport.send_all(self._out.read())
        except BaseException:
            self._broken = True
            raise
        finally:
            lock.release()

    async def aclose(self) -> None:
        """Close the transport, without ``close_notify`` (as libchirp)."""
        self._closed = True
        await self.transport.aclose()
