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

# ruff: noqa: SLF001
# This module owns Message: its helper functions below read and write Message's private
# slots for the rest of the package (the connection that builds received messages, the
# node and the request layer), so no other module touches them.

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

from ._protocol import IDENTITY_SIZE

if TYPE_CHECKING:
    from ._header import ChirpMeta

__all__ = [
    "Message",
    "SendOptions",
    "cost_of",
    "in_use",
    "meta_of",
    "payload_of",
    "received_message",
    "set_in_use",
]

Buffer = bytes | bytearray | memoryview

ReleaseHook = Callable[["Message", bool], None]
"""Called once by ``release()`` with the message and whether to ACK."""


@final
@dataclass(frozen=True, slots=True)
class SendOptions:
    """How trio_chirp's own senders (requests, replies, routers, error responses) send a message.

    Applications never give any: their sends use the defaults, which is what ``None``
    means where options are taken.
    """

    meta: ChirpMeta | None = None
    """Fields for our header map (request, error, hops, destination); None: only what the
    send itself adds (the travelling deadline, the message's destination)."""
    wait_until_written: bool = False
    """An asynchronous send that returns only once its frame is written (``reply()``), so
    its sender can release the request afterwards and the ACK follows it on the wire."""
    deadline_travels: bool = True
    """Whether a deadline travels in our header map at all (not on responses)."""
    travel_at: float | None = None
    """The deadline that travels instead of the caller's: a router passes on less time
    than it waits itself. None: the caller's cancel scope, as for any send."""
    overtakes: bool = False
    """A response (plain or error): written ahead of the queue, even while our own
    synchronous message to that peer waits for its ACK (docs/node.md, "Ordering")."""


IDENTITY_BATCH: Final = 256
"""New messages' identities are drawn from ``os.urandom`` this many at a time."""

_identities: list[bytes] = []
"""Identities drawn and not yet given to a message (popped from the end)."""


def _draw_identities() -> bytes:
    """Refill the pool with one ``os.urandom`` call and return one identity of it.

    A ``getrandom`` system call per ``Message`` was a measurable part of creating one; one
    call per ``IDENTITY_BATCH`` keeps the identities exactly as random (the same source,
    cut into 16-byte pieces) for a 64th of the calls. Each identity leaves the pool once
    (``list.pop`` is atomic, so threads never share one).
    """
    batch = os.urandom(IDENTITY_SIZE * IDENTITY_BATCH)
    _identities.extend(
        [batch[i : i + IDENTITY_SIZE] for i in range(IDENTITY_SIZE, len(batch), IDENTITY_SIZE)]
    )
    return batch[:IDENTITY_SIZE]


def _forget_identities() -> None:
    """In a forked child: the pool is the parent's too, so the child must draw its own."""
    _identities.clear()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to copy the pool
    os.register_at_fork(after_in_child=_forget_identities)


def _as_bytes(name: str, value: Buffer) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"Message.{name} must be bytes-like, got {type(value).__name__}")


@final
class Message:
    """One chirp message: ``data``, an optional ``header`` and where it goes or came from.

    New messages get a random 16-byte ``identity``. ``serial``, ``remote_identity``,
    ``ack_requested`` and ``deadline`` are set on received messages (and ``serial`` on
    sent ones once written). ``address`` is an IP literal and ``port`` the peer's
    *listening* port. ``destination`` is the final ``(address, port)`` a producer names
    for a router (it travels in trio_chirp's header map; see docs/requests.md).

    A received message is a context manager: ``with msg:`` releases it with ACK on a
    normal exit and without ACK on an exception or cancellation, so the sender never sees
    success for work that failed.
    """

    __slots__ = (
        "__weakref__",
        "_cost",
        "_data",
        "_header",
        "_in_use",
        "_meta",
        "_release_hook",
        "ack_requested",
        "address",
        "deadline",
        "destination",
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
        destination: tuple[str, int] | None = None,
    ) -> None:
        # bytes as they are without a call (the common case: this runs for every new message)
        self._data = data if type(data) is bytes else _as_bytes("data", data)
        self._header = header if type(header) is bytes else _as_bytes("header", header)
        self.address: str = "" if address is None else address
        """The peer's IP literal (received: the sender's; to send: the receiver's); "" if not set."""
        self.port: int = 0 if port is None else port
        """The peer's listening port (its announced port on a received message); 0 if not set."""
        try:
            identity = _identities.pop()
        except IndexError:
            identity = _draw_identities()
        self.identity: bytes = identity
        self.serial: int | None = None
        self.remote_identity: bytes | None = None
        self.ack_requested = False
        self.deadline: float | None = None
        """On a received message: when the sender's deadline passes, in ``trio.current_time()``."""
        self.destination = destination
        self._meta: ChirpMeta | None = None
        self._cost = 0
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
        deadline: float | None = None,
        meta: ChirpMeta | None = None,
        cost: int = 0,
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
        msg.deadline = deadline
        msg.destination = None if meta is None else meta.destination
        msg._meta = meta
        msg._cost = cost  # bytes it counts for in the node's budget until released
        msg._release_hook = release_hook
        msg._in_use = False
        return msg

    @property
    def data(self) -> bytes:
        """The payload (``bytes``); a bytes-like value assigned is copied at that moment."""
        return self._data

    @data.setter
    def data(self, value: Buffer) -> None:
        self._data = _as_bytes("data", value)

    @property
    def header(self) -> bytes:
        """The header bytes as the application sees them (our map, if any, already removed)."""
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

    def __enter__(self) -> Message:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release with ACK on a normal exit, without ACK on an exception or cancellation.

        After a successful ``reply()`` the message is already released (with ACK); an
        exception later in the block cannot take that ACK back.
        """
        self.release(ack=exc_type is None)

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


received_message = Message._received
"""A message built from a received frame (for the connection's reader)."""

meta_of: Callable[[Message], ChirpMeta | None] = operator.attrgetter("_meta")
"""Our header map's fields on a received message (None when its frame carried no map).

An ``attrgetter``: read once per received message, so no Python frame."""


cost_of: Callable[[Message], int] = operator.attrgetter("_cost")
"""The bytes a received message counts for in the node's budget until it is released."""


payload_of: Callable[[Message], tuple[bytes, bytes]] = operator.attrgetter("_header", "_data")
"""``(message.header, message.data)`` without the properties' two Python frames (read on every send)."""


in_use: Callable[[Message], bool] = operator.attrgetter("_in_use")
"""Whether a ``send()`` of ``message`` is running (sending it again is ``MessageInUseError``).

An ``attrgetter``: read on every send, so no Python frame."""


def set_in_use(message: Message, value: bool) -> None:
    message._in_use = value
