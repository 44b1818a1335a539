"""Ctrl-C with a send in flight exits at once, running the app's finally blocks (issue 7).

Real processes and real TCP: SIGINT goes to a child running ``programs/sigint_child.py``
with ``config.timeout=30``; before, the exit waited for the ACK grace (up to 30 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).resolve().parent / "programs" / "sigint_child.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")


def _interrupt(mode: str) -> tuple[str, float, int]:
    with subprocess.Popen(
        [sys.executable, str(CHILD), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            line = child.stdout.readline()  # blocks until the child is in place
            assert line == "READY\n", line + child.communicate(timeout=10)[1]
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            out, _ = child.communicate(timeout=20)
            elapsed = time.monotonic() - sent
        finally:
            child.kill()
    return out, elapsed, child.returncode


@pytest.mark.parametrize("mode", ["send", "receive"])
def test_sigint_exits_within_a_second_and_runs_finally_blocks(mode: str) -> None:
    out, elapsed, returncode = _interrupt(mode)
    assert "FINALLY app" in out, out
    assert "FINALLY run" in out, out
    assert returncode != 0  # the KeyboardInterrupt propagated; no os._exit
    assert elapsed < 1.0, (elapsed, out)
    # No stray WouldBlock (or anything else) as the interrupt's context.
    assert "CONTEXT NoneType" in out, out
