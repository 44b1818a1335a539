"""The message object applications send and receive.

A ``Message`` is mutable on purpose, like libchirp's: the usual reply is to take a
received message, replace ``data`` and send it back, which keeps its identity (so
the sender can match the answer) and its address and announced port (so it goes back
to the sender's node).

Payloads are stored as immutable ``bytes``: a ``bytearray`` or ``memoryview`` given to
the constructor or assigned later is copied at that moment, so the caller may reuse its
buffer. Mutating and re-sending a message after its ``send()`` returned is fine; sending
the same object again while an earlier ``send()`` of it is still running raises
``MessageInUseError`` (libchirp's ``CH_USED``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import final

from ._protocol import IDENTITY_SIZE

__all__ = ["Message"]

Buffer = bytes | bytearray | memoryview

ReleaseHook = Callable[["Message", bool], None]


def _as_bytes(name: str, value: Buffer) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"Message.{name} must be bytes-like, got {type(value).__name__}")


@final
class Message:
    """One chirp message: ``data``, an optional ``header`` and where it goes or came from.

    New messages get a random 16-byte ``identity``. ``serial``, ``remote_identity`` and
    ``ack_requested`` are set on received messages (and ``serial`` on sent ones once
    written). ``address`` is an IP literal and ``port`` the peer's *listening* port.
    """

    __slots__ = (
        "__weakref__",
        "_data",
        "_header",
        "_in_use",
        "_release_hook",
        "ack_requested",
        "address",
        "identity",
        "port",
        "remote_identity",
        "serial",
    )

    def __init__(
        self,
        data: Buffer = b"",
        *,
        header: Buffer = b"",
        address: str | None = None,
        port: int | None = None,
    ) -> None:
        self._data = _as_bytes("data", data)
        self._header = _as_bytes("header", header)
        self.address = address
        self.port = port
        self.identity: bytes = os.urandom(IDENTITY_SIZE)
        self.serial: int | None = None
        self.remote_identity: bytes | None = None
        self.ack_requested = False
        self._release_hook: ReleaseHook | None = None
        self._in_use = False

    @classmethod
    def _received(
        cls,
        identity: bytes,
        serial: int,
        header: bytes,
        data: bytes,
        address: str,
        port: int,
        remote_identity: bytes,
        ack_requested: bool,
        release_hook: ReleaseHook,
    ) -> Message:
        """A message built from a frame: no random identity drawn, fields set directly."""
        msg = cls.__new__(cls)
        msg._data = data
        msg._header = header
        msg.address = address
        msg.port = port
        msg.identity = identity
        msg.serial = serial
        msg.remote_identity = remote_identity
        msg.ack_requested = ack_requested
        msg._release_hook = release_hook
        msg._in_use = False
        return msg

    @property
    def data(self) -> bytes:
        return self._data

    @data.setter
    def data(self, value: Buffer) -> None:
        self._data = _as_bytes("data", value)

    @property
    def header(self) -> bytes:
        return self._header

    @header.setter
    def header(self, value: Buffer) -> None:
        self._header = _as_bytes("header", value)

    @property
    def has_slot(self) -> bool:
        """True while this received message holds one of its connection's receive slots."""
        return self._release_hook is not None

    def release(self, *, ack: bool = True) -> None:
        """Free the receive slot so the connection reads on, and ACK if the sender asked.

        ``ack=False`` frees the slot without acknowledging: a synchronous sender then
        fails with a timeout. Idempotent, and a no-op on a message that holds no slot
        (one created locally, or already released).
        """
        hook, self._release_hook = self._release_hook, None
        if hook is not None:
            hook(self, ack)

    def __del__(self) -> None:
        hook = getattr(self, "_release_hook", None)
        if hook is not None:
            self._release_hook = None
            try:
                warnings.warn(
                    f"{self!r} was garbage-collected without release(); its slot was freed without ACK",
                    ResourceWarning,
                    stacklevel=1,
                )
            finally:
                # Free the slot even when warnings are errors (-W error), else the
                # connection would stop reading for ever.
                hook(self, False)

    def __repr__(self) -> str:
        return (
            f"Message(identity={self.identity.hex()}, serial={self.serial}, "
            f"address={self.address!r}, port={self.port!r}, header={len(self._header)} B, "
            f"data={len(self._data)} B)"
        )
