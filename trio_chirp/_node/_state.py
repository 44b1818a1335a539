"""What every service of one node shares: who it is, where it listens, and whether it is closing."""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from .._config import Config
from .._protocol import IDENTITY_SIZE, ZERO_IDENTITY, encode_handshake

__all__ = ["NodeState", "StartSoon"]

StartSoon = Callable[..., None]
"""The node nursery's ``start_soon``, handed to the services that start tasks in it."""


class NodeState:
    """The node's identity and port, and its lifecycle flags (read by every service)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        identity = config.identity
        self.identity: bytes = identity if identity != ZERO_IDENTITY else os.urandom(IDENTITY_SIZE)
        self.port: int = config.port
        """The port announced in our handshake: ``config.port``, or the one the OS chose for 0."""
        self.closing = False
        """Set when closing begins: nothing is accepted, dialled or queued any more."""
        self.closed = trio.Event()

    def __repr__(self) -> str:
        return f"<Chirp port={self.port} identity={self.identity.hex()}>"

    def handshake(self) -> bytes:
        return encode_handshake(self.port, self.identity)
