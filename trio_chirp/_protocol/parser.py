"""The incremental receive-side state machine (sans-IO, like h11's connection object).

Feed bytes with :meth:`FrameParser.receive_data`, then call :meth:`FrameParser.next_event`
until it returns ``NEED_DATA``. Events, in stream order:

* one :class:`Handshake` (unless the parser was made with ``expect_handshake=False``);
* for every frame a :class:`FrameHead`, produced as soon as its 27 bytes are complete and
  validated, before any payload is consumed;
* for a data frame (neither ACK nor NOOP), then a :class:`DataFrame` with the payload;
* for a data frame above ``max_msg_size`` but within ``skip_oversized_up_to`` (0 unless
  the caller sets it), an :class:`OversizedFrame` instead: its payload is skipped.

The pause between a data frame's head and its payload is what makes receive slots work:
the caller takes a slot *before* asking for the next event, and while it waits, the parser
consumes nothing more and the caller reads nothing more from the socket, so TCP pushes back.

Payload bytes are copied once (a slice out of the received chunk, or one join of the
pieces of a frame that spans chunks). A frame's announced size is checked against
``max_msg_size`` before anything is buffered for it, and pieces are kept only as they
arrive, so a hostile length cannot make the parser allocate.
"""

from __future__ import annotations

from typing import Final

from .._errors import MessageTooLargeError, ProtocolError
from .constants import (
    FRAME_HEAD_SIZE,
    FRAME_HEAD_STRUCT,
    HANDSHAKE_SIZE,
    HANDSHAKE_STRUCT,
    TYPE_ACK,
    TYPE_NOOP,
    TYPE_REQ_ACK,
)
from .events import (
    NEED_DATA,
    DataFrame,
    FrameHead,
    Handshake,
    NeedData,
    OversizedFrame,
    make_data_frame,
    make_frame_head,
)

__all__ = ["Event", "FrameParser"]

Event = Handshake | FrameHead | DataFrame | OversizedFrame | NeedData

_HANDSHAKE: Final = 0
_HEAD: Final = 1
_PAUSED: Final = 2  # a data frame's head was returned; its payload is next
_HEADER: Final = 3
_DATA: Final = 4
_BROKEN: Final = 5
_SKIP: Final = 6  # an oversized frame's payload is being dropped

_CONTROL_BITS: Final = TYPE_ACK | TYPE_NOOP
_EMPTY: Final = b""
_unpack_head_from: Final = FRAME_HEAD_STRUCT.unpack_from
_unpack_head: Final = FRAME_HEAD_STRUCT.unpack


