"""Defects a new user hit (issue 15), each pinned in memory under MockClock where timing matters."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from pathlib import Path

import mypy.api
import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, node

from trio_chirp import (
    Chirp,
    ChirpTimeoutError,
    Config,
    Message,
    MessageTooLargeError,
    RemoteError,
    Router,
    Workers,
    open_chirp,
)
from trio_chirp._protocol import (
    NEED_DATA,
    DataFrame,
    FrameParser,
    encode_announcement,
    encode_frame,
    encode_handshake,
)
from trio_chirp.testing import MemoryNetwork


def failing_handler(chirp: Chirp) -> Workers:
    async def handle(msg: Message) -> None:
        raise ValueError(f"cannot handle {msg.data!r}")

    return Workers(chirp, handle)


# --- 1. an asynchronous request through a router gets the worker's error response --------------


@pytest.mark.parametrize("synchronous", [True, False])
async def test_a_request_through_a_router_gets_the_workers_error_at_once(
    autojump_clock: trio.abc.Clock, synchronous: bool
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(failing_handler(worker).run)
        router = Router(router_node)
        await nursery.start(router.run)
        start = trio.current_time()
        with (
            pytest.raises(RemoteError, match=r"ValueError: cannot handle b'job'") as info,
            trio.fail_after(2),
        ):
            await producer.request(
                Message(b"job", address=B, port=PORT, destination=(C, PORT)), synchronous=synchronous
            )
        assert trio.current_time() == start, "at once, not at the deadline"
        assert info.value.hop.startswith(f"worker on port {PORT}")
        assert router_node.statistics().unmatched_error_responses == 0
        assert producer.statistics().requests_failed == 1
        assert producer.statistics().requests_pending == 0
        nursery.cancel_scope.cancel()


# --- 3. Config's yes/no fields take only True or False ------------------------------------------


@pytest.mark.parametrize("field", ["synchronous", "disable_encryption", "header_map"])
@pytest.mark.parametrize("value", ["false", "False", None, 0, 1, 2, "", b"0"])
def test_yes_no_fields_refuse_anything_but_a_bool(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"Config\.{field} must be a bool \(True or False\), got "):
        Config(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["synchronous", "disable_encryption", "header_map"])
def test_yes_no_fields_take_true_and_false(field: str) -> None:
    for value in (True, False):
        assert getattr(Config(**{field: value}), field) is value  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [("bind_v4", 1), ("bind_v6", 1), ("bind_v4", b"127.0.0.1")])
def test_bind_addresses_must_be_text(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"Config\.{field} must be an IP address literal \(str\) or None"):
        Config(**{field: value})  # type: ignore[arg-type]


# --- 2. a request whose handler returns without replying fails at once --------------------------


@pytest.mark.parametrize("synchronous", [True, False])
@pytest.mark.parametrize("via_router", [False, True])
async def test_a_handler_returning_without_reply_fails_the_request_at_once(
    autojump_clock: trio.abc.Clock, synchronous: bool, via_router: bool
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A) as producer,
        trio.open_nursery() as nursery,
    ):
        handled: list[bytes] = []

        async def forgetful(msg: Message) -> None:
            handled.append(msg.data)

        workers = Workers(worker, forgetful)
        await nursery.start(workers.run)
        await nursery.start(Router(router_node).run)
        target = (
            Message(b"job", address=B, port=PORT, destination=(C, PORT))
            if via_router
            else Message(b"job", address=C, port=PORT)
        )
        start = trio.current_time()
        with pytest.raises(RemoteError, match="returned without replying") as info, trio.fail_after(1):
            await producer.request(target, synchronous=synchronous)
        assert trio.current_time() == start, "at once, not at the deadline"
        assert info.value.kind == "ChirpError"
        assert handled == [b"job"]
        assert workers.statistics().failed == 1
        assert workers.statistics().error_responses == 1
        # A plain message (not a request) released by a returning handler is simply ACKed.
        await producer.send(Message(b"note", address=C, port=PORT))
        assert handled == [b"job", b"note"]
        assert workers.statistics().handled == 1
        nursery.cancel_scope.cancel()


# --- 5. a synchronous node whose one slot is held names that, not the peer -----------------------


async def test_a_held_receive_slot_is_named_as_the_cause_of_a_missing_ack(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as worker,
        node(net, A, timeout=1.0) as producer,  # synchronous: one receive slot per connection
        trio.open_nursery() as nursery,
    ):

        async def answer(msg: Message) -> None:
            await worker.reply(msg, b"answer to " + msg.data)

        await nursery.start(Workers(worker, answer).run)
        await producer.send(Message(b"one", address=B, port=PORT))  # its answer now holds our slot
        with pytest.raises(ChirpTimeoutError) as info:
            await producer.send(Message(b"two", address=B, port=PORT))
        text = str(info.value)
        assert "no ACK within timeout=1.0s" in text
        assert "this node's 1 receive slot(s) on that connection are held" in text
        assert "receive() and release()" in text
        held = await producer.receive()
        assert held.data == b"answer to one"
        held.release()
        nursery.cancel_scope.cancel()


async def test_a_missing_ack_with_free_slots_blames_no_slot(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B) as silent, node(net, A, timeout=1.0) as producer:
        with pytest.raises(ChirpTimeoutError) as info:
            await producer.send(Message(b"x", address=B, port=PORT))
        assert "no ACK within timeout=1.0s" in str(info.value)
        assert "receive slot" not in str(info.value)
        held = await silent.receive()
        held.release(ack=False)


# --- 6. smaller frictions ---------------------------------------------------------------------------


def test_the_library_prints_nothing_without_the_applications_logging_config() -> None:
    code = (
        "import logging, trio_chirp\n"
        "logging.getLogger('trio_chirp.node').warning('a warning nobody configured')\n"
        "logging.basicConfig(format='%(name)s: %(message)s')\n"
        "logging.getLogger('trio_chirp.node').warning('configured now')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stderr == "trio_chirp.node: configured now\n"


async def test_worker_failures_and_their_summary_go_to_the_workers_logger(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chirp")
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as worker,
        node(net, A, synchronous=False) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(failing_handler(worker).run)
        for i in range(3):
            await producer.send(Message(b"%d" % i, address=B, port=PORT))
        await trio.sleep(11)  # past the limiter's 10 s window: its summary line is written
        records = [(r.name, r.getMessage()) for r in caplog.records]
        workers = [text for name, text in records if name == "trio_chirp.workers"]
        assert len(workers) == 2, records
        assert workers[0].startswith("handler failed on message")
        assert workers[1] == f"2 more handler failures (ValueError) with {A} in the last 10 s"
        assert not [text for name, text in records if name == "trio_chirp.node"]
        nursery.cancel_scope.cancel()


async def test_a_router_says_a_failure_happened_downstream(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chirp")
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(failing_handler(worker).run)
        await nursery.start(Router(router_node).run)
        with pytest.raises(RemoteError), trio.fail_after(2):
            await producer.send(Message(b"job", address=B, port=PORT, destination=(C, PORT)))
        (line,) = [r.getMessage() for r in caplog.records if r.name == "trio_chirp.router"]
        assert "failed downstream at worker on port 2998" in line
        assert "ValueError: cannot handle b'job' (passed back)" in line
        assert "could not forward" not in line
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("expected", [True, False])
async def test_expected_errors_are_logged_without_a_traceback(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, expected: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chirp")
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as worker, node(net, A) as producer, trio.open_nursery() as n:

        async def lookup(msg: Message) -> None:
            raise KeyError(msg.data)

        workers = Workers(worker, lookup, expected_errors=(KeyError,) if expected else ())
        await n.start(workers.run)
        with pytest.raises(RemoteError, match="KeyError"):
            await producer.request(Message(b"nobody", address=B, port=PORT))
        (record,) = [r for r in caplog.records if r.name == "trio_chirp.workers"]
        assert (record.exc_info is None) is expected
        assert workers.statistics().failed == 1
        n.cancel_scope.cancel()


async def test_a_port_in_use_names_the_address_and_port() -> None:
    config = Config(port=0, bind_v6=None)
    async with open_chirp(config) as first:
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{first.port}: another") as info:
            async with open_chirp(Config(port=first.port, bind_v4="127.0.0.1", bind_v6=None)):
                pass  # pragma: no cover - the node cannot start
        assert info.value.errno == errno.EADDRINUSE


async def test_reply_takes_any_buffer_and_chirp_is_an_async_resource(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as worker, node(net, A) as producer, trio.open_nursery() as n:
        assert isinstance(worker, trio.abc.AsyncResource)

        async def answer(msg: Message) -> None:
            await worker.reply(msg, memoryview(bytearray(b"from a buffer")), header=bytearray(b"h"))

        await n.start(Workers(worker, answer).run)
        response = await producer.request(Message(b"q", address=B, port=PORT), auto_release=False)
        assert (response.data, response.header) == (b"from a buffer", b"h")
        await producer.flush(response.address, response.port)  # typed str and int: no narrowing needed
        response.release()
        n.cancel_scope.cancel()


def test_a_new_message_has_no_address_until_one_is_set() -> None:
    msg = Message(b"x")
    assert (msg.address, msg.port) == ("", 0)
    assert Message(b"x", address=None, port=None).address == ""


async def test_sending_a_message_without_an_address_says_so(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A) as producer:
        with pytest.raises(
            ValueError, match=r"message address is not set: the peer's IP address literal is needed"
        ):
            await producer.send(Message(b"x", port=PORT))


TYPED_APP = """
import trio
import trio_chirp
from trio_chirp import Chirp, Handler, Message, Route, Router, Workers


