"""An asynchronous ``request()`` reads its response from its connection itself (``_reading.py``).

Issue 14, section 1: the task that waits for what only its own connection can deliver reads
it when nobody else does. For an asynchronous request, that is its response: a request loop
takes one task step per request; a response that comes on another connection ends the read
at once; a request cancelled while reading hands the reading back and loses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from memnet_helpers import LowRandom, read_frames, serve_raw

from trio_chirp import Chirp, Config, Message, open_chirp
from trio_chirp._protocol import DataFrame, FrameHead, encode_handshake, pack_frame_head
from trio_chirp._reading import FrameReader
from trio_chirp.testing import MemoryNetwork, MemoryStream

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def _node(net: MemoryNetwork, ip: str, **settings: Any) -> AsyncIterator[Chirp]:
    async with open_chirp(
        Config(port=PORT, disable_encryption=True, synchronous=False, **settings),
        transport=net.host(ip),
        rng=LowRandom(7),
    ) as chirp:
        yield chirp


def _reading_to(chirp: Chirp, ip: str, port: int = PORT) -> FrameReader:
    reading = chirp._remotes.reading_of((ip, port))
    assert reading is not None
    return reading


async def _answer(chirp: Chirp) -> None:
    async for msg in chirp:
        await chirp.reply(msg, b"re:" + bytes(msg.data))


async def test_a_request_loop_reads_its_own_responses(autojump_clock: Any) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with _node(net, A) as a, _node(net, B) as b, trio.open_nursery() as nursery:
        nursery.start_soon(_answer, b)
        answers = [
            bytes((await a.request(Message(b"q%d" % i, address=B, port=PORT))).data) for i in range(12)
        ]
        assert answers == [b"re:q%d" % i for i in range(12)]
        # The first request finds the reader reading and sits in its seat; the reader stands
        # aside once it has delivered that response, and every later request reads its own.
        assert _reading_to(a, B).response_reads == 11
        assert a.statistics().slots_in_use == 0
        nursery.cancel_scope.cancel()


async def test_a_request_cancelled_while_reading_loses_nothing(autojump_clock: Any) -> None:
    """A request gives up while it reads (its responder holds the request); the late
    response is dropped, the connection goes on, and later requests read as before."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    held: list[Message] = []
    async with _node(net, A) as a, _node(net, B) as b, trio.open_nursery() as nursery:

        async def answer_but_hold_slow() -> None:
            async for msg in b:
                if msg.data == b"slow":
                    held.append(msg)
                else:
                    await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(answer_but_hold_slow)
        for i in range(3):
            await a.request(Message(b"q%d" % i, address=B, port=PORT))
        reading = _reading_to(a, B)
        reads = reading.response_reads
        with trio.move_on_after(1) as scope:
            await a.request(Message(b"slow", address=B, port=PORT))
        assert scope.cancelled_caught
        assert reading.response_reads == reads + 1  # it was reading when it gave up
        assert reading.owner is not trio.lowlevel.current_task()
        await b.reply(held[0], b"too late")
        for i in range(3, 6):
            response = await a.request(Message(b"q%d" % i, address=B, port=PORT))
            assert response.data == b"re:q%d" % i  # not the late one
        assert _reading_to(a, B) is reading  # the same connection
        assert a.statistics().late_responses == 1
        nursery.cancel_scope.cancel()


async def _raw_responder(
    net: MemoryNetwork,
    nursery: trio.Nursery,
    answer: Callable[[MemoryStream, FrameHead, int], Awaitable[None]],
) -> None:
    """A raw peer at C, listening on ``PORT``: it sends its handshake to whoever dials it and
    calls ``answer(stream, head, n)`` for the n-th message frame (1, 2, ...) once it is read."""

    async def talk(stream: MemoryStream) -> None:
        await stream.send_all(encode_handshake(PORT, b"\xee" * 16))
        answered = 0

        async def on_frame(event: object) -> None:
            nonlocal answered
            if isinstance(event, DataFrame):  # a message read whole: its head, map and data
                answered += 1
                await answer(stream, event.head, answered)

        await read_frames(stream, on_frame)

    await serve_raw(nursery, net, C, PORT, talk)


