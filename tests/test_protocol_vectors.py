"""The wire layer against the bytes captured from a live libchirp 1.2.1 (``tests/vectors``).

For every decoded segment the bytes are rebuilt from the *recorded field values* with our
encoders and compared with the captured hex; then the captured hex is decoded with the
incremental parser (whole and byte by byte) and with ``decode_handshake``/``decode_frame``
and every field is compared. ``f_receiver_validation`` is replayed case by case: every
frame libchirp refused must be refused by the parser, with the right error class, as soon
as the 27-byte fixed part is in; the two cases where we differ on purpose are pinned down.
The captures ship with the tests (``tests/vectors/README.md``); missing, they are an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trio_chirp import Config, MessageTooLargeError, ProtocolError
from trio_chirp._protocol import (
    FRAME_HEAD_SIZE,
    HANDSHAKE_SIZE,
    NEED_DATA,
    DataFrame,
    Event,
    FrameHead,
    FrameParser,
    Handshake,
    decode_frame,
    decode_handshake,
    encode_frame,
    encode_handshake,
)

VECTORS = Path(__file__).resolve().parent / "vectors"

Json = dict[str, Any]


def _load_vectors() -> dict[str, Json]:
    """Every capture but the index; reading them is not optional (they ship with the tests)."""
    files = sorted(p for p in VECTORS.glob("*.json") if p.name != "index.json")
    if not files:
        raise FileNotFoundError(f"no libchirp test vectors in {VECTORS} (they ship with the tests)")
    return {p.name: json.loads(p.read_text()) for p in files}


ALL = _load_vectors()
SEGMENT_LIST: list[tuple[str, Json]] = [
    (name, seg) for name, vector in ALL.items() for seg in vector["segments"]
]
DECODED = [
    pytest.param(name, seg, id=f"{name.split('_')[0]}:{seg['label']}")
    for name, seg in SEGMENT_LIST
    if "decoded" in seg
]


def test_index_lists_exactly_the_shipped_files() -> None:
    """index.json names every capture in tests/vectors, and nothing else; all checks passed."""
    index = json.loads((VECTORS / "index.json").read_text())
    listed = [entry["file"] for entry in index["vectors"]]
    present = {p.name for p in VECTORS.iterdir()} - {"index.json", "README.md"}
    assert len(listed) == len(set(listed)), "index.json lists a file twice"
    assert set(listed) == present, "index.json and the files in tests/vectors disagree"
    assert set(ALL) == present
    assert all(entry["failed_checks"] == 0 for entry in index["vectors"])
    assert len(DECODED) >= 20  # every capture with frames is decoded below


# --- helpers -----------------------------------------------------------------------------


def _max_msg_size(name: str, seg: Json) -> int:
    if "max_msg_size" in seg:
        return int(seg["max_msg_size"])
    node_config = ALL[name]["setup"].get("node_config") or {}
    return int(node_config.get("MAX_MSG_SIZE", Config().max_msg_size))


def _encode_item(item: Json) -> bytes:
    """Bytes of one decoded handshake or frame, built from its recorded field values only."""
    if item["kind"] == "handshake":
        return encode_handshake(item["port"], bytes.fromhex(item["identity"]))
    assert item["kind"] == "frame"
    return encode_frame(
        bytes.fromhex(item["identity"]),
        item["serial"],
        item["type"],
        bytes.fromhex(item["header"]),
        bytes.fromhex(item["data"]),
    )


def _head_of(item: Json) -> FrameHead:
    return FrameHead(
        identity=bytes.fromhex(item["identity"]),
        serial=item["serial"],
        data_len=item["data_len"],
        header_len=item["header_len"],
        type=item["type"],
    )


def _expected_events(decoded: list[Json]) -> list[Event]:
    events: list[Event] = []
    for item in decoded:
        if item["kind"] == "handshake":
            events.append(Handshake(item["port"], bytes.fromhex(item["identity"])))
            continue
        head = _head_of(item)
        events.append(head)
        if head.is_message:
            events.append(DataFrame(head, bytes.fromhex(item["header"]), bytes.fromhex(item["data"])))
    return events


def _drain_into(parser: FrameParser, events: list[Event]) -> None:
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)


def _parse(parser: FrameParser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    return events


# --- encoding: recorded field values -> captured bytes ---------------------------------------


@pytest.mark.parametrize(("name", "seg"), DECODED)
def test_encoding_the_decoded_fields_gives_the_captured_bytes(name: str, seg: Json) -> None:
    wire = bytes.fromhex(seg["hex"])
    assert len(wire) == seg["length"]
    rebuilt = b""
    for item in seg["decoded"]:
        encoded = _encode_item(item)
        assert item["offset"] == len(rebuilt), "items must tile the segment"
        assert len(encoded) == item["size"]
        assert encoded == wire[item["offset"] : item["offset"] + item["size"]]
        rebuilt += encoded
    assert rebuilt == wire
    # Field by field: each recorded field sits at its recorded offset in *our* encoding.
    for item in seg["decoded"]:
        for field in item["fields"]:
            start, size = field["offset"], field["size"]
            assert rebuilt[start : start + size].hex() == field["hex"], field["field"]
            if "value" in field:
                assert int.from_bytes(rebuilt[start : start + size], "big") == field["value"]
                assert item[field["field"]] == field["value"]


# --- decoding: captured bytes -> fields ------------------------------------------------------


@pytest.mark.parametrize(("name", "seg"), DECODED)
def test_parser_decodes_every_field(name: str, seg: Json) -> None:
    wire = bytes.fromhex(seg["hex"])
    expected = _expected_events(seg["decoded"])
    max_msg_size = _max_msg_size(name, seg)

    def parser() -> FrameParser:
        return FrameParser(max_msg_size, expect_handshake=seg["starts_with_handshake"])

    whole = _parse(parser(), [wire])
    assert whole == expected
    # Any TCP split: here the worst one, a byte at a time.
    assert _parse(parser(), [wire[i : i + 1] for i in range(len(wire))]) == expected

    heads = [e for e in whole if isinstance(e, FrameHead)]
    items = [item for item in seg["decoded"] if item["kind"] == "frame"]
    for head, item in zip(heads, items, strict=True):
        _check_type_name(head, item["type_name"])
    if "expect_count" in seg:
        assert len(seg["decoded"]) == seg["expect_count"]
    if "expect" in seg:
        # the capture's own expectations (a subset of the fields) agree with the decoding
        for want, item in zip(seg["expect"], seg["decoded"], strict=True):
            assert all(item[key] == value for key, value in want.items()), want
    if seg.get("expect_consecutive_serials"):
        serials = [h.serial for h in heads]
        assert serials == [(serials[0] + i) % 2**32 for i in range(len(serials))]


def _check_type_name(head: FrameHead, type_name: str) -> None:
    """The vectors' type names against FrameHead's bit tests (NOOP > ACK > message)."""
    kinds = {
        "MSG": (True, False, False, False),
        "MSG|REQ_ACK": (True, True, False, False),
        "ACK": (False, False, True, False),
        "NOOP": (False, False, False, True),
        "0x08": (True, False, False, False),  # unknown bit: a plain message
    }
    assert (head.is_message, head.requests_ack, head.is_ack, head.is_noop) == kinds[type_name]


@pytest.mark.parametrize(("name", "seg"), DECODED)
def test_codec_decodes_every_field(name: str, seg: Json) -> None:
    wire = bytes.fromhex(seg["hex"])
    for item in seg["decoded"]:
        raw = wire[item["offset"] : item["offset"] + item["size"]]
        if item["kind"] == "handshake":
            assert decode_handshake(raw) == Handshake(item["port"], bytes.fromhex(item["identity"]))
            continue
        frame = decode_frame(raw)
        assert frame.head == _head_of(item)
        assert frame.header == bytes.fromhex(item["header"])
        assert frame.data == bytes.fromhex(item["data"])
        assert len(frame.header) == frame.head.header_len
        assert len(frame.data) == frame.head.data_len


def test_loose_handshakes_and_acks_in_observations_decode() -> None:
    """Bytes recorded outside segments: the node's handshakes in f, the TLS ACKs in k."""
    f = ALL["f_receiver_validation.json"]
    for case in f["observations"]["cases"].values():
        if "node_handshake_hex" in case:
            hs = decode_handshake(bytes.fromhex(case["node_handshake_hex"]))
            assert hs.port == f["setup"]["node_port"]
            assert hs.identity.hex() == f["setup"]["node_identity"]
    acks = [c["ack_hex"] for c in ALL["k_tls.json"]["observations"]["cases"].values() if "ack_hex" in c]
    assert acks
    for ack in acks:
        frame = decode_frame(bytes.fromhex(ack))
        assert frame.head.is_ack
        assert (frame.head.header_len, frame.head.data_len, frame.header, frame.data) == (0, 0, b"", b"")
        # an ACK has no payload, so it passes even max_msg_size=0 and never pauses the parser
        parser = FrameParser(0, expect_handshake=False)
        assert _parse(parser, [bytes.fromhex(ack)]) == [frame.head]
        assert not parser.paused


