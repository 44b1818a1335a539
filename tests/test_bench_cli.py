"""``trio-chirp bench`` and ``bench/bench_node.py``: tiny smoke runs (a fraction of a second of
workload each), checking what they write, never the figures (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_bench_refuses_an_unknown_workload_and_a_missing_reference(tmp_path: Path) -> None:
    done = cli("bench", "async-2k")
    assert done.returncode == 2
    assert done.err.startswith("trio-chirp bench: unknown workload 'async-2k'; choose from async-1k")
    done = cli("bench", "--reference-python", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "no such file" in done.err


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
