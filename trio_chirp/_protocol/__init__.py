"""Layer 1: the libchirp 1.2.1 wire format, sans-IO (no trio, no sockets).

Everything here is pure functions over bytes and one incremental parser, so it can be
tested byte for byte against captures of the real libchirp and fuzzed without I/O.
"""

from .announce import Announcement, decode_announcement, encode_announcement
from .codec import (
    check_frame_lengths,
    decode_frame,
    decode_handshake,
    encode_ack,
    encode_frame,
    encode_frame_head,
    encode_handshake,
    encode_noop,
    pack_frame_head,
)
from .constants import (
    FRAME_HEAD_SIZE,
    HANDSHAKE_SIZE,
    IDENTITY_SIZE,
    TYPE_ACK,
    TYPE_NOOP,
    TYPE_REQ_ACK,
    ZERO_IDENTITY,
)
from .events import NEED_DATA, DataFrame, FrameHead, Handshake, NeedData, OversizedFrame
from .parser import Event, FrameParser

__all__ = [
    "FRAME_HEAD_SIZE",
    "HANDSHAKE_SIZE",
    "IDENTITY_SIZE",
    "NEED_DATA",
    "TYPE_ACK",
    "TYPE_NOOP",
    "TYPE_REQ_ACK",
    "ZERO_IDENTITY",
    "Announcement",
    "DataFrame",
    "Event",
    "FrameHead",
    "FrameParser",
    "Handshake",
    "NeedData",
    "OversizedFrame",
    "check_frame_lengths",
    "decode_announcement",
    "decode_frame",
    "decode_handshake",
    "encode_ack",
    "encode_announcement",
    "encode_frame",
    "encode_frame_head",
    "encode_handshake",
    "encode_noop",
    "pack_frame_head",
]