# --- f_receiver_validation: what libchirp refuses, we refuse ---------------------------------

# label -> (exact error class, fragments the message must contain: what was wrong and the values)
VIOLATIONS: dict[str, tuple[type[ProtocolError], tuple[str, ...]]] = {
    "oversize_data_len": (
        MessageTooLargeError,
        ("header_len=0", "data_len=1025", "= 1025 bytes", "max_msg_size=1024"),
    ),
    "oversize_header_plus_data": (
        MessageTooLargeError,
        ("header_len=25", "data_len=1000", "= 1025 bytes", "max_msg_size=1024"),
    ),
    "ack_with_data": (ProtocolError, ("ACK frame", "type=0x02", "payload", "header_len=0", "data_len=5")),
    "noop_with_header": (ProtocolError, ("NOOP frame", "type=0x04", "payload", "header_len=1", "data_len=0")),
    "noop_requesting_ack": (ProtocolError, ("NOOP frame", "type=0x05", "REQ_ACK")),
    "ack_requesting_ack": (ProtocolError, ("ACK frame", "type=0x03", "REQ_ACK")),
    # libchirp sums in 32 bits, gets 0 and waits for 4 GiB; we must not.
    "length_sum_wraps_32bit": (
        MessageTooLargeError,
        ("header_len=1", "data_len=4294967295", "= 4294967296 bytes", "max_msg_size=1024"),
    ),
}
F_SEGMENTS = {seg["label"]: seg for name, seg in SEGMENT_LIST if name.startswith("f_")}


