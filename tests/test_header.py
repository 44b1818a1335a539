"""trio_chirp's header map (trio_chirp._header): wire form, merging, and hostile input.

Pinned bytes fix the wire form (checked by hand against the msgpack spec); Hypothesis
checks round trips over every field, that the struct fast paths agree with msgpack, and
that ``split`` never raises and classifies any bytes consistently. A table of hand-made
headers covers each way a map carrying the marker can be malformed.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_chirp._header import (
    MAX_HOPS,
    MAX_MAP_SIZE,
    MAX_REMAINING,
    VERSION,
    ChirpMeta,
    ErrorInfo,
    _decode,
    add_to_header,
    encode,
    split,
)

MARKER_PREFIXES = [bytes((b,)) + b"\xa2tc" for b in range(0x81, 0x90)]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def entry(key: Any, value: Any) -> bytes:
    return pack(key) + pack(value)


def ours(*entries: bytes, count: int | None = None, version: bytes = b"\x01") -> bytes:
    """A fixmap whose first key is the marker, then ``entries`` (packed key + value) as given."""
    n = len(entries) + 1 if count is None else count
    return bytes((0x80 | n,)) + b"\xa2tc" + version + b"".join(entries)


# -- strategies ------------------------------------------------------------------------------

remainings = st.none() | st.floats(0.0, MAX_REMAINING)
errors = st.builds(ErrorInfo, st.text(max_size=64), st.text(max_size=1024), st.text(max_size=64))
metas = st.builds(
    ChirpMeta,
    remaining=remainings,
    hops=st.integers(0, 255),
    destination=st.none() | st.tuples(st.text(max_size=45), st.integers(1, 65535)),
    error=st.none() | errors,
    request=st.booleans(),
)


def assert_consistent(header: bytes) -> None:
    """The invariant for any bytes: split classifies them in exactly one of three ways."""
    app, meta, malformed = split(header)
    has_marker = len(header) >= 4 and 0x81 <= header[0] <= 0x8F and header[1:4] == b"\xa2tc"
    if not has_marker:
        assert (app, meta, malformed) == (header, None, False)
        assert app is header
    elif meta is None:
        assert (app, malformed) == (header, True)
    else:
        assert (app, malformed) == (b"", False)
        assert split(encode(meta)) == (b"", meta, False)


# -- wire form -------------------------------------------------------------------------------


def test_simple_map_bytes_are_pinned() -> None:
    # 82: fixmap of 2; a2 74 63: "tc"; 01: version 1; a2 64 6c: "dl"; cb: float64 follows;
    # 3ff8000000000000: 1.5 (exponent 0x3ff, mantissa .1 in binary).
    expected = bytes.fromhex("82 a27463 01 a2646c cb 3ff8000000000000")
    assert encode(ChirpMeta(remaining=1.5)) == expected
    assert pack({"tc": 1, "dl": 1.5}) == expected
    assert split(expected) == (b"", ChirpMeta(remaining=1.5), False)


def test_full_map_bytes_are_pinned() -> None:
    meta = ChirpMeta(2.5, 3, ("10.0.0.7", 2998), ErrorInfo("timeout", "no ACK", "10.0.0.7:2998"))
    expected = b"".join(
        [
            b"\x85",  # fixmap of 5, keys in this order:
            b"\xa2tc\x01",
            b"\xa2dl\xcb" + bytes.fromhex("4004000000000000"),  # 2.5
            b"\xa4hops\x03",
            b"\xa4dest\x92\xa810.0.0.7\xcd\x0b\xb6",  # [ip, uint16 2998]
            b"\xa5error\x83",
            b"\xa4type\xa7timeout",
            b"\xa4text\xa6no ACK",
            b"\xa3hop\xad10.0.0.7:2998",
        ]
    )
    assert encode(meta) == expected
    assert split(expected) == (b"", meta, False)


def test_marker_alone() -> None:
    assert encode(ChirpMeta()) == b"\x81\xa2tc\x01"
    assert split(b"\x81\xa2tc\x01") == (b"", ChirpMeta(), False)
    assert VERSION == 1


@given(metas)
def test_round_trip(meta: ChirpMeta) -> None:
    wire = encode(meta)
    assert wire[1:4] == b"\xa2tc"
    assert split(wire) == (b"", meta, False)
    assert _decode(wire) == (b"", meta, False)
    assert len(wire) <= MAX_MAP_SIZE


@given(st.floats(0.0, MAX_REMAINING))
@example(0.0)
@example(-0.0)
@example(MAX_REMAINING)
@example(5e-324)
def test_deadline_fast_path_is_msgpack(remaining: float) -> None:
    assert encode(ChirpMeta(remaining)) == pack({"tc": 1, "dl": remaining})


@given(st.binary(min_size=8, max_size=8))
@example(struct.pack(">d", math.nan))
@example(struct.pack(">d", math.inf))
@example(struct.pack(">d", -math.inf))
@example(struct.pack(">d", -1.0))
@example(struct.pack(">d", math.nextafter(MAX_REMAINING, math.inf)))
def test_deadline_fast_path_in_split_agrees_with_decode(tail: bytes) -> None:
    header = b"\x82\xa2tc\x01\xa2dl\xcb" + tail
    assert split(header) == _decode(header)


def test_largest_map_fits_the_size_cap() -> None:
    wide = "\U0001f600"  # 4 UTF-8 bytes
    meta = ChirpMeta(1.0, 255, ("f" * 45, 65535), ErrorInfo(wide * 64, wide * 1024, wide * 64))
    wire = encode(meta)
    assert len(wire) < 5000 < MAX_MAP_SIZE
    assert split(wire) == (b"", meta, False)


def test_encode_normalizes_what_a_reader_would_refuse() -> None:
    assert split(encode(ChirpMeta(-3.0)))[1] == ChirpMeta(0.0)
    assert split(encode(ChirpMeta(-math.inf)))[1] == ChirpMeta(0.0)
    assert split(encode(ChirpMeta(1e9)))[1] == ChirpMeta(MAX_REMAINING)
    assert encode(ChirpMeta(math.inf)) == encode(ChirpMeta())  # Trio's "no deadline"
    assert encode(ChirpMeta(3)) == encode(ChirpMeta(3.0))

    long = ErrorInfo("k" * 100, "t" * 5000, "h" * 100)
    assert split(encode(ChirpMeta(error=long)))[1] == ChirpMeta(
        error=ErrorInfo("k" * 64, "t" * 1024, "h" * 64)
    )
    # Lone surrogates (surrogateescape'd file names in exception texts) are replaced.
    odd = ErrorInfo("k\udcff", "bad \udc80 name", "h")
    assert split(encode(ChirpMeta(error=odd)))[1] == ChirpMeta(error=ErrorInfo("k?", "bad ? name", "h"))


@given(
    st.floats(allow_nan=False) | st.integers(-(10**9), 10**9),
    st.text(max_size=2000),
)
def test_encode_output_always_splits(remaining: float, text: str) -> None:
    meta = ChirpMeta(remaining, error=ErrorInfo(text, text, text))
    app, decoded, malformed = split(encode(meta))
    assert (app, malformed) == (b"", False)
    assert decoded is not None
    assert decoded.error is not None
    assert decoded.error.text == text[:1024]
    if remaining == math.inf:
        assert decoded.remaining is None
    else:
        assert decoded.remaining == min(max(float(remaining), 0.0), MAX_REMAINING)


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(ChirpMeta(math.nan), id="nan"),
        pytest.param(ChirpMeta(hops=256), id="hops-256"),
        pytest.param(ChirpMeta(hops=-1), id="hops-negative"),
        pytest.param(ChirpMeta(destination=("10.0.0.1", 0)), id="port-0"),
        pytest.param(ChirpMeta(destination=("10.0.0.1", 65536)), id="port-65536"),
        pytest.param(ChirpMeta(destination=("1" * 46, 1)), id="ip-46"),
    ],
)
def test_encode_refuses_callers_bugs(meta: ChirpMeta) -> None:
    with pytest.raises(ValueError, match="must"):
        encode(meta)


# -- add_to_header ---------------------------------------------------------------------------


def test_add_to_empty_header() -> None:
    meta = ChirpMeta(2.0, hops=1)
    assert add_to_header(b"", meta) == encode(meta)


def test_add_to_our_header_merges() -> None:
    old = encode(ChirpMeta(5.0, 2, ("10.0.0.1", 2998)))
    new = add_to_header(old, ChirpMeta(remaining=1.0))
    assert new is not None
    assert split(new)[1] == ChirpMeta(1.0, 2, ("10.0.0.1", 2998))

    new = add_to_header(old, ChirpMeta(hops=3, error=ErrorInfo("timeout", "t", "h:1")))
    assert new is not None
    assert split(new)[1] == ChirpMeta(5.0, 3, ("10.0.0.1", 2998), ErrorInfo("timeout", "t", "h:1"))

    everything = ChirpMeta(0.5, 9, ("::1", 7), ErrorInfo("a", "b", "c"))
    assert add_to_header(old, everything) == encode(everything)
    assert add_to_header(old, ChirpMeta()) == old


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"routing:42", id="text"),
        pytest.param(pack({"app": 1}), id="foreign-msgpack"),
        pytest.param(pack({"a": 1, "tc": 1}), id="marker-not-first"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b"\x00" * 32, id="libchirp-slot-sized"),
        pytest.param(ours(entry("hops", 256)), id="ours-malformed"),
        pytest.param(encode(ChirpMeta(1.0)) + b"\x00", id="ours-trailing"),
    ],
)
def test_add_to_foreign_header_is_none(header: bytes) -> None:
    assert add_to_header(header, ChirpMeta(remaining=1.0)) is None


@given(st.binary(min_size=1))
def test_add_to_arbitrary_header(header: bytes) -> None:
    result = add_to_header(header, ChirpMeta(remaining=1.0))
    _app, old, _malformed = split(header)
    if old is None:
        assert result is None
    else:
        assert result is not None
        assert split(result)[1] == ChirpMeta(1.0, old.hops, old.destination, old.error)


# -- split: not ours, valid variants ---------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x81", id="one-byte"),
        pytest.param(b"\x81\xa2t", id="three-bytes"),
        pytest.param(b"hello", id="text"),
        pytest.param(b"\x80", id="empty-map"),
        pytest.param(b"\x90\xa2tc\x01", id="array"),
        pytest.param(b"\x81\xa3tcx\x01", id="other-key"),
        pytest.param(b"\x81\xa2TC\x01", id="upper-case"),
        pytest.param(b"\x81\xd9\x02tc\x01", id="marker-as-str8"),
        pytest.param(b"\xde\x00\x01\xa2tc\x01", id="map16"),
        pytest.param(b"\x81\xc4\x02tc\x01", id="marker-as-bin"),
        pytest.param(pack({"a": 1, "tc": 1}), id="marker-not-first"),
        pytest.param(b"\x00\xa2tc\x01", id="no-map-byte"),
    ],
)
def test_split_not_ours(header: bytes) -> None:
    result = split(header)
    assert result == (header, None, False)
    assert result[0] is header


@pytest.mark.parametrize(
    ("header", "meta"),
    [
        pytest.param(ours(version=b"\x02"), ChirpMeta(), id="version-2"),
        pytest.param(ours(version=b"\xcf" + b"\xff" * 8), ChirpMeta(), id="version-uint64-max"),
        pytest.param(ours(entry("dl", 3)), ChirpMeta(3.0), id="dl-int"),
        pytest.param(ours(b"\xa2dl\xca" + struct.pack(">f", 0.5)), ChirpMeta(0.5), id="dl-float32"),
        pytest.param(ours(entry("dl", 0.0)), ChirpMeta(0.0), id="dl-zero"),
        pytest.param(ours(entry("dl", MAX_REMAINING)), ChirpMeta(MAX_REMAINING), id="dl-max"),
        pytest.param(ours(entry("hops", 0)), ChirpMeta(), id="hops-explicit-0"),
        pytest.param(ours(entry("hops", 255)), ChirpMeta(hops=255), id="hops-255"),
        pytest.param(ours(entry("dest", ["", 1])), ChirpMeta(destination=("", 1)), id="dest-empty-ip"),
        pytest.param(
            ours(entry("hops", 1), entry("dl", 2.0)), ChirpMeta(2.0, hops=1), id="keys-in-another-order"
        ),
        pytest.param(
            ours(entry("future", {"a": [1, {"b": None}]}), entry("dl", 1.0), entry("x", b"")),
            ChirpMeta(1.0),
            id="unknown-keys-ignored",
        ),
        pytest.param(
            ours(entry("error", {"type": "a", "text": "b", "hop": "c", "more": 1})),
            ChirpMeta(error=ErrorInfo("a", "b", "c")),
            id="unknown-error-key-ignored",
        ),
        pytest.param(ours(*[entry(f"k{i}", i) for i in range(14)]), ChirpMeta(), id="fifteen-keys"),
    ],
)
def test_split_valid_variants(header: bytes, meta: ChirpMeta) -> None:
    assert split(header) == (b"", meta, False)
    assert_consistent(header)


# -- split: malformed ------------------------------------------------------------------------

_FULL = encode(ChirpMeta(2.5, 3, ("10.0.0.7", 2998), ErrorInfo("timeout", "no ACK", "10.0.0.7:2998")))
_OK_ERROR = {"type": "t", "text": "x", "hop": "h:1"}


_DROP = object()


def _error(**changes: Any) -> bytes:
    """Our map with an error map that differs from a valid one by ``changes`` (``_DROP``: key absent)."""
    fields: dict[str, Any] = {**_OK_ERROR, **changes}
    return ours(entry("error", {k: v for k, v in fields.items() if v is not _DROP}))


MALFORMED = [
    # truncated
    pytest.param(b"\x81\xa2tc", id="truncated-before-version"),
    pytest.param(b"\x82\xa2tc\x01", id="truncated-before-second-key"),
    pytest.param(b"\x82\xa2tc\x01\xa2dl\xcb\x3f\xf8", id="truncated-float"),
    pytest.param(b"\x82\xa2tc\x01\xa5ab", id="truncated-key"),
    pytest.param(_FULL[:-1], id="truncated-full-map"),
    pytest.param(ours(entry("dl", 1.0), count=3), id="count-too-high"),
    # version
    pytest.param(ours(version=b"\x00"), id="version-0"),
    pytest.param(ours(version=b"\xff"), id="version-negative"),
    pytest.param(ours(version=b"\xc3"), id="version-true"),
    pytest.param(ours(version=b"\xc0"), id="version-nil"),
    pytest.param(ours(version=pack(1.0)), id="version-float"),
    pytest.param(ours(version=pack("1")), id="version-str"),
    pytest.param(ours(version=pack([1])), id="version-array"),
    pytest.param(ours(version=pack({"v": 1})), id="version-map"),
    pytest.param(ours(version=b"\xc4\x00"), id="version-empty-bin"),
    pytest.param(ours(version=b"\xc1"), id="version-reserved-byte"),
    # dl
    pytest.param(ours(entry("dl", math.nan)), id="dl-nan"),
    pytest.param(ours(b"\xa2dl\xca" + struct.pack(">f", math.nan)), id="dl-float32-nan"),
    pytest.param(ours(entry("dl", math.inf)), id="dl-inf"),
    pytest.param(ours(entry("dl", -math.inf)), id="dl-minus-inf"),
    pytest.param(ours(entry("dl", -0.5)), id="dl-negative"),
    pytest.param(ours(entry("dl", -1)), id="dl-negative-int"),
    pytest.param(ours(entry("dl", math.nextafter(MAX_REMAINING, math.inf))), id="dl-above-max"),
    pytest.param(ours(entry("dl", 2**64 - 1)), id="dl-huge-int"),
    pytest.param(ours(entry("dl", True)), id="dl-true"),
    pytest.param(ours(entry("dl", None)), id="dl-nil"),
    pytest.param(ours(entry("dl", "1.0")), id="dl-str"),
    pytest.param(ours(entry("dl", [1.0])), id="dl-array"),
    pytest.param(ours(entry("dl", {"s": 1.0})), id="dl-nested-map"),
    pytest.param(ours(entry("dl", b"\x3f\xf8" + bytes(6))), id="dl-bin"),
    # hops
    pytest.param(ours(entry("hops", 256)), id="hops-256"),
    pytest.param(ours(entry("hops", -1)), id="hops-negative"),
    pytest.param(ours(entry("hops", 2**64 - 1)), id="hops-uint64-max"),
    pytest.param(ours(entry("hops", True)), id="hops-true"),
    pytest.param(ours(entry("hops", 1.0)), id="hops-float"),
    pytest.param(ours(entry("hops", "1")), id="hops-str"),
    # dest
    pytest.param(ours(entry("dest", [])), id="dest-empty"),
    pytest.param(ours(entry("dest", ["10.0.0.1"])), id="dest-one-item"),
    pytest.param(ours(entry("dest", ["10.0.0.1", 1, 2])), id="dest-three-items"),
    pytest.param(ours(entry("dest", ["10.0.0.1", 0])), id="dest-port-0"),
    pytest.param(ours(entry("dest", ["10.0.0.1", 65536])), id="dest-port-65536"),
    pytest.param(ours(entry("dest", ["10.0.0.1", -1])), id="dest-port-negative"),
    pytest.param(ours(entry("dest", ["10.0.0.1", True])), id="dest-port-true"),
    pytest.param(ours(entry("dest", ["10.0.0.1", 2998.0])), id="dest-port-float"),
    pytest.param(ours(entry("dest", ["10.0.0.1", "2998"])), id="dest-port-str"),
    pytest.param(ours(entry("dest", [167772161, 2998])), id="dest-ip-int"),
    pytest.param(ours(entry("dest", [None, 2998])), id="dest-ip-nil"),
    pytest.param(ours(entry("dest", [b"\x0a\x00\x00\x01", 2998])), id="dest-ip-bin"),
    pytest.param(ours(entry("dest", ["1" * 46, 2998])), id="dest-ip-46-chars"),
    pytest.param(ours(entry("dest", "10.0.0.1:2998")), id="dest-str"),
    pytest.param(ours(entry("dest", {"10.0.0.1": 2998, "x": 1})), id="dest-map-of-two"),
    pytest.param(ours(entry("dest", [["10.0.0.1"], 2998])), id="dest-nested-array"),
    # error
    pytest.param(ours(entry("error", "boom")), id="error-str"),
    pytest.param(ours(entry("error", ["t", "x", "h"])), id="error-array"),
    pytest.param(ours(entry("error", {})), id="error-empty-map"),
    pytest.param(_error(hop=_DROP), id="error-missing-hop"),
    pytest.param(_error(type=_DROP), id="error-missing-type"),
    pytest.param(_error(text=_DROP), id="error-missing-text"),
    pytest.param(_error(type=1), id="error-type-int"),
    pytest.param(_error(text=None), id="error-text-nil"),
    pytest.param(_error(hop=b"h:1"), id="error-hop-bin"),
    pytest.param(_error(text={"nested": "map"}), id="error-text-nested-map"),
    pytest.param(_error(text=["x"]), id="error-text-array"),
    pytest.param(_error(type="t" * 65), id="error-type-65-chars"),
    pytest.param(_error(text="x" * 1025), id="error-text-1025-chars"),
    pytest.param(_error(hop="h" * 65), id="error-hop-65-chars"),
    pytest.param(
        ours(b"\xa5error\x84" + b"".join(entry(k, v) for k, v in _OK_ERROR.items()) + entry("text", "y")),
        id="error-duplicate-key",
    ),
    pytest.param(
        ours(b"\xa5error\x84" + b"".join(entry(k, v) for k, v in _OK_ERROR.items()) + b"\x01\x02"),
        id="error-int-key",
    ),
    # claimed lengths far beyond the input
    pytest.param(ours(b"\xa2dl\xdb\xff\xff\xff\xff"), id="str32-huge"),
    pytest.param(ours(b"\xa1x\xda\xff\xff"), id="str16-huge"),
    pytest.param(ours(b"\xa1x\xc6\xff\xff\xff\xff"), id="bin32-huge"),
    pytest.param(ours(b"\xa1x\xdd\xff\xff\xff\xff"), id="array32-huge"),
    pytest.param(ours(b"\xa1x\xdf\xff\xff\xff\xff"), id="map32-huge"),
    pytest.param(ours(b"\xa1x\xc9\xff\xff\xff\xff\x01"), id="ext32-huge"),
    pytest.param(ours(b"\xdb\xff\xff\xff\xff"), id="key-str32-huge"),
    # over the decode limits (present in full, still refused)
    pytest.param(ours(entry("x", "y" * 4097)), id="str-over-4096-bytes"),
    pytest.param(ours(entry("x", list(range(17)))), id="array-over-16"),
    pytest.param(ours(entry("x", {str(i): i for i in range(17)})), id="nested-map-over-16"),
    pytest.param(
        ours(entry("x", "y" * 4000), entry("z", "y" * 4000), entry("w", "y" * 200)), id="map-over-8k"
    ),
    pytest.param(ours(b"\xa1x" + b"\x91" * 2000 + b"\xc0"), id="nested-2000-deep"),
    # trailing bytes
    pytest.param(encode(ChirpMeta(1.0)) + b"\x00", id="trailing-byte"),
    pytest.param(encode(ChirpMeta(1.0)) + b"\xc0", id="trailing-nil"),
    pytest.param(encode(ChirpMeta(1.0)) * 2, id="two-maps"),
    pytest.param(_FULL + b"\x81", id="trailing-after-full-map"),
    pytest.param(ours(entry("dl", 1.0), count=1), id="count-too-low"),
    # bin and ext values
    pytest.param(ours(entry("x", b"a")), id="bin-under-unknown-key"),
    pytest.param(ours(b"\xa1x\xd4\x05\x00"), id="fixext1"),
    pytest.param(ours(b"\xa1x\xc7\x00\x05"), id="ext8-empty"),
    pytest.param(ours(b"\xa1x\xd6\xff\x00\x00\x00\x00"), id="timestamp-ext"),
    # keys
    pytest.param(ours(b"\x01\x02"), id="int-key"),
    pytest.param(ours(b"\xc0\x02"), id="nil-key"),
    pytest.param(ours(b"\xc4\x00\x02"), id="empty-bin-key"),
    pytest.param(ours(b"\xc4\x02dl\xcb" + struct.pack(">d", 1.0)), id="bin-key-dl"),
    pytest.param(ours(b"\xcb" + bytes(8) + b"\x02"), id="float-key"),
    pytest.param(ours(b"\x91\x01\x02"), id="array-key"),
    pytest.param(ours(b"\x81\xa1a\x01\x02"), id="map-key"),
    pytest.param(ours(b"\xa2tc\x01"), id="duplicate-marker"),
    pytest.param(ours(b"\xa2tc\x02"), id="duplicate-marker-other-version"),
    pytest.param(ours(entry("dl", 1.0), entry("dl", 2.0)), id="duplicate-dl"),
    pytest.param(ours(entry("x", 1), entry("x", 1)), id="duplicate-unknown-key"),
    # text
    pytest.param(ours(b"\xa1x\xa1\xff"), id="invalid-utf8-value"),
    pytest.param(ours(b"\xa1\xff\x01"), id="invalid-utf8-key"),
    pytest.param(ours(b"\xa1x\xa3\xed\xa0\x80"), id="utf8-encoded-surrogate"),
]


@pytest.mark.parametrize("header", MALFORMED)
def test_split_malformed(header: bytes) -> None:
    result = split(header)
    assert result == (header, None, True)
    assert result[0] is header


def test_oversized_marker_header_is_malformed_without_decoding() -> None:
    header = ours(entry("x", "y" * 60000))
    assert len(header) > MAX_MAP_SIZE
    assert split(header) == (header, None, True)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(ours(b"\xa1x" + (b"\x9f" * 3 + b"\x90" * 15) * 450)[:MAX_MAP_SIZE], id="8k-of-lists"),
        pytest.param(ours(b"\xa1x" + b"\x91" * 1000 + b"\xc0"), id="nested-1000"),
        pytest.param(ours(b"\xa1x" + b"\xdc\xff\xff" + b"\x90" * 65000), id="64k-of-lists"),
    ],
)
def test_split_memory_is_bounded(header: bytes) -> None:
    tracemalloc.start()
    try:
        split(header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


# -- split: any bytes ------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_split_any_bytes(header: bytes) -> None:
    assert_consistent(header)


@given(st.sampled_from(MARKER_PREFIXES), st.binary(max_size=200))
def test_split_any_bytes_after_the_marker(prefix: bytes, tail: bytes) -> None:
    assert_consistent(prefix + tail)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from(["dl", "hops", "dest", "error", "x"]) | st.text(max_size=5)


@given(st.integers(-2, 3) | st.floats() | st.none(), st.dictionaries(_keys, _values, max_size=5))
def test_split_any_map_with_the_marker(version: Any, rest: dict[str, Any]) -> None:
    assert_consistent(pack({"tc": version, **{k: v for k, v in rest.items() if k != "tc"}}))


@given(metas, st.data())
def test_split_mutated_encodings(meta: ChirpMeta, data: st.DataObject) -> None:
    wire = bytearray(encode(meta))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    assert_consistent(bytes(wire))


def test_the_size_limit_at_exactly_its_maximum() -> None:
    """A map of exactly ``MAX_MAP_SIZE`` bytes is read; one byte more is malformed."""

    def sized(total: int) -> bytes:
        first = entry("a", "y" * 3000), entry("b", "y" * 3000)  # unknown keys: at most 4 KiB each
        rest = total - len(ours(*first, entry("c", ""))) - 2  # a str16 header: 2 bytes more than ""
        header = ours(*first, entry("c", "y" * rest))
        assert len(header) == total
        return header

    assert MAX_MAP_SIZE == 8192
    at_limit = sized(MAX_MAP_SIZE)
    assert split(at_limit) == (b"", ChirpMeta(), False)
    over = sized(MAX_MAP_SIZE + 1)
    assert split(over) == (over, None, True)


def test_hops_and_remaining_at_their_limits() -> None:
    assert (MAX_HOPS, MAX_REMAINING) == (255, 1e7)
    for hops in (0, MAX_HOPS):
        assert split(encode(ChirpMeta(hops=hops)))[1] == ChirpMeta(hops=hops)
        assert split(ours(entry("hops", hops)))[1] == ChirpMeta(hops=hops)  # 0 written out is read too
    for bad in (-1, MAX_HOPS + 1):
        with pytest.raises(ValueError, match="hops must be an int"):
            encode(ChirpMeta(hops=bad))
        header = ours(entry("hops", bad))
        assert split(header) == (header, None, True)
    assert split(ours(entry("dl", MAX_REMAINING)))[1] == ChirpMeta(MAX_REMAINING)
    too_far = ours(entry("dl", MAX_REMAINING * 1.0000001))
    assert split(too_far) == (too_far, None, True)


def test_merging_keeps_a_request_flag_from_either_side() -> None:
    asked = encode(ChirpMeta(request=True))
    merged = add_to_header(asked, ChirpMeta(remaining=1.0))
    assert merged is not None
    assert split(merged)[1] == ChirpMeta(1.0, request=True)
    merged = add_to_header(encode(ChirpMeta(2.0)), ChirpMeta(request=True))
    assert merged is not None
    assert split(merged)[1] == ChirpMeta(2.0, request=True)


def test_a_deadline_with_a_destination_keeps_both() -> None:
    meta = ChirpMeta(1.5, destination=("10.0.0.9", 2998))
    assert split(encode(meta)) == (b"", meta, False)
    assert len(encode(meta)) > len(encode(ChirpMeta(1.5)))  # not the deadline-only fast path


def test_a_remaining_given_apart_encodes_as_if_it_were_the_metas() -> None:
    # The writer stamps each frame's remaining time without a new ChirpMeta per frame.
    metas = [
        ChirpMeta(),
        ChirpMeta(remaining=9.0),
        ChirpMeta(hops=2, destination=("10.0.0.7", 2998)),
        ChirpMeta(request=True),
        ChirpMeta(error=ErrorInfo("timeout", "late", "10.0.0.1:1")),
    ]
    for meta in metas:
        for remaining in (0.0, 0.25, 3.5, MAX_REMAINING + 1):
            stamped = dataclasses.replace(meta, remaining=remaining)
            assert encode(meta, remaining) == encode(stamped)
            assert add_to_header(b"", meta, remaining) == add_to_header(b"", stamped)
            forwarded = encode(ChirpMeta(remaining=60.0, hops=1))  # a router's received map
            assert add_to_header(forwarded, meta, remaining) == add_to_header(forwarded, stamped)
        assert encode(meta, None) == encode(meta)


def test_a_received_deadline_alone_is_an_ordinary_frozen_meta() -> None:
    # split() builds it through the slots' descriptors, not ChirpMeta(dl): same object.
    _, meta, malformed = split(encode(ChirpMeta(remaining=2.5)))
    assert not malformed
    assert type(meta) is ChirpMeta
    assert (meta, hash(meta), repr(meta)) == (ChirpMeta(2.5), hash(ChirpMeta(2.5)), repr(ChirpMeta(2.5)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.hops = 1  # type: ignore[misc]
