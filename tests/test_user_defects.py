"""Defects a new user hit (issue 15), each pinned in memory under MockClock where timing matters."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, node

from trio_chirp import Chirp, ChirpTimeoutError, Config, Message, RemoteError, Router, Workers
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
