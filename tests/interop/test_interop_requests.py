"""Requests and replies against the real libchirp (issue 8), in both directions.

What libchirp 1.2.1's Python binding offers (``libchirp/__init__.py``, every flavour; the
driver uses ``libchirp.queue``): ``Chirp.request(msg, auto_release=True)`` sends ``msg``
and returns a ``ChirpFuture``. Its ``result()`` is the first received message with
``msg``'s identity *from any sender*, taken before it reaches the queue (released in
``result()`` unless ``auto_release=False``); ``send_result()`` is the send's own future
(synchronous: resolved by the ACK). A libuv timer of ``TIMEOUT`` fails it with
``TimeoutError("Chirp request timed out")``; an answer after that is an ordinary message.
There is no ``reply()``: the documented pattern is sending the received message object
back with new data, as the driver's ECHO does. The queue API releases (ACKs) inside
``get()``, before the application can answer.

Wire order, two ways:

* Serials. A node numbers every frame it writes to one remote from one counter (messages,
  ACKs and NOOPs alike, PROTOCOL.md 4). After a calibration message with serial ``c``, the
  node's ``k``-th frame to us has serial ``c + k``, so a response's serial tells whether
  the ACK of the same round was written before it. This is the ground truth here.
* libchirp's event order. The binding resolves a request's ``response`` in its receive
  callback and the send future (``sent``; the ACK for a synchronous send) in its send
  callback, both on libchirp's loop thread as it parses frames off the connection; the
  driver emits events from those callbacks in order. So for one connection the order of
  ``response`` and ``sent`` events is the order libchirp read the frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from interop_helpers import LOCAL, Got, node_errors, nothing_arrives, poll_until, snapshot, trio_config
from peer_process import PeerProcess, open_peer

import trio_chirp

pytestmark = pytest.mark.interop

ROUNDS = 4
TIMEOUT = 0.5
"""``config.timeout`` of nodes whose requests are meant to time out."""
LATE = 0.3
"""Slack for "at its deadline": a timeout may end this much after it is due (loaded CI)."""
MAP_START = b"\xa2tc"
"""Our header map: a fixmap byte, then the fixstr "tc" (trio_chirp/_header.py)."""


def assert_no_leftovers(chirp: trio_chirp.Chirp) -> None:
    """Nothing pending, queued, in flight, held or undelivered; no late response."""
    stats = chirp.statistics()
    assert stats.requests_pending == 0
    assert stats.queued == 0
    assert stats.in_flight == 0
    assert stats.slots_in_use == 0
    assert stats.undelivered == 0
    assert stats.late_responses == 0
    assert stats.header_errors == 0


async def serial_base_from(peer: PeerProcess, chirp: trio_chirp.Chirp) -> int:
    """The serial of a message ``peer`` sends us; its later frames to us count up from it."""
    send_id = await peer.send(LOCAL, chirp.port, data=b"calibration")
    with trio.fail_after(10):
        msg = await chirp.receive()
        assert msg.data == b"calibration"
        msg.release()
        assert (await peer.wait_sent(send_id))["ok"]
    assert msg.serial is not None
    return msg.serial


async def serial_base_at(peer: PeerProcess, chirp: trio_chirp.Chirp) -> int:
    """The serial ``peer`` sees on a message we send it; our later frames count up from it."""
    with trio.fail_after(10):
        await chirp.send(trio_chirp.Message(b"calibration", address=LOCAL, port=peer.port))
        got = await peer.next_event("received")
    assert bytes.fromhex(got["data_hex"]) == b"calibration"
    return int(got["serial"])


def after(serial: int, base: int) -> int:
    return (serial - base) & 0xFFFFFFFF


def event_index(peer: PeerProcess, event: dict[str, Any]) -> int:
    return next(i for i, e in enumerate(peer.history) if e is event)


# --- 1. libchirp's request() answered by our reply() ---------------------------------


def reply_header(index: int) -> bytes:
    return b"" if index % 2 == 0 else b"reply header %d" % index


@pytest.mark.parametrize("node_sync", [True, False], ids=["sync-node", "async-node"])
@pytest.mark.parametrize("producer_sync", [True, False], ids=["sync-producer", "async-producer"])
async def test_libchirp_request_is_answered_by_reply(
    reference_python: Path, producer_sync: bool, node_sync: bool
) -> None:
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=node_sync)) as chirp,
        open_peer(reference_python, name="producer", SYNCHRONOUS=producer_sync) as producer,
    ):
        base = await serial_base_at(producer, chirp)
        seen: list[tuple[Got, float | None]] = []

        async def worker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            async for msg in chirp:
                seen.append((snapshot(msg), msg.deadline))
                index = int(msg.data.rsplit(b" ", 1)[1])
                await chirp.reply(msg, b"answer to " + msg.data, header=reply_header(index))
                assert not msg.has_slot, "reply() releases the request"

        async with trio.open_nursery() as nursery:
            await nursery.start(worker)
            # All issued at once: an async producer pipelines them, a sync one writes the
            # next only after the previous one's ACK.
            oks = [
                await producer.request(LOCAL, chirp.port, data=b"question %d" % i, header=b"q-header")
                for i in range(ROUNDS)
            ]
            with trio.fail_after(10):
                responses = [await producer.wait_response(ok["id"]) for ok in oks]
                sents = [await producer.wait_sent(ok["id"]) for ok in oks]
                await poll_until(lambda: chirp.statistics().messages_out == ROUNDS + 1)
            nursery.cancel_scope.cancel()

        for i, (ok, response, sent) in enumerate(zip(oks, responses, sents, strict=True)):
            assert response["ok"], response
            assert response["identity"] == ok["identity"], "the response keeps the request's identity"
            assert bytes.fromhex(response["data_hex"]) == b"answer to question %d" % i
            assert bytes.fromhex(response["header_hex"]) == reply_header(i), "reply() adds no map"
            assert response["remote_identity"] == chirp.identity.hex()
            assert response["port"] == chirp.port
            assert sent["ok"], sent  # sync: libchirp's send got its ACK
            if producer_sync:
                # Our frames to the producer per round: response, then ACK.
                assert after(response["serial"], base) == 1 + 2 * i, "the ACK follows the response"
                assert event_index(producer, response) < event_index(producer, sent)
            else:
                assert after(response["serial"], base) == 1 + i  # no ACKs at all

        # What our worker got: libchirp's header untouched, no deadline (libchirp has no
        # map), REQ_ACK exactly from a synchronous producer.
        assert len(seen) == ROUNDS
        for got, deadline in seen:
            assert got.header == b"q-header"
            assert deadline is None
            assert got.ack_requested is producer_sync
            assert got.remote_identity == producer.identity

        stats = chirp.statistics()
        assert stats.acks_out == (ROUNDS if producer_sync else 0)
        assert stats.messages_out == ROUNDS + 1  # the responses and the calibration message
        assert stats.connections == 1
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}
        # libchirp's request() took every response before its queue: only the
        # calibration message was ever received there.
        assert (await producer.command("stats"))["received"] == 1


# --- 2. our request() answered by a libchirp echo worker ------------------------------

ECHO_STYLES = {
    # Queue style with its race decided: released (ACK queued) before the echo is sent;
    # the delay makes the ACK arrive in a read of its own, so the node can count it.
    "queue-ack-first": {"AUTO_RELEASE": False, "ECHO_RELEASE": "released", "ECHO_DELAY": 0.05},
    # libchirp's queue API as is: get() releases, then the echo is sent (racy order).
    "queue": {},
    # asyncio-handler style (the rule): the echo is written, then the request released.
    "handler": {"AUTO_RELEASE": False, "ECHO_RELEASE": "after"},
}


@pytest.mark.parametrize(
    ("style", "worker_sync"),
    [
        ("queue-ack-first", False),
        ("queue-ack-first", True),
        ("queue", False),
        ("queue", True),
        ("handler", False),
    ],
    ids=["queue-ack-first-async-worker", "queue-ack-first-sync-worker", "queue-async-worker",
         "queue-sync-worker", "handler-async-worker"],
)  # fmt: skip
async def test_sync_request_answered_by_a_libchirp_echo_worker(
    reference_python: Path, style: str, worker_sync: bool
) -> None:
    async with (
        open_peer(
            reference_python, name="echo", SYNCHRONOUS=worker_sync, ECHO=True, **ECHO_STYLES[style]
        ) as w,
        trio_chirp.open_chirp(trio_config()) as chirp,  # synchronous: request() asks for ACKs
    ):
        base = await serial_base_from(w, chirp)
        ack_first_on_wire = 0
        for i in range(ROUNDS):
            request = trio_chirp.Message(b"job %d" % i, address=LOCAL, port=w.port)
            with trio.fail_after(10):
                response = await chirp.request(request)
            assert response.identity == request.identity
            assert response.data == request.data, "an echo"
            assert response.header == b"", "our map came back and was removed"
            assert response.remote_identity == w.identity
            assert (response.address, response.port) == (LOCAL, w.port)
            assert response.ack_requested is worker_sync
            assert not response.has_slot, "auto_release"
            # The worker's frames per round are its ACK and the echo, in either order.
            position = after(response.serial or 0, base) - 2 * i
            assert position in (1, 2), position
            ack_first_on_wire += position == 2

        stats = chirp.statistics()
        if style == "queue-ack-first":
            assert ack_first_on_wire == ROUNDS
            assert stats.acks_before_response == ROUNDS, "each request kept waiting after its ACK"
        elif style == "handler":
            assert ack_first_on_wire == 0
            assert stats.acks_before_response == 0
        else:
            # Either order happens (measured: the ACK first in a quarter to a half of the
            # rounds); the counter only sees an ACK read before its response was.
            assert stats.acks_before_response <= ack_first_on_wire
        assert stats.requests_completed == ROUNDS
        assert stats.requests_failed == 0
        assert stats.acks_in == ROUNDS
        assert stats.acks_out == (ROUNDS + 1 if worker_sync else 0)  # the echoes and the calibration
        await nothing_arrives(chirp, 0.05)
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}


@pytest.mark.parametrize("node_sync", [True, False], ids=["sync-node-override", "async-node"])
async def test_async_requests_are_in_flight_together(reference_python: Path, node_sync: bool) -> None:
    """Async requests ask for no ACK; many wait at once and each gets its own response."""
    mode = False if node_sync else None  # override a sync node, or the async node's own mode
    async with (
        open_peer(reference_python, name="worker", SYNCHRONOUS=False, AUTO_RELEASE=False, HOLD=True) as w,
        trio_chirp.open_chirp(trio_config(synchronous=node_sync)) as chirp,
    ):
        results: dict[int, trio_chirp.Message] = {}
        requests = [trio_chirp.Message(b"job %d" % i, address=LOCAL, port=w.port) for i in range(ROUNDS * 2)]

        async def ask(i: int) -> None:
            results[i] = await chirp.request(requests[i], synchronous=mode)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(len(requests)):
                    nursery.start_soon(ask, i)
                # Every request reaches the worker before any is answered.
                got = [await w.next_event("received") for _ in requests]
                assert chirp.statistics().requests_pending == len(requests)
                assert chirp.statistics().in_flight == 0, "nothing waits for an ACK"
                # Answer in reverse order: matching is by identity, not by order.
                sends = []
                for event in reversed(got):
                    data = b"answer to " + bytes.fromhex(event["data_hex"])
                    reply_to = {"identity": event["identity"], "serial": event["serial"]}
                    sends.append(await w.send(LOCAL, chirp.port, data=data, reply_to=reply_to))
                for send_id in sends:
                    assert (await w.wait_sent(send_id))["ok"]
                await w.command("release", all=True)

        for i, request in enumerate(requests):
            assert results[i].identity == request.identity
            assert results[i].data == b"answer to job %d" % i
        # Then an echo worker, all at once again.
        await w.command("hold", on=False)
        await w.command("echo", on=True, release="before")
        results.clear()
        requests = [trio_chirp.Message(b"echo %d" % i, address=LOCAL, port=w.port) for i in range(16)]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(len(requests)):
                    nursery.start_soon(ask, i)
        assert [results[i].data for i in range(16)] == [r.data for r in requests]
        assert [results[i].identity for i in range(16)] == [r.identity for r in requests]

        stats = chirp.statistics()
        assert stats.acks_in == 0, "no REQ_ACK was asked for"
        assert stats.acks_before_response == 0
        assert stats.requests_completed == len(requests) + ROUNDS * 2
        await nothing_arrives(chirp, 0.05)
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}


# --- 3. our header map as libchirp sees it ---------------------------------------------


@pytest.mark.parametrize("header_map", [True, False], ids=["map-on", "map-off"])
async def test_request_header_at_libchirp_and_in_its_echo(reference_python: Path, header_map: bool) -> None:
    async with (
        open_peer(reference_python, name="echo", SYNCHRONOUS=False, ECHO=True) as w,
        trio_chirp.open_chirp(trio_config(header_map=header_map)) as chirp,
    ):

        async def ask(header: bytes = b"") -> tuple[trio_chirp.Message, bytes, bytes]:
            response = await chirp.request(
                trio_chirp.Message(b"x", header=header, address=LOCAL, port=w.port)
            )
            seen = await w.next_event("received")
            echoed = await w.next_event("sent", where=lambda e: e["id"].startswith("echo-"))
            assert echoed["ok"], echoed
            return response, bytes.fromhex(seen["header_hex"]), bytes.fromhex(echoed["header_hex"])

        # No caller deadline: only the request flag travels.
        response, seen, echoed = await ask()
        if header_map:
            assert 0x81 <= seen[0] <= 0x8F, seen  # a fixmap
            assert seen[1:4] == MAP_START, seen
            assert msgpack.unpackb(seen) == {"tc": 1, "rq": True}
        else:
            assert seen == b""
        assert echoed == seen, "libchirp echoes the header bytes unchanged"
        assert response.header == b""
        assert response.deadline is None

        # Under a caller's deadline the map carries the remaining time; libchirp's echo
        # carries that map (and its "dl") back, so the response has a deadline too:
        # arrival time + the request's remaining time at sending.
        t0 = trio.current_time()
        with trio.fail_after(3):
            response, seen, echoed = await ask()
        t1 = trio.current_time()
        assert echoed == seen
        assert response.header == b""
        if header_map:
            fields = msgpack.unpackb(seen)
            assert set(fields) == {"tc", "dl", "rq"}
            assert fields["rq"] is True
            assert 3 - (t1 - t0) <= fields["dl"] <= 3
            assert response.deadline is not None
            assert t0 + fields["dl"] <= response.deadline <= t1 + fields["dl"]
        else:
            assert seen == b""
            assert response.deadline is None

        # An application's header travels untouched, with no map and no deadline.
        with trio.fail_after(3):
            response, seen, echoed = await ask(b"app header")
        assert seen == echoed == b"app header"
        assert response.header == b"app header"
        assert response.deadline is None

        assert chirp.statistics().requests_completed == 3
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}


# --- 4. a libchirp peer that never answers ---------------------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_request_to_a_peer_that_never_answers(reference_python: Path, sync: bool) -> None:
    """Timeout at the deadline; a late answer is dropped, and after ``timeout`` delivered."""
    async with (
        open_peer(reference_python, name="mute", SYNCHRONOUS=False) as w,  # get() ACKs, nothing more
        trio_chirp.open_chirp(trio_config(timeout=TIMEOUT)) as chirp,
    ):

        async def times_out(data: bytes) -> dict[str, Any]:
            request = trio_chirp.Message(data, address=LOCAL, port=w.port)
            start = trio.current_time()
            with pytest.raises(trio_chirp.ChirpTimeoutError, match="no response within timeout"):
                await chirp.request(request, synchronous=sync)
            assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + LATE
            stats = chirp.statistics()
            assert stats.requests_pending == 0
            assert stats.in_flight == 0
            assert stats.queued == 0
            got = await w.next_event("received")
            assert got["identity"] == request.identity.hex()
            return got

        got = await times_out(b"first")
        stats = chirp.statistics()
        assert stats.acks_before_response == (1 if sync else 0)
        assert stats.acks_in == (1 if sync else 0)
        assert stats.requests_failed == 1

        # The worker answers now, while the abandoned identity is remembered: dropped.
        reply_to = {"identity": got["identity"], "serial": got["serial"]}
        assert (await w.wait_sent(await w.send(LOCAL, chirp.port, data=b"late", reply_to=reply_to)))["ok"]
        await poll_until(lambda: chirp.statistics().late_responses == 1)
        await nothing_arrives(chirp, 0.05)

        # Once ``timeout`` has passed after giving up, a late answer is an ordinary
        # message (as with libchirp's request()).
        got = await times_out(b"second")
        await trio.sleep(TIMEOUT + 0.1)
        reply_to = {"identity": got["identity"], "serial": got["serial"]}
        assert (await w.wait_sent(await w.send(LOCAL, chirp.port, data=b"later", reply_to=reply_to)))["ok"]
        with trio.fail_after(5):
            msg = await chirp.receive()
        msg.release()
        assert (msg.identity.hex(), msg.data) == (got["identity"], b"later")

        stats = chirp.statistics()
        assert stats.requests_failed == 2
        assert stats.requests_completed == 0
        assert stats.late_responses == 1
        assert stats.requests_pending == 0
        assert stats.undelivered == 0
        assert node_errors(chirp) == {}


async def test_sync_request_to_a_peer_that_never_releases(reference_python: Path) -> None:
    """No ACK and no answer: the send's ACK wait ends at the deadline, nothing is left."""
    async with (
        open_peer(reference_python, name="holder", SYNCHRONOUS=False, AUTO_RELEASE=False, HOLD=True) as w,
        trio_chirp.open_chirp(trio_config(timeout=TIMEOUT)) as chirp,
    ):
        start = trio.current_time()
        with pytest.raises(trio_chirp.ChirpTimeoutError, match="no ACK within timeout"):
            await chirp.request(trio_chirp.Message(b"held", address=LOCAL, port=w.port))
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + LATE
        assert (await w.next_event("received"))["data_hex"] == b"held".hex()
        stats = chirp.statistics()
        assert stats.requests_pending == 0
        assert stats.requests_failed == 1
        # The unACKed message's connection is closed by its ACK timer (libchirp's rule).
        await poll_until(lambda: chirp.statistics().in_flight == 0, timeout=TIMEOUT + 2)
        assert node_errors(chirp) == {"ChirpTimeoutError": 1}
        assert_no_leftovers(chirp)
        await w.command("release", all=True)


