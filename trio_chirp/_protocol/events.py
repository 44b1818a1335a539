"""What the parser hands to a connection: plain records, no behaviour beyond type tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from .constants import TYPE_ACK, TYPE_NOOP, TYPE_REQ_ACK

__all__ = ["NEED_DATA", "DataFrame", "FrameHead", "Handshake", "NeedData", "OversizedFrame"]


@final
class NeedData:
    """Sentinel type: the parser has consumed everything it was given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@final
@dataclass(frozen=True, slots=True)
class Handshake:
    """The peer's announced (listening) port and its 16-byte node identity."""

    port: int
    identity: bytes


@final
@dataclass(frozen=True, slots=True)
class FrameHead:
    """The validated 27-byte fixed part of a frame, in wire order.

    The kind is decided by bits, as libchirp does: NOOP beats ACK beats message, and
    unknown bits are ignored (type 0x08 is a plain message).
    """

    identity: bytes
    serial: int
    data_len: int
    header_len: int
    type: int

    @property
    def is_noop(self) -> bool:
        return bool(self.type & TYPE_NOOP)

    @property
    def is_ack(self) -> bool:
        return not self.type & TYPE_NOOP and bool(self.type & TYPE_ACK)

    @property
    def is_message(self) -> bool:
        return not self.type & (TYPE_NOOP | TYPE_ACK)

    @property
    def requests_ack(self) -> bool:
        """A data message whose sender waits for our ACK."""
        return self.is_message and bool(self.type & TYPE_REQ_ACK)


@final
@dataclass(frozen=True, slots=True)
class DataFrame:
    """A complete data message: its fixed part and the payload split into header and data."""

    head: FrameHead
    header: bytes
    data: bytes


@final
@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A data frame above ``max_msg_size`` that the parser skips instead of failing.

    Only when the caller allowed it (``FrameParser.skip_oversized_up_to``): its payload is
    consumed and dropped as it arrives, never buffered, and the stream goes on.
    """

    head: FrameHead
