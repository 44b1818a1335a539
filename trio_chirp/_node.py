"""The node: listening, dialing, the remote table, GC, delivery, and the public ``Chirp`` API.

A node runs inside the caller's Trio app: ``open_chirp()`` opens a nursery that holds
the listener, one task per connection (each its own nursery), the garbage collector
and the reconnect debouncer. The node never imports TCP or the in-memory network: it is
handed a ``Transport``. It decides per connection whether to encrypt (PROTOCOL.md 2.2,
docs/tls.md) and has ``_tls.TLSLayer`` run the handshake on the transport's stream before
the connection starts; accepted connections of a node with certificates are sniffed first.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, NoReturn, final

import trio

from . import _requests
from ._config import Config
from ._connection import CONTAINED_ERRORS, Connection
from ._errors import (
    CannotConnectError,
    ChirpError,
    ChirpTimeoutError,
    ConnectionLostError,
    MessageInUseError,
    ProtocolError,
    ShutdownError,
    TLSError,
)
from ._header import ChirpMeta, ErrorInfo
from ._inbox import Budget, Inbox
from ._limits import Admission
from ._message import Message
from ._protocol import IDENTITY_SIZE, ZERO_IDENTITY, Handshake, check_frame_lengths
from ._ratelimit import LogLimiter
from ._remote import Outgoing, OutgoingState, Remote, RemoteKey, lost_error
from ._requests import RequestTable, remote_error
from ._sniff import client_hello_verdict
from ._stats import TRAFFIC_COUNTERS, NodeStats, RemoteStats
from ._tcp import TCPTransport
from ._tls import TLSContexts, TLSLayer, contexts_for
from ._transport import Transport

__all__ = ["Chirp", "open_chirp", "serve_chirp"]

logger = logging.getLogger("trio_chirp.node")

LOCAL_ADDRESSES: Final = frozenset({"127.0.0.1", "::1"})
"""libchirp's "local" test is a string compare on these two literals (PROTOCOL.md 2.2)."""

DEBOUNCE_BASE: Final = 0.05
DEBOUNCE_JITTER: Final = 0.5

YIELD_EVERY: Final = 64
"""A send or receive that need not wait still yields to the scheduler this often."""

_ADDRESS_CACHE_SIZE: Final = 4096
_address_cache: dict[str, str] = {}


def normalize_address(address: object) -> str:
    """The canonical text of an IP literal, so one peer is one remote however it is spelled.

    Cached: parsing with ``ipaddress`` costs more than the rest of an asynchronous send.
    """
    if not isinstance(address, str):
        raise ValueError(f"message address must be an IP address literal, got {address!r}")
    cached = _address_cache.get(address)
    if cached is not None:
        return cached
    try:
        normal = str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"message address must be an IP address literal, got {address!r}") from None
    if len(_address_cache) >= _ADDRESS_CACHE_SIZE:
        _address_cache.clear()
    _address_cache[address] = normal
    return normal


def _destination(message: Message) -> RemoteKey:
    port = message.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"message port must be in 1..65535, got {port!r}")
    return normalize_address(message.address), port


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


