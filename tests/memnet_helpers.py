"""Helpers for node tests on the in-memory network: a node factory and a raw fake peer."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

from trio_chirp import Chirp, Config, Message, open_chirp
from trio_chirp._protocol import NEED_DATA, FrameHead, FrameParser, decode_announcement, encode_handshake
from trio_chirp.testing import MemoryNetwork, MemoryStream

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
PORT = 2998


class LowRandom(random.Random):
    """Every ``uniform(a, b)`` draws ``a``: debounce is 50 ms, GC ticks every R/2."""

    def uniform(self, a: float, b: float) -> float:
        return a


@asynccontextmanager
async def node(net: MemoryNetwork, ip: str, **settings: Any) -> AsyncIterator[Chirp]:
    settings.setdefault("port", PORT)
    config = Config(disable_encryption=True, **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


def to(chirp_or_ip: Chirp | str, data: bytes = b"x", port: int = PORT) -> Message:
    ip = chirp_or_ip if isinstance(chirp_or_ip, str) else "?"
    return Message(data, address=ip, port=port)


class FakePeer:
    """A raw peer on the memory network: records decoded frames, answers as told."""

    def __init__(self, net: MemoryNetwork, ip: str, port: int = PORT) -> None:
        self.net, self.ip, self.port = net, ip, port
        self.streams: list[MemoryStream] = []
        self.events: list[tuple[float, object]] = []
        self.accepted = trio.Event()
        self.eof = trio.Event()
        self.send_handshake = True
        self.announcement = b""
        """Written right after the handshake (``encode_announcement(...)``): a trio_chirp peer."""
        self.nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self._serve)
            task_status.started()

    async def _serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.net.host(self.ip).serve(
            port=self.port,
            bind_v4="0.0.0.0",
            bind_v6=None,
            backlog=8,
            on_accept=self._on_accept,
            task_status=task_status,
        )

    def _on_accept(self, stream: trio.abc.Stream, peer: str) -> None:
        assert isinstance(stream, MemoryStream)
        self.streams.append(stream)
        self.accepted.set()
        assert self.nursery is not None
        self.nursery.start_soon(self._read, stream)

    async def _read(self, stream: MemoryStream) -> None:
        if self.send_handshake:
            await stream.send_all(encode_handshake(self.port, b"\xee" * 16) + self.announcement)
        parser = FrameParser(2**32)
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.events.append((trio.current_time(), "EOF"))
                    self.eof.set()
                    return
                parser.receive_data(data)
                continue
            self.events.append((trio.current_time(), event))

    def frames(self) -> list[FrameHead]:
        """Every frame the node sent, but its announcement (as a libchirp peer sees them)."""
        return [e for e in self.all_frames() if not (e.is_noop and decode_announcement(e.identity))]

    def all_frames(self) -> list[FrameHead]:
        return [e for _, e in self.events if isinstance(e, FrameHead)]


class NodeInAThread:
    """A trio_chirp node in its own thread and Trio run: a peer whose timing is a real
    network's (a node in the test's own run shares its scheduler, so which side runs first
    is a coin toss there). ``behave(chirp)`` runs until it returns or the node is stopped."""

    def __init__(self, config: Any, behave: Any) -> None:
        import queue
        import threading

        self._config, self._behave = config, behave
        self._ports: queue.Queue[int | BaseException] = queue.Queue()
        self._stop: Any = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from trio_chirp import open_chirp

        async def run() -> None:
            try:
                async with open_chirp(self._config) as chirp, trio.open_nursery() as nursery:
                    self._stop = (trio.lowlevel.current_trio_token(), nursery.cancel_scope.cancel)
                    self._ports.put(chirp.port)
                    await self._behave(chirp)
            except BaseException as exc:
                self._ports.put(exc)
                raise

        trio.run(run)

    async def __aenter__(self) -> int:
        self._thread.start()
        port = await trio.to_thread.run_sync(self._ports.get)
        if isinstance(port, BaseException):
            raise port
        return port

    async def __aexit__(self, *exc: object) -> None:
        if self._stop is not None:
            token, cancel = self._stop
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(cancel)  # thread-safe, does not block
        await trio.to_thread.run_sync(self._thread.join)


async def memory_pair(
    net: MemoryNetwork, nursery: trio.Nursery, client: str = "10.0.0.1", server: str = "10.0.0.2"
) -> tuple[MemoryStream, MemoryStream]:
    """Both ends of one connection on ``net``: from ``client`` to a listener at ``server``
    (run by ``nursery``)."""
    accepted: list[MemoryStream] = []

    def on_accept(stream: trio.abc.Stream, peer: str) -> None:
        assert isinstance(stream, MemoryStream)
        accepted.append(stream)

    serve = partial(
        net.host(server).serve, port=0, bind_v4="0.0.0.0", bind_v6=None, backlog=8, on_accept=on_accept
    )
    port: int = await nursery.start(serve)
    stream, _ = await net.host(client).connect(server, port)
    await trio.testing.wait_all_tasks_blocked()
    return stream, accepted[0]


async def serve_raw(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    ip: str,
    port: int,
    talk: Callable[[MemoryStream], Awaitable[None]],
) -> None:
    """A raw peer listening at ``ip:port`` on ``net``: each accepted stream runs ``talk(stream)``
    in ``nursery`` (which also runs the listener)."""

    def on_accept(stream: trio.abc.Stream, peer: str) -> None:
        assert isinstance(stream, MemoryStream)
        nursery.start_soon(talk, stream)

    serve = partial(
        net.host(ip).serve, port=port, bind_v4="0.0.0.0", bind_v6=None, backlog=8, on_accept=on_accept
    )
    await nursery.start(serve)


async def read_frames(
    stream: trio.abc.Stream, handle: Callable[[object], Awaitable[bool | None]] | None = None
) -> None:
    """A raw peer's reading: parse frames from ``stream`` until its end (EOF, or the stream
    broken or closed), awaiting ``handle(event)`` for each event (a ``FrameHead``, a
    ``DataFrame``, ...); stop early when it returns True. Without ``handle``: drain."""
    parser = FrameParser(2**20)
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            parser.receive_data(data)
        elif handle is not None and await handle(event):
            return
