"""Requests, replies, error responses, travelling deadlines and workers, in memory under MockClock."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, node, to

from trio_chirp import (
    Chirp,
    ChirpTimeoutError,
    ConnectionLostError,
    Message,
    RemoteError,
    Router,
    Workers,
)
from trio_chirp._header import ChirpMeta, encode
from trio_chirp._protocol import DataFrame
from trio_chirp.testing import MemoryNetwork


def echo_handler(chirp: Chirp) -> Callable[[Message], Awaitable[None]]:
    async def handle(msg: Message) -> None:
        await chirp.reply(msg, b"echo:" + msg.data)

    return handle


async def test_request_returns_the_response_written_before_the_ack(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a, trio.open_nursery() as nursery:
        workers = Workers(b, echo_handler(b))
        await nursery.start(workers.run)
        response = await a.request(to(B, b"ping"))
        assert response.data == b"echo:ping"
        assert not response.has_slot  # auto_release
        assert (response.address, response.port) == (B, PORT)
        stats = a.statistics()
        assert stats.requests_completed == 1
        assert stats.requests_pending == 0
        assert stats.acks_before_response == 0  # the ACK followed the response
        assert workers.statistics().handled == 1
        nursery.cancel_scope.cancel()


async def test_auto_release_false_keeps_the_slot(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a, trio.open_nursery() as nursery:
        await nursery.start(Workers(b, echo_handler(b)).run)
        response = await a.request(to(B, b"x"), auto_release=False)
        assert response.has_slot
        response.release()
        nursery.cancel_scope.cancel()


async def test_asynchronous_requests_share_one_remote(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False, max_slots=32) as b,
        node(net, A) as a,
        trio.open_nursery() as nursery,
    ):

        async def slow(msg: Message) -> None:
            await trio.sleep(1)
            await b.reply(msg, msg.data)

        await nursery.start(Workers(b, slow, count=20).run)
        start = trio.current_time()
        got: list[bytes] = []

        async def one(i: int) -> None:
            got.append((await a.request(to(B, b"%d" % i), synchronous=False)).data)

        async with trio.open_nursery() as producers:
            for i in range(20):
                producers.start_soon(one, i)
        assert sorted(got) == sorted(b"%d" % i for i in range(20))
        assert trio.current_time() - start == pytest.approx(1.0)  # in parallel, not one by one
        nursery.cancel_scope.cancel()


async def test_a_response_must_come_from_the_peer_the_request_went_to(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as b,
        node(net, C, synchronous=False) as c,
        node(net, A, timeout=1.0) as a,
    ):
        request = to(B, b"q")
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                with pytest.raises(ChirpTimeoutError, match="no response"):
                    await a.request(request, synchronous=False)

            nursery.start_soon(ask)
            held = await b.receive()  # B holds it (and so never answers)
            impostor = Message(b"forged", address=A, port=PORT)
            impostor.identity = request.identity
            await c.send(impostor)
            forged = await a.receive()  # C's message is an ordinary message for A
            assert forged.data == b"forged"
            forged.release()
        held.release()
        assert a.statistics().requests_failed == 1


async def test_late_response_is_dropped_then_forgotten(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=1.0) as a:
        request = to(B, b"q")
        with pytest.raises(ChirpTimeoutError, match="no response"):
            await a.request(request, synchronous=False)
        held = await b.receive()
        await b.reply(held, b"late")
        await trio.testing.wait_all_tasks_blocked()
        stats = a.statistics()
        assert (stats.late_responses, stats.undelivered, stats.requests_pending) == (1, 0, 0)
        # After the remembered time (config.timeout) a late answer is an ordinary message.
        await trio.sleep(1.5)
        again = Message(b"much later", address=A, port=PORT)
        again.identity = request.identity
        await b.send(again)
        msg = await a.receive()
        assert msg.data == b"much later"
        msg.release()


async def test_cancelled_request_leaves_nothing_behind(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A) as a:
        with trio.move_on_after(0.5):
            await a.request(to(B), synchronous=False)
        assert a.statistics().requests_pending == 0
        (await b.receive()).release()


async def test_message_context_manager_acks_only_on_success(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=1.0) as a:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, to(B, b"good"))
            with await b.receive():
                pass
        failed: list[BaseException] = []

        async def fail_inside() -> None:
            try:
                with await b.receive():
                    raise ValueError("work failed")
            except ValueError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_inside)
            with pytest.raises(ChirpTimeoutError, match="no ACK"):
                await a.send(to(B, b"bad"))
        assert len(failed) == 1
        assert a.statistics().send_errors == {"ChirpTimeoutError": 1}


# --- deadlines travel ------------------------------------------------------------------------


def _data_frames(peer: FakePeer) -> list[DataFrame]:
    return [e for _, e in peer.events if isinstance(e, DataFrame)]


async def test_only_a_callers_deadline_travels(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, synchronous=False) as a:
            await a.send(to(B, b"plain"))
            with trio.fail_after(2.5):
                await a.send(to(B, b"deadline"))
            await a.send(Message(b"own header", header=b"user", address=B, port=PORT))
            with trio.fail_after(2.5):
                await a.send(Message(b"own header", header=b"user", address=B, port=PORT))
            await a.flush(B, PORT)
        await trio.testing.wait_all_tasks_blocked()
        frames = _data_frames(peer)
        assert [f.header for f in frames[:1]] == [b""]  # config.timeout alone adds nothing
        assert frames[1].header == encode(ChirpMeta(remaining=2.5))  # stamped when written
        assert [f.header for f in frames[2:]] == [b"user", b"user"]  # a foreign header is untouched
        nursery.cancel_scope.cancel()


async def test_receiver_sees_the_deadline_and_our_map_removed(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 0.25)
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        await a.send(to(B, b"warm up"))  # connect first, so the deadline's send is not delayed
        (await b.receive()).release()
        start = trio.current_time()
        with trio.fail_after(3):
            await a.send(to(B))
        msg = await b.receive()
        assert msg.header == b""
        # Remaining time stamped at the write (3 s), counted from the arrival of the fixed part.
        assert msg.deadline == pytest.approx(start + 0.25 + 3)
        msg.release()
        await a.send(to(B))
        msg = await b.receive()
        assert msg.deadline is None
        msg.release()


async def test_header_map_switch_off_sends_headers_untouched(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False, header_map=False) as a:
        with trio.fail_after(3):
            await a.send(to(B))
        msg = await b.receive()
        assert (msg.header, msg.deadline) == (b"", None)  # with the map, the deadline would show
        msg.release()


async def test_malformed_map_is_counted_and_delivered_untouched(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    bad = b"\x81\xa2tc\xc0"  # our marker, a nil version
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        await a.send(Message(b"x", header=bad, address=B, port=PORT))
        msg = await b.receive()
        assert (msg.header, msg.deadline) == (bad, None)
        msg.release()
        assert b.statistics().header_errors == 1


# --- error responses and workers -------------------------------------------------------------


async def test_a_failing_handler_answers_a_request_with_an_error_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as b,
        node(net, A, timeout=30) as a,
        trio.open_nursery() as nursery,
    ):

        async def broken(msg: Message) -> None:
            raise ValueError("cannot parse")

        workers = Workers(b, broken)
        await nursery.start(workers.run)
        start = trio.current_time()
        with pytest.raises(RemoteError, match="cannot parse") as info:
            await a.request(to(B))
        assert trio.current_time() == start  # at once, not at the 30 s timeout
        assert info.value.kind == "ValueError"
        assert "worker on port" in info.value.hop
        # A synchronous send with a deadline carries our map: it is answered too.
        with pytest.raises(RemoteError, match="cannot parse"), trio.fail_after(20):
            await a.send(to(B))
        assert trio.current_time() == start
        stats = a.statistics()
        assert stats.error_responses_in == 2
        assert (stats.in_flight, stats.requests_pending) == (0, 0)
        # The requester reads the error response itself (``_reading.py``), so it may know of
        # it before the worker's task resumes from writing it and counts it.
        await trio.testing.wait_all_tasks_blocked()
        assert workers.statistics().failed == 2
        assert workers.statistics().error_responses == 2
        # A plain send carries no map, but A announced itself as trio_chirp on the connection
        # (issue 14): it is answered too. A libchirp producer never is (test_user_defects.py).
        with pytest.raises(RemoteError, match="cannot parse"):
            await a.send(to(B))
        assert trio.current_time() == start
        nursery.cancel_scope.cancel()


async def test_handler_runs_under_the_messages_deadline(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, synchronous=False) as b,
        node(net, A, timeout=30) as a,
        trio.open_nursery() as nursery,
    ):
        seen: list[float] = []

        async def slow(msg: Message) -> None:
            try:
                await trio.sleep(10)
            finally:
                seen.append(trio.current_time())

        await nursery.start(Workers(b, slow).run)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.3):
            await a.send(to(B))
        # The next send is not held up behind the abandoned one: the worker stopped at its
        # deadline and answered it, freeing the producer's one-in-flight place at once.
        received = trio.Event()

        async def quick(msg: Message) -> None:
            received.set()

        await trio.testing.wait_all_tasks_blocked()  # the worker's scope fires at the same instant
        assert seen == [pytest.approx(start + 0.3)]
        nursery.cancel_scope.cancel()
        async with trio.open_nursery() as again:
            await again.start(Workers(b, quick).run)
            await a.send(to(B))
            assert trio.current_time() - start == pytest.approx(0.3)
            again.cancel_scope.cancel()


async def test_expired_message_is_released_at_once_without_ack(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=30) as a:
        calls: list[Message] = []

        async def handler(msg: Message) -> None:  # pragma: no cover - must not run
            calls.append(msg)

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(0.2):
                await a.send(to(B))
            await trio.sleep(1)  # the message waits unhandled past its deadline
            workers = Workers(b, handler)
            await nursery.start(workers.run)
            await trio.testing.wait_all_tasks_blocked()
            assert calls == []
            assert workers.statistics().expired == 1
            assert b.statistics().slots_in_use == 0
            nursery.cancel_scope.cancel()


async def test_stopping_workers_drains_within_the_grace(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, synchronous=False) as a:
        finished: list[float] = []

        async def handler(msg: Message) -> None:
            await trio.sleep(float(msg.data))
            finished.append(trio.current_time())

        workers = Workers(b, handler, count=2, grace=1.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.run)
            await a.send(to(B, b"0.5"))
            await a.send(to(B, b"5"))
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - start == pytest.approx(1.0)  # the grace, not 5 s
        assert finished == [pytest.approx(start + 0.5)]
        stats = workers.statistics()
        assert (stats.handled, stats.failed, stats.running) == (1, 1, 0)


# --- routers --------------------------------------------------------------------------------

D = "10.0.0.4"


async def test_router_forwards_under_the_producers_deadline_and_returns_the_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    seen: list[float | None] = []
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        async def handle(msg: Message) -> None:
            seen.append(msg.deadline)
            await worker.reply(msg, b"done:" + msg.data)

        await nursery.start(Workers(worker, handle).run)
        router = Router(router_node)
        await nursery.start(router.run)
        start = trio.current_time()
        with trio.fail_after(2.0):
            response = await producer.request(Message(b"job", address=B, port=PORT, destination=(C, PORT)))
        assert response.data == b"done:job"
        assert (response.address, response.port) == (B, PORT)  # it came back the way it went
        # The router kept min(0.1 s, 10 %) of the producer's 2 s for itself.
        assert seen == [pytest.approx(start + 2.0 - 0.1)]
        stats = router.statistics()
        assert (stats.forwarded, stats.responses, dict(stats.failed)) == (1, 1, {})
        assert producer.statistics().acks_before_response == 0  # the ACK followed the response
        nursery.cancel_scope.cancel()


async def test_a_chain_of_routers_with_a_route_function(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, D, synchronous=False) as worker,
        node(net, C) as second,
        node(net, B) as first,
        node(net, A) as producer,
        trio.open_nursery() as nursery,
    ):
        hops: list[int] = []

        async def handle(msg: Message) -> None:
            assert msg._meta is not None
            hops.append(msg._meta.hops)
            await worker.reply(msg, msg.data.upper())

        await nursery.start(Workers(worker, handle).run)
        await nursery.start(Router(second, lambda msg: (D, PORT)).run)
        await nursery.start(Router(first, lambda msg: (C, PORT)).run)
        for word in (b"one", b"two"):
            assert (await producer.request(to(B, word))).data == word.upper()
        assert hops == [2, 2]
        nursery.cancel_scope.cancel()


async def test_next_hop_failure_is_an_error_response_for_our_producers(
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
        start = trio.current_time()
        with pytest.raises(RemoteError, match="CannotConnectError") as info:
            await producer.request(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        assert info.value.hop == f"{C}:{PORT}"
        # A plain send with a destination and a caller's deadline carries our map too.
        with pytest.raises(RemoteError), trio.fail_after(20):
            await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
        assert trio.current_time() == start  # at once, not at the producer's timeout
        assert router.statistics().failed == {"next hop failed": 2}
        nursery.cancel_scope.cancel()


async def test_a_producer_without_our_map_gets_no_ack_never_a_false_success(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B) as router_node,
        node(net, A, timeout=1.0, header_map=False) as producer,  # no map; but it announces itself
        trio.open_nursery() as nursery,
    ):
        router = Router(router_node)  # no route and no destination named: nowhere to go
        await nursery.start(router.run)
        # A trio_chirp producer learns at once (issue 14's announcement); a libchirp producer
        # gets no ACK, never a false success: test_user_defects.py pins that with a raw peer.
        with pytest.raises(RemoteError, match="no route"):
            await producer.send(to(B))
        assert router.statistics().failed == {"no route": 1}
        nursery.cancel_scope.cancel()


async def test_a_routing_loop_ends_at_once(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, D) as r3,
        node(net, C) as r2,
        node(net, B) as r1,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):
        routers = [
            Router(r1, lambda msg: (C, PORT)),
            Router(r2, lambda msg: (D, PORT)),
            Router(r3, lambda msg: (B, PORT)),
        ]
        for router in routers:
            await nursery.start(router.run)
        start = trio.current_time()
        with pytest.raises(RemoteError, match="duplicate identity"), trio.fail_after(20):
            await producer.send(to(B))  # back at B with an identity B is forwarding: a loop
        assert trio.current_time() == start
        assert routers[0].statistics().failed["duplicate identity"] == 1
        nursery.cancel_scope.cancel()


async def test_a_loop_between_two_synchronous_routers_ends_at_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Each holds its one slot on their shared connection: the error response cannot be
    # read (the symmetric lock-up of two synchronous peers). The deadline ends it.
    net = MemoryNetwork()
    async with (
        node(net, C) as r2,
        node(net, B) as r1,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(Router(r1, lambda msg: (C, PORT)).run)
        await nursery.start(Router(r2, lambda msg: (B, PORT)).run)
        start = trio.current_time()
        with (
            pytest.raises(RemoteError, match="did not acknowledge within the producer's deadline"),
            trio.fail_after(5),
        ):
            await producer.send(to(B))
        assert trio.current_time() - start == pytest.approx(5 - 0.1 - 0.1, abs=0.05)
        nursery.cancel_scope.cancel()


async def test_a_router_refuses_past_its_hop_limit(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, D, synchronous=False) as worker,
        node(net, C) as r2,
        node(net, B) as r1,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(Workers(worker, echo_handler(worker)).run)
        second = Router(r2, lambda msg: (D, PORT), max_hops=1)  # takes messages that passed no router
        await nursery.start(second.run)
        await nursery.start(Router(r1, lambda msg: (C, PORT)).run)
        with pytest.raises(RemoteError, match="hop limit"):
            await producer.request(to(B))
        assert second.statistics().failed == {"hop limit": 1}
        nursery.cancel_scope.cancel()


async def test_a_route_that_raises_fails_only_that_message(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, C, synchronous=False) as worker,
        node(net, B) as router_node,
        node(net, A, timeout=30) as producer,
        trio.open_nursery() as nursery,
    ):

        def route(msg: Message) -> tuple[str, int]:
            if msg.data == b"bad":
                raise KeyError("no such shard")
            return (C, PORT)

        await nursery.start(Workers(worker, echo_handler(worker)).run)
        router = Router(router_node, route)
        await nursery.start(router.run)
        with pytest.raises(RemoteError, match="route raised"):
            await producer.request(to(B, b"bad"))
        assert (await producer.request(to(B, b"good"))).data == b"echo:good"
        assert router.statistics().failed == {"route raised": 1}
        nursery.cancel_scope.cancel()


async def test_a_reply_that_cannot_be_written_releases_the_request_without_ack(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=2.0) as a:
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                with pytest.raises((ChirpTimeoutError, ConnectionLostError)):
                    await a.request(to(B, b"q"))

            nursery.start_soon(ask)
            request = await b.receive()
            net.cut(A, B)  # the response cannot be written on this connection
            net.partition(A, B)  # nor on a new one
            with pytest.raises((ChirpTimeoutError, ConnectionLostError)):
                with trio.fail_after(1.0):
                    await b.reply(request, b"lost")
            assert not request.has_slot  # released: without ACK (no ACK could be sent)
        assert b.statistics().unreleased == 0


async def test_a_cancelled_reply_releases_the_request_without_ack(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.set_window(A, B, 100)  # the response cannot be written at once
    async with node(net, B, synchronous=False) as b, node(net, A, timeout=2.0) as a:
        async with trio.open_nursery() as nursery:
            acked: list[bool] = []

            async def ask() -> None:
                try:
                    await a.send(to(B, b"q"))  # synchronous: succeeds only with the ACK
                except ChirpTimeoutError:
                    acked.append(False)
                else:
                    acked.append(True)

            nursery.start_soon(ask)
            request = await b.receive()
            net.partition(A, B)
            with trio.move_on_after(0.1) as scope:
                await b.reply(request, b"x" * 10000)
            assert scope.cancelled_caught
            assert not request.has_slot
        assert acked == [False]  # the sender never saw a success


async def test_asynchronous_requests_queue_behind_a_synchronous_message_in_flight(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    # B has one slot, so it grants A a window of 1 (test_pipelining.py: wider windows).
    async with node(net, B, synchronous=False, max_slots=1) as b, node(net, A, timeout=5.0) as a:
        order: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, to(B, b"sync first"))  # held by B: stays in flight
            first = await b.receive()
            nursery.start_soon(functools.partial(a.request, to(B, b"async request"), synchronous=False))
            await trio.testing.wait_all_tasks_blocked()
            assert b.statistics().undelivered == 0  # FIFO: it waits behind the one in flight
            first.release()
            second = await b.receive()
            order.append(second.data)
            await b.reply(second, b"ok")
        assert order == [b"async request"]
