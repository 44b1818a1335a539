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


def _run(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_demo() -> None:
    out = _run("demo.py")
    for number, square in ((7, 49), (12, 144), (30, 900)):
        worker = re.search(
            rf"^  worker [12]: squares {number}, with (0\.\d\d) s of the producer's deadline", out, re.M
        )
        assert worker, out
        assert 0.5 < float(worker[1]) <= 0.9, out  # 1 s less the router's margin (0.1 s) and transit
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


def test_worker_pool_example() -> None:
    out = _run("worker_pool.py")
    assert "16 answers, e.g. b'JOB 0' and b'JOB 15'" in out
    peak = re.search(r"at most (\d+) jobs ran at once \(pool of 8\)", out)
    assert peak, out
    assert 2 <= int(peak.group(1)) <= 8, out  # in parallel, never more than the pool
    took = re.search(r"16 jobs of 0\.2 s took ([\d.]+) s", out)
    assert took, out
    assert float(took.group(1)) < 3.2 / 2, out  # well under one after another
    assert "workers: 16 handled, 0 failed" in out


def test_router_chain_example() -> None:
    out = _run("router_chain.py")
    lines = out.splitlines()
    for job in ("sleep 0.1", "sleep 3"):
        left = [float(m.group(1)) for line in lines if (m := re.search(rf"{job}, ([\d.]+) s left", line))]
        assert len(left) == 3, out  # router A, router B, worker: in that order
        # The deadline shrinks at each router by its margin, min(0.1 s, 10 % of what is left),
        # and by the time in transit (shown rounded to 0.01 s, hence the 0.01 of slack).
        assert left[0] - left[1] >= 0.1 - 0.01, left
        assert left[1] - left[2] >= min(0.1, left[1] / 10) - 0.01, left
        assert left[2] > 0.5, left
    assert re.search(r"^producer: done after 0\.1 s, after 0\.1\d s$", out, re.M), out
    failed = re.search(
        r"^producer: failed after (0\.\d+) s \(before its 1 s\): ChirpTimeoutError at worker", out, re.M
    )
    assert failed, out
    assert "the handler ran past the message's deadline" in out


def test_testing_app_example_is_exact_in_virtual_time() -> None:
    out = _run("testing_app.py")
    assert "apples cost 1.20; first request took 0.200 s (connect and handshakes included)" in out
    assert "pears cost 2.10; on the open connection it took 0.100 s" in out
    assert "plums: ConnectionLostError at +0.000 s after the cut" in out
    after = re.search(r"after the cut apples still cost 1\.20 \(([\d.]+) s: debounce", out)
    assert after, out
    assert 0.25 <= float(after.group(1)) < 0.75  # 50 ms + uniform[0, 500 ms) + the 0.2 s connect
    assert out == _run("testing_app.py")  # the same to the millisecond, every run
