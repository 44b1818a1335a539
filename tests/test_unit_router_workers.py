"""Promises of routers and workers that no other test pins, in memory under MockClock.

* ``Workers``: during the stop grace a handler never runs past its message's deadline;
  ``Workers.run`` returns by itself when the node closes.
* ``Router``: an identity is forgotten as soon as its next hop failed (not at its
  deadline); the response goes back to the producer before the router's ACK.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, node, to

from trio_chirp import Message, RemoteError, Router, Workers
from trio_chirp._header import ChirpMeta, ErrorInfo, encode
from trio_chirp._message import meta_of, received_message
from trio_chirp._protocol import encode_ack, encode_frame
from trio_chirp.testing import MemoryNetwork

# --- workers ----------------------------------------------------------------------------------


async def test_the_stop_grace_never_runs_a_handler_past_its_messages_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    ended: list[tuple[float, float | None]] = []

    async def handler(msg: Message) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append((trio.current_time(), msg.deadline))

    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        workers = Workers(b, handler, grace=5.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.run)
            with trio.move_on_after(1.0):  # the caller's deadline travels with the message
                await a.send(to(B, b"job"))
            await trio.testing.wait_all_tasks_blocked()
            assert workers.statistics().running == 1
            await trio.sleep(0.2)
            stopped = trio.current_time()
            nursery.cancel_scope.cancel()  # the grace (5 s) would end long after the deadline
        [(at, deadline)] = ended
        assert deadline is not None
        assert stopped < deadline < stopped + 5.0
        assert at == pytest.approx(deadline)  # the deadline, not the grace, ended it
        assert trio.current_time() == pytest.approx(deadline)  # and run() returned then
        stats = workers.statistics()
        assert (stats.handled, stats.failed, stats.running) == (0, 1, 0)


async def test_a_handler_without_a_deadline_gets_exactly_the_grace(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    ended: list[float] = []

    async def handler(msg: Message) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append(trio.current_time())

    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        workers = Workers(b, handler, grace=0.75)
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.run)
            await a.send(to(B))
            await trio.testing.wait_all_tasks_blocked()
            stopped = trio.current_time()
            nursery.cancel_scope.cancel()
        assert ended == [pytest.approx(stopped + 0.75)]
        assert workers.statistics().failed == 1


@pytest.mark.parametrize("count", [1, 3])
async def test_workers_run_returns_when_the_node_closes(autojump_clock: trio.abc.Clock, count: int) -> None:
    net = MemoryNetwork()
    handled: list[bytes] = []
    returned = trio.Event()

    async def handler(msg: Message) -> None:
        handled.append(msg.data)

    async with trio.open_nursery() as outer:
        async with node(net, B, synchronous=False) as b, node(net, A) as a:
            workers = Workers(b, handler, count=count)

            async def run_workers() -> None:
                await workers.run()
                returned.set()

            outer.start_soon(run_workers)
            await a.send(to(B, b"one"))
            assert handled == [b"one"]
            await trio.testing.wait_all_tasks_blocked()
            assert not returned.is_set()
        with trio.fail_after(1.0):  # no cancellation from here: the node's close ends it
            await returned.wait()
        assert not outer.cancel_scope.cancel_called
    assert workers.statistics().running == 0


async def test_workers_count_must_be_positive() -> None:
    net = MemoryNetwork()
    async with node(net, B) as b:

        async def handler(msg: Message) -> None:
            raise AssertionError("never called")

        with pytest.raises(ValueError, match="count must be >= 1, got 0"):
            Workers(b, handler, count=0)
        assert Workers(b, handler, count=1).statistics().running == 0


# --- routers ----------------------------------------------------------------------------------


async def test_a_router_forgets_an_identity_as_soon_as_its_next_hop_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.host(C)
    net.refuse(C)
    async with (
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):
        router = Router(router_node)
        await nursery.start(router.run)
        message = Message(b"x", address=B, port=PORT, destination=(C, PORT))
        start = trio.current_time()
        with pytest.raises(RemoteError, match="CannotConnectError"):
            await producer.request(message)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == start  # long before the producer's 30 s
        stats = router.statistics()
        assert (stats.remembered, stats.forgotten) == (0, 0)
        assert router_node.statistics().requests_pending == 0  # its request table forgot it too
        nursery.cancel_scope.cancel()


async def test_a_router_forgets_an_identity_whose_next_hop_never_acknowledged(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    silent = FakePeer(net, C)  # accepts and reads, never ACKs
    async with (
        trio.open_nursery() as nursery,
        node(net, B, timeout=30) as router_node,
        node(net, A, timeout=30) as producer,
    ):
        await nursery.start(silent.run)
        router = Router(router_node)
        await nursery.start(router.run)
        start = trio.current_time()
        with pytest.raises(RemoteError, match="ChirpTimeoutError"), trio.fail_after(2.0):
            await producer.request(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        # The producer's 2 s less the router's margin (0.1 s), plus half the margin.
        assert trio.current_time() - start == pytest.approx(2.0 - 0.05)
        await trio.testing.wait_all_tasks_blocked()
        assert router.statistics().remembered == 0
        assert router.statistics().failed == {"next hop failed": 1}
        assert router_node.statistics().requests_pending == 0
        nursery.cancel_scope.cancel()


async def test_a_routers_response_goes_back_before_its_ack(autojump_clock: trio.abc.Clock) -> None:
    """The producer's request sees the response first and then the ACK, for a slow worker
    and for one whose response is large (its write takes a while on a small window)."""
    net = MemoryNetwork()
    net.set_window(A, B, 1000)
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def handle(msg: Message) -> None:
            await trio.sleep(0.3)
            await worker.reply(msg, msg.data * 20_000)

        await nursery.start(Workers(worker, handle).run)
        router = Router(router_node)
        await nursery.start(router.run)
        for word in (b"a", b"b"):
            start = trio.current_time()
            response = await producer.request(Message(word, address=B, port=PORT, destination=(C, PORT)))
            assert response.data == word * 20_000
            assert trio.current_time() - start >= 0.3
        stats = producer.statistics()
        assert (stats.requests_completed, stats.acks_before_response) == (2, 0)
        assert router.statistics().responses == 2
        await trio.testing.wait_all_tasks_blocked()
        assert router.statistics().remembered == 0
        nursery.cancel_scope.cancel()


async def test_a_plain_send_is_acked_when_the_worker_releases_and_remembered_until_its_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """No response to wait for: the ACK goes back at once; the identity is remembered (a
    response could still come) until the producer's deadline, then the expiry task forgets
    it although nothing else is forwarded."""
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in worker:
                msg.release()

        nursery.start_soon(consume)
        router = Router(router_node)
        await nursery.start(router.run)
        start = trio.current_time()
        with trio.fail_after(2.0):
            await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        assert trio.current_time() == start
        assert router.statistics().remembered == 1
        await trio.sleep(1.9)
        assert router.statistics().remembered == 1
        await trio.sleep(0.2)  # past the producer's deadline (2 s)
        assert router.statistics().remembered == 0
        assert router_node.statistics().requests_pending == 0
        assert router.statistics().forwarded == 1
        nursery.cancel_scope.cancel()


async def test_a_message_from_a_producer_without_our_map_is_forwarded_with_one_hop(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    hops: list[int] = []
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=5, header_map=False) as producer,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in worker:
                meta = meta_of(msg)
                assert meta is not None
                hops.append(meta.hops)
                msg.release()

        nursery.start_soon(consume)
        await nursery.start(Router(router_node, lambda msg: (C, PORT)).run)
        await producer.send(to(B))
        assert hops == [1]
        nursery.cancel_scope.cancel()


async def test_a_route_to_a_bad_address_fails_that_message(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):
        router = Router(router_node, lambda msg: (C, 0))
        await nursery.start(router.run)
        with pytest.raises(RemoteError, match="route returned"):
            await producer.request(to(B))
        assert router.statistics().failed == {"bad route": 1}
        assert router.statistics().remembered == 0
        nursery.cancel_scope.cancel()


async def test_past_its_capacity_a_router_forgets_the_oldest_identity(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trio_chirp._router.CAPACITY", 2)
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            async for msg in worker:
                msg.release()

        nursery.start_soon(consume)
        router = Router(router_node)
        await nursery.start(router.run)
        for _ in range(3):
            with trio.fail_after(10.0):
                await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        stats = router.statistics()
        assert (stats.forwarded, stats.remembered, stats.forgotten) == (3, 2, 1)
        assert router_node.statistics().requests_pending == 2
        nursery.cancel_scope.cancel()


# --- workers, one message at a time ---------------------------------------------------------------


def _received(deadline: float | None) -> tuple[Message, list[bool]]:
    releases: list[bool] = []
    msg = received_message(
        bytes(16), 1, b"", b"job", A, PORT, b"\0" * 16, True,
        lambda m, ack: releases.append(ack), deadline, None, 3,
    )  # fmt: skip
    return msg, releases


async def test_a_message_whose_deadline_is_now_is_expired_and_never_handled(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    ran: list[bytes] = []

    async def handler(msg: Message) -> None:
        ran.append(msg.data)

    async with node(net, B, synchronous=False) as b:
        workers = Workers(b, handler)
        msg, releases = _received(trio.current_time())
        await workers._handle(msg)
        assert (ran, releases) == ([], [False])
        assert workers.statistics().expired == 1
        msg, releases = _received(trio.current_time() + 0.001)
        await workers._handle(msg)
        assert (ran, releases) == ([b"job"], [True])
        assert (workers.statistics().expired, workers.statistics().handled) == (1, 1)


class Boom(BaseException):
    pass


async def test_a_handler_that_raises_a_base_exception_never_acks(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()

    async def handler(msg: Message) -> None:
        raise Boom

    async with node(net, B, synchronous=False) as b:
        workers = Workers(b, handler)
        msg, releases = _received(None)
        with pytest.raises(Boom):
            await workers._handle(msg)
        assert releases == [False]
        assert workers.statistics().running == 0


@pytest.mark.parametrize(
    ("deadline", "stop", "text"),
    [
        (0.5, None, "the handler ran past the message's deadline"),
        (None, 0.25, "the worker was stopped and its grace ran out"),
    ],
)
async def test_a_handler_failure_is_logged_with_why_it_ended(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    deadline: float | None,
    stop: float | None,
    text: str,
) -> None:
    net = MemoryNetwork()

    async def handler(msg: Message) -> None:
        await trio.sleep_forever()

    async with node(net, B, synchronous=False) as b:
        workers = Workers(b, handler, grace=0.5)
        start = trio.current_time()
        msg, releases = _received(None if deadline is None else start + deadline)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(workers._handle, msg)
            if stop is not None:
                await trio.sleep(stop)
                workers.drain()
        assert trio.current_time() - start == pytest.approx(0.5 if stop is None else stop + 0.5)
        assert releases == [False]
        assert workers.statistics().failed == 1
    failures = [r.getMessage() for r in caplog.records if r.name == "trio_chirp.workers"]
    assert len(failures) == 1
    assert text in failures[0]


async def test_by_default_one_handler_runs_at_a_time(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    go = trio.Event()

    async def handler(msg: Message) -> None:
        await go.wait()

    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        workers = Workers(b, handler)
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.run)
            await a.send(to(B, b"1"))
            await a.send(to(B, b"2"))
            await trio.testing.wait_all_tasks_blocked()
            assert workers.statistics().running == 1
            go.set()
            await trio.testing.wait_all_tasks_blocked()
            assert workers.statistics().handled == 2
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("producer_has_map", [False, True])
async def test_an_error_response_after_the_ack_goes_back_only_to_a_producer_that_reads_our_map(
    autojump_clock: trio.abc.Clock, producer_has_map: bool
) -> None:
    """A next hop that is not trio_chirp may ACK first and answer with an error response
    afterwards. It goes back to a trio_chirp producer, with our map or without it: a
    producer without a map still announced itself (docs/protocol.md, section 12), so it
    reads error responses. (Only a libchirp producer would take it for an empty reply.)"""
    net = MemoryNetwork()
    hop = FakePeer(net, C)
    async with (
        trio.open_nursery() as nursery,
        node(net, B) as router_node,
        node(net, A, timeout=5, header_map=producer_has_map) as producer,
    ):
        await nursery.start(hop.run)
        router = Router(router_node, lambda msg: (C, PORT))
        await nursery.start(router.run)
        async with trio.open_nursery() as sending:
            # With header_map on, the destination travels in our map; off, nothing does.
            sending.start_soon(producer.send, Message(b"x", address=B, port=PORT, destination=(C, PORT)))
            await trio.testing.wait_all_tasks_blocked()
            [head] = [f for f in hop.frames() if f.data_len]
            stream = hop.streams[0]
            await stream.send_all(encode_ack(head.identity, 1))
        error = encode(ChirpMeta(error=ErrorInfo(kind="Failed", text="late", hop="foreign")))
        await stream.send_all(encode_frame(head.identity, 2, 0, error, b""))
        await trio.testing.wait_all_tasks_blocked()
        stats = router.statistics()
        assert stats.forwarded == 1
        assert (stats.responses, stats.failed) == (1, {})
        assert producer.statistics().error_responses_in == 1
        assert producer.statistics().unreleased == 0
        nursery.cancel_scope.cancel()


async def test_a_response_that_comes_after_the_router_stopped_is_released(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    hop = FakePeer(net, C)
    async with (
        trio.open_nursery() as nursery,
        node(net, B) as router_node,
        node(net, A, timeout=5) as producer,
    ):
        await nursery.start(hop.run)
        router = Router(router_node)
        with trio.CancelScope() as router_scope:
            async with trio.open_nursery() as routing:
                await routing.start(router.run)
                async with trio.open_nursery() as sending:
                    sending.start_soon(
                        producer.send, Message(b"x", address=B, port=PORT, destination=(C, PORT))
                    )
                    await trio.testing.wait_all_tasks_blocked()
                    [head] = [f for f in hop.frames() if f.data_len]
                    await hop.streams[0].send_all(encode_ack(head.identity, 1))
                assert router.statistics().remembered == 1
                router_scope.cancel()
        await hop.streams[0].send_all(encode_frame(head.identity, 2, 0, b"", b"late answer"))
        await trio.testing.wait_all_tasks_blocked()
        stats = router_node.statistics()
        assert (stats.unreleased, stats.undelivered) == (0, 0)  # taken as the response, and released
        nursery.cancel_scope.cancel()


async def test_failing_a_message_that_reply_already_released_is_still_a_checkpoint(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()

    async def handler(msg: Message) -> None:
        raise AssertionError("not called")

    async with node(net, B, synchronous=False) as b:
        workers = Workers(b, handler)
        msg, releases = _received(None)
        msg.release()
        with trio.testing.assert_checkpoints():
            await workers._fail(msg, ValueError("after the reply"))
        assert releases == [True]  # nothing more: no second release, no error response
