"""An in-memory network of IP-addressed hosts, for running many nodes in one process.

Each host is a ``MemoryTransport`` (a ``Transport``), so node code runs unchanged and a
test can script faults a real network makes hard to reproduce: refused connects, hosts
that swallow SYNs, latency, resets, crashes, partitions. Only trio primitives block, so
under ``trio.testing.MockClock(autojump_threshold=0)`` every timeout and latency is
virtual and the run is deterministic.
"""

# ruff: noqa: SLF001
# One in-memory network: MemoryNetwork, its hosts (MemoryTransport) and the streams between
# them (MemoryStream) share state on purpose, like a kernel's sockets; users see none of it.

from __future__ import annotations

import errno
import ipaddress
import math
import os
from collections import deque

import trio

from .._transport import AcceptErrorHandler, AcceptHandler, Transport
from ._stream import Address, MemoryStream, _Path

__all__ = ["MemoryNetwork", "MemoryTransport"]

LISTEN_PORTS = (49152, 65535)
"""``serve(port=0)`` counts up through this range per host (like an OS ephemeral range)."""
EPHEMERAL_PORTS = (32768, 49151)
"""Local ports of outgoing connections count up through this range per host."""


def _normalize(address: str) -> str:
    """Canonical text of an IP literal, so "::0:1" and "::1" name the same host."""
    return str(ipaddress.ip_address(address))


def _oserror(code: int, detail: str) -> OSError:
    return OSError(code, f"{os.strerror(code)}: {detail}")


class _Listener:
    """A listening port: connections wait in ``queue`` until ``serve`` hands them out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.queue: deque[MemoryStream] = deque()
        self.lot = trio.lowlevel.ParkingLot()

    def close(self) -> None:
        """Reset connections nobody accepted, as a closing TCP listener does."""
        while self.queue:
            self.queue.popleft()._reset()


class MemoryTransport(Transport):
    """One host of a ``MemoryNetwork``: listens on and connects from its own address.

    Get it from ``MemoryNetwork.host``. ``serve`` ignores ``bind_v4``/``bind_v6``: a host
    has exactly one address, its own, and that is what it listens on (whatever family).
    ``backlog`` is ignored too: pending connections queue without limit.
    """

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address
        self._listeners: dict[int, _Listener] = {}
        self._next_listen_port = LISTEN_PORTS[0]
        self._next_ephemeral_port = EPHEMERAL_PORTS[0]

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._address}>"

    @property
    def address(self) -> str:
        """This host's IP (normalised text)."""
        return self._address

    @property
    def network(self) -> MemoryNetwork:
        """The ``MemoryNetwork`` this host belongs to (where its faults are injected)."""
        return self._network

    @property
    def listening_ports(self) -> list[int]:
        """Ports with a live ``serve`` on this host, ascending."""
        return sorted(self._listeners)

    def _pick_listen_port(self) -> int:
        low, high = LISTEN_PORTS
        for _ in range(high - low + 1):
            port = self._next_listen_port
            self._next_listen_port = port + 1 if port < high else low
            if port not in self._listeners:
                return port
        raise _oserror(errno.EADDRINUSE, f"no free port on {self._address}")

    def _pick_ephemeral_port(self) -> int:
        low, high = EPHEMERAL_PORTS
        port = self._next_ephemeral_port
        self._next_ephemeral_port = port + 1 if port < high else low
        return port

    async def connect(self, address: str, port: int, *, bind: str | None = None) -> tuple[MemoryStream, str]:
        """Connect to ``(address, port)``; costs one round trip of the path's latency.

        Returns the client end and this host's address (the source the peer sees).
        ``bind`` must be None or this host's own address (``OSError(EADDRNOTAVAIL)``
        otherwise, as for a socket bound to an address the machine does not have).
        Raises ``ConnectionRefusedError`` (no listener, or ``refuse``\\ d; the refusal also
        takes a round trip), ``OSError(EHOSTUNREACH)`` for an address no ``host()`` call
        created, ``OSError(EINVAL)`` for a non-IP; hangs while the path is black-holed or
        partitioned (until healed or cancelled).
        """
        await trio.lowlevel.checkpoint()
        try:
            target = _normalize(address)
        except ValueError:
            raise _oserror(errno.EINVAL, f"not an IP address: {address!r}") from None
        if bind is not None and _normalize(bind) != self._address:
            raise _oserror(errno.EADDRNOTAVAIL, f"{bind} is not the address of host {self._address}")
        net = self._network
        path = net._path(self._address, target)
        while path.stalled:
            await net._changed.park()
        if path.latency:
            await trio.sleep(path.latency)  # the SYN travels
        try:
            stream = net._open(self, target, port)
        except OSError:
            if path.latency:
                await trio.sleep(path.latency)  # the RST travels back
            raise
        if path.latency:
            try:
                await trio.sleep(path.latency)  # the SYN-ACK travels back
            except BaseException:
                stream._reset()  # the listener side already has its end
                raise
        return stream, self._address

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
        """Listen on this host's address until cancelled (or forever after a ``crash``).

        Accepting never runs out of resources here, so ``on_error`` is never called.

        ``port=0`` takes the next unused port from 49152 up; a used port raises
        ``OSError(EADDRINUSE)`` before ``started``. ``on_accept`` runs in this task.
        """
        await trio.lowlevel.checkpoint()
        if not 0 <= port <= 65535:
            raise OverflowError(f"port must be 0-65535, got {port}")
        if port == 0:
            port = self._pick_listen_port()
        elif port in self._listeners:
            raise _oserror(errno.EADDRINUSE, f"{self._address} port {port}")
        listener = self._listeners[port] = _Listener(port)
        try:
            task_status.started(port)
            while True:
                while listener.queue:
                    stream = listener.queue.popleft()
                    on_accept(stream, stream.remote[0])
                await listener.lot.park()
        finally:
            listener.close()
            if self._listeners.get(port) is listener:  # a crash may have replaced it
                del self._listeners[port]


