"""Helpers of the attack tests on an asynchronous request() reading its response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
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
from trio_chirp._reading import FrameReader
from trio_chirp.testing import MemoryNetwork

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
PORT = 2998
LATENCY = 0.01


@asynccontextmanager
async def node(
    net: MemoryNetwork, ip: str, pki: PKISet | None = None, **settings: Any
) -> AsyncIterator[Chirp]:
    settings.setdefault("port", PORT)
    settings.setdefault("synchronous", False)
    config = Config(disable_encryption=True, **settings) if pki is None else pki.config("alpha", **settings)
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7)) as chirp:
        yield chirp


def msg_to(data: bytes, ip: str) -> Message:
    return Message(data, address=ip, port=PORT)


def conn_of(chirp: Chirp, ip: str) -> Connection:
    remote = chirp._remotes.find((ip, PORT))
    assert remote is not None
    assert remote.current is not None
    return remote.current


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
