"""trio_chirp's own metadata, carried in the header bytes of a libchirp frame.

libchirp treats a frame's header as opaque bytes for upper-layer protocols, and most
messages leave it empty. Between trio_chirp peers that room carries what a message needs
on its way and libchirp has no field for: a travelling deadline, a hop count, a
destination for routers, and error responses. libchirp itself never looks inside, so a
libchirp peer relays, delivers and acknowledges these frames as usual.

Wire form
---------

The header is one msgpack map whose *first* key is the marker string ``"tc"`` with the
format version as its value (``VERSION``, currently 1)::

    {"tc": 1, "dl": 2.5, "hops": 1, "dest": ["10.0.0.7", 2998],
     "error": {"type": "timeout", "text": "no ACK in 5 s", "hop": "10.0.0.7:2998"}}

Every key after the marker is optional:

``"dl"`` (float, finite, 0 <= dl <= 1e7)
    Seconds left until the message's deadline, stamped by the sender when it serializes
    the frame. A *relative* duration because peers' clocks are not synchronized: the
    receiver adds it to its own clock, so only the (short) transit time is lost. 1e7 s
    (about 116 days) bounds what a peer may ask of us; integers are accepted too, since
    some msgpack packers (JavaScript's) write integral doubles as ints.
``"hops"`` (int, 0..255)
    How many routers the message has passed; lets a router drop a message that loops.
    Omitted when 0.
``"dest"`` ([ip: str of at most 45 chars, port: int 1..65535])
    Where a producer wants a router to forward the message (45 is the longest textual
    IPv6 address, with an embedded IPv4 part).
``"error"`` ({"type": str <= 64 chars, "text": str <= 1024 chars, "hop": str <= 64 chars})
    The message is an error response: which class of failure (``type``), its message
    (``text``) and which hop (``"addr:port"``) failed.
``"rq"`` (bool, only ``true`` is written)
    The message is a ``request()``: its sender waits for a response, so a hop that fails
    answers it with an error response even when it asked for no ACK. Omitted when false.

Unknown keys (str) are ignored, whatever their value, so a later version can add keys
without older peers discarding the rest. The version is an int >= 1; a higher version is
read as version 1 (same rule: additions only). String limits are in characters, as
Python counts them. Whatever the key, a reader also refuses: a map longer than
``MAX_MAP_SIZE`` (8 KiB) or with more than 15 keys (the top level must be a fixmap),
strings over 4096 UTF-8 bytes or not valid UTF-8, arrays and nested maps over 16 items,
non-empty bin values and all ext values.

Why a marker, and why it must come first: most headers are empty or belong to an
application, and every received frame is tested. A fixmap byte (``0x81``..``0x8f``)
followed by ``b"\\xa2tc"`` (the fixstr ``"tc"``) is recognized in a few byte comparisons,
with no msgpack call for a header that is not ours.

Ours and malformed: a header that carries the marker but is not a valid map of this form
(truncated, trailing bytes, wrong types, out-of-range values, duplicate or non-str keys,
bin or ext values, longer than ``MAX_MAP_SIZE``) is *malformed*. :func:`split` reports it
and returns the header untouched with no metadata: the caller counts it and delivers the
message as a plain one, with no deadline. Nothing here raises on received bytes.

Sending: the map travels only when the application's header is empty (or is already our
map, which is then merged). An application's own header is never wrapped or altered; a
message with one simply carries no metadata (:func:`add_to_header` returns ``None``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeGuard, final

import msgpack

__all__ = [
    "MAX_ERROR_KIND",
    "MAX_ERROR_TEXT",
    "MAX_HOPS",
    "MAX_IP_LEN",
    "MAX_MAP_SIZE",
    "MAX_REMAINING",
    "VERSION",
    "ChirpMeta",
    "ErrorInfo",
    "add_to_header",
    "encode",
    "split",
]

VERSION: Final = 1
"""The format version we write; readers accept any int >= 1 (later versions only add keys)."""

MAX_REMAINING: Final = 1e7
"""Largest ``"dl"`` in seconds (about 116 days); a sender clamps to it, a reader refuses more."""

MAX_HOPS: Final = 255
MAX_IP_LEN: Final = 45
"""The longest textual IP address (IPv6 with an embedded IPv4 part)."""

MAX_ERROR_KIND: Final = 64
"""Limit in characters for ``error.type`` and ``error.hop``."""

MAX_ERROR_TEXT: Final = 1024
"""Limit in characters for ``error.text``."""

MAX_MAP_SIZE: Final = 8192
"""Longest map, in bytes, a reader decodes; a longer one is malformed.