def test_every_violation_in_the_capture_is_covered() -> None:
    flagged = {label for label, seg in F_SEGMENTS.items() if seg.get("expect_violation")}
    assert flagged == set(VIOLATIONS)


@pytest.mark.parametrize("label", sorted(VIOLATIONS))
def test_violation_is_rejected_at_the_fixed_part(label: str) -> None:
    seg = F_SEGMENTS[label]
    error_class, fragments = VIOLATIONS[label]
    wire = bytes.fromhex(seg["hex"])
    parser = FrameParser(seg["max_msg_size"], expect_handshake=False)
    # Only the 27 bytes of the fixed part: the verdict must not wait for any payload.
    parser.receive_data(wire[:FRAME_HEAD_SIZE])
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert type(info.value) is error_class
    for fragment in fragments:
        assert fragment in str(info.value)
    # The parser stays broken: the connection has to be closed.
    with pytest.raises(error_class):
        parser.next_event()
    with pytest.raises(error_class):
        parser.receive_data(wire[FRAME_HEAD_SIZE:])
    # decode_frame is a tool without limits: it decodes the same head without complaint.
    if len(wire) == FRAME_HEAD_SIZE + int.from_bytes(wire[24:26], "big") + int.from_bytes(wire[20:24], "big"):
        assert decode_frame(wire).head.type == wire[26]


