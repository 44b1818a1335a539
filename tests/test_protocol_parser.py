"""The codec and the incremental FrameParser: unit tests and Hypothesis properties.

Properties: encode/decode round trips for arbitrary field values; the parser's verdict on
any fixed part equals the rules of PROTOCOL.md 3.3 (computed independently below); any
chunking of a valid stream gives the same events; garbage never hangs the parser and
raises only ProtocolError/MessageTooLargeError; an announced size is never allocated up
front (tracemalloc).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import struct
import tracemalloc
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_chirp import MessageTooLargeError, ProtocolError
from trio_chirp._protocol import (
    FRAME_HEAD_SIZE,
    HANDSHAKE_SIZE,
    NEED_DATA,
    TYPE_ACK,
    TYPE_NOOP,
    TYPE_REQ_ACK,
    ZERO_IDENTITY,
    DataFrame,
    Event,
    FrameHead,
    FrameParser,
    Handshake,
    check_frame_lengths,
    decode_frame,
    decode_handshake,
    encode_ack,
    encode_frame,
    encode_frame_head,
    encode_handshake,
    encode_noop,
)

MiB = 1024 * 1024
MAX_MSG_SIZE = 100 * MiB
ID_A = bytes(range(16))
ID_B = bytes(range(0xA0, 0xB0))

identities = st.binary(min_size=16, max_size=16)
serials = st.integers(0, 2**32 - 1)
ports = st.integers(0, 0xFFFF)
types = st.integers(0, 0xFF)
payloads = st.binary(max_size=300) | st.binary(min_size=1000, max_size=5000)


# --- helpers -----------------------------------------------------------------------------


def verdict(type_: int, header_len: int, data_len: int, max_msg_size: int) -> type[ProtocolError] | None:
    """PROTOCOL.md 3.3, written out independently of the parser."""
    if header_len + data_len > max_msg_size:
        return MessageTooLargeError
    if type_ & (TYPE_ACK | TYPE_NOOP) and (header_len or data_len or type_ & TYPE_REQ_ACK):
        return ProtocolError
    return None


def consumed_by(event: Event) -> int:
    """Stream bytes an event stands for (a DataFrame: its payload; the head was counted)."""
    if isinstance(event, Handshake):
        return HANDSHAKE_SIZE
    if isinstance(event, FrameHead):
        return FRAME_HEAD_SIZE
    assert isinstance(event, DataFrame)
    return len(event.header) + len(event.data)


def feed(parser: FrameParser, chunks: Iterable[bytes]) -> list[Event]:
    """Feed chunk by chunk, draining after each, and check the byte accounting throughout:
    after every event, bytes fed == bytes the events stand for + ``buffered``. Right after a
    data frame's head this proves that no payload byte was consumed before the head."""
    events: list[Event] = []
    fed = consumed = 0
    for chunk in chunks:
        parser.receive_data(chunk)
        fed += len(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
            consumed += consumed_by(event)
            assert fed == consumed + parser.buffered
            assert parser.paused == (isinstance(event, FrameHead) and event.is_message)
        assert parser.buffered == fed - consumed
    return events


def cut(stream: bytes, points: Iterable[int]) -> list[bytes]:
    edges = [0, *sorted({p % (len(stream) + 1) for p in points}), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def expected_events(frames: list[tuple[bytes, int, int, bytes, bytes]]) -> list[Event]:
    events: list[Event] = []
    for identity, serial, type_, header, data in frames:
        head = FrameHead(identity, serial, len(data), len(header), type_)
        events.append(head)
        if head.is_message:
            events.append(DataFrame(head, header, data))
    return events


# --- codec: encoding -----------------------------------------------------------------------


def test_protocol_md_example_bytes() -> None:
    """PROTOCOL.md 3.4: port 2998, identity 00..ff, then b"hello" with REQ_ACK and serial 7."""
    assert encode_handshake(2998, bytes.fromhex("00112233445566778899aabbccddeeff")) == bytes.fromhex(
        "0bb6 00112233445566778899aabbccddeeff"
    )
    assert encode_frame(ID_B, 7, TYPE_REQ_ACK, b"", b"hello") == bytes.fromhex(
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf 00000007 00000005 0000 01 68656c6c6f"
    )


def test_data_len_comes_before_header_len_but_header_bytes_before_data() -> None:
    wire = encode_frame(ID_A, 0x01020304, 0, b"HDR", b"data!")
    assert wire[16:20] == bytes.fromhex("01020304")  # serial, big-endian
    assert wire[20:24] == (5).to_bytes(4, "big")  # data_len
    assert wire[24:26] == (3).to_bytes(2, "big")  # header_len
    assert wire[26] == 0
    assert wire[27:] == b"HDRdata!"


def test_encode_ack_and_noop() -> None:
    ack = encode_ack(ID_A, 42)
    assert ack == ID_A + struct.pack(">IIHB", 42, 0, 0, TYPE_ACK)
    noop = encode_noop(2**32 - 1)
    assert noop == ZERO_IDENTITY + struct.pack(">IIHB", 2**32 - 1, 0, 0, TYPE_NOOP)
    assert len(ack) == len(noop) == FRAME_HEAD_SIZE


@pytest.mark.parametrize(
    ("port", "identity", "error", "fragment"),
    [
        (-1, ID_A, ValueError, "port must be in 0..65535, got -1"),
        (65536, ID_A, ValueError, "got 65536"),
        (2998, bytes(15), ValueError, "identity must be 16 bytes, got 15"),
        (2998, bytes(17), ValueError, "got 17"),
        (2998, "0123456789abcdef", TypeError, "identity must be bytes, got str"),
    ],
)
def test_encode_handshake_refuses(port: int, identity: bytes, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        encode_handshake(port, identity)


@pytest.mark.parametrize(
    ("serial", "type_", "header_len", "data_len", "fragment"),
    [
        (-1, 0, 0, 0, "serial must be in 0..4294967295, got -1"),
        (2**32, 0, 0, 0, "got 4294967296"),
        (0, -1, 0, 0, "type must be in 0..255, got -1"),
        (0, 256, 0, 0, "got 256"),
        (0, 0, 65536, 0, "header is 65536 bytes; the wire format allows at most 65535"),
        (0, 0, 0, 2**32, "data is 4294967296 bytes; the wire format allows at most 4294967295"),
        (0, 0, -1, 0, "header_len=-1"),
        (0, 0, 0, -1, "data_len=-1"),
    ],
)
def test_encode_frame_head_refuses(
    serial: int, type_: int, header_len: int, data_len: int, fragment: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        encode_frame_head(ID_A, serial, type_, header_len, data_len)


def test_encode_frame_head_accepts_the_extremes() -> None:
    wire = encode_frame_head(ID_A, 2**32 - 1, 0xFF, 0xFFFF, 2**32 - 1)
    assert wire[16:] == bytes.fromhex("ffffffff ffffffff ffff ff")


def test_send_side_size_limits() -> None:
    """A header over 65535 bytes or data of 2**32 bytes or more cannot be described: ValueError."""
    encode_frame(ID_A, 0, 0, b"h" * 65535, b"")  # the largest header is fine
    with pytest.raises(ValueError, match="header is 65536 bytes"):
        encode_frame(ID_A, 0, 0, b"h" * 65536, b"")

    class FourGiB(bytes):
        """Claims 2**32 bytes without holding them; the check must refuse it before joining."""

        def __len__(self) -> int:
            return 2**32

    with pytest.raises(ValueError, match="data is 4294967296 bytes"):
        encode_frame(ID_A, 0, 0, b"", FourGiB())
    check_frame_lengths(65535, 2**32 - 1)  # both maxima together are describable
    with pytest.raises(ValueError, match="at most 4294967295"):
        check_frame_lengths(0, 2**32)


# --- codec: decoding -------------------------------------------------------------------------


def test_decode_handshake_needs_exactly_18_bytes() -> None:
    wire = encode_handshake(1234, ID_A)
    assert decode_handshake(wire) == Handshake(1234, ID_A)
    for bad in (wire[:-1], wire + b"\0", b""):
        with pytest.raises(ProtocolError, match=f"a handshake is 18 bytes, got {len(bad)}"):
            decode_handshake(bad)


def test_decode_frame_needs_exactly_one_frame() -> None:
    wire = encode_frame(ID_A, 1, 0, b"h", b"dd")
    assert decode_frame(wire) == DataFrame(FrameHead(ID_A, 1, 2, 1, 0), b"h", b"dd")
    with pytest.raises(ProtocolError, match="at least 27 bytes, got 26"):
        decode_frame(wire[:26])
    with pytest.raises(ProtocolError, match="announces 30 bytes in all, buffer holds 29"):
        decode_frame(wire[:-1])
    with pytest.raises(ProtocolError, match="announces 30 bytes in all, buffer holds 31"):
        decode_frame(wire + b"x")


@given(port=ports, identity=identities)
def test_handshake_round_trip(port: int, identity: bytes) -> None:
    wire = encode_handshake(port, identity)
    assert len(wire) == HANDSHAKE_SIZE
    assert decode_handshake(wire) == Handshake(port, identity)
    parser = FrameParser(0)
    assert feed(parser, [wire]) == [Handshake(port, identity)]


@given(identity=identities, serial=serials, type_=types, header=payloads, data=payloads)
def test_frame_round_trip(identity: bytes, serial: int, type_: int, header: bytes, data: bytes) -> None:
    wire = encode_frame(identity, serial, type_, header, data)
    assert len(wire) == FRAME_HEAD_SIZE + len(header) + len(data)
    head = FrameHead(identity, serial, len(data), len(header), type_)
    # decode_frame validates nothing, so every combination comes back as it went in
    assert decode_frame(wire) == DataFrame(head, header, data)
    # the parser agrees with the rules of PROTOCOL.md 3.3
    parser = FrameParser(MAX_MSG_SIZE, expect_handshake=False)
    error = verdict(type_, len(header), len(data), MAX_MSG_SIZE)
    if error is None:
        assert feed(parser, [wire]) == expected_events([(identity, serial, type_, header, data)])
    else:
        with pytest.raises(ProtocolError) as info:
            feed(parser, [wire])
        assert type(info.value) is error


@given(
    identity=identities,
    serial=serials,
    type_=types,
    header_len=st.integers(0, 0xFFFF),
    data_len=st.integers(0, 2**32 - 1) | st.integers(0, 100),
    max_msg_size=st.integers(0, 2**33) | st.integers(0, 200),
)
def test_any_fixed_part_gets_the_documented_verdict(
    identity: bytes, serial: int, type_: int, header_len: int, data_len: int, max_msg_size: int
) -> None:
    """Only the 27 bytes are fed: the verdict needs no payload, and an accepted data frame
    pauses with nothing consumed beyond its fixed part."""
    wire = encode_frame_head(identity, serial, type_, header_len, data_len)
    parser = FrameParser(max_msg_size, expect_handshake=False)
    parser.receive_data(wire)
    error = verdict(type_, header_len, data_len, max_msg_size)
    if error is not None:
        with pytest.raises(ProtocolError) as info:
            parser.next_event()
        assert type(info.value) is error
        assert f"type=0x{type_:02x}" in str(info.value) or f"data_len={data_len}" in str(info.value)
        return
    head = parser.next_event()
    assert head == FrameHead(identity, serial, data_len, header_len, type_)
    assert parser.buffered == 0
    if head.is_message and header_len + data_len:
        assert parser.paused
        assert parser.next_event() is NEED_DATA  # waits for the payload, allocates nothing
    elif head.is_message:
        assert parser.next_event() == DataFrame(head, b"", b"")
    assert parser.next_event() is NEED_DATA


# --- chunking ------------------------------------------------------------------------------


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[bytes, int, int, bytes, bytes]:
    """Any frame a correct peer may send; unknown type bits included."""
    identity, serial, bits = draw(identities), draw(serials), draw(types)
    kind = draw(st.sampled_from(["message", "ack", "noop"]))
    if kind == "message":
        return identity, serial, bits & ~(TYPE_ACK | TYPE_NOOP), draw(payloads), draw(payloads)
    if kind == "ack":
        return identity, serial, (bits & ~(TYPE_NOOP | TYPE_REQ_ACK)) | TYPE_ACK, b"", b""
    return identity, serial, (bits & ~TYPE_REQ_ACK) | TYPE_NOOP, b"", b""


@given(
    port=ports,
    node=identities,
    frames=st.lists(valid_frames(), max_size=8),
    points=st.lists(st.integers(0, 2**32), max_size=30),
)
def test_any_chunking_gives_the_same_events(
    port: int, node: bytes, frames: list[tuple[bytes, int, int, bytes, bytes]], points: list[int]
) -> None:
    stream = encode_handshake(port, node) + b"".join(encode_frame(*f) for f in frames)
    expected = [Handshake(port, node), *expected_events(frames)]
    assert feed(FrameParser(MAX_MSG_SIZE), [stream]) == expected
    chunks = cut(stream, points)
    assert b"".join(chunks) == stream
    events = feed(FrameParser(MAX_MSG_SIZE), chunks)
    assert events == expected
    for event in events:
        if isinstance(event, DataFrame):
            assert type(event.header) is bytes
            assert type(event.data) is bytes


@given(
    frames=st.lists(valid_frames(), min_size=1, max_size=5),
    points=st.lists(st.integers(0, 2**32), max_size=10),
)
def test_feeding_without_draining_keeps_the_order(
    frames: list[tuple[bytes, int, int, bytes, bytes]], points: list[int]
) -> None:
    """A caller may feed several chunks before asking for events (one extra copy, same result)."""
    stream = b"".join(encode_frame(*f) for f in frames)
    parser = FrameParser(MAX_MSG_SIZE, expect_handshake=False)
    for chunk in cut(stream, points):
        parser.receive_data(chunk)
    assert parser.buffered == len(stream)
    events: list[Event] = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
    assert events == expected_events(frames)


# --- garbage -----------------------------------------------------------------------------


@given(
    garbage=st.binary(max_size=3000),
    points=st.lists(st.integers(0, 2**32), max_size=20),
    max_msg_size=st.integers(0, 2**33) | st.integers(0, 64),
    expect_handshake=st.booleans(),
)
def test_garbage_never_hangs_and_raises_only_protocol_errors(
    garbage: bytes, points: list[int], max_msg_size: int, expect_handshake: bool
) -> None:
    parser = FrameParser(max_msg_size, expect_handshake=expect_handshake)
    # Every event but a DataFrame consumes >= 18 bytes, and a DataFrame follows a head.
    bound = 2 * (len(garbage) // HANDSHAKE_SIZE) + 2
    events = fed = consumed = 0
    error: ProtocolError | None = None
    try:
        for chunk in cut(garbage, points):
            parser.receive_data(chunk)
            fed += len(chunk)
            for _ in range(bound + 1):
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                events += 1
                consumed += consumed_by(event)
            else:
                pytest.fail("next_event() never returned NEED_DATA")
            assert fed == consumed + parser.buffered
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert type(error) in (ProtocolError, MessageTooLargeError)
        with pytest.raises(type(error)):  # broken for good
            parser.next_event()
    assert events <= bound


@given(frames=st.lists(valid_frames(), max_size=4), garbage=st.binary(min_size=1, max_size=200))
def test_valid_frames_before_garbage_are_all_delivered(
    frames: list[tuple[bytes, int, int, bytes, bytes]], garbage: bytes
) -> None:
    stream = b"".join(encode_frame(*f) for f in frames)
    parser = FrameParser(MAX_MSG_SIZE, expect_handshake=False)
    parser.receive_data(stream + garbage)
    expected = expected_events(frames)
    events: list[Event] = []
    try:
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    except ProtocolError:
        pass
    assert events[: len(expected)] == expected


# --- memory: an announced size is not allocated ---------------------------------------------------


@pytest.mark.parametrize(
    ("max_msg_size", "header_len", "data_len", "sent", "error"),
    [
        pytest.param(MAX_MSG_SIZE, 0, 2**32 - 1, 0, MessageTooLargeError, id="4GiB-refused"),
        pytest.param(MAX_MSG_SIZE, 1, 2**32 - 1, 0, MessageTooLargeError, id="32bit-wrap-refused"),
        pytest.param(2**32 + 0xFFFF, 0xFFFF, 2**32 - 1, 300_000, None, id="4GiB-allowed-300kB-sent"),
        pytest.param(MAX_MSG_SIZE, 0, MAX_MSG_SIZE, 3, None, id="exactly-max-3B-sent"),
        pytest.param(MAX_MSG_SIZE, 100, MAX_MSG_SIZE - 100, 65_586, None, id="exactly-max-header-split"),
    ],
)
def test_announced_size_is_not_allocated(
    max_msg_size: int, header_len: int, data_len: int, sent: int, error: type[ProtocolError] | None
) -> None:
    stream = encode_handshake(2998, ID_A) + encode_frame_head(ID_A, 1, 0, header_len, data_len) + b"p" * sent
    chunks = [stream[i : i + 64 * 1024] for i in range(0, len(stream), 64 * 1024)]  # before tracing
    parser = FrameParser(max_msg_size)
    events: list[Event] = []
    raised: ProtocolError | None = None
    tracemalloc.start()
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                events.append(event)
    except ProtocolError as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert type(raised) is (error or type(None))
    assert peak < MiB, f"parser allocated {peak} bytes for a frame announcing {header_len + data_len}"
    assert len(events) == (1 if error else 2)  # handshake (+ the head when accepted)
    if error is None:
        assert parser.paused or parser.buffered == sent
        assert parser.next_event() is NEED_DATA  # still waiting for the payload
        assert parser.buffered == sent


@given(
    header_len=st.integers(0, 0xFFFF),
    data_len=st.integers(1, 2**32 - 1),
    sent=st.integers(0, 20_000),
    points=st.lists(st.integers(0, 2**32), max_size=20),
)
def test_partial_payload_costs_only_what_arrived(
    header_len: int, data_len: int, sent: int, points: list[int]
) -> None:
    """Whatever is announced (the limit here admits everything), the parser holds only what
    arrived: references to the received chunks, no buffer sized by the announcement."""
    sent = min(sent, header_len + data_len - 1)  # the frame stays incomplete
    stream = encode_frame_head(ID_A, 1, 0, header_len, data_len) + b"p" * sent
    chunks = cut(stream, points)
    parser = FrameParser(2**32 + 0xFFFF, expect_handshake=False)
    tracemalloc.start()
    try:
        events = feed(parser, chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events == [FrameHead(ID_A, 1, data_len, header_len, 0)]
    assert parser.buffered == sent
    assert peak < 256 * 1024


# --- parser units --------------------------------------------------------------------------------


def test_handshake_and_frames_in_one_read() -> None:
    stream = (
        encode_handshake(0x88C3, ID_A)
        + encode_noop(1)
        + encode_frame(ID_B, 2, TYPE_REQ_ACK, b"", b"ping")
        + encode_ack(ID_B, 3)
    )
    head = FrameHead(ID_B, 2, 4, 0, TYPE_REQ_ACK)
    assert feed(FrameParser(1024), [stream]) == [
        Handshake(0x88C3, ID_A),
        FrameHead(ZERO_IDENTITY, 1, 0, 0, TYPE_NOOP),
        head,
        DataFrame(head, b"", b"ping"),
        FrameHead(ID_B, 3, 0, 0, TYPE_ACK),
    ]
    assert head.requests_ack


def test_data_head_pauses_until_the_next_call() -> None:
    """The pause lets the caller take a receive slot before any payload byte is consumed."""
    payload_and_more = b"HDR" + b"data" + encode_ack(ID_B, 9)
    parser = FrameParser(1024, expect_handshake=False)
    parser.receive_data(encode_frame_head(ID_A, 5, 0, 3, 4) + payload_and_more)
    head = parser.next_event()
    assert isinstance(head, FrameHead)
    assert parser.paused
    assert parser.buffered == len(payload_and_more)  # nothing of the payload consumed yet
    frame = parser.next_event()
    assert frame == DataFrame(head, b"HDR", b"data")
    assert not parser.paused
    assert parser.next_event() == FrameHead(ID_B, 9, 0, 0, TYPE_ACK)
    assert not parser.paused  # ACKs never pause
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        (0x00, "message"),
        (0x01, "request"),
        (0x02, "ack"),
        (0x04, "noop"),
        (0x06, "noop"),  # NOOP beats ACK
        (0x08, "message"),  # unknown bits are ignored
        (0x09, "request"),
        (0x0A, "ack"),
        (0xF8, "message"),
        (0xFA, "ack"),
        (0xFE, "noop"),
        (0x03, ProtocolError),
        (0x05, ProtocolError),
        (0x07, ProtocolError),
        (0xFF, ProtocolError),
    ],
)
def test_type_bits(type_: int, kind: str | type[ProtocolError]) -> None:
    parser = FrameParser(0, expect_handshake=False)
    parser.receive_data(encode_frame_head(ID_A, 1, type_, 0, 0))
    if not isinstance(kind, str):
        with pytest.raises(kind, match="also sets REQ_ACK"):
            parser.next_event()
        return
    head = parser.next_event()
    assert isinstance(head, FrameHead)
    flags = {
        "message": (True, False, False, False),
        "request": (True, True, False, False),
        "ack": (False, False, True, False),
        "noop": (False, False, False, True),
    }
    assert (head.is_message, head.requests_ack, head.is_ack, head.is_noop) == flags[kind]
    if head.is_message:
        assert parser.next_event() == DataFrame(head, b"", b"")
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize(("header_len", "data_len"), [(0, 1024), (1024, 0), (24, 1000), (1023, 1)])
def test_exactly_max_msg_size_is_accepted_one_more_is_not(header_len: int, data_len: int) -> None:
    ok = FrameParser(1024, expect_handshake=False)
    header, data = b"h" * header_len, b"d" * data_len
    assert feed(ok, [encode_frame(ID_A, 1, 0, header, data)])[-1] == DataFrame(
        FrameHead(ID_A, 1, data_len, header_len, 0), header, data
    )
    too_big = FrameParser(1023, expect_handshake=False)
    too_big.receive_data(encode_frame_head(ID_A, 1, 0, header_len, data_len))
    with pytest.raises(MessageTooLargeError, match="= 1024 bytes, above max_msg_size=1023"):
        too_big.next_event()


def test_max_msg_size_zero_allows_only_empty_frames() -> None:
    parser = FrameParser(0, expect_handshake=False)
    assert len(feed(parser, [encode_frame(ID_A, 1, 0, b"", b""), encode_ack(ID_A, 2)])) == 3
    parser.receive_data(encode_frame_head(ID_A, 3, 0, 0, 1))
    with pytest.raises(MessageTooLargeError):
        parser.next_event()


def test_negative_max_msg_size_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_msg_size must be >= 0, got -1"):
        FrameParser(-1)


def test_broken_parser_raises_the_same_error_for_ever() -> None:
    parser = FrameParser(1024, expect_handshake=False)
    parser.receive_data(encode_frame_head(ID_A, 1, TYPE_ACK, 0, 5) + b"hello")
    with pytest.raises(ProtocolError) as first:
        parser.next_event()
    for call in (parser.next_event, lambda: parser.receive_data(encode_ack(ID_A, 2))):
        with pytest.raises(ProtocolError) as again:
            call()
        assert again.value is first.value


def test_mutable_buffers_are_copied_on_receive() -> None:
    buf = bytearray(encode_frame(ID_A, 1, 0, b"", b"original"))
    parser = FrameParser(1024, expect_handshake=False)
    parser.receive_data(buf)
    buf[-8:] = b"CHANGED!"  # the caller reuses its read buffer
    parser.receive_data(memoryview(bytearray(encode_ack(ID_A, 2))))
    events = [parser.next_event() for _ in range(3)]
    assert isinstance(events[1], DataFrame)
    assert events[1].data == b"original"
    assert isinstance(events[2], FrameHead)
    assert events[2].is_ack


def test_payload_spanning_many_chunks_comes_out_as_one_bytes_object() -> None:
    header, data = b"H" * 700, bytes(range(256)) * 40
    wire = encode_frame(ID_A, 1, 0, header, data)
    events = feed(FrameParser(MAX_MSG_SIZE, expect_handshake=False), cut(wire, range(1, len(wire), 97)))
    assert events[-1] == DataFrame(FrameHead(ID_A, 1, len(data), len(header), 0), header, data)
    frame = events[-1]
    assert isinstance(frame, DataFrame)
    assert type(frame.header) is bytes
    assert type(frame.data) is bytes


def test_buffered_includes_a_header_waiting_for_its_data() -> None:
    wire = encode_frame(ID_A, 1, 0, b"HEADER", b"data")
    parser = FrameParser(1024, expect_handshake=False)
    parser.receive_data(wire[: FRAME_HEAD_SIZE + 8])  # fixed part, header, 2 bytes of data
    assert isinstance(parser.next_event(), FrameHead)
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 8
    parser.receive_data(wire[FRAME_HEAD_SIZE + 8 :])
    assert parser.next_event() == DataFrame(FrameHead(ID_A, 1, 4, 6, 0), b"HEADER", b"data")
    assert parser.buffered == 0


def test_without_handshake_the_first_bytes_are_a_frame() -> None:
    """``expect_handshake=False`` parses frames from byte 0; with the default the same 27
    bytes would be read as a handshake plus 9 bytes of a fixed part."""
    ack = encode_ack(ID_A, 7)
    assert feed(FrameParser(0, expect_handshake=False), [ack]) == [FrameHead(ID_A, 7, 0, 0, TYPE_ACK)]
    parser = FrameParser(0)
    assert feed(parser, [ack]) == [Handshake(int.from_bytes(ID_A[:2], "big"), ack[2:18])]
    assert parser.buffered == 9


def test_mid_frame_tells_a_stall_from_an_idle_connection() -> None:
    """``mid_frame``: part of a frame arrived and the rest is awaited (a stalled peer), as
    opposed to an idle connection between frames or a parser paused for a receive slot."""
    wire = encode_frame(ID_A, 1, 0, b"HDR", b"data")
    parser = FrameParser(1024, expect_handshake=False)
    assert not parser.mid_frame  # idle
    parser.receive_data(wire[:10])
    assert parser.next_event() is NEED_DATA
    assert parser.mid_frame  # inside the fixed part
    parser.receive_data(wire[10:FRAME_HEAD_SIZE])
    assert isinstance(parser.next_event(), FrameHead)
    assert parser.paused
    assert not parser.mid_frame  # paused is the caller's choice, not a stall
    assert parser.next_event() is NEED_DATA
    assert parser.mid_frame  # waiting for the payload
    parser.receive_data(wire[FRAME_HEAD_SIZE:])
    assert isinstance(parser.next_event(), DataFrame)
    assert not parser.mid_frame


def test_a_fresh_parser_asked_before_any_bytes_then_fed_parses_normally() -> None:
    parser = FrameParser(MAX_MSG_SIZE)
    assert parser.next_event() is NEED_DATA
    assert not parser.mid_frame
    parser.receive_data(encode_handshake(2998, ID_A) + encode_ack(ID_B, 3))
    assert parser.next_event() == Handshake(2998, ID_A)
    head = parser.next_event()
    assert isinstance(head, FrameHead)
    assert (head.identity, head.serial, head.type) == (ID_B, 3, TYPE_ACK)
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize(
    ("identity", "error"), [(ID_A[:15], ValueError), (ID_A + b"\0", ValueError), ("x" * 16, TypeError)]
)
def test_a_frame_head_refuses_an_identity_of_the_wrong_size_or_type(
    identity: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="identity must be"):
        encode_frame_head(identity, 1, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(error, match="identity must be"):
        encode_ack(identity, 1)  # type: ignore[arg-type]


def test_the_parsers_fast_constructors_make_the_same_frozen_records() -> None:
    from trio_chirp._protocol.events import make_data_frame, make_frame_head

    args = (b"I" * 16, 7, 1024, 17, TYPE_REQ_ACK)
    fast, slow = make_frame_head(*args), FrameHead(*args)
    assert type(fast) is FrameHead
    assert (fast, hash(fast), repr(fast)) == (slow, hash(slow), repr(slow))
    assert (fast.is_message, fast.requests_ack) == (True, True)
    frame, expected = make_data_frame(fast, b"h", b"d"), DataFrame(slow, b"h", b"d")
    assert type(frame) is DataFrame
    assert (frame, repr(frame)) == (expected, repr(expected))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.serial = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.data = b"x"  # type: ignore[misc]
