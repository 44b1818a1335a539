"""The default transport: plain TCP on IPv4 and IPv6 (TLS wraps this one).

Sockets are created with the standard library and handed to trio, so the stream keeps
the plain socket and can offer ``send_nowait``: a non-blocking ``send()`` that lets a
connection write an ACK or a synchronous message from the task that queued it while
its writer task is idle, without a task switch.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Final, final

import trio

from ._address import format_peer
from ._transport import AcceptErrorHandler, AcceptHandler, Transport

__all__ = ["TCPStream", "TCPTransport"]

_PICK_PORT_ATTEMPTS = 20
_ACCEPT_BACKOFF = 0.1
_IOV_MAX: Final = 512
_HAS_SENDMSG: Final = hasattr(socket.socket, "sendmsg")
_RECEIVE_SIZE: Final = 65536  # trio.SocketStream's default
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})  # as trio.SocketStream


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@final
class TCPStream(trio.abc.HalfCloseableStream):
    """A ``trio.SocketStream`` (TCP_NODELAY set) plus ``send_nowait``."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._raw = sock
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._receiving = False

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    @property
    def local(self) -> tuple[str, int]:
        """This end's (ip, port), as ``trio_chirp.testing.MemoryStream.local``."""
        name = self._raw.getsockname()
        return str(name[0]), int(name[1])

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes now; 0 when its buffer is full. Raises ``OSError``.

        Only for a caller that knows no ``send_all`` is in progress on this stream.
        """
        try:
            return self._raw.send(data)
        except BlockingIOError:
            return 0

    def is_broken(self) -> bool:
        """Whether the peer reset the connection (RST), by a peek that never consumes or blocks.

        Lets a reader that is not reading (all its slots are held) notice a dead peer and
        free the descriptor. A clean close (FIN) is not broken: what the peer sent before
        it may still be in our buffers, waiting for a slot, and must be delivered.
        """
        try:
            self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def send_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """``send_all`` of the concatenation, without concatenating (``sendmsg``).

        Large payloads are then copied only by the kernel. Only for the connection's
        writer, which is the only task writing.
        """
        if not _HAS_SENDMSG:  # pragma: no cover - Windows
            await self.send_all(b"".join(parts))
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        views = deque(memoryview(p) for p in parts if len(p))
        sock = self._raw
        while views:
            try:
                sent = sock.sendmsg(list(islice(views, _IOV_MAX)))
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket send failed: {exc}") from exc
            while sent:
                first = views[0]
                if len(first) <= sent:
                    sent -= len(first)
                    views.popleft()
                else:
                    views[0] = first[sent:]
                    sent = 0
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """``trio.SocketStream.receive_some`` on the plain socket, the same contract (a
        checkpoint; ``BusyResourceError`` for a second reader; ``ClosedResourceError`` once
        closed, ``BrokenResourceError`` for any other socket error) with a third of its
        Python calls: a synchronous round trip reads twice, so this is on its critical path.
        A cancelled call consumes nothing: it is cancelled only before ``recv`` or while
        waiting for the socket to become readable."""
        if max_bytes is None:
            max_bytes = _RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        sock = self._raw
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                pass
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(max_bytes)
                except BlockingIOError:
                    continue
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self._stream.aclose()


def _open_listener(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            # The errno stays (callers and the port-0 retry test it); the text names the place.
            why = "another process or node listens there" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise OSError(
                exc.errno, f"cannot listen on {format_peer(host, port)}: {why} ({exc.strerror})"
            ) from exc
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_listeners(hosts: list[str], port: int, backlog: int) -> list[socket.socket]:
    """Bind every host on ``port``; with port 0, retry until one port is free on all of them."""
    attempts = _PICK_PORT_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        listeners: list[socket.socket] = []
        chosen = port
        try:
            for host in hosts:
                listener = _open_listener(host, chosen, backlog)
                listeners.append(listener)
                chosen = listener.getsockname()[1]
            return listeners
        except OSError as exc:
            for listener in listeners:
                listener.close()
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class TCPTransport(Transport):
    """TCP with ``TCP_NODELAY``; IPv6 listeners are IPv6-only, as libchirp's are."""

    async def connect(
        self, address: str, port: int, *, bind: str | None = None
    ) -> tuple[trio.abc.Stream, str]:
        sock = socket.socket(_family(address), socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if bind is not None:
                sock.bind((bind, 0))
            await trio.socket.from_stdlib_socket(sock).connect((address, port))
            local = str(ipaddress.ip_address(sock.getsockname()[0].split("%", 1)[0]))
        except BaseException:
            sock.close()
            raise
        return TCPStream(sock), local

    async def serve(
        self,
        *,
        port: int,
        bind_v4: str | None,
        bind_v6: str | None,
        backlog: int,
        on_accept: AcceptHandler,
        on_error: AcceptErrorHandler | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        hosts = [h for h in (bind_v4, bind_v6) if h is not None]
        listeners = _open_listeners(hosts, port, backlog)
        try:
            bound = listeners[0].getsockname()[1]
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, on_accept, on_error)
                task_status.started(bound)
        finally:
            for listener in listeners:
                listener.close()

    @staticmethod
    @trio.lowlevel.enable_ki_protection
    async def _accept_loop(
        listener: socket.socket, on_accept: AcceptHandler, on_error: AcceptErrorHandler | None
    ) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning; the node stays up.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if on_error is not None:
                        on_error(exc)
                    await trio.sleep(_ACCEPT_BACKOFF)
                    continue
                raise
            on_accept(TCPStream(sock), str(peer[0]))