async def test_request_under_a_callers_deadline(reference_python: Path) -> None:
    """The caller's scope is sooner than ``config.timeout``: it ends the request, Trio-style."""
    async with (
        open_peer(reference_python, name="mute", SYNCHRONOUS=False) as w,
        trio_chirp.open_chirp(trio_config()) as chirp,  # timeout 5 s
    ):
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(TIMEOUT):
            await chirp.request(trio_chirp.Message(b"hurry", address=LOCAL, port=w.port))
        assert TIMEOUT <= trio.current_time() - start <= TIMEOUT + LATE
        got = await w.next_event("received")
        dl = msgpack.unpackb(bytes.fromhex(got["header_hex"]))["dl"]
        assert 0 < dl <= TIMEOUT, "the caller's deadline travelled"
        stats = chirp.statistics()
        assert stats.acks_before_response == 1  # libchirp's get() ACKed it
        assert stats.requests_pending == 0
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}


# --- a synchronous libchirp worker that replies before releasing -----------------------
#
# The worker is synchronous and follows the rule's order (echo written, then the request
# released): it holds the request's one slot while its echo, which asks for an ACK as the
# worker is synchronous, waits for the requester's ACK. libchirp's own request() releases
# the response as soon as it is taken, so a libchirp producer completes at once; so does
# our asynchronous request(). Our synchronous request() used to keep the response (and the
# node's one slot) unreleased until its own ACK, which the worker sends only after our
# ACK of the response: both waited until ``timeout`` (the lock-up hunt's
# RESPONSE_HOLDS_SLOT). Fixed: a response is released as it arrives (auto_release).

