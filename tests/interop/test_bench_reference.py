"""``trio-chirp bench --reference-python``: the same workload on libchirp in its own interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def test_bench_measures_libchirp_and_prints_the_ratio(reference_python: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "b.json"
    tiny = ["--duration", "0.1", "--warmup", "0.05", "--wait-quiet", "0", "--no-progress", "--no-chart"]
    reference = ["--reference-python", str(reference_python), "--json", str(out_json)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_chirp",
            "bench",
            "sync-1k",
            "--transport",
            "plaintext",
            *tiny,
            *reference,
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["implementation"]: r for r in json.loads(out_json.read_text())["results"]}
    ours, theirs = rows["trio_chirp"], rows["libchirp"]
    assert theirs["rate"] > 0, theirs
    line = next(line for line in done.stdout.splitlines() if line.startswith("| sync 1 KiB (ACK each)"))
    assert f"{ours['rate'] / theirs['rate']:.2f}" in line
    # pyzmq: measured where the reference environment has it, else a note that says so.
    assert rows["pyzmq"]["rate"] or "No module named 'zmq'" in rows["pyzmq"]["note"]
