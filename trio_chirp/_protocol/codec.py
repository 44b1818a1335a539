"""Encoding of handshakes and frames, and decoding of complete byte strings.

Encoders validate every field, so a bad value is a ``ValueError`` in the caller's
task, before anything is queued for a connection.
"""

from __future__ import annotations

from typing import Final

from .._errors import ProtocolError
from .constants import (
    FRAME_HEAD_SIZE,
    FRAME_HEAD_STRUCT,
    HANDSHAKE_SIZE,
    HANDSHAKE_STRUCT,
    IDENTITY_SIZE,
    MAX_DATA_LEN,
    MAX_HEADER_LEN,
    MAX_PORT,
    MAX_SERIAL,
    TYPE_ACK,
    TYPE_NOOP,
    ZERO_IDENTITY,
)
from .events import DataFrame, FrameHead, Handshake

__all__ = [
    "check_frame_lengths",
    "decode_frame",
    "decode_handshake",
    "encode_ack",
    "encode_frame",
    "encode_frame_head",
    "encode_handshake",
    "encode_noop",
]


def _check_identity(identity: bytes) -> None:
    if not isinstance(identity, bytes | bytearray):
        raise TypeError(f"identity must be bytes, got {type(identity).__name__}")
    if len(identity) != IDENTITY_SIZE:
        raise ValueError(f"identity must be {IDENTITY_SIZE} bytes, got {len(identity)}")


def encode_handshake(port: int, identity: bytes) -> bytes:
    """The 18 bytes a node sends first, in one write, on every connection."""
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"port must be in 0..{MAX_PORT}, got {port}")
    _check_identity(identity)
    return HANDSHAKE_STRUCT.pack(port, identity)


def check_frame_lengths(header_len: int, data_len: int) -> None:
    """Refuse payloads the 16/32-bit length fields cannot describe."""
    if header_len < 0 or data_len < 0:
        raise ValueError(f"lengths must be >= 0, got header_len={header_len}, data_len={data_len}")
    if header_len > MAX_HEADER_LEN:
        raise ValueError(f"header is {header_len} bytes; the wire format allows at most {MAX_HEADER_LEN}")
    if data_len > MAX_DATA_LEN:
        raise ValueError(f"data is {data_len} bytes; the wire format allows at most {MAX_DATA_LEN}")


def encode_frame_head(identity: bytes, serial: int, type_: int, header_len: int, data_len: int) -> bytes:
    """The 27-byte fixed part; lets a writer send a large payload without concatenating it."""
    _check_identity(identity)
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial must be in 0..{MAX_SERIAL}, got {serial}")
    if not 0 <= type_ <= 0xFF:
        raise ValueError(f"type must be in 0..255, got {type_}")
    check_frame_lengths(header_len, data_len)
    return FRAME_HEAD_STRUCT.pack(identity, serial, data_len, header_len, type_)


pack_frame_head: Final = FRAME_HEAD_STRUCT.pack
"""``pack_frame_head(identity, serial, data_len, header_len, type_)``: the fixed part without
the checks of ``encode_frame_head``, for the node's writer, whose values are valid by
construction (lengths checked when the message was submitted, serials masked, identities
16 bytes). Note the wire order of the arguments: data length before header length."""


def encode_frame(identity: bytes, serial: int, type_: int, header: bytes = b"", data: bytes = b"") -> bytes:
    """A whole frame: fixed part, then header bytes, then data bytes."""
    head = encode_frame_head(identity, serial, type_, len(header), len(data))
    return b"".join((head, header, data))


def encode_ack(identity: bytes, serial: int) -> bytes:
    """The ACK for the message ``identity``; ``serial`` is the acknowledger's own counter."""
    return encode_frame_head(identity, serial, TYPE_ACK, 0, 0)


def encode_noop(serial: int) -> bytes:
    """A keep-alive probe as libchirp sends it: zero identity, no payload."""
    return encode_frame_head(ZERO_IDENTITY, serial, TYPE_NOOP, 0, 0)


def decode_handshake(buf: bytes) -> Handshake:
    """Decode exactly one handshake."""
    if len(buf) != HANDSHAKE_SIZE:
        raise ProtocolError(f"a handshake is {HANDSHAKE_SIZE} bytes, got {len(buf)}")
    port, identity = HANDSHAKE_STRUCT.unpack(buf)
    return Handshake(port, identity)


def decode_frame(buf: bytes) -> DataFrame:
    """Decode exactly one complete frame (any type) without size limits; for tests and tools."""
    if len(buf) < FRAME_HEAD_SIZE:
        raise ProtocolError(f"a frame needs at least {FRAME_HEAD_SIZE} bytes, got {len(buf)}")
    head = FrameHead(*FRAME_HEAD_STRUCT.unpack_from(buf))
    end = FRAME_HEAD_SIZE + head.header_len + head.data_len
    if len(buf) != end:
        raise ProtocolError(f"frame announces {end} bytes in all, buffer holds {len(buf)}")
    header = bytes(buf[FRAME_HEAD_SIZE : FRAME_HEAD_SIZE + head.header_len])
    return DataFrame(head, header, bytes(buf[FRAME_HEAD_SIZE + head.header_len :]))