SYNC_HANDLER_WORKER = {"SYNCHRONOUS": True, "ECHO": True, "AUTO_RELEASE": False, "ECHO_RELEASE": "after"}


async def test_a_sync_handler_style_libchirp_worker_answers_libchirp_and_async_requests(
    reference_python: Path,
) -> None:
    async with (
        open_peer(reference_python, name="worker", **SYNC_HANDLER_WORKER) as w,
        open_peer(reference_python, name="producer") as producer,  # synchronous
        trio_chirp.open_chirp(trio_config(timeout=TIMEOUT)) as chirp,
    ):
        ok = await producer.request(LOCAL, w.port, data=b"from libchirp")
        with trio.fail_after(5):
            response = await producer.wait_response(ok["id"])
            sent = await producer.wait_sent(ok["id"])
        assert response["ok"], response
        assert sent["ok"], sent
        assert response["elapsed"] < TIMEOUT / 2
        assert event_index(producer, response) < event_index(producer, sent)

        request = trio_chirp.Message(b"async", address=LOCAL, port=w.port)
        with trio.fail_after(TIMEOUT / 2):
            answer = await chirp.request(request, synchronous=False)
        assert (answer.identity, answer.data) == (request.identity, request.data)
        assert answer.ack_requested, "the worker is synchronous"
        await poll_until(lambda: chirp.statistics().acks_out == 1)  # the response's ACK
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}


async def test_sync_request_to_a_sync_handler_style_libchirp_worker(reference_python: Path) -> None:
    async with (
        open_peer(reference_python, name="worker", **SYNC_HANDLER_WORKER) as w,
        trio_chirp.open_chirp(trio_config(timeout=TIMEOUT)) as chirp,
    ):
        request = trio_chirp.Message(b"sync", address=LOCAL, port=w.port)
        try:
            answer = await chirp.request(request)
        except trio_chirp.ChirpTimeoutError as exc:  # before the fix: no ACK within timeout
            pytest.fail(f"the synchronous request locked up until its timeout: {exc}")
        assert (answer.identity, answer.data) == (request.identity, request.data)
        await poll_until(lambda: chirp.statistics().acks_out == 1)
        assert chirp.statistics().acks_before_response == 0
        assert_no_leftovers(chirp)
        assert node_errors(chirp) == {}