class FrameParser:
    """Turns a chirp byte stream into events; raises ``ProtocolError`` on a violation.

    After an error the parser is broken and every later call raises again: the
    connection must be closed.
    """

    __slots__ = (
        "_chunk",
        "_error",
        "_head",
        "_header",
        "_max_msg_size",
        "_need",
        "_parts",
        "_pos",
        "_skip_left",
        "_state",
        "skip_oversized_up_to",
    )

    def __init__(self, max_msg_size: int, *, expect_handshake: bool = True) -> None:
        if max_msg_size < 0:
            raise ValueError(f"max_msg_size must be >= 0, got {max_msg_size}")
        self._max_msg_size = max_msg_size
        self._state = _HANDSHAKE if expect_handshake else _HEAD
        self._chunk: bytes = _EMPTY
        self._pos = 0
        # Pieces of a unit (handshake, fixed part, header or data) that spans chunks,
        # and how many bytes of that unit are still missing.
        self._parts: list[bytes | memoryview] = []
        self._need = 0
        self._head: FrameHead | None = None
        self._header = _EMPTY
        self._error: ProtocolError | None = None
        self._skip_left = 0
        self.skip_oversized_up_to = 0
        """A data frame above ``max_msg_size`` but at most this large is skipped (an
        ``OversizedFrame`` event) instead of breaking the parser; 0: never. The caller sets
        it for a peer that announced it understands being refused this way."""

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (bounded by one read)."""
        return len(self._chunk) - self._pos + sum(len(p) for p in self._parts) + len(self._header)

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has arrived and the rest is awaited (a stall detector's cue)."""
        return self._state in (_HEADER, _DATA, _SKIP) or bool(self._parts)

    @property
    def paused(self) -> bool:
        """True between a data frame's head and the next call to :meth:`next_event`."""
        return self._state == _PAUSED

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Hand over the next bytes of the stream; they are not copied if they are ``bytes``."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._pos < len(self._chunk):
            # Rare: the caller fed again without draining. Keep the order, pay one copy.
            data = self._chunk[self._pos :] + data
        self._chunk = data
        self._pos = 0

    def next_event(self) -> Event:
        """The next event, or ``NEED_DATA`` when every received byte is consumed."""
        if self._error is not None:
            raise self._error
        state = self._state
        if state == _HEAD:
            chunk, pos = self._chunk, self._pos
            if not self._parts and len(chunk) - pos >= FRAME_HEAD_SIZE:
                # Fast path: the whole fixed part is in this chunk.
                fields = _unpack_head_from(chunk, pos)
                self._pos = pos + FRAME_HEAD_SIZE
            else:
                raw = self._take(FRAME_HEAD_SIZE)
                if raw is None:
                    return NEED_DATA
                fields = _unpack_head(raw)
            return self._on_head(make_frame_head(*fields))
        if state == _PAUSED:
            head = self._head
            assert head is not None
            chunk, pos = self._chunk, self._pos
            mid = pos + head.header_len
            end = mid + head.data_len
            if end <= len(chunk):
                # Fast path: the whole payload is in this chunk (no pieces are pending
                # while paused: the fixed part was complete). One slice each.
                self._pos = end
                self._state = _HEAD
                self._head = None
                return make_data_frame(head, chunk[pos:mid], chunk[mid:end])
            self._state = state = _HEADER
        if state == _HEADER:
            head = self._head
            assert head is not None
            if head.header_len:
                header = self._take(head.header_len)
                if header is None:
                    return NEED_DATA
                self._header = header
            self._state = state = _DATA
        if state == _DATA:
            head = self._head
            assert head is not None
            data = self._take(head.data_len) if head.data_len else _EMPTY
            if data is None:
                return NEED_DATA
            self._state = _HEAD
            self._head = None
            header, self._header = self._header, _EMPTY
            return make_data_frame(head, header, data)
        if state == _SKIP:
            chunk, pos = self._chunk, self._pos
            dropped = min(len(chunk) - pos, self._skip_left)
            self._pos = pos + dropped
            self._skip_left -= dropped
            if self._skip_left:
                self._chunk, self._pos = _EMPTY, 0
                return NEED_DATA
            self._state = _HEAD
            return self.next_event()
        if state == _HANDSHAKE:
            raw = self._take(HANDSHAKE_SIZE)
            if raw is None:
                return NEED_DATA
            self._state = _HEAD
            port, identity = HANDSHAKE_STRUCT.unpack(raw)
            return Handshake(port, identity)
        raise AssertionError(f"parser in unknown state {state}")  # pragma: no cover

    def _on_head(self, head: FrameHead) -> FrameHead | OversizedFrame:
        """Validate a fixed part before any of its payload is consumed (docs/protocol.md, section 3.3)."""
        size = head.header_len + head.data_len  # Python ints: no 32-bit wrap-around
        if not head.type & _CONTROL_BITS:
            if size <= self._max_msg_size:
                self._state = _PAUSED
                self._head = head
                return head
            if size <= self.skip_oversized_up_to:
                self._state = _SKIP
                self._skip_left = size
                return OversizedFrame(head)
        error = self._violation(head, size)
        if error is None:
            return head  # a valid ACK or NOOP: no payload, nothing to pause for
        # Broken for good: every later call raises the same error.
        self._state = _BROKEN
        self._error = error
        raise error

    def _violation(self, head: FrameHead, size: int) -> ProtocolError | None:
        """What is wrong with an oversize frame, an ACK or a NOOP; None if nothing."""
        if size > self._max_msg_size:
            return MessageTooLargeError(
                f"frame announces header_len={head.header_len} + data_len={head.data_len}"
                f" = {size} bytes, above max_msg_size={self._max_msg_size}"
            )
        type_ = head.type
        kind = "NOOP" if type_ & TYPE_NOOP else "ACK"
        if size:
            return ProtocolError(
                f"{kind} frame (type=0x{type_:02x}) carries a payload:"
                f" header_len={head.header_len}, data_len={head.data_len}"
            )
        if type_ & TYPE_REQ_ACK:
            return ProtocolError(f"{kind} frame (type=0x{type_:02x}) also sets REQ_ACK")
        return None

    def _take(self, n: int) -> bytes | None:
        """Exactly ``n`` more bytes of the stream, or None after stashing what there is."""
        chunk, pos = self._chunk, self._pos
        avail = len(chunk) - pos
        parts = self._parts
        if not parts:
            if avail >= n:
                self._pos = pos + n
                return chunk[pos : pos + n]
            self._need = n
        need = self._need
        if avail < need:
            if avail:
                parts.append(memoryview(chunk)[pos:])
                self._need = need - avail
            self._chunk, self._pos = _EMPTY, 0
            return None
        parts.append(memoryview(chunk)[pos : pos + need])
        self._pos = pos + need
        result = _EMPTY.join(parts)
        parts.clear()
        self._need = 0
        return result
