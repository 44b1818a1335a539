"""Run ``trio-chirp`` (as ``python -m trio_chirp``) in real subprocesses for the command-line tests.

A listening command is waited for by its ``listening on port N`` line, never by sleeping;
every wait is bounded (``communicate(timeout=...)``, pytest-timeout around ``readline``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"^(\w+): listening on port (\d+) ")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@dataclass
class Done:
    returncode: int
    out: str
    err: str


def cli(*args: str, timeout: float = 30, stdin: str | None = None) -> Done:
    """Run a command to its end."""
    done = subprocess.run(
        [sys.executable, "-m", "trio_chirp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        input=stdin,
    )
    return Done(done.returncode, done.stdout, done.stderr)


class Server:
    """A listening command (echo, listen, router) started and waited for until it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_chirp", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = LISTENING.match(line)
        if found is None:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"no 'listening' line: {line!r} {out!r} {err!r}")
        self.port = int(found.group(2))
        self.address = f"127.0.0.1:{self.port}"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def interrupt(self) -> tuple[Done, float]:
        """Ctrl-C (SIGINT); the outcome and the seconds it took to exit."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        return Done(self.proc.returncode, out, err), time.monotonic() - sent

    def wait(self) -> Done:
        out, err = self.proc.communicate(timeout=20)
        return Done(self.proc.returncode, out, err)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
