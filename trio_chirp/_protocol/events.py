"""What the parser hands to a connection: plain records, no behaviour beyond type tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

from .constants import TYPE_ACK, TYPE_NOOP, TYPE_REQ_ACK

__all__ = [
    "NEED_DATA",
    "DataFrame",
    "FrameHead",
    "Handshake",
    "NeedData",
    "OversizedFrame",
    "make_data_frame",
    "make_frame_head",
]


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
        type_ = self.type  # is_message written out: read for every received message
        return not type_ & (TYPE_NOOP | TYPE_ACK) and bool(type_ & TYPE_REQ_ACK)


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


# --- fast constructors for the parser -------------------------------------------------------------
# A frozen dataclass's generated __init__ sets each field through object.__setattr__ looked up
# anew per field: about 9k instructions for a FrameHead, and the parser builds a FrameHead and
# a DataFrame per received message. Writing the slots through their member descriptors makes the
# same objects (same class, frozen, same equality and repr) in about 60 % of that.

_new = object.__new__


def _setter(cls: type, field: str) -> Callable[[object, object], None]:
    """The slot's own writer (its member descriptor's ``__set__``), past the frozen ``__setattr__``."""
    setter: Callable[[object, object], None] = cls.__dict__[field].__set__
    return setter


_head_identity = _setter(FrameHead, "identity")
_head_serial = _setter(FrameHead, "serial")
_head_data_len = _setter(FrameHead, "data_len")
_head_header_len = _setter(FrameHead, "header_len")
_head_type = _setter(FrameHead, "type")
_frame_head = _setter(DataFrame, "head")
_frame_header = _setter(DataFrame, "header")
_frame_data = _setter(DataFrame, "data")


def make_frame_head(identity: bytes, serial: int, data_len: int, header_len: int, type_: int) -> FrameHead:
    """``FrameHead(identity, serial, data_len, header_len, type_)``, built faster (see above)."""
    head: FrameHead = _new(FrameHead)
    _head_identity(head, identity)
    _head_serial(head, serial)
    _head_data_len(head, data_len)
    _head_header_len(head, header_len)
    _head_type(head, type_)
    return head


def make_data_frame(head: FrameHead, header: bytes, data: bytes) -> DataFrame:
    """``DataFrame(head, header, data)``, built faster (see above)."""
    frame: DataFrame = _new(DataFrame)
    _frame_head(frame, head)
    _frame_header(frame, header)
    _frame_data(frame, data)
    return frame
