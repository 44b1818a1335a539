"""The ClientHello-or-plaintext verdict (``_sniff.client_hello_verdict``) at its exact edges.

Against real ClientHellos (made by Python's ``ssl`` for each TLS version it offers) and
near-misses one field off each edge: record versions, the record's and the hello's minimum
and maximum lengths, the types, the client version, and how many bytes it looks at before
deciding (``SNIFF_BYTES``, fewer when an early byte already rules TLS out).
"""

from __future__ import annotations

import ssl

import pytest

from trio_chirp._sniff import HELLO_PORT, SNIFF_BYTES, client_hello_verdict

MIN_BODY = 41  # version (2), random (32), session id length (1), one suite (2+2), one method (1+1)
MAX_RECORD = 1 << 14


def real_client_hello(version: ssl.TLSVersion) -> bytes:
    """The first flight of a client offering only ``version``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def hello(
    *,
    record_type: int = 0x16,
    major: int = 3,
    minor: int = 1,
    record_len: int = 200,
    handshake_type: int = 1,
    hello_len: int = 196,
    client_major: int = 3,
    client_minor: int = 3,
) -> bytes:
    """The eleven bytes the verdict reads, each field settable."""
    return (
        bytes([record_type, major, minor])
        + record_len.to_bytes(2, "big")
        + bytes([handshake_type])
        + hello_len.to_bytes(3, "big")
        + bytes([client_major, client_minor])
    )


def test_the_constants() -> None:
    assert SNIFF_BYTES == 11
    assert HELLO_PORT == 5635 == int.from_bytes(b"\x16\x03", "big")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_client_hellos_are_tls_from_the_eleventh_byte_on(version: ssl.TLSVersion) -> None:
    data = real_client_hello(version)
    assert len(data) > SNIFF_BYTES
    for n in range(SNIFF_BYTES):
        assert client_hello_verdict(data[:n]) is None, n  # a ClientHello's prefix: can't tell yet
    for n in (SNIFF_BYTES, SNIFF_BYTES + 1, len(data)):
        assert client_hello_verdict(data[:n]) is True, n
    assert client_hello_verdict(bytearray(data)) is True
    assert client_hello_verdict(memoryview(data)) is True


def test_the_built_hello_is_a_hello_and_only_eleven_bytes_count() -> None:
    base = hello()
    assert len(base) == SNIFF_BYTES
    assert client_hello_verdict(base) is True
    assert client_hello_verdict(base[:-1]) is None
    assert client_hello_verdict(base + b"\x00" * 50) is True  # what follows is not looked at
    assert client_hello_verdict(base + b"\xff") is True


@pytest.mark.parametrize(
    ("fields", "decided_at"),
    [
        ({"record_type": 0x17}, 1),
        ({"record_type": 0x15}, 1),
        ({"major": 2}, 2),
        ({"major": 4}, 2),
        ({"minor": 5}, 3),
        ({"minor": 0xFF}, 3),
        ({"record_len": 4 + MIN_BODY - 1, "hello_len": MIN_BODY}, 5),
        ({"record_len": MAX_RECORD + 1}, 5),
        ({"record_len": 0}, 5),
        ({"handshake_type": 2}, 6),
        ({"handshake_type": 0}, 6),
        ({"hello_len": MIN_BODY - 1, "record_len": 4 + MIN_BODY}, 9),
        ({"hello_len": 195}, 9),  # the hello is shorter than its record says
        ({"record_len": 0x150, "hello_len": 300}, 9),  # the same, the record's length in both bytes
        ({"client_major": 2}, 10),
        ({"client_major": 4}, 10),
        ({"client_minor": 5}, 11),
    ],
)
def test_a_near_miss_is_plaintext_from_the_byte_that_rules_it_out(
    fields: dict[str, int], decided_at: int
) -> None:
    data = hello(**fields)
    for n in range(decided_at):
        assert client_hello_verdict(data[:n]) is None, n
    for n in range(decided_at, SNIFF_BYTES + 1):
        assert client_hello_verdict(data[:n]) is False, n


@pytest.mark.parametrize(
    "fields",
    [
        {"minor": 0},  # SSL 3.0
        {"minor": 4},
        {"record_len": 4 + MIN_BODY, "hello_len": MIN_BODY},  # the smallest hello
        {"record_len": MAX_RECORD, "hello_len": MAX_RECORD - 4},  # the largest record
        {"record_len": 200, "hello_len": 196},  # hello and record end together
        {"record_len": 200, "hello_len": 5000},  # a hello that spans records
        {"record_len": 200, "hello_len": 0x10000},  # the hello's length in all three bytes
        {"client_minor": 0},
        {"client_minor": 4},
    ],
)
def test_the_edges_that_still_are_a_client_hello(fields: dict[str, int]) -> None:
    data = hello(**fields)
    assert client_hello_verdict(data) is True
    assert client_hello_verdict(data[:-1]) is None


def test_a_plaintext_handshake_is_told_apart_by_its_first_byte_mostly() -> None:
    identity = bytes(range(16))
    assert client_hello_verdict((2998).to_bytes(2, "big") + identity) is False
    assert client_hello_verdict((2998).to_bytes(2, "big")[:1]) is False  # one byte decides
    # A peer on port 5635 starts like a ClientHello; its identity bytes tell it apart.
    assert client_hello_verdict(HELLO_PORT.to_bytes(2, "big")) is None
    assert client_hello_verdict(HELLO_PORT.to_bytes(2, "big") + identity) is False
    assert client_hello_verdict(b"") is None