The longest map :func:`encode` can write is under 5 KB (all fields at their limits, the
error strings in 4-byte characters). The cap bounds what a hostile header costs: msgpack
builds up to about 70 bytes of Python objects per input byte (a byte of ``0x90`` is an
empty list), so 64 KiB of header could otherwise take some 5 MB to reject.
"""


@final
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error response: which class of failure, its text, and which hop (``"addr:port"``) failed."""

    kind: str
    text: str
    hop: str


@final
@dataclass(frozen=True, slots=True)
class ChirpMeta:
    """What travels in our header map; the defaults are what an absent key means.

    Not validated on construction (it is built per frame); :func:`encode` checks it.
    """

    remaining: float | None = None
    """Seconds until the deadline, or ``None`` for no deadline."""
    hops: int = 0
    destination: tuple[str, int] | None = None
    error: ErrorInfo | None = None
    request: bool = False
    """The sender waits for a response (``request()``)."""


_new = object.__new__
_set_fields = [
    ChirpMeta.__dict__[name].__set__ for name in ("remaining", "hops", "destination", "error", "request")
]


def _deadline_only(remaining: float) -> ChirpMeta:
    """``ChirpMeta(remaining)`` written through the slots' own descriptors: what every received
    frame with a deadline builds, at about 60 % of the frozen dataclass's ``__init__``."""
    meta: ChirpMeta = _new(ChirpMeta)
    set_remaining, set_hops, set_destination, set_error, set_request = _set_fields
    set_remaining(meta, remaining)
    set_hops(meta, 0)
    set_destination(meta, None)
    set_error(meta, None)
    set_request(meta, False)
    return meta


# -- encoding --------------------------------------------------------------------------------

_DL_ONLY: Final = struct.Struct(">9sd")
_DL_ONLY_PREFIX: Final = b"\x82\xa2tc" + bytes((VERSION,)) + b"\xa2dl\xcb"
"""``{"tc": 1, "dl": <float64>}`` up to the float: fixmap(2), "tc", 1, "dl", float64 tag.

The common case (a deadline and nothing else) is assembled with one ``struct`` call,
several times faster than ``msgpack.packb``; the tests check both give identical bytes.
"""


def _remaining_for_wire(remaining: float) -> float | None:
    """Clamp into the range a reader accepts; ``+inf`` (Trio's "no deadline") sends none."""
    remaining = float(remaining)
    if remaining != remaining:
        raise ValueError("remaining must not be NaN")
    if remaining == math.inf:
        return None
    # An expired deadline travels as 0 (the receiver sees it expired), never as negative.
    return min(max(remaining, 0.0), MAX_REMAINING)


