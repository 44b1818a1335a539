"""Links: the node's connections, from accept or dial to close.

Listening and accepting, dialling (through the ``Transport``, under the connect
timeout), the connection limit (``_limits.Admission``), trust in a peer's handshake, and
what a closed connection means for its remote. This service is the ``ConnectionOwner``
of every connection (``_connection.py``): connections report to it, and it hands
messages to ``Delivery`` and failures to the ``RemoteTable``.

A close is *routine* (not counted, not debounced) when we closed it, or when the peer
closed an idle connection (its GC, or it stopped); libchirp debounces every close,
which makes a short-timeout send right after a peer's GC fail.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable

import trio

from .._address import bind_for, format_peer, listens_on, normalize_address
from .._config import Config
from .._connection import Connection, Prelude, aclose_quietly
from .._errors import (
    CannotConnectError,
    ChirpError,
    ChirpTimeoutError,
    ConnectionLostError,
    ProtocolError,
    ShutdownError,
    TLSError,
)
from .._limits import Admission
from .._protocol import FrameHead, Handshake
from .._reading import FrameReader
from .._remote import lost_error
from .._requests import describe_hop
from .._stats import Traffic
from .._transport import Transport
from ._delivery import Delivery
from ._encryption import Encryption
from ._log import NodeLog, logger
from ._remotes import NodeRemote, RemoteTable
from ._state import NodeState, StartSoon

__all__ = ["Links"]


class Links:
    """Every connection of one node, and the ``ConnectionOwner`` they report to."""

    def __init__(
        self,
        state: NodeState,
        transport: Transport,
        encryption: Encryption,
        remotes: RemoteTable,
        delivery: Delivery,
        log: NodeLog,
        start_soon: StartSoon,
    ) -> None:
        self._state = state
        self._config: Config = state.config
        self._transport = transport
        self._encryption = encryption
        self._remotes = remotes
        self._delivery = delivery
        self._log = log
        self._start_soon = start_soon
        self.connections: set[Connection] = set()
        self.admission = Admission(self._config.effective_max_connections, self._config.max_handshakes)
        self.errors: Counter[str] = Counter()
        """Connection failures by exception class name."""
        self.closed_traffic = Traffic()
        """The traffic of every connection that has closed."""
        self.peak_slots = 0
        """The highest ``slots.peak`` of any connection that has closed."""
        self.listen_scope = trio.CancelScope()
        # ConnectionOwner: messages and malformed headers go straight to delivery (no extra call).
        self.deliver = delivery.deliver
        self.on_bad_header = delivery.on_bad_header
        self.client_hello_refused = encryption.client_hello_refused
        remotes.set_dialer(self.dial)

    def _connection(
        self,
        stream: trio.abc.Stream,
        address: str,
        remote: NodeRemote | None,
        *,
        handshake_deadline: float,
        prelude: Prelude | None,
        refuse_client_hello: bool = False,
    ) -> Connection:
        """A new connection, counted from now on (it is started by the caller)."""
        conn = Connection(
            self,
            stream,
            config=self._config,
            budget=self._delivery.budget,
            inbox=self._delivery.inbox,
            peer_address=address,
            outgoing_remote=remote,
            handshake_deadline=handshake_deadline,
            prelude=prelude,
            refuse_client_hello=refuse_client_hello,
        )
        self.connections.add(conn)
        return conn

    # --- accepting ------------------------------------------------------------------------
    @trio.lowlevel.enable_ki_protection
    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until the node closes; ``task_status`` gets the port."""
        config = self._config
        with self.listen_scope:
            await self._transport.serve(
                port=config.port,
                bind_v4=config.bind_v4,
                bind_v6=config.bind_v6,
                backlog=config.backlog,
                on_accept=self._on_accept,
                on_error=self._on_accept_error,
                task_status=task_status,
            )

    def _on_accept(self, stream: trio.abc.Stream, peer_address: str) -> None:
        address = normalize_address(peer_address)
        if self._state.closing:
            self._start_soon(stream.aclose)
            return
        refusal = self._encryption.accept_refusal(address)
        if refusal is not None:
            self.count_error(refusal, address, None)
            self._start_soon(stream.aclose)
            return
        if not self.admission.admit(self.connections, address, incoming=True, now=trio.current_time()):
            self._log.limited(
                address,
                "refused",
                "connections refused at the connection limit",
                "connection from %s refused: at the connection limit (%d) with nothing to shed",
                address,
                self.admission.max_connections,
            )
            self._start_soon(stream.aclose)
            return
        prelude = self._encryption.accept_prelude()
        conn = self._connection(
            stream,
            address,
            None,
            handshake_deadline=trio.current_time() + self._config.effective_handshake_timeout,
            prelude=prelude,
            refuse_client_hello=prelude is None,
        )
        self._start_soon(conn.run)

    def _on_accept_error(self, error: OSError) -> None:
        """Accepting failed for want of resources (EMFILE and the like): count, log, free an fd.

        The listener backs off and retries; shedding an idle connection lets the retry
        succeed when the node itself holds the descriptors.
        """
        kind = errno.errorcode.get(error.errno or 0, type(error).__name__)
        self.errors[kind] += 1
        self._log.limited("*", kind, f"{kind} accept failures", "accepting a connection failed: %r", error)
        self.admission.shed_one(self.connections, trio.current_time(), "no file descriptor left to accept")

    # --- dialling -------------------------------------------------------------------------
    @trio.lowlevel.enable_ki_protection
    async def dial(self, remote: NodeRemote) -> None:
        """Connect to ``remote`` and run the connection (started by the remote table)."""
        now = trio.current_time()
        where = format_peer(remote.address, remote.port)
        if not self.admission.admit(self.connections, remote.address, incoming=False, now=now):
            remote.connecting = False
            full = CannotConnectError(
                f"cannot connect to {where}: the node is at its limit of"
                f" {self.admission.max_connections} connections and none could be shed"
            )
            self.count_error(full, remote.address, remote.port)
            self._remotes.on_attempt_failed(remote, full)
            await trio.lowlevel.checkpoint()
            return
        config = self._config
        deadline = now + config.connect_timeout
        stream: trio.abc.Stream | None = None
        error: ChirpError | None = None
        prelude = None
        with trio.move_on_at(deadline):
            try:
                stream, source = await self._transport.connect(
                    remote.address, remote.port, bind=bind_for(remote.address, config.bind_v4, config.bind_v6)
                )
                prelude = self._encryption.dial_prelude(remote.address, remote.port, source)
            except TLSError as exc:
                # Kept on the remote as its connect error: without this raise's frames (and stream).
                error = exc.with_traceback(None)
            except OSError as exc:
                error = CannotConnectError(f"cannot connect to {where}: {exc}")
                error.__cause__ = exc
        if stream is None or error is not None:
            remote.connecting = False
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await aclose_quietly(stream)
            if error is None:
                timeout = ChirpTimeoutError(
                    f"connecting to {where} took longer than the connect timeout ({config.connect_timeout}s)"
                )
                self.count_error(timeout, remote.address, remote.port)
                self._remotes.on_connection_failed(remote, timeout)
            else:
                self.count_error(error, remote.address, remote.port)
                self._remotes.on_attempt_failed(remote, error)
            return
        conn = self._connection(stream, remote.address, remote, handshake_deadline=deadline, prelude=prelude)
        if self._state.closing or remote.closed:
            conn.close(ShutdownError("node is closing"))
        await conn.run()

    # --- ConnectionOwner ------------------------------------------------------------------
    def our_handshake(self) -> bytes:
        return self._state.handshake()

    def on_handshake(self, conn: Connection, handshake: Handshake) -> NodeRemote:
        refusal = self._refuse_handshake(conn, handshake)
        if refusal is not None:
            raise ProtocolError(f"{conn}: handshake refused: {refusal}")
        remotes = self._remotes
        if conn.outgoing_remote is not None:
            # Attach to the remote we dialled, whatever port the peer announces
            # (libchirp re-keys by the announced port, docs/protocol.md, section 1.2; sharp edge 11).
            remote = conn.outgoing_remote
            remote.connecting = False
        else:
            remote = remotes.get((conn.peer_address, handshake.port))
        if remote.closed:
            remote = remotes.get(remote.key)
        remote.attach(conn)
        for old in list(remote.old):  # a peer that reconnects may have reset the old one
            if old.is_broken():
                old.close(ConnectionLostError(f"{old} was reset by the peer, which reconnected"))
        return remote

    def on_oversized(self, conn: Connection, head: FrameHead) -> bool:
        hop = describe_hop("receiver", self._state.port, self._state.identity)
        return self._delivery.refuse_oversized(conn, head, self._config.max_msg_size, hop)

    def _refuse_handshake(self, conn: Connection, handshake: Handshake) -> str | None:
        """Why a peer's handshake cannot be trusted, or None.

        Port 0 cannot be replied to (``msg.port`` would be 0); our own identity or an
        address we listen on would turn a replying application into a loop with itself.
        Other nodes may use our port number on other addresses.
        """
        if handshake.port == 0:
            return "it announced port 0"
        if handshake.identity == self._state.identity:
            return "it announced this node's own identity"
        config = self._config
        if handshake.port == self._state.port and listens_on(
            conn.peer_address, conn.local_address, config.bind_v4, config.bind_v6
        ):
            return f"it announced {format_peer(conn.peer_address, handshake.port)}, where this node listens"
        return None

    def sole_reading(self) -> FrameReader | None:
        """The frame reader of the node's one connection, once its peer's handshake is in:
        ``receive()`` may read it itself (``_reading.py``). None with no or several connections."""
        connections = self.connections
        if len(connections) == 1:
            for conn in connections:
                if conn.remote is not None and not conn.closed:
                    return conn.reading
        return None

    def on_closed(self, conn: Connection, cause: ChirpError) -> None:
        """Account for a closed connection, then tell its remote what it means."""
        self.connections.discard(conn)
        self.closed_traffic.add(conn.traffic)
        self.peak_slots = max(self.peak_slots, conn.slots.peak)
        self._delivery.retire(conn, cause)
        remote = conn.remote
        routine = isinstance(cause, ShutdownError) or (
            conn.peer_closed
            and remote is not None
            and not conn.messages_being_written
            and not remote.in_flight_on(conn)
        )
        dialled = conn.outgoing_remote
        if remote is None and dialled is not None and not routine:
            self._attempt_ended(conn, dialled, cause)
            return
        if routine:
            logger.debug("%r closed: %s", conn, cause)
        else:
            self.count_error(cause, conn.peer_address, conn.peer_port)
        if remote is None and dialled is not None:
            remote = dialled
            remote.connecting = False
        if remote is None:
            return
        remote.on_connection_closed(conn, lost_error(cause), conn.messages_being_written)
        if routine:
            remote.kick()
        else:
            self._remotes.on_connection_failed(remote, cause)

    def _attempt_ended(self, conn: Connection, dialled: NodeRemote, cause: ChirpError) -> None:
        """Our connection attempt ended before the peer's chirp handshake arrived."""
        dialled.connecting = False
        if isinstance(cause, ChirpTimeoutError):
            self.count_error(cause, conn.peer_address, dialled.port)
            self._remotes.on_connection_failed(dialled, cause)
            return
        where = format_peer(dialled.address, dialled.port)
        error: ChirpError
        if isinstance(cause, TLSError) and not conn.prelude_done:  # the TLS handshake failed
            error = TLSError(f"cannot connect to {where}: {cause}")
            error.__cause__ = cause.__cause__ or cause
        else:
            error = (TLSError if isinstance(cause, TLSError) else CannotConnectError)(
                f"cannot connect to {where}: the connection ended before the peer's chirp handshake: {cause}"
            )
            error.__cause__ = cause
        self.count_error(error, conn.peer_address, dialled.port)
        self._remotes.on_attempt_failed(dialled, error)

    # --- failures and totals --------------------------------------------------------------
    def count_error(self, error: BaseException, address: str, port: int | None) -> None:
        """Count and log (rate-limited) a connection failure; routine closes never get here."""
        kind = type(error).__name__
        self.errors[kind] += 1
        peer = address if port is None else format_peer(address, port)
        self._log.limited(
            address, kind, f"{kind} connection failures", "connection with %s failed: %r", peer, error
        )

    def traffic(self) -> Traffic:
        """The traffic of every connection, open and closed."""
        total = Traffic()
        total.add(self.closed_traffic)
        for conn in self.connections:
            total.add(conn.traffic)
        return total

    def close_all(self, cause: Callable[[], ChirpError]) -> None:
        for conn in list(self.connections):
            conn.close(cause())