class MemoryNetwork:
    """Hosts by IP address, the streams between them, and the faults to inject.

    Fault methods are synchronous and take effect at once, on existing streams as well as
    new ones. Hosts are created on first ``host()`` and live as long as the network.
    """

    def __init__(self, window: int = 65536) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 byte, got {window}")
        self._window = window
        self._hosts: dict[str, MemoryTransport] = {}
        self._paths: dict[frozenset[str], _Path] = {}
        self._ends: list[MemoryStream] = []
        self._refused: set[tuple[str, int | None]] = set()
        self._black_holes: set[str] = set()
        self._partitions: set[frozenset[str]] = set()
        self._changed = trio.lowlevel.ParkingLot()  # connects waiting for a stall to end

    def host(self, address: str) -> MemoryTransport:
        """The transport of the host at ``address`` (an IPv4 or IPv6 literal); same object per IP."""
        ip = _normalize(address)
        if ip not in self._hosts:
            self._hosts[ip] = MemoryTransport(self, ip)
        return self._hosts[ip]

    # ---- inspection ----

    def streams(
        self, local: str | None = None, remote: str | None = None, *, include_closed: bool = False
    ) -> list[MemoryStream]:
        """Stream ends whose own IP is ``local`` and peer IP is ``remote`` (None: any), oldest first.

        Every connection shows up twice (once per end) when both IPs are unfiltered. Ends
        stay listed for the network's lifetime; closed ones only with ``include_closed``.
        """
        local = None if local is None else _normalize(local)
        remote = None if remote is None else _normalize(remote)
        return [
            end
            for end in self._ends
            if (include_closed or not end.closed)
            and local in (None, end.local[0])
            and remote in (None, end.remote[0])
        ]

    def listeners(self) -> list[Address]:
        """Every live ``(ip, port)`` listener, sorted."""
        return sorted((ip, port) for ip, host in self._hosts.items() for port in host._listeners)

    # ---- link conditions ----

    def set_window(self, a: str, b: str, window: int) -> None:
        """Bytes in flight per direction between ``a`` and ``b`` (default: the network's)."""
        if window < 1:
            raise ValueError(f"window must be >= 1 byte, got {window}")
        self._path(a, b).window = window
        self._wake()

    def set_latency(self, a: str, b: str, seconds: float) -> None:
        """One-way delay between ``a`` and ``b``, both directions, for bytes sent from now on.

        Bytes become readable ``seconds`` after ``send_all`` queued them, in order; a
        connect takes a round trip. 0 removes the delay.
        """
        if not 0 <= seconds < math.inf:
            raise ValueError(f"latency must be finite and >= 0, got {seconds}")
        self._path(a, b).latency = float(seconds)

    # ---- faults ----

    def refuse(self, address: str, port: int | None = None) -> None:
        """Connects to ``address`` (on ``port``, or any port) raise ``ConnectionRefusedError``."""
        self._refused.add((_normalize(address), port))

    def unrefuse(self, address: str, port: int | None = None) -> None:
        """Undo the ``refuse`` call with the same arguments."""
        self._refused.discard((_normalize(address), port))

    def black_hole(self, address: str) -> None:
        """The host drops every packet: connects to and from it hang, its streams stall.

        Like a dead machine rather than a dead process: nothing is refused or reset.
        Senders fill their window and then block; ``unblack_hole`` delivers what was held.
        """
        self._black_holes.add(_normalize(address))
        self._wake()

    def unblack_hole(self, address: str) -> None:
        """Undo ``black_hole``: stalled streams deliver, hanging connects proceed."""
        self._black_holes.discard(_normalize(address))
        self._wake()

    def partition(self, a: str, b: str) -> None:
        """Like ``black_hole``, but only between ``a`` and ``b``."""
        self._partitions.add(frozenset((_normalize(a), _normalize(b))))
        self._wake()

    def heal(self, a: str, b: str) -> None:
        """Undo ``partition(a, b)``."""
        self._partitions.discard(frozenset((_normalize(a), _normalize(b))))
        self._wake()

    def cut(self, a: str, b: str) -> None:
        """Reset every connection between ``a`` and ``b`` (either direction, both ends).

        Both ends' pending and later ``receive_some``/``send_all`` raise
        ``BrokenResourceError``; bytes in flight are lost. New connects still work.
        """
        pair = {_normalize(a), _normalize(b)}
        for end in self._ends:
            if {end.local[0], end.remote[0]} == pair:
                end._reset()

    def crash(self, address: str) -> None:
        """The host's process dies: reset all its connections and remove its listeners.

        A ``serve`` running on it keeps waiting (it never sees a connection again) until
        cancelled; a new ``serve`` may take the ports. Connects to it are refused.
        """
        ip = _normalize(address)
        for end in self._ends:
            if ip in (end.local[0], end.remote[0]):
                end._reset()
        host = self._hosts.get(ip)
        if host is not None:
            for listener in host._listeners.values():
                listener.close()
            host._listeners.clear()

    # ---- internals ----

    def _path(self, a: str, b: str) -> _Path:
        pair = frozenset((_normalize(a), _normalize(b)))
        path = self._paths.get(pair)
        if path is None:
            path = self._paths[pair] = _Path(self._window)
            path.stalled = self._is_stalled(pair)
        return path

    def _is_stalled(self, pair: frozenset[str]) -> bool:
        return bool(pair & self._black_holes) or pair in self._partitions

    def _wake(self) -> None:
        """Re-evaluate stalls and let every blocked reader, writer and connect re-check."""
        for pair, path in self._paths.items():
            path.stalled = self._is_stalled(pair)
        for end in self._ends:
            end._out.lot.unpark_all()
        self._changed.unpark_all()

    def _open(self, client: MemoryTransport, target: str, port: int) -> MemoryStream:
        """Create the connection and queue the server end at the listener (the SYN arrived)."""
        if (target, port) in self._refused or (target, None) in self._refused:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"Connection refused: {target} port {port}")
        host = self._hosts.get(target)
        if host is None:
            raise _oserror(errno.EHOSTUNREACH, target)
        listener = host._listeners.get(port)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"Connection refused: {target} port {port}")
        client_end, server_end = MemoryStream._pair(
            self._path(client.address, target),
            (client.address, client._pick_ephemeral_port()),
            (target, port),
        )
        self._ends += (client_end, server_end)
        listener.queue.append(server_end)
        listener.lot.unpark_all()
        return client_end
