"""Unit tests of the request table (``_requests.RequestTable``): matching, abandoning, bounds."""

from __future__ import annotations

import pytest
import trio

from trio_chirp import MessageInUseError, RemoteError, ShutdownError
from trio_chirp._header import ChirpMeta, ErrorInfo
from trio_chirp._message import Message, received_message
from trio_chirp._requests import RequestTable

PEER = ("127.0.0.1", 3000)
OTHER = ("127.0.0.1", 3001)
IDENTITY = bytes(range(16))
_made: list[Message] = []


@pytest.fixture(autouse=True)
def _release_what_the_test_left() -> object:
    """Messages still holding a slot at the end are released (a leak would warn as an error)."""
    yield
    while _made:
        _made.pop().release(ack=False)


def response(
    key: tuple[str, int] = PEER, identity: bytes = IDENTITY, meta: ChirpMeta | None = None
) -> tuple[Message, list[bool]]:
    releases: list[bool] = []
    msg = received_message(
        identity, 1, b"", b"answer", key[0], key[1], b"\0" * 16, False,
        lambda m, ack: releases.append(ack), None, meta, 6,
    )  # fmt: skip
    _made.append(msg)
    return msg, releases


async def test_a_response_from_the_peer_asked_wakes_its_request() -> None:
    table = RequestTable(remember_for=5.0)
    pending = table.expect(IDENTITY, PEER, auto_release=False)
    assert table.active
    assert len(table) == 1
    msg, releases = response()
    assert table.offer(msg, awaiting_ack=True)
    assert pending.event.is_set()
    assert pending.response is msg
    assert pending.response_first
    assert releases == [], "auto_release=False keeps the slot for the caller"


async def test_an_auto_release_response_frees_its_slot_in_the_reader() -> None:
    table = RequestTable(remember_for=5.0)
    pending = table.expect(IDENTITY, PEER)
    msg, releases = response()
    assert table.offer(msg)
    assert pending.response is msg
    assert releases == [True]
    assert not pending.response_first


async def test_the_same_identity_from_another_peer_is_not_a_response() -> None:
    table = RequestTable(remember_for=5.0)
    pending = table.expect(IDENTITY, PEER)
    msg, _ = response(OTHER)
    assert not table.offer(msg)
    assert not pending.event.is_set()


async def test_a_forwarded_message_with_hops_is_never_a_response() -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    msg, _ = response(meta=ChirpMeta(hops=1))
    assert not table.offer(msg)


async def test_an_error_response_fails_the_request_and_is_released() -> None:
    table = RequestTable(remember_for=5.0)
    pending = table.expect(IDENTITY, PEER)
    msg, releases = response(meta=ChirpMeta(error=ErrorInfo(kind="ValueError", text="bad", hop="worker")))
    assert table.offer(msg)
    assert isinstance(pending.error, RemoteError)
    assert (pending.error.kind, pending.error.text, pending.error.hop) == ("ValueError", "bad", "worker")
    assert pending.response is None
    assert releases == [True]


async def test_a_second_response_goes_to_the_application() -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    first, _ = response()
    second, _ = response()
    assert table.offer(first)
    assert not table.offer(second)


async def test_expecting_an_identity_twice_is_refused() -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    with pytest.raises(MessageInUseError, match=IDENTITY.hex()):
        table.expect(IDENTITY, OTHER)


async def test_a_late_response_to_an_abandoned_request_is_released_and_counted() -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    table.forget(IDENTITY, abandoned=True)
    assert len(table) == 0
    assert table.active
    late, releases = response()
    assert table.offer(late)
    assert releases == [True]
    assert table.late_responses == 1
    again, _ = response()
    assert not table.offer(again), "remembered once: a second late one is a message"


async def test_an_abandoned_identity_is_remembered_only_for_its_time(autojump_clock: trio.abc.Clock) -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    table.forget(IDENTITY, abandoned=True)
    await trio.sleep(5.001)
    late, releases = response()
    assert not table.offer(late)
    assert releases == []
    assert table.late_responses == 0
    table.expect(IDENTITY, PEER)
    table.forget(IDENTITY, abandoned=True)
    await trio.sleep(4.999)
    in_time, _ = response()
    assert table.offer(in_time), "still within its time"


async def test_forgetting_without_abandoning_remembers_nothing() -> None:
    table = RequestTable(remember_for=5.0)
    table.expect(IDENTITY, PEER)
    table.forget(IDENTITY, abandoned=False)
    assert not table.active


async def test_when_full_the_oldest_abandoned_identity_goes_first() -> None:
    table = RequestTable(remember_for=5.0, capacity=2)
    ids = [bytes([i]) * 16 for i in range(3)]
    for identity in ids:
        table.expect(identity, PEER)
        table.forget(identity, abandoned=True)
    assert table.forgotten == 1
    oldest, _ = response(identity=ids[0])
    assert not table.offer(oldest)
    for identity in ids[1:]:
        late, _ = response(identity=identity)
        assert table.offer(late)
    assert table.late_responses == 2


async def test_a_router_hook_gets_the_response_and_the_entry_goes() -> None:
    table = RequestTable(remember_for=5.0)
    got: list[Message] = []
    table.expect(IDENTITY, PEER, got.append)
    msg, releases = response()
    assert table.offer(msg)
    assert got == [msg]
    assert releases == [], "the router releases it once it went back"
    assert len(table) == 0


def test_fail_waiting_fails_only_requests_still_waiting_for_their_response() -> None:
    """The node's close: a waiting request gets the error and is woken; a router's pending
    identity (it has a hook) and a request whose response is in are left alone."""
    table = RequestTable(remember_for=5.0)
    waiting = table.expect(b"w" * 16, ("10.0.0.2", 2998))
    answered = table.expect(b"a" * 16, ("10.0.0.2", 2998))
    answered.response = object()  # type: ignore[assignment]
    routed: list[object] = []
    table.expect(b"r" * 16, ("10.0.0.2", 2998), routed.append)
    table.fail_waiting(lambda: ShutdownError("closing"))
    assert isinstance(waiting.error, ShutdownError)
    assert waiting.event.is_set()
    assert answered.error is None
    assert not answered.event.is_set()
    assert routed == []
    assert len(table) == 3  # each request forgets its own identity when it returns
