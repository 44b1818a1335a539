"""The exception hierarchy: bases, exports, what generic handlers catch, and docs/errors.md
kept in step with trio_chirp/_errors.py."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import trio

import trio_chirp
from trio_chirp import _errors
from trio_chirp._errors import (
    CannotConnectError,
    ChirpError,
    ChirpTimeoutError,
    ConnectionLostError,
    MessageInUseError,
    MessageTooLargeError,
    ProtocolError,
    RemoteError,
    ShutdownError,
    TLSError,
)
from trio_chirp._protocol import FrameParser, decode_frame, encode_frame_head

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

BASES: dict[type[Exception], tuple[type[Exception], ...]] = {
    ChirpError: (Exception,),
    ProtocolError: (ChirpError,),
    MessageTooLargeError: (ProtocolError,),
    ChirpTimeoutError: (ChirpError, TimeoutError),
    CannotConnectError: (ChirpError, ConnectionError),
    ConnectionLostError: (ChirpError, ConnectionError),
    TLSError: (ChirpError,),
    ShutdownError: (ChirpError,),
    MessageInUseError: (ChirpError, RuntimeError),
    RemoteError: (ChirpError,),
}


def test_every_class_is_listed_here() -> None:
    assert set(_errors.__all__) == {cls.__name__ for cls in BASES}


@pytest.mark.parametrize("cls", BASES, ids=lambda c: c.__name__)
def test_bases(cls: type[Exception]) -> None:
    assert cls.__bases__ == BASES[cls]
    assert issubclass(cls, ChirpError)
    assert cls.__doc__
    assert cls.__doc__.strip()


@pytest.mark.parametrize("cls", BASES, ids=lambda c: c.__name__)
def test_exported_from_the_package(cls: type[Exception]) -> None:
    assert getattr(trio_chirp, cls.__name__) is cls
    assert cls.__module__ == "trio_chirp"  # tracebacks and reprs show the public path
    assert repr(cls("x")).startswith(f"{cls.__name__}(")
    assert f"trio_chirp.{cls.__name__}" in str(cls)


@pytest.mark.parametrize("cls", BASES, ids=lambda c: c.__name__)
def test_message_args_and_pickling(cls: type[Exception]) -> None:
    error = cls("what went wrong")
    assert str(error) == "what went wrong"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.args == ("what went wrong",)


def test_generic_handlers_catch_what_they_should() -> None:
    with pytest.raises(TimeoutError):
        raise ChirpTimeoutError("config.timeout")
    for cls in (CannotConnectError, ConnectionLostError):
        with pytest.raises(OSError, match="refused"):  # ConnectionError is an OSError
            raise cls("refused")
    with pytest.raises(RuntimeError):
        raise MessageInUseError("busy")
    with pytest.raises(ProtocolError):
        raise MessageTooLargeError("too big")


def test_chirp_timeout_and_trio_timeout_stay_apart() -> None:
    assert not issubclass(ChirpTimeoutError, trio.TooSlowError)
    assert not issubclass(trio.TooSlowError, ChirpError)  # `except ChirpError` keeps the caller's deadline


def test_protocol_layer_raises_these_classes() -> None:
    parser = FrameParser(10, expect_handshake=False)
    parser.receive_data(encode_frame_head(bytes(16), 1, 0, 0, 11))
    with pytest.raises(MessageTooLargeError):
        parser.next_event()
    with pytest.raises(ProtocolError) as info:
        decode_frame(b"short")
    assert type(info.value) is ProtocolError


# --- docs/errors.md ---------------------------------------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|$", line)
        if match:
            rows[match[1]] = [cell.strip() for cell in match[2].split("|")]
    return rows


def test_doc_table_matches_the_hierarchy() -> None:
    rows = _doc_rows()
    assert set(rows) == set(_errors.__all__)
    for cls, bases in BASES.items():
        documented_bases, when, libchirp = rows[cls.__name__]
        assert documented_bases == ", ".join(f"`{b.__name__}`" for b in bases), cls.__name__
        assert len(when) > 20, cls.__name__
        assert libchirp
