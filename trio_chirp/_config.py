"""Node configuration: libchirp's settings with its defaults and ranges, plus our own.

Validation happens in ``__post_init__`` so an invalid ``Config`` never exists; the
error names the field, the value and the allowed range. Certificate files are checked
when the node starts (they may legitimately appear later), not here.

Every field, its default, its range and its origin is tabled in ``docs/config.md``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ._protocol import IDENTITY_SIZE, ZERO_IDENTITY

if TYPE_CHECKING:
    from ._peercert import PeerCertificate

__all__ = ["Config"]

DEFAULT_SLOTS: Final = 16
DEFAULT_BUFFER_SIZE: Final = 64 * 1024
DEFAULT_MAX_MSG_SIZE: Final = 1024 * 1024
MAX_CONNECTIONS_DEFAULT: Final = 1024
FD_MARGIN: Final = 64
"""File descriptors left to the rest of the process when max_connections is derived."""
MAX_CONNECT_TIMEOUT: Final = 60.0

StrPath = str | os.PathLike[str]


def _fd_soft_limit() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return MAX_CONNECTIONS_DEFAULT + FD_MARGIN
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_CONNECTIONS_DEFAULT + FD_MARGIN if soft == resource.RLIM_INFINITY else int(soft)


def _range_error(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"Config.{name}={value!r} is out of range: allowed {allowed}")


def _check_int(name: str, value: object, low: int, high: int, allowed: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Config.{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise _range_error(name, value, allowed or f"{low}..{high}")


def _check_float(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Config.{name} must be a number, got {type(value).__name__}")
    if math.isnan(value) or not low <= value <= high:
        raise _range_error(name, value, f"{low}..{high} seconds")


def _check_bool(name: str, value: object) -> None:
    """Only True or False: ``"false"``, ``None`` or ``0`` would be taken for a yes/no they do not mean."""
    if type(value) is not bool:
        raise TypeError(f"Config.{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def _check_ip(name: str, value: object, version: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(
            f"Config.{name} must be an IP address literal (str) or None, got {type(value).__name__}"
        )
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"Config.{name}={value!r} is not an IPv{version} address literal") from None
    if address.version != version:
        raise ValueError(f"Config.{name}={value!r} is not an IPv{version} address literal")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings of one node. Defaults are libchirp 1.2.1's, so mixed networks agree on timing."""

    # --- libchirp's settings (docs/protocol.md, section 8) ---
    port: int = 2998
    """Listening port, announced in every handshake. 0 picks a port free on IPv4 and IPv6."""
    timeout: float = 5.0
    """Seconds for a written frame's write and ACK; connecting gets min(2*timeout, 60)."""
    reuse_time: float = 30.0
    """Seconds of idleness before connections and remotes are collected (see effective value)."""
    backlog: int = 100
    max_slots: int = 0
    """Receive slots per connection; 0 means 16; synchronous nodes always use 1."""
    synchronous: bool = True
    buffer_size: int = 0
    """Bytes asked for per socket read; 0 means 64 KiB."""
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    """Largest header_len + data_len accepted from a peer; a larger frame closes its connection.
    1 MiB (libchirp: 100 MiB), so the node's worst case stays affordable (docs/memory.md)."""
    bind_v4: str | None = "0.0.0.0"
    """IPv4 listen address; None listens on no IPv4 address (ours)."""
    bind_v6: str | None = "::"
    """IPv6 listen address; None listens on no IPv6 address (ours)."""
    identity: bytes = ZERO_IDENTITY
    """Node identity; all zero means a fresh random one per start. Used whole (libchirp keeps one byte)."""
    cert_chain_pem: StrPath | None = None
    """One PEM file: own certificate, CA certificate(s) (the trust anchors), private key."""
    dh_params_pem: StrPath | None = None
    """PEM DH parameters for TLS 1.2's DHE suites; None: the shipped RFC 7919 ffdhe2048 (ours)."""
    disable_encryption: bool = False

    # --- trio_chirp's own settings ---
    send_queue_size: int = 256
    """Messages that may wait per remote before ``send()`` waits for room (libchirp: unbounded)."""
    handshake_timeout: float = 0.0
    """Seconds an incoming connection has to complete TLS and chirp handshakes; 0 = connect timeout."""
    max_connections: int = 0
    """Open connections (incoming, outgoing, handshakes included); 0 = min(1024, RLIMIT_NOFILE soft - 64)."""
    max_handshakes: int = 64
    """Accepted connections still in their handshake; past it, new ones shed or are refused."""
    max_unreleased: int = 1024
    """Received, unreleased messages node-wide beyond each connection's first slot."""
    max_unreleased_bytes: int = 64 * 1024 * 1024
    """Their bytes (header + data), node-wide, beyond each connection's first slot."""
    header_map: bool = True
    """Add trio_chirp's msgpack map to empty headers (deadlines, requests, routing, error responses);
    False leaves every header exactly as the application gave it (for peers that must see that)."""
    verify_peer: Callable[[PeerCertificate], bool] | None = None
    """Called with the peer's ``PeerCertificate`` after every TLS handshake (both directions);
    anything but True (or an exception) refuses the peer. None admits any certificate the CA signed."""

    def __post_init__(self) -> None:
        _check_int("port", self.port, 0, 65535, "0 (pick a free port) or 1025..65535")
        if 0 < self.port <= 1024:
            raise _range_error("port", self.port, "0 (pick a free port) or 1025..65535")
        _check_int("backlog", self.backlog, 0, 127)
        _check_float("timeout", self.timeout, 0.1, 1200.0)
        _check_float("reuse_time", self.reuse_time, 0.0, 3600.0)
        reuse = self.effective_reuse_time
        if not 0.5 <= reuse <= 3600.0:
            raise ValueError(
                f"Config.reuse_time={self.reuse_time!r} gives an effective reuse time of"
                f" max(reuse_time, 3*timeout)={reuse!r}; allowed 0.5..3600 seconds"
            )
        _check_int("max_slots", self.max_slots, 0, 32, "0 (means 16) or 1..32")
        _check_int("buffer_size", self.buffer_size, 0, 2**32 - 1, "0 (means 64 KiB) or 1024..4294967295")
        if 0 < self.buffer_size < 1024:
            raise _range_error("buffer_size", self.buffer_size, "0 (means 64 KiB) or 1024..4294967295")
        _check_int("max_msg_size", self.max_msg_size, 0, 2**32 - 1)
        _check_ip("bind_v4", self.bind_v4, 4)
        _check_ip("bind_v6", self.bind_v6, 6)
        if self.bind_v4 is None and self.bind_v6 is None:
            raise ValueError("Config.bind_v4 and Config.bind_v6 are both None: the node could not listen")
        if not isinstance(self.identity, bytes) or len(self.identity) != IDENTITY_SIZE:
            raise ValueError(f"Config.identity={self.identity!r} must be {IDENTITY_SIZE} bytes")
        _check_int("send_queue_size", self.send_queue_size, 1, 2**31 - 1)
        _check_float("handshake_timeout", self.handshake_timeout, 0.0, 3600.0)
        _check_int("max_connections", self.max_connections, 0, 2**20, "0 (derived) or 1..1048576")
        _check_int("max_handshakes", self.max_handshakes, 1, 2**20)
        _check_int("max_unreleased", self.max_unreleased, 0, 2**31 - 1)
        _check_int("max_unreleased_bytes", self.max_unreleased_bytes, 0, 2**63 - 1)
        for name in ("synchronous", "disable_encryption", "header_map"):
            _check_bool(name, getattr(self, name))
        if self.verify_peer is not None and not callable(self.verify_peer):
            raise TypeError(
                f"Config.verify_peer must be callable or None, got {type(self.verify_peer).__name__}"
            )
        for name in ("cert_chain_pem", "dh_params_pem"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str | os.PathLike):
                raise TypeError(f"Config.{name} must be a path or None, got {type(value).__name__}")

    # --- derived values ---
    @property
    def effective_reuse_time(self) -> float:
        """R = max(reuse_time, 3 * timeout), as libchirp computes it."""
        return max(float(self.reuse_time), 3.0 * self.timeout)

    @property
    def connect_timeout(self) -> float:
        """min(2 * timeout, 60): TCP connect + TLS + the peer's handshake, for outgoing connections."""
        return min(2.0 * self.timeout, MAX_CONNECT_TIMEOUT)

    @property
    def effective_handshake_timeout(self) -> float:
        """Time an accepted connection has to send its handshake (libchirp: unlimited)."""
        return self.handshake_timeout or self.connect_timeout

    @property
    def effective_max_connections(self) -> int:
        """``max_connections``, or min(1024, RLIMIT_NOFILE soft limit - 64), at least 16.

        Read when asked (the limit is the process's, at the node's start), so a node never
        plans on file descriptors it cannot have.
        """
        if self.max_connections:
            return self.max_connections
        return max(16, min(MAX_CONNECTIONS_DEFAULT, _fd_soft_limit() - FD_MARGIN))

    @property
    def worst_case_unreleased_bytes(self) -> int:
        """The bound on bytes held by received, unreleased messages (docs/memory.md).

        The budget, plus one message of ``max_msg_size`` for the first slot of every
        connection (a live connection always keeps one, so it can always make progress).
        """
        return self.max_unreleased_bytes + self.effective_max_connections * self.max_msg_size

    @property
    def effective_slots(self) -> int:
        """1 when synchronous, else max_slots or 16."""
        if self.synchronous:
            return 1
        return self.max_slots or DEFAULT_SLOTS

    @property
    def effective_buffer_size(self) -> int:
        """Bytes asked for per socket read: ``buffer_size``, or 64 KiB for 0."""
        return self.buffer_size or DEFAULT_BUFFER_SIZE

    @property
    def noop_threshold(self) -> float:
        """Idle seconds after which a NOOP probe precedes the next frame (3/4 of R)."""
        return 0.75 * self.effective_reuse_time