# Outcomes per captured case: True = connection closed (parser raises), False = accepted.
LIBCHIRP_CLOSED_BUT_WE_ACCEPT = {"handshake_split_10_plus_8_bytes"}
LIBCHIRP_ACCEPTED_BUT_WE_REJECT = {"length_sum_wraps_32bit"}


def _f_cases() -> dict[str, Json]:
    cases: dict[str, Json] = ALL["f_receiver_validation.json"]["observations"]["cases"]
    return cases


def test_every_captured_case_is_replayed() -> None:
    cases = ALL["f_receiver_validation.json"]["observations"]["cases"]
    replayed = {name for name, case in _f_cases().items() if "sent_hex" in case}
    assert set(cases) == replayed | {"no_handshake_from_peer"}


@pytest.mark.parametrize(("name", "case"), [(n, c) for n, c in _f_cases().items() if "sent_hex" in c])
def test_captured_connection_replayed_through_the_parser(name: str, case: Json) -> None:
    """What the fake peer sent on a fresh connection (handshake included), fed as one read."""
    max_msg_size = ALL["f_receiver_validation.json"]["setup"]["node_config"]["MAX_MSG_SIZE"]
    sent = bytes.fromhex(case["sent_hex"])
    should_close = case["closed"]
    if name in LIBCHIRP_CLOSED_BUT_WE_ACCEPT | LIBCHIRP_ACCEPTED_BUT_WE_REJECT:
        should_close = not should_close
    parser = FrameParser(max_msg_size)
    parser.receive_data(sent)
    events: list[Event] = []
    if should_close:
        with pytest.raises(ProtocolError):
            _drain_into(parser, events)
        assert isinstance(events[0], Handshake)
        return
    _drain_into(parser, events)
    assert events[0] == Handshake(int.from_bytes(sent[:2], "big"), sent[2:HANDSHAKE_SIZE])
    assert parser.buffered == 0
    delivered = [e for e in events if isinstance(e, DataFrame)]
    if "delivered_to_application" in case:
        want = case["delivered_to_application"]
        assert len(delivered) == 1
        got = delivered[0]
        assert got.head.identity.hex() == want["identity"]
        assert (got.head.header_len, got.head.data_len) == (want["header_len"], want["data_len"])
        assert (len(got.header), len(got.data)) == (want["header_len"], want["data_len"])


def test_split_handshake_is_accepted_on_purpose() -> None:
    """libchirp refuses a handshake that arrives as 10 + 8 bytes (its sharp edge 3); TCP may
    split anything, so we accept it."""
    case = ALL["f_receiver_validation.json"]["observations"]["cases"]["handshake_split_10_plus_8_bytes"]
    assert case["closed"] is True  # what libchirp did
    sent = bytes.fromhex(case["sent_hex"])
    assert len(sent) == HANDSHAKE_SIZE
    parser = FrameParser(1024)
    parser.receive_data(sent[:10])
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 10
    parser.receive_data(sent[10:])
    assert parser.next_event() == Handshake(0xC62D, bytes.fromhex("f00dfeed0123456789abcdef00112233"))
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


def test_no_handshake_from_peer_means_waiting_not_failing() -> None:
    """A peer that connects and sends nothing: libchirp keeps the connection for ever. For the
    parser, silence is not an error; it waits (NEED_DATA) however often it is asked. Bounding
    the wait is the node's job, with ``Config.effective_handshake_timeout`` (ours; libchirp has
    none for incoming connections)."""
    case = ALL["f_receiver_validation.json"]["observations"]["cases"]["no_handshake_from_peer"]
    assert case["closed"] is False
    assert "sent_hex" not in case
    parser = FrameParser(1024)
    for _ in range(3):
        parser.receive_data(b"")
        assert parser.next_event() is NEED_DATA
    assert not parser.paused
    assert parser.buffered == 0
    # Up to 17 bytes are still "no handshake yet", not an error either.
    parser.receive_data(bytes(HANDSHAKE_SIZE - 1))
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == HANDSHAKE_SIZE - 1
    assert Config().effective_handshake_timeout == Config().connect_timeout