@final
class Chirp:
    """A running node. Made by ``open_chirp()`` / ``serve_chirp()``, not directly."""

    def __init__(
        self,
        config: Config,
        transport: Transport,
        rng: random.Random,
        nursery: trio.Nursery,
        tls: TLSLayer | None = None,
    ) -> None:
        self.config = config
        self._transport = transport
        self._tls = tls
        self._rng = rng
        self._nursery = nursery
        identity = config.identity
        self.identity: bytes = identity if identity != ZERO_IDENTITY else os.urandom(IDENTITY_SIZE)
        self.port: int = config.port
        self._remotes: dict[RemoteKey, Remote] = {}
        self._connections: set[Connection] = set()
        self._blocked: set[Remote] = set()
        self._debouncing = False
        self._budget = Budget(
            config.max_unreleased,
            config.max_unreleased_bytes,
            config.effective_max_connections,
            config.max_msg_size,
        )
        self._admission = Admission(config.effective_max_connections, config.max_handshakes)
        self._inbox = Inbox()
        self._leftovers_dropped = 0
        self._listen_scope = trio.CancelScope()
        self._closing = False
        self._closed = trio.Event()
        self._errors: Counter[str] = Counter()
        self._send_errors: Counter[str] = Counter()
        self._log_limiter = LogLimiter()
        self._summary_timer = False
        self._lost = 0
        self._requests = RequestTable(remember_for=config.timeout)
        self._error_responses_in = self._error_responses_out = self._unmatched_error_responses = 0
        self._header_errors = 0
        self._peak_slots = 0
        self._closed_totals: Counter[str] = Counter()  # TRAFFIC_COUNTERS of closed connections
        self._unyielded = 0  # fast-path sends/receives since the last schedule point

    def __repr__(self) -> str:
        return f"<Chirp port={self.port} identity={self.identity.hex()}>"

    # --- start -------------------------------------------------------------------------
    async def _start(self) -> None:
        self.port = await self._nursery.start(self._serve)
        self._nursery.start_soon(self._collect_garbage)

    @trio.lowlevel.enable_ki_protection
    async def _serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with self._listen_scope:
            await self._transport.serve(
                port=self.config.port,
                bind_v4=self.config.bind_v4,
                bind_v6=self.config.bind_v6,
                backlog=self.config.backlog,
                on_accept=self._on_accept,
                on_error=self._on_accept_error,
                task_status=task_status,
            )

    # --- the plaintext rule and TLS (PROTOCOL.md 2.2, docs/tls.md) -----------------------
    def _needs_tls(self, address: str) -> bool:
        return not self.config.disable_encryption and address not in LOCAL_ADDRESSES

    def _encrypts(self, destination: str, source: str) -> bool:
        """Plaintext only when both ends' addresses, as the other end sees them, are local literals."""
        return self._needs_tls(destination) or self._needs_tls(source)

    def _bind_for(self, destination: str) -> str | None:
        """The address to dial from: ``bind_v4``/``bind_v6``, so the peer sees the address we listen on.

        Then both ends reach the same encryption decision (PROTOCOL.md 2.2). Not bound:
        wildcards; 127.0.0.1 and ::1 (dialled from themselves, so plaintext); and a
        loopback ``bind`` for a destination that is not loopback (it could not reach it).
        """
        if destination in LOCAL_ADDRESSES:
            return None
        bind = self.config.bind_v6 if ":" in destination else self.config.bind_v4
        if bind is None or _unspecified(bind):
            return None
        if _loopback(bind) and not _loopback(destination):
            return None
        return bind

    def _tls_error(self, address: str, *, source: bool = False) -> TLSError:
        """TLS is needed, no certificates are configured; ``source``: our own address is the non-local one."""
        if source:
            why = (
                f"the peer sees this node as {address}, which is not 127.0.0.1 or ::1, so chirp requires TLS"
            )
        elif ipaddress.ip_address(address).is_loopback:
            why = (
                f"{address} is a loopback address, but libchirp sends plaintext only to the literals"
                " 127.0.0.1 and ::1, so chirp requires TLS for it"
            )
        else:
            why = f"{address} is not 127.0.0.1 or ::1, so chirp requires TLS for it"
        return TLSError(
            f"{why}, but no certificates are configured: set Config.cert_chain_pem (see docs/tls.md),"
            " or disable_encryption=True"
        )

    def _client_hello_refused(self, address: str) -> TLSError:
        if self.config.disable_encryption:
            why = "but this node has disable_encryption=True"
        else:
            why = "but this node has no certificates (Config.cert_chain_pem), so it cannot serve TLS"
        return TLSError(
            f"{address} sent a TLS ClientHello instead of a chirp handshake, {why} (libchirp encrypts"
            " whenever it dials an address other than 127.0.0.1 or ::1)"
        )

    def _on_accept(self, stream: trio.abc.Stream, peer_address: str) -> None:
        address = normalize_address(peer_address)
        if self._closing:
            self._nursery.start_soon(stream.aclose)
            return
        if self._tls is None and self._needs_tls(address):
            self._count_error(self._tls_error(address), address, None)
            self._nursery.start_soon(stream.aclose)
            return
        if not self._admission.admit(self._connections, address, incoming=True, now=trio.current_time()):
            self._log_limited(
                address,
                "refused",
                "connections refused at the connection limit",
                "connection from %s refused: at the connection limit (%d) with nothing to shed",
                address,
                self._admission.max_connections,
            )
            self._nursery.start_soon(stream.aclose)
            return
        deadline = trio.current_time() + self.config.effective_handshake_timeout
        conn = Connection(
            self,
            stream,
            peer_address=address,
            outgoing_remote=None,
            handshake_deadline=deadline,
            prelude=None if self._tls is None else self._accept_prelude,
            refuse_client_hello=self._tls is None,
        )
        self._connections.add(conn)
        self._nursery.start_soon(conn.run)

    async def _accept_prelude(self, conn: Connection) -> tuple[trio.abc.Stream, bytes]:
        """A node with certificates: sniff the first bytes, then TLS, or plaintext from 127.0.0.1/::1 only.

        Runs inside the connection before its writer, so our own handshake waits until the
        first bytes decided (it goes inside TLS if the peer speaks TLS), within the handshake
        timeout; meanwhile the connection counts as a handshake in progress.
        """
        assert self._tls is not None
        address = conn.peer_address
        conn.waiting_for = "its first bytes"
        hello, prefix = await self._sniff(conn.stream, address)
        if not hello:
            if address not in LOCAL_ADDRESSES:
                raise TLSError(
                    f"{address} sent plaintext, but it is not 127.0.0.1 or ::1, so chirp requires"
                    " TLS: is its encryption disabled?"
                )
            return conn.stream, prefix
        conn.waiting_for = "the TLS handshake"
        try:
            return await self._tls.server(conn.stream, prefix, address), b""
        except TLSError as exc:
            raise TLSError(f"connection from {address}: {exc}") from exc.__cause__

    async def _dial_prelude(self, conn: Connection) -> tuple[trio.abc.Stream, bytes]:
        """TLS for a dialled connection, and its first read (see ``TLSLayer.client``)."""
        assert self._tls is not None
        assert conn.outgoing_remote is not None
        conn.waiting_for = "the TLS handshake"
        remote = conn.outgoing_remote
        return await self._tls.client(
            conn.stream, remote.address, remote.port, self.config.effective_buffer_size
        )

    async def _sniff(self, stream: trio.abc.Stream, address: str) -> tuple[bool, bytes]:
        """Read until the first bytes tell a TLS ClientHello from anything else (``_sniff.py``)."""
        data = b""
        while (verdict := client_hello_verdict(data)) is None:
            chunk = await stream.receive_some(self.config.effective_buffer_size)
            if not chunk:
                raise ConnectionLostError(f"{address} closed the connection before its handshake")
            data += chunk
        return verdict, data

    def _on_accept_error(self, error: OSError) -> None:
        """Accepting failed for want of resources (EMFILE and the like): count, log, free an fd.

        The listener backs off and retries; shedding an idle connection lets the retry
        succeed when the node itself holds the descriptors.
        """
        kind = errno.errorcode.get(error.errno or 0, type(error).__name__)
        self._errors[kind] += 1
        self._log_limited("*", kind, f"{kind} accept failures", "accepting a connection failed: %r", error)
        self._admission.shed_one(self._connections, trio.current_time(), "no file descriptor left to accept")

    # --- remotes and connections ----------------------------------------------------------
    def _get_remote(self, key: RemoteKey) -> Remote:
        remote = self._remotes.get(key)
        if remote is None:
            remote = Remote(
                key,
                serial=self._rng.getrandbits(32),
                queue_size=self.config.send_queue_size,
                noop_threshold=self.config.noop_threshold,
                on_needs_connection=self._request_connection,
                on_lost=self._on_async_lost,
            )
            self._remotes[key] = remote
        return remote

    def _request_connection(self, remote: Remote) -> None:
        if self._closing:
            return
        remote.connecting = True
        self._nursery.start_soon(self._dial, remote)

    @trio.lowlevel.enable_ki_protection
    async def _dial(self, remote: Remote) -> None:
        now = trio.current_time()
        if not self._admission.admit(self._connections, remote.address, incoming=False, now=now):
            remote.connecting = False
            full = CannotConnectError(
                f"cannot connect to {remote.address}:{remote.port}: the node is at its limit of"
                f" {self._admission.max_connections} connections and none could be shed"
            )
            self._count_error(full, remote.address, remote.port)
            self._on_connect_failed(remote, full)
            await trio.lowlevel.checkpoint()
            return
        deadline = now + self.config.connect_timeout
        where = f"{remote.address}:{remote.port}"
        stream: trio.abc.Stream | None = None
        error: ChirpError | None = None
        encrypted = False
        with trio.move_on_at(deadline):
            try:
                stream, source = await self._transport.connect(
                    remote.address, remote.port, bind=self._bind_for(remote.address)
                )
                encrypted = self._encrypts(remote.address, source)
                if encrypted and self._tls is None:
                    local = not self._needs_tls(remote.address)
                    why = self._tls_error(source, source=True) if local else self._tls_error(remote.address)
                    error = TLSError(f"cannot connect to {where}: {why}")
            except OSError as exc:
                error = CannotConnectError(f"cannot connect to {where}: {exc}")
                error.__cause__ = exc
        if stream is None or error is not None:
            remote.connecting = False
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await _aclose_quietly(stream)
            if error is None:
                timeout = ChirpTimeoutError(
                    f"connecting to {where} took longer than the connect timeout"
                    f" ({self.config.connect_timeout}s)"
                )
                self._count_error(timeout, remote.address, remote.port)
                self._on_remote_failure(remote, timeout)
            else:
                self._count_error(error, remote.address, remote.port)
                self._on_connect_failed(remote, error)
            return
        conn = Connection(
            self,
            stream,
            peer_address=remote.address,
            outgoing_remote=remote,
            handshake_deadline=deadline,
            prelude=self._dial_prelude if encrypted else None,
        )
        self._connections.add(conn)
        if self._closing or remote.closed:
            conn.close(ShutdownError("node is closing"))
        await conn.run()

    def _on_handshake(self, conn: Connection, handshake: Handshake) -> Remote:
        refusal = self._refuse_handshake(conn, handshake)
        if refusal is not None:
            raise ProtocolError(f"{conn}: handshake refused: {refusal}")
        if conn.outgoing_remote is not None:
            # Attach to the remote we dialled, whatever port the peer announces
            # (libchirp re-keys by the announced port, PROTOCOL.md 1.2 / sharp edge 11).
            remote = conn.outgoing_remote
            remote.connecting = False
        else:
            remote = self._get_remote((conn.peer_address, handshake.port))
        if remote.closed:
            remote = self._get_remote(remote.key)
        remote.attach(conn)
        for old in list(remote.old):  # a peer that reconnects may have reset the old one
            if old.is_broken():
                old.close(ConnectionLostError(f"{old} was reset by the peer, which reconnected"))
        return remote

    def _refuse_handshake(self, conn: Connection, handshake: Handshake) -> str | None:
        """Why a peer's handshake cannot be trusted, or None.

        Port 0 cannot be replied to (``msg.port`` would be 0); our own identity or an
        address we listen on would turn a replying application into a loop with itself.
        Other nodes may use our port number on other addresses.
        """
        if handshake.port == 0:
            return "it announced port 0"
        if handshake.identity == self.identity:
            return "it announced this node's own identity"
        if handshake.port == self.port and self._listens_on(conn.peer_address, conn.local_address):
            return f"it announced {conn.peer_address}:{handshake.port}, where this node listens"
        return None

    def _listens_on(self, address: str, local_address: str | None) -> bool:
        """Whether this node listens on ``address`` (at its own port)."""
        ip = ipaddress.ip_address(address)
        bind = self.config.bind_v4 if ip.version == 4 else self.config.bind_v6
        if bind is None:
            return False
        if not ipaddress.ip_address(bind).is_unspecified:
            return ipaddress.ip_address(bind) == ip
        # A wildcard listener: every address of this host, the whole loopback range included.
        return ip.is_loopback or (local_address is not None and ipaddress.ip_address(local_address) == ip)

    def _on_connection_closed(self, conn: Connection, cause: ChirpError) -> None:
        self._connections.discard(conn)
        totals = self._closed_totals
        for name in TRAFFIC_COUNTERS:
            totals[name] += getattr(conn, name)
        self._peak_slots = max(self._peak_slots, conn.slots.peak)
        self._retire_from_inbox(conn, cause)
        remote = conn.remote
        in_flight_here = (
            remote is not None and remote.in_flight is not None and remote.in_flight.connection is conn
        )
        # Our own closes, and a peer closing an idle connection (its GC, or it stopped),
        # are routine: not counted as errors and not debounced (libchirp debounces every
        # close, which makes a short-timeout send right after a peer's GC fail).
        routine = isinstance(cause, ShutdownError) or (
            conn.peer_closed and remote is not None and not conn.writing and not in_flight_here
        )
        if remote is None and conn.outgoing_remote is not None and not routine:
            # Our attempt failed before the peer's chirp handshake arrived.
            dialled = conn.outgoing_remote
            dialled.connecting = False
            if isinstance(cause, ChirpTimeoutError):
                self._count_error(cause, conn.peer_address, dialled.port)
                self._on_remote_failure(dialled, cause)
            else:
                where = f"{dialled.address}:{dialled.port}"
                error: ChirpError
                if isinstance(cause, TLSError) and not conn.prelude_done:  # the TLS handshake failed
                    error = TLSError(f"cannot connect to {where}: {cause}")
                    error.__cause__ = cause.__cause__ or cause
                else:
                    error = (TLSError if isinstance(cause, TLSError) else CannotConnectError)(
                        f"cannot connect to {where}: the connection ended before the peer's chirp"
                        f" handshake: {cause}"
                    )
                    error.__cause__ = cause
                self._count_error(error, conn.peer_address, dialled.port)
                self._on_connect_failed(dialled, error)
            return
        if routine:
            logger.debug("%r closed: %s", conn, cause)
        else:
            self._count_error(cause, conn.peer_address, conn.peer_port)
        if remote is None and conn.outgoing_remote is not None:
            remote = conn.outgoing_remote
            remote.connecting = False
        if remote is None:
            return
        remote.on_connection_closed(conn, lost_error(cause), conn.writing)
        if routine:
            remote.kick()
        else:
            self._on_remote_failure(remote, cause)

    def _on_remote_failure(self, remote: Remote, cause: ChirpError) -> None:
        """Debounce reconnects (7.5); queued messages stay until their own deadline (our fix of 7.4)."""
        remote.note_error(cause, connection=True)
        remote.expire_queued(trio.current_time(), lambda out: self._send_timeout(remote, out))
        self._block(remote)

    def _on_connect_failed(self, remote: Remote, error: ChirpError) -> None:
        """An attempt failed before the peer's handshake (refused, unreachable, closed, TLS).

        Fail fast, as libchirp does: every message waiting for this connection fails now
        with the error, and so does every send during the debounce that follows. Only a
        connect that times out leaves messages queued until their own deadline.
        """
        remote.note_error(error, connection=True)
        remote.connect_error = error
        remote.fail_all_queued(lambda: copy_error(error))
        self._block(remote)

    def _block(self, remote: Remote) -> None:
        if remote.closed or self._closing:
            remote.connect_error = None
            return
        remote.blocked = True
        self._blocked.add(remote)
        if not self._debouncing:
            self._debouncing = True
            self._nursery.start_soon(self._debounce)

    @trio.lowlevel.enable_ki_protection
    async def _debounce(self) -> None:
        await trio.sleep(DEBOUNCE_BASE + self._rng.uniform(0.0, DEBOUNCE_JITTER))
        self._debouncing = False
        blocked, self._blocked = self._blocked, set()
        for remote in blocked:
            remote.blocked = False
            remote.connect_error = None
            remote.kick()

    def _on_async_lost(self, remote: Remote, out: Outgoing, error: ChirpError) -> None:
        self._lost += 1
        self._log_limited(
            remote.address,
            "lost",
            "lost asynchronous messages",
            "asynchronous message %s to %s:%d was accepted but not written: %s",
            out.identity.hex(),
            remote.address,
            remote.port,
            error,
        )

    def _count_error(self, error: BaseException, address: str, port: int | None) -> None:
        # Routine closes (ours, a peer's clean close of an idle connection) never get here.
        kind = type(error).__name__
        self._errors[kind] += 1
        peer = address if port is None else f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self._log_limited(
            address, kind, f"{kind} connection failures", "connection with %s failed: %r", peer, error
        )

    def _log_limited(
        self,
        address: str,
        kind: str,
        what: str,
        msg: str,
        *args: object,
        log: logging.Logger = logger,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log a failure at WARNING on ``log`` unless the node's limiter says it repeats.

        The one limiter of the node, also for its routers and workers, so the node-wide cap
        holds for all of them and every repeat ends up in a summary line.
        """
        log_now, summary_due = self._log_limiter.record(trio.current_time(), address, kind, what)
        if log_now:
            log.warning(msg, *args, exc_info=exc_info)
        if summary_due and not self._summary_timer:
            self._summary_timer = True
            self._nursery.start_soon(self._summarise_repeats)

    @trio.lowlevel.enable_ki_protection
    async def _summarise_repeats(self) -> None:
        """The limiter's timer: one summary line per repeating failure when its window ends."""
        limiter = self._log_limiter
        try:
            while limiter.pending and limiter.window_end is not None:
                await trio.sleep_until(limiter.window_end)
                for line in limiter.summarise():
                    logger.warning("%s", line)
        finally:
            self._summary_timer = False

    def _deliver(self, source: Connection, message: Message) -> None:
        """A received message: an error response, an awaited response, or the application's."""
        meta = message._meta
        if meta is not None and meta.error is not None:
            self._on_error_response(message, meta.error)
            return
        requests = self._requests
        if requests.active and requests.offer(message, self._awaiting_ack(message)):
            return
        if self._inbox.closed:
            message.release(ack=False)
            return
        self._inbox.put(source, message)

    def _retire_from_inbox(self, conn: Connection, cause: ChirpError) -> None:
        """What a closed connection delivered and the application has not taken yet.

        Messages that asked for an ACK go (their sender has failed already: the ACK
        cannot travel on a closed connection); asynchronous ones stay as leftovers, unless
        the peer broke the protocol. Leftovers count against the budget and are the first
        to go when it overflows. Each dropped message is counted and logged (rate-limited).
        """
        trusted = not isinstance(cause, ProtocolError)
        dropped = self._inbox.retire(conn, lambda m: trusted and not m.ack_requested)
        budget = self._budget
        while budget.over:
            oldest = self._inbox.drop_oldest_leftover()
            if oldest is None:
                break
            dropped.append(oldest)
        for message in dropped:
            message.release(ack=False)
        if dropped:
            self._leftovers_dropped += len(dropped)
            self._log_limited(
                conn.peer_address,
                "leftovers dropped",
                "undelivered messages of closed connections dropped",
                "%d undelivered message(s) of %r dropped (%s)",
                len(dropped),
                conn,
                cause,
            )

    def _awaiting_ack(self, message: Message) -> bool:
        """Whether the synchronous message in flight to the sender has ``message``'s identity."""
        remote = self._remotes.get((message.address, message.port))  # type: ignore[arg-type]
        out = None if remote is None else remote.in_flight
        return out is not None and out.identity == message.identity

    def _on_error_response(self, message: Message, info: ErrorInfo) -> None:
        """Fail what it answers at once: the synchronous send in flight, or a request; never delivered."""
        self._error_responses_in += 1
        assert message.address is not None
        assert message.port is not None
        remote = self._remotes.get((message.address, message.port))
        if remote is not None and remote.on_error_response(message.identity, remote_error(info)):
            message.release()
            return
        if self._requests.active and self._requests.offer(message):
            return
        self._unmatched_error_responses += 1
        self._log_limited(
            message.address,
            "unmatched error response",
            "error responses that matched nothing",
            "error response %s from %s:%d matched no waiting send or request: %s: %s",
            message.identity.hex(),
            message.address,
            message.port,
            info.kind,
            info.text,
        )
        message.release()

    def _on_bad_header(self, conn: Connection) -> None:
        """A header that starts like our map but is not a valid one: delivered untouched, counted."""
        self._header_errors += 1
        self._log_limited(
            conn.peer_address,
            "bad header map",
            "malformed trio_chirp header maps",
            "%r sent a malformed trio_chirp header map; the message is delivered with its header untouched",
            conn,
        )

    # --- garbage collection -------------------------------------------------------------
    @trio.lowlevel.enable_ki_protection
    async def _collect_garbage(self) -> None:
        reuse = self.config.effective_reuse_time
        while True:
            await trio.sleep(self._rng.uniform(reuse / 2, reuse))
            self._collect(trio.current_time())

    def _collect(self, now: float) -> None:
        """Close old connections and forget remotes idle for longer than R (7.6)."""
        reuse = self.config.effective_reuse_time
        for remote in list(self._remotes.values()):
            for conn in list(remote.old):
                if now - conn.last_activity > reuse:
                    conn.close(ShutdownError(f"{conn} replaced and idle for more than {reuse}s"))
            if remote.blocked or remote.connecting or remote.in_flight is not None:
                continue
            if now - remote.last_activity > reuse:
                del self._remotes[remote.key]
                remote.close()
                if remote.current is not None:
                    remote.current.close(ShutdownError(f"{remote.current} idle for more than {reuse}s"))

    # --- public API ----------------------------------------------------------------------
    async def send(self, message: Message, *, synchronous: bool | None = None) -> None:
        """Send ``message`` to ``(message.address, message.port)``.

        Synchronous (the node's default unless overridden): returns when the receiving
        application released the message with an ACK. Asynchronous: returns when the
        message is accepted for sending (see ``flush()``). Waits for room when the
        remote's queue is full. An asynchronous send that finds room is a cancellation
        point but yields to the scheduler only every 64 such sends, so the writer can
        coalesce a burst into one write. Deadline: the sooner of the caller's cancel scope and
        ``config.timeout`` from now; the latter raises ``ChirpTimeoutError``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        remote: Remote | None = None
        try:
            if self._closing:
                raise ShutdownError(f"{self} is closed")
            key = _destination(message)
            check_frame_lengths(len(message.header), len(message.data))
            if self._tls is None and self._needs_tls(key[0]):
                raise self._tls_error(key[0])
            if message._in_use:
                raise MessageInUseError(f"{message!r} is already being sent")
            sync = self.config.synchronous if synchronous is None else synchronous
            timeout_at = trio.current_time() + self.config.timeout
            out = self._outgoing(message, sync, timeout_at)
            remote = self._get_remote(key)
            if remote.connect_error is not None and remote.current is None:
                raise copy_error(remote.connect_error)
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
                await self._maybe_yield()
                return
            await self._send_waiting(remote, key, out, timeout_at)
        except ChirpError as error:
            self._note_send_error(remote, error)
            raise

    def _outgoing(self, message: Message, sync: bool, timeout_at: float) -> Outgoing:
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
        opts = message._send_opts
        meta: ChirpMeta | None = None
        confirm = False
        if opts is not None:
            meta, confirm, may_travel = opts
            if may_travel is False:
                travel = None
            elif may_travel is not True:
                travel = may_travel  # a router's: earlier than its own wait
        if not self.config.header_map:
            return Outgoing(message, sync, deadline, None, None, confirm)
        if meta is None and (travel is not None or message.destination is not None):
            meta = ChirpMeta(destination=message.destination)
        return Outgoing(message, sync, deadline, travel, meta, confirm)

    async def _send_waiting(self, remote: Remote, key: RemoteKey, out: Outgoing, deadline: float) -> None:
        """The slow path of ``send()``: wait for queue room and, if synchronous, the ACK."""
        message = out.message
        message._in_use = True
        try:
            with trio.move_on_at(deadline):
                while not remote.has_room() or remote.closed:
                    if not remote.closed:
                        await remote.room_lot.park()
                    if self._closing:
                        raise ShutdownError(f"{self} closed while {message!r} waited for queue room")
                    remote = self._get_remote(key)
                    if remote.connect_error is not None and remote.current is None:
                        raise copy_error(remote.connect_error)
                remote.enqueue(out)
                if not out.synchronous and not out.confirm:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return
                await out.wait()
        except BaseException:
            self._abandon(remote, out, None)
            raise
        finally:
            message._in_use = False
        if out.state is OutgoingState.DONE or out.state is OutgoingState.WITHDRAWN:
            if out.error is not None:
                raise out.error
            return
        error = self._send_timeout(remote, out)
        self._abandon(remote, out, error)
        raise error

    def _note_send_error(self, remote: Remote | None, error: ChirpError) -> None:
        """Count a failed send before it raises, so ``statistics()`` already shows it."""
        self._send_errors[type(error).__name__] += 1
        if remote is not None:
            remote.note_error(error)

    def _abandon(self, remote: Remote, out: Outgoing, error: ChirpError | None) -> None:
        """The caller left: a queued message is withdrawn; one on the wire keeps its place
        (a synchronous one until its ACK or its write + timeout), and its outcome is dropped."""
        if out.state is OutgoingState.QUEUED:
            remote.withdraw(out, error or ShutdownError("the sender was cancelled"))
            remote.kick()

    def _send_timeout(self, remote: Remote, out: Outgoing) -> ChirpTimeoutError:
        where = f"{remote.address}:{remote.port}"
        timeout = self.config.timeout
        if out.state is OutgoingState.QUEUED or out.state is OutgoingState.NEW:
            if remote.current is None:
                last = remote.last_connection_error
                detail = f"; last attempt: {last}" if last is not None else ""
                error = ChirpTimeoutError(
                    f"send to {where} timed out after {timeout}s still connecting{detail}"
                )
                error.__cause__ = last
                return error
            return ChirpTimeoutError(
                f"send to {where} timed out after {timeout}s still queued ({remote.queued} queued,"
                f" {'one' if remote.in_flight else 'none'} in flight)"
            )
        if out.state is OutgoingState.WRITING:
            return ChirpTimeoutError(f"send to {where} timed out after {timeout}s while being written")
        return ChirpTimeoutError(f"send to {where}: no ACK within timeout={timeout}s")

    async def request(
        self, message: Message, *, synchronous: bool | None = None, auto_release: bool = True
    ) -> Message:
        """Send ``message`` and return the response: a message with its identity from that peer.

        Synchronous (the node's mode unless overridden): the request asks for an ACK and
        keeps the remote's one-in-flight place until it arrives; a peer following the rule
        has sent the response before the ACK. Asynchronous: no ACK, the response alone
        completes it, so many requests may be in flight to one peer. The deadline is the
        sooner of the caller's cancel scope and ``config.timeout``; it travels to the peer
        (``msg.deadline``) in our header map. The response's slot is released unless
        ``auto_release=False``. A trio_chirp hop that cannot deliver it answers with an
        error response, raised here as ``RemoteError``. See docs/requests.md.
        """
        return await _requests.request(self, message, synchronous=synchronous, auto_release=auto_release)

    async def reply(self, request: Message, data: bytes, *, header: bytes = b"") -> None:
        """Answer a received ``request``: write the response, then release the request with ACK.

        Returns once the response is handed to the OS and the request is released, so the
        ACK follows the response on the wire. Runs under the request's deadline
        (``ChirpTimeoutError`` when it passes first); if the write fails or is cancelled,
        the request is released without ACK and the error propagates.
        """
        await _requests.reply(self, request, data, header=header)

    async def _maybe_yield(self) -> None:
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Message:
        """The next received message; it holds a slot until ``release()``.

        Raises ``ShutdownError`` once the node is closed. Like an asynchronous ``send()``
        that finds room, a ``receive()`` that finds a message waiting is a cancellation
        point but yields to the scheduler only every 64 calls.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        message = inbox.take_nowait()
        if message is not None:
            await self._maybe_yield()
            return message
        while not inbox.closed:
            await inbox.lot.park()
            message = inbox.take_nowait()
            if message is not None:
                return message
        raise ShutdownError(f"{self} is closed")

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ShutdownError:
            raise StopAsyncIteration from None

    async def flush(self, address: str, port: int) -> None:
        """Wait until every asynchronous message accepted for this peer is written.

        Raises ``ConnectionLostError`` if any accepted since the last ``flush()`` was not
        (its ``__cause__`` is the first failure); each such message was also logged.
        """
        key = normalize_address(address), port
        remote = self._remotes.get(key)
        if remote is None:
            await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while remote.unwritten_async:
            await remote.flush_lot.park()
        failures, remote.async_failures = remote.async_failures, []
        await trio.lowlevel.cancel_shielded_checkpoint()
        if failures:
            error = ConnectionLostError(
                f"{len(failures)} asynchronous message(s) to {address}:{port} were not written;"
                f" first: {failures[0]}"
            )
            raise error from failures[0]

    def statistics(self) -> NodeStats:
        remotes: list[RemoteStats] = []
        conns_by_remote: Counter[RemoteKey] = Counter()
        slots_by_remote: Counter[RemoteKey] = Counter()
        for conn in self._connections:
            if conn.remote is not None:
                conns_by_remote[conn.remote.key] += 1
                slots_by_remote[conn.remote.key] += conn.slots.in_use
        for key, remote in self._remotes.items():
            remotes.append(
                RemoteStats(
                    address=remote.address,
                    port=remote.port,
                    connections=conns_by_remote[key],
                    connected=remote.current is not None,
                    queued=remote.queued,
                    in_flight=int(remote.in_flight is not None),
                    unwritten_async=remote.unwritten_async,
                    reconnect_blocked=remote.blocked,
                    slots_in_use=slots_by_remote[key],
                    last_error=None if remote.last_error is None else str(remote.last_error),
                    last_error_at=remote.last_error_at,
                )
            )
        conns = self._connections
        totals = self._closed_totals
        traffic = {name: totals[name] + sum(getattr(c, name) for c in conns) for name in TRAFFIC_COUNTERS}
        return NodeStats(
            port=self.port,
            connections=len(conns),
            remotes=tuple(remotes),
            slots_in_use=sum(c.slots.in_use for c in conns),
            slots_peak=max([self._peak_slots, *(c.slots.peak for c in conns)]),
            queued=sum(r.queued for r in self._remotes.values()),
            in_flight=sum(r.in_flight is not None for r in self._remotes.values()),
            undelivered=len(self._inbox),
            unreleased=self._budget.count,
            unreleased_bytes=self._budget.size,
            leftovers=self._inbox.leftovers,
            leftovers_dropped=self._leftovers_dropped,
            connections_refused=self._admission.refused,
            connections_shed=self._admission.shed,
            messages_lost=self._lost,
            requests_pending=len(self._requests),
            requests_completed=self._requests.completed,
            requests_failed=self._requests.failed,
            late_responses=self._requests.late_responses,
            acks_before_response=self._requests.acks_before_response,
            error_responses_in=self._error_responses_in,
            error_responses_out=self._error_responses_out,
            unmatched_error_responses=self._unmatched_error_responses,
            header_errors=self._header_errors,
            errors=dict(self._errors),
            send_errors=dict(self._send_errors),
            **traffic,
        )

    async def aclose(self) -> None:
        """Close the node gracefully (PROTOCOL.md 7.4 "abort all", with a grace period for ACKs).

        Stops accepting, fails queued messages with ``ShutdownError``, waits at most
        ``config.timeout`` for the ACKs of written synchronous messages, then closes
        every connection. Messages the application did not release are never ACKed.
        The wait is cancellable, as Trio's ``aclose()`` contract asks: cancelled, it
        becomes an immediate close (in-flight sends fail with ``ShutdownError``) and the
        cancellation propagates. Closing twice is harmless.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._begin_close()
        try:
            with trio.move_on_after(self.config.timeout):
                for remote in list(self._remotes.values()):
                    while remote.in_flight is not None and remote.current is not None:
                        await remote.ack_lot.park()
            await trio.lowlevel.checkpoint()
        finally:
            self._finish_close()

    def _close_now(self) -> None:
        """The immediate close (cancellation, KeyboardInterrupt, an error leaving the block)."""
        if not self._closing:
            self._begin_close()
        self._finish_close()

    def _begin_close(self) -> None:
        self._closing = True
        self._listen_scope.cancel()
        for remote in self._remotes.values():
            remote.fail_all_queued(lambda: ShutdownError(f"{self} is closing"))

    def _finish_close(self) -> None:
        if self._closed.is_set():
            return
        if self._log_limiter.pending:  # a short-lived node still reports what it summarised
            for line in self._log_limiter.summarise():
                logger.warning("%s", line)
        for remote in self._remotes.values():
            remote.close()
        for conn in list(self._connections):
            conn.close(ShutdownError(f"{self} is closing"))
        for message in self._inbox.close():
            message.release(ack=False)
        self._closed.set()


async def _aclose_quietly(stream: trio.abc.Stream) -> None:
    with contextlib.suppress(*CONTAINED_ERRORS):
        await stream.aclose()


def copy_error(error: ChirpError) -> ChirpError:
    """A fresh exception like ``error`` (same class, text and cause) for another raiser.

    Raising one exception object from several tasks would splice their tracebacks.
    """
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__
    return copy


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, if that is all there is."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_chirp(
    config: Config | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
    tls: TLSContexts | None = None,
) -> AsyncIterator[Chirp]:
    """Run a node for the duration of the ``async with`` block.

    ``transport`` replaces TCP (e.g. ``trio_chirp.testing.MemoryNetwork().host(ip)``);
    ``rng`` drives every random choice (initial serials, debounce, GC jitter) so tests
    can assert exact virtual times. ``tls`` is a ready ``TLSContexts`` pair, instead of
    ``Config.cert_chain_pem``/``dh_params_pem`` (docs/tls.md). Certificate files that are
    missing, unreadable or unusable raise ``ValueError`` (naming the field and path) here.

    Whatever the block raises comes out exactly as it would without ``open_chirp`` (a
    bare exception stays bare, a group stays the same group); the node's own nursery
    is never visible. A block that ends normally closes gracefully (``aclose()``);
    one that raises, is cancelled or interrupted closes at once.
    """
    config = config or Config()
    contexts = contexts_for(config, tls)
    layer = None if contexts is None else TLSLayer(contexts, config.verify_peer)
    body_error: BaseException | None = None
    close_error: BaseException | None = None
    internal: BaseExceptionGroup[BaseException] | None = None
    try:
        async with trio.open_nursery() as nursery:
            chirp = Chirp(config, transport or TCPTransport(), rng or random.Random(), nursery, layer)
            await chirp._start()
            try:
                yield chirp
            except BaseException as exc:
                # Kept aside, not raised into our nursery, so it is not wrapped in a group.
                body_error = exc
            if body_error is None:
                try:
                    await chirp.aclose()
                except BaseException as exc:
                    close_error = exc
            else:
                chirp._close_now()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        internal = group
    raise_after_node(body_error or close_error, internal)


def raise_after_node(own: BaseException | None, internal: BaseExceptionGroup[BaseException] | None) -> None:
    """Raise what leaves ``open_chirp``: the block's own exception as it was, unless the node crashed.

    ``internal`` is what the node's nursery raised: crashed node tasks (bugs, a port
    that cannot be bound) and Cancelled from an outer scope that reached the nursery's
    exit. A crash is raised unwrapped when it is alone; the block's own Cancelled is
    then the node's doing and is dropped, any other exception of the block joins it.
    """
    crashed = None if internal is None else internal.split(trio.Cancelled)[1]
    if crashed is not None:
        # The block's Cancelled (bare or grouped) came from the node's own scope: dropped.
        rest = own.split(trio.Cancelled)[1] if isinstance(own, BaseExceptionGroup) else own
        if rest is None or isinstance(rest, trio.Cancelled):
            _raise_without_context(_single_exception(crashed) or crashed)
        _raise_without_context(
            BaseExceptionGroup("trio_chirp node crashed while its block raised", [*crashed.exceptions, rest])
        )
    if own is not None:
        raise own
    if internal is not None:
        _raise_without_context(_first_leaf(internal))  # an outer cancellation that reached the nursery's exit


def _raise_without_context(exc: BaseException) -> NoReturn:
    """Raise ``exc`` keeping its own ``__context__``.

    ``__aexit__`` runs while the block's exception is being handled, so a new raise would
    get it as context and print it twice ("During handling of the above exception").
    """
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context


async def serve_chirp(
    config: Config | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
    tls: TLSContexts | None = None,
    task_status: trio.TaskStatus[Chirp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled, or until ``await chirp.aclose()`` closed it.

    For ``chirp = await nursery.start(serve_chirp, config)``. Cancelled, it closes at
    once (sends awaiting ACKs fail with ``ShutdownError``); for a graceful stop call
    ``await chirp.aclose()`` first, after which this returns by itself.
    """
    async with open_chirp(config, transport=transport, rng=rng, tls=tls) as chirp:
        task_status.started(chirp)
        await chirp._closed.wait()
