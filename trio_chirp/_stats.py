"""Frozen snapshots returned by ``Chirp.statistics()``, in the style of trio's ``statistics()``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import final

__all__ = ["NodeStats", "RemoteStats"]


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
    """Synchronous messages written and waiting for their ACK (0 or 1)."""
    unwritten_async: int
    """Asynchronous messages accepted and not yet written (what ``flush()`` waits for)."""
    reconnect_blocked: bool
    slots_in_use: int
    """Receive slots held by the application across this remote's connections."""


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
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    messages_lost: int
    """Asynchronous messages accepted but never written (each also logged)."""
    errors: Mapping[str, int]
    """Connection failures counted by exception class name."""
