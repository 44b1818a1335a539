"""The runnable examples in examples/ run and say what the docs say they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(60)


def _run(name: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=50, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_demo() -> None:
    out = _run("demo.py")
    for number, square in ((7, 49), (12, 144), (30, 900)):
        assert re.search(
            rf"^  worker [12]: squares {number}, with 0\.[89]\d s of the producer's deadline left$", out, re.M
        )
        assert re.search(rf"^producer: {square} in [\d.]+ ms, via 127\.0\.0\.1:\d+$", out, re.M), out
    failed = re.search(
        r"^producer: failed after ([\d.]+) ms, not 1 s: ValueError at worker on port \d+", out, re.M
    )
    assert failed, out
    assert float(failed.group(1)) < 500  # at once, by an error response: not at the 1 s deadline
    assert "producer: 3 answered, 1 failed (1 by an error response)" in out
    assert "router:   3 forwarded, 3 responses returned, failed {'next hop failed': 1}" in out
    workers = re.findall(r"^  worker [12]: (\d+) handled, (\d+) failed, (\d+) error response", out, re.M)
    assert [sum(int(w[i]) for w in workers) for i in range(3)] == [3, 1, 1], workers


def test_request_reply_example() -> None:
    out = _run("request_reply.py")
    assert "producer: b'12' squared is b'144'" in out
    assert "producer: b'oops' failed at the worker: ValueError" in out
    assert re.search(r"with 1\.[45]\d s of the producer's deadline left", out), out


def test_router_example() -> None:
    out = _run("router.py")
    assert "producer: b'job one' -> b'JOB ONE'" in out
    assert re.search(r"fast worker: got b'job one', 0\.(9\d|8[5-9]) s left", out), (
        out
    )  # 1 s minus the 0.1 s margin
    assert "the handler ran past the message's deadline" in out
    assert "router: 1 forwarded, 1 response(s) returned" in out