def make(chirp: Chirp) -> tuple[Workers, Router]:
    async def handle(msg: Message) -> None:
        await chirp.reply(msg, bytearray(b"answer"))
        await chirp.flush(msg.address, msg.port)

    handler: Handler = handle
    route: Route = lambda msg: (msg.address, msg.port + 1)
    resource: trio.abc.AsyncResource = chirp
    assert resource is chirp
    return Workers(chirp, handler), Router(chirp, route, allow=["10.0.0.0/8", ("127.0.0.1", 2998)])
"""


def test_an_app_using_received_addresses_type_checks(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(TYPED_APP)
    out, err, status = mypy.api.run(["--strict", "--no-incremental", str(app)])
    assert status == 0, out + err


# --- 7. a router forwards only where it is allowed to ------------------------------------------------


async def test_a_router_with_an_allow_list_refuses_other_destinations_before_dialling(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_chirp")
    net = MemoryNetwork()
    outside = "10.0.1.9"
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, outside, synchronous=False) as victim,
        node(net, B) as router_node,
        node(net, A) as producer,
        trio.open_nursery() as nursery,
    ):

        async def answer(msg: Message) -> None:
            await worker.reply(msg, b"ok")

        await nursery.start(Workers(worker, answer).run)
        router = Router(router_node, allow=["10.0.0.0/30"])
        await nursery.start(router.run)
        response = await producer.request(Message(b"in", address=B, port=PORT, destination=(C, PORT)))
        assert response.data == b"ok"
        start = trio.current_time()
        with pytest.raises(RemoteError, match=r"10\.0\.1\.9:2998 is not in this router's allow list"):
            await producer.request(Message(b"out", address=B, port=PORT, destination=(outside, PORT)))
        assert trio.current_time() == start
        assert router.statistics().failed == {"not allowed": 1}
        assert [r for r in router_node.statistics().remotes if r.address == outside] == []
        assert victim.statistics().connections == 0
        assert any(
            "not allowed" not in r.getMessage() and "allow list" in r.getMessage() for r in caplog.records
        )
        nursery.cancel_scope.cancel()


def test_allow_entries_are_checked_when_the_router_is_made() -> None:
    from trio_chirp._router import AllowList

    allow = AllowList(["10.0.0.0/8", ("::1", 2998)])
    assert allow.permits(("10.1.2.3", 1))
    assert allow.permits(("::1", 2998))
    assert not allow.permits(("::1", 2999))
    assert not allow.permits(("11.0.0.1", 2998))
    with pytest.raises(ValueError, match="is not an IP"):
        AllowList(["example.com"])
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
        AllowList([("10.0.0.1", 0)])
    with pytest.raises(TypeError, match=r"'ip/network' or \(address, port\)"):
        AllowList([42])  # type: ignore[list-item]


# --- 2 (second half). a plain synchronous send learns of a failure at once, between trio_chirp nodes


async def test_a_plain_synchronous_send_to_a_failing_handler_fails_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as worker,
        node(net, A, timeout=5.0) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(failing_handler(worker).run)
        start = trio.current_time()
        with pytest.raises(RemoteError, match="ValueError: cannot handle b'plain'"):
            await producer.send(Message(b"plain", address=B, port=PORT))  # no caller deadline: no map
        assert trio.current_time() == start, "at once, not at config.timeout"
        (remote,) = producer.statistics().remotes
        assert remote.trio_chirp_version == 1
        (back,) = worker.statistics().remotes
        assert back.trio_chirp_version == 1
        nursery.cancel_scope.cancel()


async def _raw_libchirp_producer(net: MemoryNetwork, ip: str, frame: bytes) -> list[object]:
    """A peer that speaks like libchirp (no announcement, no map): sends ``frame``, returns what came back."""
    from trio_chirp._protocol import NEED_DATA, FrameParser, encode_handshake

    stream, _ = await net.host(A).connect(ip, PORT)
    await stream.send_all(encode_handshake(PORT, bytes(range(16))) + frame)
    parser = FrameParser(1 << 20)
    events: list[object] = []
    with trio.move_on_after(10):
        while chunk := await stream.receive_some(65536):
            parser.receive_data(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                events.append(event)
    await stream.aclose()
    return events


@pytest.mark.parametrize("via_router", [False, True])
async def test_a_libchirp_producer_never_gets_an_error_response(
    autojump_clock: trio.abc.Clock, via_router: bool
) -> None:
    from trio_chirp._protocol import TYPE_REQ_ACK, DataFrame, FrameHead, encode_frame

    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(failing_handler(worker).run)
        router = Router(router_node, lambda msg: (C, PORT))
        await nursery.start(router.run)
        identity = bytes([7]) * 16
        frame = encode_frame(identity, 1, TYPE_REQ_ACK, b"", b"job")
        events = await _raw_libchirp_producer(net, B if via_router else C, frame)
        heads = [e for e in events if isinstance(e, FrameHead)]
        assert [e for e in events if isinstance(e, DataFrame)] == [], "no error response to libchirp"
        assert [h for h in heads if h.is_ack] == [], "and no ACK: never a false success"
        assert [h for h in heads if h.is_noop and h.identity != bytes(16)] != [], "it saw our announcement"
        if via_router:
            assert router.statistics().failed == {"next hop failed": 1}
        else:
            assert router.statistics().failed == {}
        nursery.cancel_scope.cancel()


# --- 4. an oversized message: the sender learns about size ---------------------------------------


@pytest.mark.parametrize("synchronous", [True, False])
async def test_a_message_above_the_peers_announced_limit_is_refused_before_it_is_written(
    autojump_clock: trio.abc.Clock, synchronous: bool
) -> None:
    net = MemoryNetwork()
    got: list[int] = []
    async with (
        node(net, B, synchronous=False, max_msg_size=1024) as receiver,
        node(net, A, synchronous=synchronous) as sender,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_take_all, receiver, got)
        await sender.send(Message(b"small", address=B, port=PORT))
        await sender.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        before = receiver.statistics().messages_in
        with pytest.raises(MessageTooLargeError, match=r"message of 2048 bytes .* above the max_msg_size of"):
            await sender.send(Message(b"x" * 2000, header=b"h" * 48, address=B, port=PORT))
        with pytest.raises(MessageTooLargeError, match=rf"{B}:{PORT} \(1024 bytes, as it announced\)"):
            await sender.send(Message(b"x" * 1025, address=B, port=PORT))
        await sender.send(Message(b"x" * 1024, address=B, port=PORT))  # exactly the limit: fine
        await sender.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [5, 1024]
        assert receiver.statistics().messages_in == before + 1
        assert receiver.statistics().connections == 1
        nursery.cancel_scope.cancel()


async def _take_all(chirp: Chirp, got: list[int]) -> None:
    async for msg in chirp:
        got.append(len(msg.data))
        msg.release()


async def test_an_oversized_first_message_fails_once_the_announcement_is_known(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    got: list[int] = []
    async with (
        node(net, B, synchronous=False, max_msg_size=1024) as receiver,
        node(net, A) as sender,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_take_all, receiver, got)
        # Nothing is known before the connection: the message waits for it, then fails.
        with pytest.raises(MessageTooLargeError, match="as it announced"):
            await sender.send(Message(b"x" * 4096, address=B, port=PORT))
        assert receiver.statistics().messages_in == 0
        await sender.send(Message(b"fine", address=B, port=PORT))
        assert got == [4]
        assert receiver.statistics().connections == 1
        nursery.cancel_scope.cancel()


async def test_an_oversized_frame_from_an_announced_peer_is_skipped_and_answered(
    autojump_clock: trio.abc.Clock,
) -> None:
    from trio_chirp._header import split as split_header
    from trio_chirp._protocol import (
        TYPE_REQ_ACK,
        DataFrame,
        FrameParser,
        encode_announcement,
        encode_frame,
        encode_handshake,
    )

    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=1024) as receiver:
        # A trio_chirp peer that announced itself but did not check our limit (a race).
        stream, _ = await net.host(A).connect(B, PORT)
        too_big = bytes([9]) * 16
        await stream.send_all(
            encode_handshake(PORT, bytes(range(16)))
            + encode_announcement(1, 1 << 20)
            + encode_frame(too_big, 1, TYPE_REQ_ACK, b"", b"y" * 5000)
            + encode_frame(bytes([8]) * 16, 2, 0, b"", b"after it")
        )
        msg = await receiver.receive()
        assert msg.data == b"after it", "the connection and what followed on it survived"
        msg.release()
        parser = FrameParser(1 << 20)
        frames: list[DataFrame] = []
        while not frames:
            parser.receive_data(await stream.receive_some(65536))
            frames += [e for e in iter(parser.next_event, NEED_DATA) if isinstance(e, DataFrame)]
        (answer,) = frames
        assert answer.head.identity == too_big
        _, meta, _ = split_header(answer.header)
        assert meta is not None
        assert meta.error is not None
        assert meta.error.kind == "MessageTooLargeError"
        assert "5000 bytes (header + data) is above the receiver's max_msg_size of 1024" in meta.error.text
        stats = receiver.statistics()
        assert (stats.oversized_refused, stats.connections, stats.errors) == (1, 1, {})
        assert stats.unreleased == 0
        await stream.aclose()


async def test_an_oversized_frame_from_libchirp_still_closes_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    from trio_chirp._protocol import encode_frame, encode_handshake

    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=1024) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        await stream.send_all(
            encode_handshake(PORT, bytes(range(16))) + encode_frame(bytes(16), 1, 0, b"", b"z" * 5000)
        )
        while await stream.receive_some(65536):
            pass  # our handshake and announcement, then the close
        assert receiver.statistics().errors == {"MessageTooLargeError": 1}
        assert receiver.statistics().oversized_refused == 0


# --- attacked: the announcement and the size limits -------------------------------------------------


def _raw_frames(chunks: list[bytes]) -> list[object]:
    parser = FrameParser(1 << 20)
    events: list[object] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += list(iter(parser.next_event, NEED_DATA))
    return events


async def _read_until_closed(stream: trio.abc.Stream) -> list[bytes]:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return chunks


async def test_a_receiver_without_our_map_closes_instead_of_answering_an_oversized_frame(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=1024, header_map=False) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        await stream.send_all(
            encode_handshake(PORT, bytes(range(16)))
            + encode_announcement(1, 1 << 20)
            + encode_frame(bytes([9]) * 16, 1, 0, b"", b"y" * 5000)
        )
        events = _raw_frames(await _read_until_closed(stream))
        assert [e for e in events if isinstance(e, DataFrame)] == [], "no empty 'response': a false success"
        assert receiver.statistics().errors == {"MessageTooLargeError": 1}
        assert receiver.statistics().oversized_refused == 0


async def test_our_header_map_counts_against_the_peers_limit(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    got: list[int] = []
    async with (
        node(net, B, synchronous=False, max_msg_size=1024) as receiver,
        node(net, A) as sender,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_take_all, receiver, got)
        await sender.send(Message(b"small", address=B, port=PORT))
        with pytest.raises(MessageTooLargeError, match=r"of them trio_chirp's header map\) is above"):
            with trio.fail_after(3):  # a deadline travels: our map makes the frame 1 041 bytes
                await sender.send(Message(b"x" * 1024, address=B, port=PORT))
        with pytest.raises(MessageTooLargeError, match="header map"):
            await sender.request(Message(b"x" * 1024, address=B, port=PORT), synchronous=False)
        await sender.send(Message(b"x" * 1024, address=B, port=PORT))  # no map: exactly the limit
        assert got == [5, 1024]
        assert receiver.statistics().oversized_refused == 0
        nursery.cancel_scope.cancel()


async def test_an_asynchronous_request_queued_before_the_announcement_fails_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=1024), node(net, A) as sender:
        start = trio.current_time()
        with pytest.raises(MessageTooLargeError, match="as it announced"):
            await sender.request(Message(b"x" * 4096, address=B, port=PORT), synchronous=False)
        assert trio.current_time() == start
        assert sender.statistics().requests_pending == 0


async def test_an_announced_limit_dies_with_its_connection(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as sender:
        async with node(net, B, synchronous=False, max_msg_size=1024):
            await sender.send(Message(b"small", address=B, port=PORT))
            await sender.flush(B, PORT)
        await trio.sleep(1)  # B is gone; our connection to it closed
        async with node(net, B, synchronous=False) as restarted:  # 1 MiB again
            await sender.send(Message(b"x" * 2000, address=B, port=PORT))
            await sender.flush(B, PORT)
            msg = await restarted.receive()
            assert len(msg.data) == 2000
            msg.release()


async def test_a_flood_of_oversized_frames_is_bounded_and_then_closes(autojump_clock: trio.abc.Clock) -> None:
    from trio_chirp._node._delivery import MAX_PENDING_REFUSALS

    net = MemoryNetwork()
    net.set_window(A, B, 1024)  # the flooder never reads: our error responses back up
    async with node(net, B, synchronous=False, max_msg_size=16) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        flood = b"".join(encode_frame(i.to_bytes(16, "big"), i, 0, b"", b"z" * 17) for i in range(2000))
        await stream.send_all(encode_handshake(PORT, bytes(range(16))) + encode_announcement(1, 1 << 20))
        with pytest.raises(trio.BrokenResourceError):  # we close it once past the bound
            await stream.send_all(flood)
        await trio.testing.wait_all_tasks_blocked()
        stats = receiver.statistics()
        assert stats.errors == {"MessageTooLargeError": 1}, "past the bound the connection closes"
        # At most MAX_PENDING_REFUSALS answers were pending at once; as the first ones went
        # out a few more were accepted, then the flood closed its connection, far from 2 000.
        assert MAX_PENDING_REFUSALS <= stats.oversized_refused < 2 * MAX_PENDING_REFUSALS
        assert stats.connections == 0


async def test_an_announcement_late_in_the_stream_is_not_believed(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False, max_msg_size=1024) as receiver:
        stream, _ = await net.host(A).connect(B, PORT)
        await stream.send_all(
            encode_handshake(PORT, bytes(range(16)))
            + encode_frame(bytes([1]) * 16, 1, 0, b"", b"libchirp-style first")
            + encode_announcement(1, 5)  # a magic NOOP, but not the first frame: a keep-alive
            + encode_frame(bytes([2]) * 16, 2, 0, b"", b"y" * 5000)
        )
        await _read_until_closed(stream)
        (remote,) = receiver.statistics().remotes
        assert remote.trio_chirp_version is None
        assert receiver.statistics().errors == {"MessageTooLargeError": 1}
        assert receiver.statistics().noops_in == 1  # taken for a keep-alive


def test_an_allow_list_given_as_one_string_says_so() -> None:
    from trio_chirp._router import AllowList

    with pytest.raises(TypeError, match=r"a list of entries, not one entry: allow=\['10.0.0.0/8'\]"):
        AllowList("10.0.0.0/8")


async def test_a_header_longer_than_the_wire_allows_is_refused_before_anything_is_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with node(MemoryNetwork(), A, synchronous=False) as sender:
        with pytest.raises(ValueError, match=r"header is 65536 bytes; the wire format allows at most 65535"):
            await sender.send(Message(b"x", header=b"h" * 65536, address=B, port=PORT))
        assert sender.statistics().remotes == ()  # refused before a remote was made for it
