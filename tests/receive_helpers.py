"""Helpers of the receive()-reading attack tests (test_receive_reading_hostile/_storm.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
import trio.testing
from memnet_helpers import LowRandom
from tls_helpers import PKISet

from trio_chirp import (
    Chirp,
    Config,
    Message,
    open_chirp,
)
from trio_chirp._connection import Connection
from trio_chirp.testing import MemoryNetwork

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def node(
    net: MemoryNetwork, ip: str, pki: PKISet | None = None, **settings: Any
) -> AsyncIterator[Chirp]:
    settings.setdefault("port", PORT)
    config = Config(disable_encryption=True, **settings) if pki is None else pki.config("alpha", **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


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
