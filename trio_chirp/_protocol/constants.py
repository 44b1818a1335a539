"""Numbers fixed by the libchirp 1.2.1 wire format (docs/protocol.md, sections 2.4 and 3)."""

from __future__ import annotations

import struct
from typing import Final

HANDSHAKE_SIZE: Final = 18
"""``port`` (uint16) + node ``identity`` (16 bytes)."""

FRAME_HEAD_SIZE: Final = 27
"""The fixed part of every frame, before header and data bytes."""

IDENTITY_SIZE: Final = 16

HANDSHAKE_STRUCT: Final = struct.Struct(">H16s")
FRAME_HEAD_STRUCT: Final = struct.Struct(">16sIIHB")
"""identity, serial, data_len, header_len, type — data_len comes *before* header_len."""

TYPE_REQ_ACK: Final = 0x01
TYPE_ACK: Final = 0x02
TYPE_NOOP: Final = 0x04

MAX_HEADER_LEN: Final = 0xFFFF
MAX_DATA_LEN: Final = 0xFFFFFFFF
MAX_SERIAL: Final = 0xFFFFFFFF
MAX_PORT: Final = 0xFFFF

ZERO_IDENTITY: Final = bytes(IDENTITY_SIZE)
