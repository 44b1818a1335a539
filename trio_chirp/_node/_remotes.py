"""The remote table: one ``Remote`` per peer node, the reconnect debounce, fail-fast and GC.

* A failed connection makes its remote wait before it dials again (the debounce,
  docs/protocol.md, section 7.5): 50 ms plus up to 500 ms of jitter, one timer for all remotes.
* A connection *attempt* that failed before the peer's handshake (refused, unreachable,
  TLS) fails every message waiting for it at once, and every send during the debounce
  (libchirp's fail-fast); only a connect timeout leaves messages queued until their own
  deadline.
* Garbage collection (7.6) closes old connections and forgets remotes idle for longer
  than the reuse time, at jittered intervals.

Every random draw (initial serials, debounce, GC jitter) comes from the node's one ``rng``
in a fixed order, so tests under ``MockClock`` can assert exact times.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import trio

from .._address import RemoteKey, format_peer
from .._config import Config
from .._connection import Connection
from .._errors import ChirpError, ShutdownError
from .._reading import FrameReader
from .._remote import Outgoing, Remote
from ._log import NodeLog
from ._state import NodeState, StartSoon

__all__ = ["DEBOUNCE_BASE", "DEBOUNCE_JITTER", "RemoteTable", "copy_error"]

DEBOUNCE_BASE: Final = 0.05
DEBOUNCE_JITTER: Final = 0.5

NodeRemote = Remote[Connection]
Dial = Callable[[NodeRemote], Awaitable[None]]


def copy_error(error: ChirpError) -> ChirpError:
    """A fresh exception like ``error`` (same class, text and cause) for another raiser.

    Raising one exception object from several tasks would splice their tracebacks.
    """
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__
    return copy


class RemoteTable:
    """The node's remotes by key; what happens to a remote after a failure; their GC."""

    def __init__(
        self, state: NodeState, config: Config, rng: random.Random, log: NodeLog, start_soon: StartSoon
    ) -> None:
        self._state = state
        self._config = config
        self._rng = rng
        self._log = log
        self._start_soon = start_soon
        self._remotes: dict[RemoteKey, NodeRemote] = {}
        self.find: Callable[[RemoteKey], NodeRemote | None] = self._remotes.get
        """The remote for a key, or None: the dict's own ``get`` (every send looks one up)."""
        self._blocked: set[NodeRemote] = set()
        self._debouncing = False
        self._dial: Dial | None = None
        self.lost = 0
        """Asynchronous messages accepted but never written."""

    def set_dialer(self, dial: Dial) -> None:
        """The link service's dial, started in the node's nursery when a remote needs a connection."""
        self._dial = dial

    def __iter__(self) -> Iterator[NodeRemote]:
        return iter(self._remotes.values())

    def items(self) -> Iterator[tuple[RemoteKey, NodeRemote]]:
        return iter(self._remotes.items())

    def get(self, key: RemoteKey) -> NodeRemote:
        """The remote for ``key``, made (with a random initial serial) if there is none."""
        remote = self._remotes.get(key)
        if remote is None:
            remote = Remote(
                key,
                serial=self._rng.getrandbits(32),
                queue_size=self._config.send_queue_size,
                noop_threshold=self._config.noop_threshold,
                on_needs_connection=self._request_connection,
                on_lost=self._on_async_lost,
            )
            self._remotes[key] = remote
        return remote

    def _request_connection(self, remote: NodeRemote) -> None:
        if self._state.closing:
            return
        assert self._dial is not None
        remote.connecting = True
        self._start_soon(self._dial, remote)

    def _on_async_lost(self, remote: NodeRemote, out: Outgoing, error: ChirpError) -> None:
        self.lost += 1
        self._log.limited(
            remote.address,
            "lost",
            "lost asynchronous messages",
            "asynchronous message %s to %s was accepted but not written: %s",
            out.identity.hex(),
            format_peer(remote.address, remote.port),
            error,
        )

    # --- after a failure ----------------------------------------------------------------
    def on_connection_failed(self, remote: NodeRemote, cause: ChirpError) -> None:
        """A connection (or a connect that timed out) failed: debounce the reconnect (7.5).

        Queued messages stay for the next connection until their own deadline (our fix
        of libchirp's 7.4, which fails them all).
        """
        remote.note_error(cause, connection=True)
        timeout = self._config.timeout
        remote.expire_queued(trio.current_time(), lambda out: remote.timeout_error(out, timeout))
        self._debounce(remote)

    def on_attempt_failed(self, remote: NodeRemote, error: ChirpError) -> None:
        """A connection attempt failed before the peer's handshake (refused, unreachable, closed, TLS).

        Fail fast, as libchirp does: every message waiting for this connection fails now
        with the error, and so does every send during the debounce that follows. Only a
        connect that times out (``on_connection_failed``) leaves messages queued.
        """
        remote.note_error(error, connection=True)
        remote.connect_error = error
        remote.fail_all_queued(lambda: copy_error(error))
        self._debounce(remote)

    def _debounce(self, remote: NodeRemote) -> None:
        """Keep ``remote`` from dialling until the shared debounce timer fires."""
        if remote.closed or self._state.closing:
            remote.connect_error = None
            return
        remote.blocked = True
        self._blocked.add(remote)
        if not self._debouncing:
            self._debouncing = True
            self._start_soon(self._end_debounce)

    @trio.lowlevel.enable_ki_protection
    async def _end_debounce(self) -> None:
        await trio.sleep(DEBOUNCE_BASE + self._rng.uniform(0.0, DEBOUNCE_JITTER))
        self._debouncing = False
        blocked, self._blocked = self._blocked, set()
        for remote in blocked:
            remote.blocked = False
            remote.connect_error = None
            remote.kick()

    # --- garbage collection -------------------------------------------------------------
    @trio.lowlevel.enable_ki_protection
    async def collect_garbage(self) -> None:
        """Run ``collect()`` for ever, every half to whole reuse time (jittered)."""
        reuse = self._config.effective_reuse_time
        while True:
            await trio.sleep(self._rng.uniform(reuse / 2, reuse))
            self.collect(trio.current_time())

    def collect(self, now: float) -> None:
        """Close old connections and forget remotes idle for longer than the reuse time (7.6)."""
        reuse = self._config.effective_reuse_time
        for remote in list(self._remotes.values()):
            for conn in list(remote.old):
                if now - conn.last_activity > reuse:
                    conn.close(ShutdownError(f"{conn} replaced and idle for more than {reuse}s"))
            if remote.blocked or remote.connecting or remote.in_flight:
                continue
            if now - remote.last_activity > reuse:
                del self._remotes[remote.key]
                remote.close()
                if remote.current is not None:
                    remote.current.close(ShutdownError(f"{remote.current} idle for more than {reuse}s"))

    # --- what requests ask (SendState) ----------------------------------------------------
    def awaiting_ack(self, key: RemoteKey, identity: bytes) -> bool:
        """Whether a synchronous message in flight to ``key`` has ``identity``."""
        remote = self._remotes.get(key)
        return remote is not None and remote.awaiting_ack(identity)

    def _current(self, key: RemoteKey) -> Connection | None:
        remote = self._remotes.get(key)
        return None if remote is None else remote.current

    def peer_announced(self, key: RemoteKey) -> bool:
        """Whether the peer at ``key`` announced itself as trio_chirp on its current connection."""
        conn = self._current(key)
        return conn is not None and conn.peer_announcement is not None

    def reading_of(self, key: RemoteKey) -> FrameReader | None:
        """The frame reader of the current connection to ``key`` (a response comes on it)."""
        conn = self._current(key)
        return None if conn is None or conn.closed else conn.reading

    def settle_in_flight(self, key: RemoteKey, identity: bytes, error: ChirpError) -> bool:
        """Fail the synchronous message in flight to ``key`` with ``identity``, if any (an error response)."""
        remote = self._remotes.get(key)
        return remote is not None and remote.on_error_response(identity, error)

    # --- closing ------------------------------------------------------------------------
    def fail_all_queued(self, error: Callable[[], ChirpError]) -> None:
        """The node is closing: every queued message fails with ``error()``."""
        for remote in self._remotes.values():
            remote.fail_all_queued(error)

    def close_all(self) -> None:
        for remote in self._remotes.values():
            remote.close()