async def test_a_response_on_another_connection_ends_the_read(autojump_clock: Any) -> None:
    """A raw peer at C answers A's first requests on the connection A dialled, then answers
    one on a second connection it opens to A: that request, reading the first connection,
    returns at once instead of at its timeout."""
    net = MemoryNetwork()
    net.set_latency(A, C, LATENCY)

    async def answer(stream: MemoryStream, head: FrameHead, n: int) -> None:
        response = pack_frame_head(head.identity, head.serial, 2, 0, 0) + b"ok"
        if n < 3:
            await stream.send_all(response)
            return
        other, _ = await net.host(C).connect(A, PORT)
        await other.send_all(encode_handshake(PORT, b"\xee" * 16) + response)

    async with trio.open_nursery() as nursery:
        await _raw_responder(net, nursery, answer)
        async with _node(net, A) as a:
            for _ in range(2):
                assert (await a.request(Message(b"q", address=C, port=PORT))).data == b"ok"
            first = _reading_to(a, C)
            assert first.response_reads == 1  # the second request read its response itself
            with trio.fail_after(1):  # the timeout is 5 s: only an ended read returns sooner
                response = await a.request(Message(b"q", address=C, port=PORT))
            assert response.data == b"ok"
            assert first.response_reads == 2  # the third one read the first connection
        nursery.cancel_scope.cancel()


async def test_a_peer_stalling_mid_frame_is_caught_after_the_reading_request_gives_up(
    autojump_clock: Any,
) -> None:
    """A raw peer at C answers A's second request with half a frame and stalls. The request,
    reading, gives up (its caller's deadline) in the middle of that frame; the reader task
    reads on, and the connection is still closed as stalled mid-frame, timeout after the
    reader took over (the stall watch is never left behind by the task that gave up)."""
    net = MemoryNetwork()
    net.set_latency(A, C, LATENCY)
    stalled = trio.Event()

    async def answer(stream: MemoryStream, head: FrameHead, n: int) -> None:
        response = pack_frame_head(head.identity, head.serial, 4, 0, 0) + b"okay"
        if n < 3:
            await stream.send_all(response)
            return
        await stream.send_all(response[:-2])  # half the data, then nothing
        stalled.set()

    async with trio.open_nursery() as nursery:
        await _raw_responder(net, nursery, answer)
        async with _node(net, A, timeout=3.0) as a:
            for _ in range(2):
                await a.request(Message(b"q", address=C, port=PORT))
            reading = _reading_to(a, C)
            conn = a._remotes.find((C, PORT)).current  # type: ignore[union-attr]
            with trio.move_on_after(0.5) as gave_up:
                await a.request(Message(b"q", address=C, port=PORT))
            assert gave_up.cancelled_caught
            assert stalled.is_set()
            assert reading.response_reads == 2  # the request was reading when it gave up
            # Virtual time (the autojump clock): the stall is timed from the reader's turn.
            await trio.sleep(2.9)
            assert not conn.closed
            await trio.sleep(0.2)
            assert conn.closed
            assert "stalled mid-frame" in str(conn.failure)
        nursery.cancel_scope.cancel()


async def test_a_seated_request_is_not_stood_aside_for_by_an_unrelated_frame(autojump_clock: Any) -> None:
    """The reader stands aside for a seated request only once its response is in: a note
    that B sends before the response is read and delivered as usual, and the request then
    gets its response (were the seat taken as woken from the start, the reader would stand
    aside after the note and nobody would read the response)."""
    net = MemoryNetwork()
    net.set_latency(A, B, LATENCY)
    async with _node(net, A) as a, _node(net, B) as b, trio.open_nursery() as nursery:

        async def note_then_answer() -> None:
            async for msg in b:
                await b.send(Message(b"note", address=A, port=PORT))
                await trio.sleep(0.5)
                await b.reply(msg, b"re:" + bytes(msg.data))

        nursery.start_soon(note_then_answer)
        with trio.fail_after(2):  # the timeout is 5 s
            response = await a.request(Message(b"q", address=B, port=PORT))
        assert response.data == b"re:q"
        note = a._inbox.take_nowait()
        assert note is not None
        assert note.data == b"note"
        note.release()
        nursery.cancel_scope.cancel()
