"""Helpers of the tests of tasks that read their own connection (``_reading.py``): nodes on
the in-memory network, the step instruments that cancel a task after its k-th step or count
its steps, and small waits in virtual time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
import trio.testing
from memnet_helpers import LowRandom
from tls_helpers import PKISet

from trio_chirp import Chirp, Config, Message, open_chirp
from trio_chirp._connection import Connection
from trio_chirp._reading import FrameReader
from trio_chirp.testing import MemoryNetwork

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def node(
    net: MemoryNetwork, ip: str, pki: PKISet | None = None, **settings: Any
) -> AsyncIterator[Chirp]:
    """A node at ``ip`` listening on ``PORT`` (plaintext, or TLS with ``pki``)."""
    settings.setdefault("port", PORT)
    config = Config(disable_encryption=True, **settings) if pki is None else pki.config("alpha", **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


def async_node(
    net: MemoryNetwork, ip: str, pki: PKISet | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[Chirp]:
    """``node`` in asynchronous mode unless told otherwise (requests' tests)."""
    settings.setdefault("synchronous", False)
    return node(net, ip, pki, **settings)


def conn_of(chirp: Chirp, ip: str) -> Connection:
    remote = chirp._remotes.find((ip, PORT))
    assert remote is not None
    assert remote.current is not None
    return remote.current


def msg_to(data: bytes, ip: str) -> Message:
    return Message(data, address=ip, port=PORT)


async def up(a: Chirp, b: Chirp, ip_a: str, ip_b: str) -> Connection:
    """One connection between a and b (b dials a), attached on a's side; a's reader runs."""
    await b.send(msg_to(b"hello", ip_a), synchronous=False)
    with trio.fail_after(5):
        got = await a.receive()
    assert bytes(got.data) == b"hello"
    got.release()
    await trio.testing.wait_all_tasks_blocked()
    return conn_of(a, ip_b)


class Got(list):  # type: ignore[type-arg]
    """A list whose ``wait_len(n)`` returns once it holds n items (an event per append)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_len(self, n: int, limit: float) -> None:
        with trio.fail_after(limit):
            while len(self) < n:
                await self._changed.wait()


async def until(cond: Any, limit: float = 5.0) -> None:
    """Poll ``cond`` in virtual time (MockClock): for effects that travel the network's latency."""
    with trio.fail_after(limit):
        while not cond():
            await trio.testing.wait_all_tasks_blocked()
            if not cond():
                await trio.sleep(0.001)


async def receiver_owns(b: Chirp, ip_a: str, conn: Connection) -> trio.lowlevel.Task:
    """A receive() loop runs on A: B's synchronous message (ACKed on release) hands the
    reading to the loop's next receive(); return that task (the reading's owner)."""
    await b.send(msg_to(b"warm", ip_a))
    await until(lambda: isinstance(conn.reading.owner, trio.lowlevel.Task))
    owner = conn.reading.owner
    assert isinstance(owner, trio.lowlevel.Task)
    return owner


def reading_to(chirp: Chirp, ip: str) -> FrameReader:
    reading = chirp._remotes.reading_of((ip, PORT))
    assert reading is not None
    return reading


async def echo(chirp: Chirp, delay: Callable[[bytes], float] | None = None) -> None:
    """Answer every message with ``re:<data>``, each from its own task (after ``delay``)."""
    async with trio.open_nursery() as nursery:
        async for msg in chirp:

            async def answer(msg: Message) -> None:
                if delay is not None:
                    await trio.sleep(delay(bytes(msg.data)))
                await chirp.reply(msg, b"re:" + bytes(msg.data))

            nursery.start_soon(answer, msg)


class CancelAfterSteps(trio.abc.Instrument):
    """Cancel ``scope`` after the ``k``-th step of ``task``."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope, k: int) -> None:
        self.task, self.scope, self.k = task, scope, k
        self.steps = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1
            if self.steps == self.k:
                self.scope.cancel()


class StepCounter(trio.abc.Instrument):
    """Counts the task steps of one task (``steps``)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task, self.steps = task, 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def hold_some(
    chirp: Chirp, held: list[Message], hold: bytes = b"hold", holding: trio.Event | None = None
) -> None:
    """Receive on ``chirp`` for ever: keep messages whose data is ``hold`` in ``held``
    unreleased (so their ACK never goes; ``holding`` is set at the first), release the rest."""
    async for msg in chirp:
        if msg.data == hold:
            held.append(msg)
            if holding is not None:
                holding.set()
        else:
            msg.release()
