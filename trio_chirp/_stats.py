"""Frozen snapshots returned by ``Chirp.statistics()``, in the style of trio's ``statistics()``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import final

__all__ = ["NodeStats", "RemoteStats", "Traffic"]


@final
@dataclass(slots=True)
class Traffic:
    """Frames and bytes carried: one connection's counters, or a sum of them.

    The reader and the writer count into their connection's; the node keeps one more that
    adds up every connection that has closed.
    """

    messages_in: int = 0
    acks_in: int = 0
    noops_in: int = 0
    messages_out: int = 0
    acks_out: int = 0
    noops_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, other: Traffic) -> None:
        self.messages_in += other.messages_in
        self.acks_in += other.acks_in
        self.noops_in += other.noops_in
        self.messages_out += other.messages_out
        self.acks_out += other.acks_out
        self.noops_out += other.noops_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out


@final
@dataclass(frozen=True, slots=True)
class RemoteStats:
    """One peer node as seen from here."""

    address: str
    port: int
    connections: int
    """Open connections attached to this remote (current and old)."""
    connected: bool
    """Whether a current connection exists (the one frames are written on)."""
    queued: int
    """Messages accepted and waiting to be written."""
    in_flight: int
    """Synchronous messages written and waiting for their ACKs (at most ``window``)."""
    window: int
    """How many synchronous messages may be in flight to it at once: what its peer granted
    in its announcement (its receive slots, docs/protocol.md section 12); 1 for libchirp
    and until the announcement has arrived."""
    unwritten_async: int
    """Asynchronous messages accepted and not yet written (what ``flush()`` waits for)."""
    reconnect_blocked: bool
    """Within the reconnect debounce that follows a failure (sends wait or, after a
    failed connection attempt, fail at once)."""
    slots_in_use: int
    """Receive slots held by the application across this remote's connections."""
    last_error: str | None
    """The most recent failure with this remote (a connection's or a send's), as text."""
    last_error_at: float | None
    """When ``last_error`` happened, in ``trio.current_time()``."""
    trio_chirp_version: int | None
    """The announcement version the peer sent on the current connection: it is trio_chirp
    (docs/protocol.md, "The trio_chirp announcement"). None: libchirp, an older trio_chirp,
    or not connected."""


@final
@dataclass(frozen=True, slots=True)
class NodeStats:
    """The whole node at one moment."""

    port: int
    connections: int
    """Open connections, including ones still in their handshake."""
    remotes: tuple[RemoteStats, ...]
    slots_in_use: int
    slots_peak: int
    """Highest number of slots one connection had in use at once."""
    queued: int
    in_flight: int
    undelivered: int
    """Received messages waiting for ``receive()``."""
    unreleased: int
    """Received messages not released yet (waiting for ``receive()`` or held by the application):
    what the node-wide budget counts (docs/memory.md)."""
    unreleased_bytes: int
    """Their header + data bytes."""
    leftovers: int
    """Undelivered messages of connections that have closed (among ``undelivered``)."""
    leftovers_dropped: int
    """Undelivered messages of closed connections dropped (ACK-requesting ones, or over budget)."""
    connections_refused: int
    """New connections refused at ``max_connections``/``max_handshakes`` (nothing could be shed)."""
    connections_shed: int
    """Connections closed to let a newcomer in (node.md, "Connection limit")."""
    messages_in: int
    """Data frames received (every frame but ACK and NOOP)."""
    messages_out: int
    """Data frames written."""
    acks_in: int
    acks_out: int
    noops_in: int
    noops_out: int
    bytes_in: int
    bytes_out: int
    messages_lost: int
    """Asynchronous messages accepted but never written (logged, rate-limited)."""
    requests_pending: int
    """``request()`` calls waiting for their response."""
    requests_completed: int
    requests_failed: int
    """``request()`` calls that raised a ``ChirpError`` (timeout, error response, ...)."""
    late_responses: int
    """Responses that came after their request gave up: released, never delivered."""
    acks_before_response: int
    """Synchronous requests whose ACK came before the response (the peer broke the rule)."""
    error_responses_in: int
    error_responses_out: int
    unmatched_error_responses: int
    """Error responses that matched no waiting send or request (released, not delivered)."""
    header_errors: int
    """Frames whose header started like our map but was malformed (delivered untouched)."""
    oversized_refused: int
    """Messages of announced trio_chirp peers above ``max_msg_size``, skipped unread and
    answered with an error response (the connection kept)."""
    errors: Mapping[str, int]
    """Connection failures (including failed connection attempts) by exception class name."""
    send_errors: Mapping[str, int]
    """``send()`` calls that raised a ``ChirpError``, by class name; counted before it is raised."""

    @property
    def frames_in(self) -> int:
        """Every frame received: messages, ACKs and NOOPs."""
        return self.messages_in + self.acks_in + self.noops_in

    @property
    def frames_out(self) -> int:
        """Every frame written: messages, ACKs and NOOPs."""
        return self.messages_out + self.acks_out + self.noops_out
