"""Unit tests of the node's request service (``_requests.Requests``) over a fake send.

Pinned here: a reply whose write failed (or was cancelled, or ran past the request's
deadline) releases the request without ACK, never with; a request with
``auto_release=False`` cancelled after its response arrived releases that response; error
responses go only to producers that understand and wait for them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from trio_chirp import ChirpTimeoutError, Config, ConnectionLostError, RemoteError
from trio_chirp._errors import ChirpError
from trio_chirp._header import ChirpMeta, ErrorInfo
from trio_chirp._message import Message, SendOptions, meta_of, received_message
from trio_chirp._requests import Requests

PEER = ("10.0.0.2", 2998)
IDENTITY = bytes(range(16))


class FakeSend:
    """The node's send: records what was sent, and fails, blocks or succeeds as told."""

    def __init__(self) -> None:
        self.sent: list[tuple[Message, bool, SendOptions]] = []
        self.fail: ChirpError | None = None
        self.block = False
        self.on_send: Callable[[Message], None] | None = None

    async def __call__(self, message: Message, synchronous: bool, options: SendOptions) -> None:
        self.sent.append((message, synchronous, options))
        if self.on_send is not None:
            self.on_send(message)
        if self.block:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail


class NothingInFlight:
    def awaiting_ack(self, key: tuple[str, int], identity: bytes) -> bool:
        return False

    def reading_of(self, key: tuple[str, int]) -> None:
        return None  # no connection: a request waits for its response's event

    def settle_in_flight(self, key: tuple[str, int], identity: bytes, error: ChirpError) -> bool:
        return False

    def peer_announced(self, key: tuple[str, int]) -> bool:
        return False  # as libchirp: only a frame with our map reads an error response


class QuietLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def limited(self, address: str, kind: str, what: str, msg: str, *args: object, **kw: object) -> None:
        self.lines.append(msg % args)


def service(send: FakeSend, **config: object) -> Requests:
    return Requests(Config(**config), send, NothingInFlight(), QuietLog())  # type: ignore[arg-type]


def asked() -> Message:
    """The request we send: its identity is the one the responses here carry."""
    message = Message(b"q", address=PEER[0], port=PEER[1])
    message.identity = IDENTITY
    return message


def received(
    data: bytes = b"q", *, meta: ChirpMeta | None = None, ack: bool = True, deadline: float | None = None
) -> tuple[Message, list[bool]]:
    releases: list[bool] = []
    msg = received_message(
        IDENTITY, 1, b"", data, PEER[0], PEER[1], b"\0" * 16, ack,
        lambda m, ack: releases.append(ack), deadline, meta, 6,
    )  # fmt: skip
    return msg, releases


@pytest.mark.parametrize("error", [ConnectionLostError("gone"), ChirpTimeoutError("slow")])
async def test_a_reply_whose_write_failed_releases_the_request_without_ack(error: ChirpError) -> None:
    send = FakeSend()
    send.fail = error
    requests = service(send)
    request, releases = received()
    with pytest.raises(type(error)):
        await requests.reply(request, b"answer")
    assert releases == [False]
    [(response, synchronous, options)] = send.sent
    assert (response.data, response.identity, response.address, response.port) == (b"answer", IDENTITY, *PEER)
    assert not synchronous
    assert options.wait_until_written
    assert not options.deadline_travels


async def test_a_reply_cancelled_while_writing_releases_the_request_without_ack() -> None:
    send = FakeSend()
    send.block = True
    requests = service(send)
    request, releases = received()
    with trio.move_on_after(0):
        await requests.reply(request, b"answer")
    assert releases == [False]


