"""``trio-chirp bench``: the standard workloads, plaintext and TLS, optionally against the references.

Every run is two processes on loopback started by the same orchestrator as
``bench/bench_node.py`` (``_orchestrate.run_workload``); this module chooses the runs,
drives the live display, and hands the rows to ``_report`` for the table, JSON and chart.
"""

from __future__ import annotations

import argparse
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._orchestrate import machine, make_tls_dir, run_workload
from ._progress import LiveProgress
from ._reference import NO_TLS, run_reference, unavailable
from ._report import Row, commit, table, write_chart, write_json
from ._workloads import BENCH_WORKLOADS, STANDARD, Workload, megabytes_per_second

REFERENCE_MODES = ("async", "sync", "echo")


class BenchUsageError(Exception):
    """The run cannot start as asked (the message says what to change)."""


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    json_path: Path
    chart_path: Path | None
    chart_note: str | None


def harness_args(args: argparse.Namespace, tls_dir: Path | None) -> argparse.Namespace:
    """The options ``run_workload`` reads (bench_node.py's), from ``trio-chirp bench``'s."""
    return argparse.Namespace(
        warmup=args.warmup,
        duration=args.duration,
        repeat=args.repeat,
        wait_quiet=args.wait_quiet,
        connections=1000,
        profile=None,
        same_cpu=False,
        instrument=False,
        release_first=False,
        new_message=not getattr(args, "reuse_message", False),
        deadline=False,
        no_header_map=False,
        tls=tls_dir,
        child_timeout=args.timeout,
    )


def _row(
    implementation: str, w: Workload, transport: str, result: dict[str, Any] | None, note: str | None
) -> Row:
    row = Row(implementation, w.name, w.title, transport, w.unit, w.size, w.tasks, note=note)
    if result is not None:
        row.rate = result["rate"]
        row.mb_per_s = megabytes_per_second(w, result["rate"])
        row.recv_cpu, row.send_cpu, row.other_cpu = (
            result["recv_cpu"],
            result["send_cpu"],
            result["other_cpu"],
        )
    return row


def _line(row: Row) -> str:
    if row.rate is None:
        return f"{row.implementation} {row.workload} ({row.transport}): {row.note}"
    return (
        f"{row.implementation} {row.workload} ({row.transport}): {row.rate:,.0f} {row.unit},"
        f" {row.mb_per_s:,.1f} MB/s (CPU: receiver {row.recv_cpu:.0%}, sender {row.send_cpu:.0%},"
        f" other processes {row.other_cpu:.0%})"
    )


def run(args: argparse.Namespace) -> Outcome:
    """Run the chosen workloads; print each result as it comes and the table at the end."""
    names = args.workloads or list(STANDARD)
    transports = {"both": ["plaintext", "tls"], "plaintext": ["plaintext"], "tls": ["tls"]}[args.transport]
    tls_dir = args.tls_dir
    if tls_dir is None and "tls" in transports:
        try:
            tls_dir = make_tls_dir()
        except ImportError as exc:
            message = f"the TLS runs need certificates: {exc} (or --transport plaintext)"
            raise BenchUsageError(message) from None
    implementations = ["trio_chirp"]
    missing: dict[str, str] = {}
    if args.reference_python is not None:
        for name in ("libchirp", "pyzmq"):
            implementations.append(name)
            reason = unavailable(args.reference_python, name)
            if reason is not None:
                missing[name] = reason
    plan = [(impl, name, transport) for name in names for transport in transports for impl in implementations]
    where = machine()
    print(where)
    print(
        f"warm-up {args.warmup}s, measuring {args.duration}s per run, best of {args.repeat};"
        f" CPUs {sorted(os.sched_getaffinity(0))}; TLS: receiver 127.0.0.2, sender 127.0.0.3",
        flush=True,
    )
    rows: list[Row] = []
    with LiveProgress(len(plan), enabled=not args.no_progress) as live:
        for impl, name, transport in plan:
            w = BENCH_WORKLOADS[name]
            note = _skip_reason(impl, w, transport, missing)
            result = None
            if note is None:
                live.start(f"{impl} {w.title} ({transport})", args.duration)
                if impl == "trio_chirp":
                    harness = harness_args(args, tls_dir if transport == "tls" else None)
                    result = run_workload(w, harness, live.update)
                else:
                    result = run_reference(
                        impl, w, harness_args(args, None), args.reference_python, live.update
                    )
            row = _row(impl, w, transport, result, note)
            rows.append(row)
            if note is None:
                live.done(_line(row))
    print()
    print(table(rows))
    json_path: Path = args.json
    write_json(json_path, rows, where, _settings(args, names, transports))
    chart_path: Path | None = None
    chart_note = None
    if args.chart is not None:
        title = f"trio-chirp bench {datetime.date.today()}, commit {commit() or '?'}: {where}"
        chart_note = write_chart(args.chart, rows, title)
        chart_path = None if chart_note else args.chart
    return Outcome(rows, json_path, chart_path, chart_note)


def _skip_reason(impl: str, w: Workload, transport: str, missing: dict[str, str]) -> str | None:
    if impl == "trio_chirp":
        raw_tls = transport == "tls" and w.mode.startswith("raw-")
        return "a baseline of raw trio streams: plaintext only" if raw_tls else None
    if impl in missing:
        return missing[impl]
    if transport == "tls":
        return NO_TLS[impl]
    if w.mode not in REFERENCE_MODES:
        return f"no {w.mode} workload for {impl}"
    if w.nodes > 1:
        return f"not measured for {impl}: the fan-in compares trio_chirp with itself (one sender node)"
    return None


def _settings(args: argparse.Namespace, names: list[str], transports: list[str]) -> dict[str, Any]:
    return {
        "workloads": names,
        "transports": transports,
        "warmup": args.warmup,
        "duration": args.duration,
        "repeat": args.repeat,
        "reference_python": None if args.reference_python is None else str(args.reference_python),
    }
