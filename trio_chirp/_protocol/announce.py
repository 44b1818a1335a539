"""The trio_chirp announcement: a NOOP frame that tells a peer this end is trio_chirp, and what it takes.

libchirp's handshake carries only a port and an identity, and its frames no version, so
nothing on the wire says "trio_chirp" (our header map is no proof: it travels only when
there is something to carry, and a libchirp application that relays headers passes it
on). Each trio_chirp node therefore writes one announcement on every new connection,
right after its handshake, before any other frame.

It has to be a frame libchirp tolerates and ignores (docs/protocol.md, section 3.3): a
NOOP without payload, whose identity libchirp never checks (its own NOOPs have an
all-zero identity) and whose serial it never checks. The 16 identity bytes carry:

=======  =====  ====================================================================
offset   size   field
=======  =====  ====================================================================
0        6      magic ``b"trioCH"``
6        1      version of this announcement (1)
7        1      flags (none defined in version 1; receivers ignore unknown bits)
8        2      window: receive slots per connection this end grants (big-endian)
10       4      max_msg_size: the largest header + data this end accepts
14       2      reserved, zero
=======  =====  ====================================================================

The serial is 0. A receiver that finds the magic learns the rest for that connection
only; a NOOP with any other identity is an ordinary keep-alive. Later versions may add
fields in the reserved bytes and flags; a receiver reads the fields it knows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, final

from .codec import pack_frame_head
from .constants import TYPE_NOOP

__all__ = ["ANNOUNCE_VERSION", "Announcement", "decode_announcement", "encode_announcement"]

MAGIC: Final = b"trioCH"
ANNOUNCE_VERSION: Final = 1
_LAYOUT: Final = struct.Struct(">6sBBHIH")


@final
@dataclass(frozen=True, slots=True)
class Announcement:
    """What a trio_chirp peer said about itself on one connection."""

    version: int
    flags: int
    window: int
    """Receive slots per connection it grants (1 for a synchronous node)."""
    max_msg_size: int
    """The largest header + data it accepts; a larger frame closes the connection."""


def encode_announcement(window: int, max_msg_size: int, *, flags: int = 0) -> bytes:
    """The 27-byte NOOP frame announcing this node (``window`` is clamped to 0..65535)."""
    identity = _LAYOUT.pack(MAGIC, ANNOUNCE_VERSION, flags, min(max(window, 0), 0xFFFF), max_msg_size, 0)
    return pack_frame_head(identity, 0, 0, 0, TYPE_NOOP)


def decode_announcement(identity: bytes) -> Announcement | None:
    """The announcement in a NOOP's identity, or None for an ordinary NOOP (libchirp's are all zero)."""
    if len(identity) != _LAYOUT.size or not identity.startswith(MAGIC):
        return None
    _, version, flags, window, max_msg_size, _reserved = _LAYOUT.unpack(identity)
    if version < 1:
        return None
    return Announcement(version, flags, window, max_msg_size)
