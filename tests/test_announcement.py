"""The trio_chirp announcement's codec (``_protocol/announce.py``): layout, round trip, near-misses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_chirp._protocol import (
    FRAME_HEAD_SIZE,
    ZERO_IDENTITY,
    Announcement,
    FrameParser,
    Handshake,
    decode_announcement,
    encode_announcement,
    encode_handshake,
)
from trio_chirp._protocol.announce import MAGIC


def test_the_layout_is_a_noop_without_payload_and_serial_zero() -> None:
    frame = encode_announcement(16, 1 << 20)
    assert len(frame) == FRAME_HEAD_SIZE
    identity = frame[:16]
    assert (
        identity == MAGIC + bytes([1, 0]) + (16).to_bytes(2, "big") + (1 << 20).to_bytes(4, "big") + b"\0\0"
    )
    assert frame[16:20] == b"\0\0\0\0"  # serial 0
    assert frame[20:26] == b"\0" * 6  # data_len 0, header_len 0: libchirp accepts it
    assert frame[26] == 0x04  # NOOP, nothing else


def test_our_parser_reads_it_as_a_noop_after_the_handshake() -> None:
    parser = FrameParser(1 << 20)
    parser.receive_data(encode_handshake(2998, bytes(16)) + encode_announcement(1, 4096))
    assert isinstance(parser.next_event(), Handshake)
    head = parser.next_event()
    assert head.is_noop  # type: ignore[union-attr]
    assert decode_announcement(head.identity) == Announcement(1, 0, 1, 4096)  # type: ignore[union-attr]


@given(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_round_trip(window: int, max_msg_size: int, flags: int) -> None:
    identity = encode_announcement(window, max_msg_size, flags=flags)[:16]
    assert decode_announcement(identity) == Announcement(1, flags, window, max_msg_size)


def test_a_window_beyond_the_field_is_clamped() -> None:
    decoded = decode_announcement(encode_announcement(70_000, 1)[:16])
    assert decoded is not None
    assert decoded.window == 0xFFFF


@given(st.binary(min_size=16, max_size=16))
def test_anything_without_the_magic_is_an_ordinary_noop(identity: bytes) -> None:
    if identity.startswith(MAGIC) and identity[6] >= 1:
        return  # an announcement indeed
    assert decode_announcement(identity) is None


def test_libchirps_noop_and_near_misses_are_not_announcements() -> None:
    assert decode_announcement(ZERO_IDENTITY) is None
    good = encode_announcement(1, 1)[:16]
    assert decode_announcement(b"trioCh" + good[6:]) is None  # one letter off
    assert decode_announcement(good[:6] + b"\0" + good[7:]) is None  # version 0
    assert decode_announcement(good[:15]) is None  # too short
    later = good[:6] + b"\x02" + good[7:]
    assert decode_announcement(later) == Announcement(2, 0, 1, 1), (
        "a later version is read for what it shares"
    )


# --- the parser's skipping state (an announced peer's oversized frame) ----------------------------

MAX = 64


def _frames() -> st.SearchStrategy[list[tuple[str, bytes, int]]]:
    kinds = st.sampled_from(["fits", "oversized", "ack"])
    return st.lists(
        st.tuples(kinds, st.binary(min_size=16, max_size=16), st.integers(0, 4 * MAX)), max_size=8
    )


def _stream(frames: list[tuple[str, bytes, int]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    from trio_chirp._protocol import TYPE_ACK, encode_frame

    out = [encode_handshake(2998, bytes(16))]
    expected: list[tuple[str, bytes]] = []
    for kind, identity, size in frames:
        if kind == "ack":
            out.append(encode_frame(identity, 1, TYPE_ACK))
            expected.append(("ack", identity))
        elif kind == "fits":
            data = bytes([size % 251]) * min(size, MAX)
            out.append(encode_frame(identity, 1, 0, b"", data))
            expected.append(("data", data))
        else:
            out.append(encode_frame(identity, 1, 0, b"h", b"x" * (MAX + size)))
            expected.append(("skipped", identity))
    return b"".join(out), expected


@given(_frames(), st.lists(st.integers(1, 300), min_size=1, max_size=50))
def test_skipping_yields_the_same_events_however_the_stream_is_split(
    frames: list[tuple[str, bytes, int]], cuts: list[int]
) -> None:
    from trio_chirp._protocol import NEED_DATA, DataFrame, FrameHead, OversizedFrame

    stream, expected = _stream(frames)
    parser = FrameParser(MAX)
    parser.skip_oversized_up_to = 5 * MAX + 1
    got: list[tuple[str, bytes]] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        parser.receive_data(stream[pos : pos + step])
        pos, i = pos + step, i + 1
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, DataFrame):
                got.append(("data", event.data))
            elif isinstance(event, OversizedFrame):
                got.append(("skipped", event.head.identity))
            elif isinstance(event, FrameHead) and event.is_ack:
                got.append(("ack", event.identity))
        assert parser.buffered <= MAX + 27 + 18, "a skipped payload is never buffered"
    assert got == expected
    assert not parser.mid_frame


def test_past_the_skip_cap_an_oversized_frame_still_breaks_the_parser() -> None:
    import pytest

    from trio_chirp import MessageTooLargeError
    from trio_chirp._protocol import encode_frame

    parser = FrameParser(10)
    parser.skip_oversized_up_to = 100
    parser.receive_data(encode_handshake(1, bytes(16)) + encode_frame(bytes(16), 1, 0, b"", b"x" * 101))
    parser.next_event()
    with pytest.raises(MessageTooLargeError, match="101 bytes, above max_msg_size=10"):
        parser.next_event()


def test_without_the_skip_setting_nothing_changes() -> None:
    import pytest

    from trio_chirp import MessageTooLargeError
    from trio_chirp._protocol import encode_frame

    parser = FrameParser(10)
    parser.receive_data(encode_handshake(1, bytes(16)) + encode_frame(bytes(16), 1, 0, b"", b"x" * 11))
    parser.next_event()
    with pytest.raises(MessageTooLargeError):
        parser.next_event()
