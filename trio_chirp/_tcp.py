"""The default transport: plain TCP on IPv4 and IPv6 (TLS wraps this one)."""

from __future__ import annotations

import errno

import trio

from ._transport import AcceptHandler, Transport

__all__ = ["TCPTransport"]

_PICK_PORT_ATTEMPTS = 20


async def _open_listener(host: str, port: int, backlog: int) -> trio.SocketListener:
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        if family == trio.socket.AF_INET6:
            sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
        await sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _open_listeners(hosts: list[str], port: int, backlog: int) -> list[trio.SocketListener]:
    """Bind every host on ``port``; with port 0, retry until one port is free on all of them."""
    attempts = _PICK_PORT_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        listeners: list[trio.SocketListener] = []
        chosen = port
        try:
            for host in hosts:
                listener = await _open_listener(host, chosen, backlog)
                listeners.append(listener)
                chosen = listener.socket.getsockname()[1]
            return listeners
        except OSError as exc:
            for listener in listeners:
                await listener.aclose()
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class TCPTransport(Transport):
    """TCP with ``TCP_NODELAY``; IPv6 listeners are IPv6-only, as libchirp's are."""

    async def connect(self, address: str, port: int) -> trio.abc.Stream:
        family = trio.socket.AF_INET6 if ":" in address else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            await sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def serve(
        self,
        *,
        port: int,
        bind_v4: str | None,
        bind_v6: str | None,
        backlog: int,
        on_accept: AcceptHandler,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        hosts = [h for h in (bind_v4, bind_v6) if h is not None]
        listeners = await _open_listeners(hosts, port, backlog)
        try:
            bound = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, on_accept)
                task_status.started(bound)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    @staticmethod
    async def _accept_loop(listener: trio.SocketListener, on_accept: AcceptHandler) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning; the node stays up.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(0.1)
                    continue
                raise
            try:
                peer = stream.socket.getpeername()[0]
            except OSError:
                await stream.aclose()
                continue
            on_accept(stream, str(peer))
