"""Telling a TLS ClientHello from a plaintext chirp handshake by the first bytes (sans-IO).

libchirp's plaintext rule looks at addresses, and the two ends can see different ones: a
libchirp peer dialling our 127.0.0.2 encrypts (its destination is not 127.0.0.1), but its
source is 127.0.0.1, so by the rule we expect plaintext (docs/protocol.md, section 2.2, sharp edge 12).
An accepted connection's first bytes settle it.

A ClientHello starts with a TLS record header and a handshake header::

    16 03 0v LL LL 01 HH HH HH 03 0v ...
    |  record   |  | hello |  | client version

A plaintext chirp handshake is ``port (u16 BE) + identity (16 bytes)``, so one from a peer
whose port is 5635 (0x1603) starts with the same two bytes; the next nine are random
identity bytes, which match the pattern above with a probability of about 1e-9. Eleven
bytes decide; most plaintext peers are told apart by the first one.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HELLO_PORT", "SNIFF_BYTES", "client_hello_verdict"]

SNIFF_BYTES: Final = 11
"""Bytes that decide in every case (fewer when an early byte already rules TLS out)."""

HELLO_PORT: Final = 0x1603
"""The port a ClientHello's first two bytes announce when read as a chirp handshake."""

_MAX_RECORD: Final = 1 << 14
_MIN_HELLO_BODY: Final = 41  # version, random, session id, one suite, one compression method


def client_hello_verdict(data: bytes | bytearray | memoryview) -> bool | None:
    """True if ``data`` starts like a TLS ClientHello, False if it cannot be one, None: too short to tell."""
    n = len(data)
    if n >= 1 and data[0] != 0x16:  # record type: handshake
        return False
    if n >= 2 and data[1] != 0x03:  # record version major
        return False
    if n >= 3 and data[2] > 0x04:  # record version minor (SSL 3.0 .. TLS 1.3)
        return False
    if n >= 5:
        record_len = int.from_bytes(data[3:5], "big")
        if not 4 + _MIN_HELLO_BODY <= record_len <= _MAX_RECORD:
            return False
    if n >= 6 and data[5] != 0x01:  # handshake type: client_hello
        return False
    if n >= 9:
        hello_len = int.from_bytes(data[6:9], "big")
        if hello_len < _MIN_HELLO_BODY or hello_len + 4 < int.from_bytes(data[3:5], "big"):
            return False
    if n >= 10 and data[9] != 0x03:  # client_version major
        return False
    if n >= 11 and data[10] > 0x04:
        return False
    return True if n >= SNIFF_BYTES else None
