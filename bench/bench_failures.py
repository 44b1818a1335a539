#!/usr/bin/env python3
"""How the node fails, as a user sees it, on real loopback TCP (issue 7's figures).

    .venv/bin/python bench/bench_failures.py

* ``first error``: a synchronous send, default ``Config`` (timeout 5 s), to a port where
  nothing listens: how long until it raises, and what.
* ``3 s of retries``: an application that resends at once after each failure for 3 s to that
  port: sends, connection attempts (``statistics().errors``) and WARNING lines logged.
* ``SIGINT``: ``tests/programs/sigint_child.py`` (``timeout=30``, a synchronous send waiting
  for an ACK that never comes) gets SIGINT: seconds until the process exited.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import trio_chirp  # noqa: E402


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _failures() -> None:
    port = _closed_port()
    counter = _Count()
    logging.getLogger("trio_chirp").addHandler(counter)
    logging.getLogger("trio_chirp").propagate = False
    async with trio_chirp.open_chirp(trio_chirp.Config(port=0, bind_v6=None)) as chirp:
        start = trio.current_time()
        try:
            await chirp.send(trio_chirp.Message(b"x", address="127.0.0.1", port=port))
        except trio_chirp.ChirpError as exc:
            print(f"first error: {type(exc).__name__} after {trio.current_time() - start:.3f} s")
        before = sum(chirp.statistics().errors.values())
        sends = 0
        end = trio.current_time() + 3.0
        while trio.current_time() < end:
            sends += 1
            try:
                await chirp.send(trio_chirp.Message(b"x", address="127.0.0.1", port=port))
            except trio_chirp.ChirpError:
                await trio.sleep(0.001)
        attempts = sum(chirp.statistics().errors.values()) - before
        print(f"3 s of retries: {sends} sends, {attempts} connection attempts")
        print(f"WARNING lines over the first send and the 3 s of retries: {counter.lines}")


def _sigint() -> None:
    child = ROOT / "tests" / "programs" / "sigint_child.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's trio_chirp, not an installed one
    with subprocess.Popen(
        [sys.executable, str(child), "send"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "READY\n"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
        print(f"SIGINT with a send awaiting its ACK (timeout=30): exited after {elapsed:.3f} s")


if __name__ == "__main__":
    trio.run(_failures)
    _sigint()
