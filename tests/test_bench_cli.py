"""``trio-chirp bench`` and ``bench/bench_node.py``: tiny smoke runs (a fraction of a second of
workload each), checking what they write, never the figures (the machine is shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import ROOT, cli

pytestmark = pytest.mark.timeout(120)

TINY = ["--duration", "0.1", "--warmup", "0.05", "--wait-quiet", "0", "--no-progress"]


def test_bench_writes_json_and_a_chart_for_plaintext_and_tls(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra: pip install -e '.[bench]'")
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    done = cli("bench", "async-1k", *TINY, "--json", str(out_json), "--chart", str(out_png), timeout=100)
    assert done.returncode == 0, done.out + done.err
    record = json.loads(out_json.read_text())
    assert set(record) >= {"date", "commit", "version", "machine", "settings", "results"}
    assert record["date"].startswith("20")
    assert "CPUs" in record["machine"]
    assert f"trio_chirp {record['version']}" in record["machine"]
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    assert record["commit"].rstrip("+") == head.stdout.strip()
    rows = {(r["implementation"], r["workload"], r["transport"]): r for r in record["results"]}
    assert set(rows) == {("trio_chirp", "async-1k", "plaintext"), ("trio_chirp", "async-1k", "tls")}
    for row in rows.values():
        assert row["rate"] > 0
        assert row["mb_per_s"] == pytest.approx(row["rate"] * 1024 / 1e6)
    assert "| async one-way 1 KiB" in done.out
    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {out_json} and {out_png}" in done.out


def test_bench_runs_sixteen_tasks_and_a_fan_in_of_a_hundred_nodes(tmp_path: Path) -> None:
    """The two workloads that measure many senders: each measures a rate, the fan-in for trio_chirp only."""
    out_json = tmp_path / "b.json"
    done = cli(
        "bench", "sync-1k-16", "fanin-1k-100", *TINY, "--transport", "plaintext", "--json", str(out_json),
        "--no-chart", timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.out + done.err
    rows = {r["workload"]: r for r in json.loads(out_json.read_text())["results"]}
    assert set(rows) == {"sync-1k-16", "fanin-1k-100"}
    assert all(row["rate"] > 0 for row in rows.values())
    assert "| sync 1 KiB from 100 sender nodes " in done.out


def test_bench_refuses_bad_arguments_before_measuring(tmp_path: Path) -> None:
    done = cli("bench", "async-2k")
    assert done.returncode == 2
    assert done.err.startswith("trio-chirp bench: unknown workload 'async-2k'; choose from async-1k")
    done = cli("bench", "--reference-python", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "no such file" in done.err
    nowhere = tmp_path / "no" / "b.json"
    done = cli("bench", "--json", str(nowhere))
    assert done.returncode == 2
    assert done.err == f"trio-chirp bench: cannot write {nowhere}: no directory {nowhere.parent}\n"


def test_bench_node_keeps_its_command_line_and_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_node.py"), "async-100", *TINY[:-1]],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  async-100: " in done.stdout
    assert "| workload                                     |   measured |      target |" in done.stdout
    assert "| async one-way 100 B" in done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_ctrl_c_stops_bench_and_its_processes(tmp_path: Path) -> None:
    long_run = ["--duration", "60", "--wait-quiet", "0", "--no-progress", "--json", str(tmp_path / "b.json")]
    with subprocess.Popen(
        [sys.executable, "-m", "trio_chirp", "bench", "async-1k", "--transport", "plaintext", *long_run],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as bench:
        try:
            assert bench.stdout is not None
            line = ""
            while line != "  measuring for 60 s\n":  # both processes run the workload now
                line = bench.stdout.readline()
                assert line, bench.communicate(timeout=10)
            children = _children(bench.pid)
            assert len(children) == 2, children  # the receiver and the sender
            sent = time.monotonic()
            bench.send_signal(signal.SIGINT)
            _, err = bench.communicate(timeout=20)
            took = time.monotonic() - sent
        finally:
            bench.kill()
    assert bench.returncode == 130
    assert err.endswith("trio-chirp bench: stopped (Ctrl-C)\n"), err
    assert took < 3.0, took
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "children left running"
    assert not (tmp_path / "b.json").exists()  # nothing half-measured written


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