async def test_a_reply_past_the_requests_deadline_fails_and_never_acks(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    send.block = True
    requests = service(send)
    start = trio.current_time()
    request, releases = received(deadline=start + 0.25)
    with pytest.raises(ChirpTimeoutError, match="deadline passed before the response was written"):
        await requests.reply(request, b"answer")
    assert trio.current_time() == pytest.approx(start + 0.25)
    assert releases == [False]


async def test_a_written_reply_releases_the_request_with_ack() -> None:
    send = FakeSend()
    requests = service(send)
    request, releases = received()
    await requests.reply(request, b"answer", header=b"h")
    assert releases == [True]
    assert send.sent[0][0].header == b"h"


async def test_an_auto_release_false_request_cancelled_after_its_response_arrived_releases_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    requests = service(send, timeout=5.0)
    response, releases = received(b"answer")

    def answer(message: Message) -> None:
        assert requests.offer(response)  # the response comes while the send is in flight

    send.on_send = answer
    send.block = True  # the ACK never comes: the request is cancelled waiting for it
    with trio.move_on_after(1.0) as scope:
        await requests.request(asked(), synchronous=True, auto_release=False)
    assert scope.cancelled_caught
    assert releases == [True]  # nobody will take it: released here
    assert len(requests.table) == 0
    assert requests.table.completed == 0


async def test_an_auto_release_false_response_is_returned_unreleased() -> None:
    send = FakeSend()
    requests = service(send, timeout=5.0)
    response, releases = received(b"answer")
    send.on_send = lambda m: requests.offer(response)  # type: ignore[func-returns-value]
    got = await requests.request(asked(), synchronous=True, auto_release=False)
    assert got is response
    assert releases == []
    assert requests.table.completed == 1
    assert [options.meta for _, _, options in send.sent] == [ChirpMeta(request=True, destination=None)]
    got.release()


async def test_a_request_without_a_response_times_out_at_config_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    requests = service(send, timeout=2.0)
    start = trio.current_time()
    with pytest.raises(ChirpTimeoutError, match=r"no response within timeout=2\.0s"):
        await requests.request(asked(), synchronous=False, auto_release=True)
    assert trio.current_time() == pytest.approx(start + 2.0)
    assert (requests.table.failed, requests.table.completed, len(requests.table)) == (1, 0, 0)


@pytest.mark.parametrize(
    ("meta", "ack", "answers"),
    [
        (None, True, False),  # no map: it would take an error response for an empty reply
        (ChirpMeta(), False, False),  # nobody waits for it
        (ChirpMeta(), True, True),
        (ChirpMeta(request=True), False, True),
    ],
)
async def test_an_error_response_goes_only_where_it_is_understood_and_awaited(
    meta: ChirpMeta | None, ack: bool, answers: bool
) -> None:
    send = FakeSend()
    requests = service(send)
    msg, releases = received(meta=meta, ack=ack)
    assert requests.can_answer_with_error(msg) is answers
    assert await requests.fail_message(msg, ValueError("bad"), "worker 1") is answers
    assert releases == [answers]  # with ACK only after an error response
    assert requests.error_responses_out == int(answers)
    if answers:
        [(sent, synchronous, options)] = send.sent
        assert (sent.data, sent.identity, synchronous) == (b"", IDENTITY, False)
        assert options.meta == ChirpMeta(error=ErrorInfo(kind="ValueError", text="bad", hop="worker 1"))
    else:
        assert send.sent == []


async def test_without_the_header_map_no_error_response_is_sent() -> None:
    send = FakeSend()
    requests = service(send, header_map=False)
    msg, releases = received(meta=ChirpMeta(request=True))
    assert await requests.fail_message(msg, ValueError("bad"), "here") is False
    assert releases == [False]


async def test_a_remote_error_passed_on_keeps_its_own_hop_and_the_hops_count() -> None:
    send = FakeSend()
    requests = service(send)
    msg, releases = received(meta=ChirpMeta(request=True, hops=2))
    downstream = RemoteError("failed downstream", kind="ChirpTimeoutError", text="slow", hop="10.0.0.9:2998")
    assert await requests.fail_message(msg, downstream, "router here")
    [(sent, _, options)] = send.sent
    assert options.meta == ChirpMeta(
        error=ErrorInfo(kind="ChirpTimeoutError", text="slow", hop="10.0.0.9:2998"), hops=2
    )
    assert releases == [True]
    assert meta_of(sent) is None  # what travels is in the options, not on the message


async def test_a_failing_error_response_releases_without_ack() -> None:
    send = FakeSend()
    send.fail = ConnectionLostError("gone")
    requests = service(send)
    msg, releases = received(meta=ChirpMeta(request=True))
    assert await requests.fail_message(msg, ValueError("bad"), "here") is False
    assert releases == [False]
    assert requests.error_responses_out == 0


class InFlight:
    """The remote table as requests see it: the synchronous message in flight, if any."""

    def __init__(self) -> None:
        self.identity: bytes | None = None
        self.settled: list[ChirpError] = []

    def awaiting_ack(self, key: tuple[str, int], identity: bytes) -> bool:
        return key == PEER and identity == self.identity

    def reading_of(self, key: tuple[str, int]) -> None:
        return None  # no connection: a request waits for its response's event

    def settle_in_flight(self, key: tuple[str, int], identity: bytes, error: ChirpError) -> bool:
        if key == PEER and identity == self.identity:
            self.settled.append(error)
            return True
        return False

    def peer_announced(self, key: tuple[str, int]) -> bool:
        return False


@pytest.mark.parametrize("response_first", [True, False])
async def test_acks_before_response_counts_only_a_response_that_came_after_the_ack(
    autojump_clock: trio.abc.Clock, response_first: bool
) -> None:
    send = FakeSend()
    in_flight = InFlight()
    requests = Requests(Config(timeout=5.0), send, in_flight, QuietLog())
    response, _ = received(b"answer")

    def answer(message: Message) -> None:
        in_flight.identity = message.identity  # in flight until send() returns (the ACK)
        if response_first:
            assert requests.offer(response)

    send.on_send = answer
    async with trio.open_nursery() as nursery:

        async def late() -> None:
            await trio.sleep(0.5)
            in_flight.identity = None
            assert requests.offer(response)

        if not response_first:
            nursery.start_soon(late)
        got = await requests.request(asked(), synchronous=True, auto_release=True)
    assert got is response
    assert requests.table.acks_before_response == (0 if response_first else 1)
    # An asynchronous request is never counted: it does not wait for the ACK.
    again, _ = received(b"again")
    send.on_send = lambda m: requests.offer(again)  # type: ignore[func-returns-value]
    await requests.request(asked(), synchronous=False, auto_release=True)
    assert requests.table.acks_before_response == (0 if response_first else 1)


async def test_after_a_cancelled_request_a_second_response_goes_to_the_application(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    requests = service(send, timeout=5.0)
    first, first_releases = received(b"first")
    send.on_send = lambda m: requests.offer(first)  # type: ignore[func-returns-value]
    send.block = True
    with trio.move_on_after(1.0):
        await requests.request(asked(), synchronous=True, auto_release=False)
    assert first_releases == [True]
    second, _ = received(b"second")
    # The identity was answered, not abandoned: nothing waits for a late response.
    assert not requests.table.active
    assert not requests.offer(second)
    second.release()
    assert requests.table.late_responses == 0


async def test_a_cancelled_request_sends_nothing_and_every_request_is_a_checkpoint() -> None:
    send = FakeSend()
    requests = service(send, timeout=5.0)
    with trio.CancelScope() as scope:
        scope.cancel()
        await requests.request(asked(), synchronous=True, auto_release=True)
    assert send.sent == []
    assert len(requests.table) == 0

    class Answering(FakeSend):
        async def __call__(self, message: Message, synchronous: bool, options: SendOptions) -> None:
            self.sent.append((message, synchronous, options))  # no checkpoint of its own
            assert requests.offer(response)

    response, _ = received(b"answer")
    requests._send = Answering()
    with trio.testing.assert_checkpoints():
        assert await requests.request(asked(), synchronous=True, auto_release=True) is response


async def test_send_response_writes_a_response_or_an_error_response() -> None:
    send = FakeSend()
    requests = service(send)
    response = Message(b"r", address=PEER[0], port=PEER[1])
    await requests.send_response(response)
    error = ErrorInfo(kind="X", text="y", hop="z")
    await requests.send_response(response, error=error)
    [(_, sync1, plain), (_, sync2, failed)] = send.sent
    assert (sync1, sync2) == (False, False)
    assert plain.wait_until_written
    assert not plain.deadline_travels
    assert plain.meta is None
    assert failed.meta == ChirpMeta(error=error)
    assert failed.wait_until_written
    assert not failed.deadline_travels


async def test_a_router_forgetting_an_identity_drops_its_late_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    requests = service(send, timeout=5.0)
    taken: list[Message] = []
    requests.expect(IDENTITY, PEER, taken.append)
    requests.forget(IDENTITY)
    late, releases = received(b"late")
    assert requests.offer(late)  # remembered as abandoned: dropped, not delivered
    assert (taken, releases, requests.table.late_responses) == ([], [True], 1)


async def test_error_responses_in_settle_the_send_in_flight_a_request_or_nothing() -> None:
    send = FakeSend()
    in_flight = InFlight()
    log = QuietLog()
    requests = Requests(Config(timeout=5.0), send, in_flight, log)
    info = ErrorInfo(kind="ValueError", text="bad", hop="w")
    # The synchronous send in flight fails with it.
    in_flight.identity = IDENTITY
    message, releases = received(b"", meta=ChirpMeta(error=info))
    requests.on_error_response(message, info)
    assert [type(e) for e in in_flight.settled] == [RemoteError]
    assert releases == [True]
    # Nothing matches: counted, logged, released.
    in_flight.identity = None
    message, releases = received(b"", meta=ChirpMeta(error=info))
    requests.on_error_response(message, info)
    assert releases == [True]
    assert (requests.error_responses_in, requests.unmatched_error_responses) == (2, 1)
    assert len(log.lines) == 1
    assert "matched no waiting send or request: ValueError: bad" in log.lines[0]
    # A request waiting for it fails with it.
    pending = requests.table.expect(IDENTITY, PEER)
    message, releases = received(b"", meta=ChirpMeta(error=info))
    requests.on_error_response(message, info)
    assert isinstance(pending.error, RemoteError)
    assert requests.unmatched_error_responses == 1


def test_the_abandoned_identities_are_bounded_at_4096() -> None:
    from trio_chirp._requests import ABANDONED_CAPACITY

    assert ABANDONED_CAPACITY == 4096


async def test_a_response_after_the_ack_but_before_the_request_looks_counts_as_acked_first() -> None:
    send = FakeSend()
    in_flight = InFlight()  # nothing in flight when the response comes: the ACK was first
    requests = Requests(Config(timeout=5.0), send, in_flight, QuietLog())
    response, _ = received(b"answer")
    send.on_send = lambda m: requests.offer(response)  # type: ignore[func-returns-value]
    assert await requests.request(asked(), synchronous=True, auto_release=True) is response
    assert requests.table.acks_before_response == 1


async def test_a_late_response_at_exactly_the_remembered_time_is_still_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    requests = service(FakeSend(), timeout=5.0)
    requests.expect(IDENTITY, PEER, lambda m: None)
    requests.forget(IDENTITY)
    await trio.sleep(5.0)
    late, releases = received(b"late")
    assert requests.offer(late)
    assert releases == [True]
    assert requests.table.late_responses == 1


async def test_expecting_an_abandoned_identity_again_forgets_the_abandoned_one() -> None:
    requests = service(FakeSend(), timeout=5.0)
    requests.expect(IDENTITY, PEER, lambda m: None)
    requests.forget(IDENTITY)  # abandoned
    taken: list[Message] = []
    requests.expect(IDENTITY, PEER, taken.append)  # the same identity asked again
    first, _ = received(b"first")
    assert requests.offer(first)
    assert taken == [first]
    first.release()
    second, _ = received(b"second")
    assert not requests.offer(second)  # not a late response of the abandoned one: the application's
    second.release()


async def test_an_error_response_that_cannot_be_written_in_time_releases_without_ack(
    autojump_clock: trio.abc.Clock,
) -> None:
    send = FakeSend()
    send.block = True
    requests = service(send, timeout=0.5)
    msg, releases = received(meta=ChirpMeta(request=True))
    start = trio.current_time()
    assert await requests.fail_message(msg, ValueError("bad"), "here") is False
    assert trio.current_time() - start == pytest.approx(0.5)
    assert releases == [False]
    [(_, synchronous, options)] = send.sent
    assert not synchronous
    assert options.wait_until_written
    assert not options.deadline_travels


async def test_no_error_response_is_still_a_checkpoint() -> None:
    requests = service(FakeSend())
    msg, _ = received(meta=None)
    with trio.testing.assert_checkpoints():
        assert not await requests.send_error_response(msg, ValueError("x"), "here")
    msg.release()


def test_describe_hop() -> None:
    from trio_chirp._requests import describe_hop

    assert (
        describe_hop("worker", 2998, bytes.fromhex("1a2b3c4d5e") + bytes(11))
        == "worker on port 2998 (node 1a2b3c4d)"
    )