def _clean(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and made encodable as strict UTF-8.

    Error texts come from exception messages, which may hold lone surrogates (from
    surrogateescape'd file names); replacing them keeps the map decodable.
    """
    if not isinstance(text, str):
        raise TypeError(f"error fields must be str, got {type(text).__name__}")
    text = text[:limit]
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def encode(meta: ChirpMeta, remaining: float | None = None) -> bytes:
    """Our header map for ``meta``: marker first, absent fields (and ``hops == 0``) omitted.

    ``remaining``, when given, is sent instead of ``meta.remaining``: the writer stamps
    every frame with its own, and a new ``ChirpMeta`` per frame (``dataclasses.replace``)
    cost more than the rest of the map.

    Values a reader would refuse are fixed where that is meaningful (``remaining`` is
    clamped into 0..1e7, ``+inf`` sends no deadline; error strings are truncated) and
    refused with ``ValueError``/``TypeError`` where it is a caller's bug (NaN, hops out
    of 0..255, a bad destination). The result is always accepted by :func:`split`.
    """
    if remaining is None:
        remaining = meta.remaining
    hops = meta.hops
    if remaining is not None:
        if (
            not hops
            and meta.destination is None
            and meta.error is None
            and not meta.request
            and 0.0 <= remaining <= MAX_REMAINING
        ):
            return _DL_ONLY.pack(_DL_ONLY_PREFIX, remaining)  # the common case, see _DL_ONLY_PREFIX
        remaining = _remaining_for_wire(remaining)

    fields: dict[str, Any] = {"tc": VERSION}
    if remaining is not None:
        fields["dl"] = remaining
    if hops:
        if type(hops) is not int or not 0 <= hops <= MAX_HOPS:
            raise ValueError(f"hops must be an int in 0..{MAX_HOPS}, got {hops!r}")
        fields["hops"] = hops
    if meta.destination is not None:
        ip, port = meta.destination
        if type(ip) is not str or len(ip) > MAX_IP_LEN:
            raise ValueError(f"destination ip must be a str of at most {MAX_IP_LEN} chars, got {ip!r}")
        if type(port) is not int or not 1 <= port <= 0xFFFF:
            raise ValueError(f"destination port must be an int in 1..65535, got {port!r}")
        fields["dest"] = [ip, port]
    if meta.error is not None:
        err = meta.error
        fields["error"] = {
            "type": _clean(err.kind, MAX_ERROR_KIND),
            "text": _clean(err.text, MAX_ERROR_TEXT),
            "hop": _clean(err.hop, MAX_ERROR_KIND),
        }
    if meta.request:
        fields["rq"] = True
    return msgpack.packb(fields, use_bin_type=True, use_single_float=False)


def add_to_header(user_header: bytes, meta: ChirpMeta, remaining: float | None = None) -> bytes | None:
    """The header to send so that ``meta`` travels, or ``None`` when it cannot.

    ``remaining``, when given, stands for ``meta.remaining`` (see :func:`encode`).
    Empty header: our map. Already our (valid) map, e.g. a router forwarding a received
    message: merged, the fields ``meta`` sets winning (``hops`` counts as set when
    non-zero). Anything else belongs to the application and is never altered: ``None``
    tells the caller to send it as it is, without metadata.
    """
    if not user_header:
        return encode(meta, remaining)
    app_header, old, _malformed = split(user_header)
    if old is None or app_header:
        return None
    if remaining is None:
        remaining = meta.remaining
    merged = ChirpMeta(
        remaining=old.remaining if remaining is None else remaining,
        hops=meta.hops or old.hops,
        destination=old.destination if meta.destination is None else meta.destination,
        error=old.error if meta.error is None else meta.error,
        request=meta.request or old.request,
    )
    return encode(merged)


# -- decoding --------------------------------------------------------------------------------

_MAX_STR_BYTES: Final = 4 * MAX_ERROR_TEXT
"""The longest legal string in UTF-8 bytes; also bounds strings under unknown keys."""

_MAX_CONTAINER: Final = 16
"""Array and map length limit (``dest`` has 2 items, ``error`` 3 keys, the top map <= 15)."""


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    # max_ext_len=0 refuses every ext with data; this refuses the empty ones too.
    raise ValueError("ext types are not allowed in a trio_chirp header")


def _unpack(header: bytes) -> Any:
    """Decode with limits that keep memory proportional to ``header``.

    msgpack preallocates containers from their announced length, so every length is
    capped; maps arrive as tuples of pairs (``object_pairs_hook``), which keeps
    duplicate keys visible and tells maps from arrays (lists).
    """
    return msgpack.unpackb(
        header,
        raw=False,
        strict_map_key=True,
        use_list=True,
        object_pairs_hook=tuple,
        ext_hook=_refuse_ext,
        max_str_len=_MAX_STR_BYTES,
        max_bin_len=0,
        max_array_len=_MAX_CONTAINER,
        max_map_len=_MAX_CONTAINER,
        max_ext_len=0,
    )


def _as_dict(pairs: tuple[tuple[Any, Any], ...]) -> dict[str, Any] | None:
    """The map as a dict, or ``None`` if a key is not a str or appears twice."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        return None
    for key in fields:
        if type(key) is not str:  # strict_map_key still lets bytes keys through
            return None
    return fields


def _short_str(value: object, limit: int) -> TypeGuard[str]:
    return type(value) is str and len(value) <= limit


def _validate(obj: Any) -> ChirpMeta | None:
    """The metadata in a decoded map, or ``None`` if anything breaks the spec above."""
    if type(obj) is not tuple:
        return None
    fields = _as_dict(obj)
    if fields is None:
        return None
    version = fields["tc"]  # present: split saw the marker as the first key
    if type(version) is not int or version < 1:
        return None

    remaining: float | None = None
    if "dl" in fields:
        dl = fields["dl"]
        if type(dl) is int:
            dl = float(dl)
        elif type(dl) is not float:
            return None
        if not 0.0 <= dl <= MAX_REMAINING:  # also refuses NaN
            return None
        remaining = dl

    hops = fields.get("hops", 0)
    if type(hops) is not int or not 0 <= hops <= MAX_HOPS:
        return None

    destination: tuple[str, int] | None = None
    if "dest" in fields:
        dest = fields["dest"]
        if type(dest) is not list or len(dest) != 2:
            return None
        ip, port = dest
        if not _short_str(ip, MAX_IP_LEN) or type(port) is not int or not 1 <= port <= 0xFFFF:
            return None
        destination = (ip, port)

    error: ErrorInfo | None = None
    if "error" in fields:
        raw = fields["error"]
        err = _as_dict(raw) if type(raw) is tuple else None
        if err is None:
            return None
        kind, text, hop = err.get("type"), err.get("text"), err.get("hop")
        if not (
            _short_str(kind, MAX_ERROR_KIND)
            and _short_str(text, MAX_ERROR_TEXT)
            and _short_str(hop, MAX_ERROR_KIND)
        ):
            return None
        error = ErrorInfo(kind, text, hop)

    request = fields.get("rq", False)
    if type(request) is not bool:
        return None

    return ChirpMeta(remaining, hops, destination, error, request)


def split(header: bytes) -> tuple[bytes, ChirpMeta | None, bool]:
    """Separate a received header into (application header, our metadata, malformed).

    * Not ours (no marker): ``(header, None, False)``; decided from four bytes, since
      this runs on every received frame.
    * Ours and valid: ``(b"", meta, False)``; the application sees an empty header.
    * Marker present, anything else wrong: ``(header, None, True)``; the caller counts
      it and delivers the header untouched, without a deadline.

    Never raises, whatever the bytes.
    """
    if (
        len(header) < 4
        or header[1] != 0xA2
        or header[2] != 0x74  # "t"
        or header[3] != 0x63  # "c"
        or not 0x81 <= header[0] <= 0x8F
    ):
        return header, None, False
    if len(header) == _DL_ONLY.size and header.startswith(_DL_ONLY_PREFIX):
        # The common case ({"tc": 1, "dl": x}, what encode() writes for a deadline alone)
        # without the msgpack call; the tests check it agrees with _decode.
        dl = _DL_ONLY.unpack(header)[1]
        if 0.0 <= dl <= MAX_REMAINING:
            return b"", _deadline_only(dl), False
        return header, None, True
    return _decode(header)


def _decode(header: bytes) -> tuple[bytes, ChirpMeta | None, bool]:
    """:func:`split`'s answer for a header that starts with the marker, by full decoding."""
    if len(header) > MAX_MAP_SIZE:
        return header, None, True
    try:
        obj = _unpack(header)  # also refuses trailing bytes (ExtraData)
    except Exception:
        # msgpack's errors are a zoo (ValueError subclasses, StackError, UnicodeDecodeError
        # ...); for received bytes every one of them just means "malformed".
        return header, None, True
    meta = _validate(obj)
    if meta is None:
        return header, None, True
    return b"", meta, False
