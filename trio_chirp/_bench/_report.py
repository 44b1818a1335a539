"""What ``trio-chirp bench`` leaves behind: the table on stdout, a JSON file and a PNG chart.

The JSON is the record the docs' performance page shows: when (``date``), what
(``commit``, ``version``), where (``machine``), how (``settings``) and one entry per
implementation, workload and transport. The chart needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio_chirp

from ._orchestrate import PACKAGE_ROOT
from ._workloads import ALL_WORKLOADS

IMPLEMENTATIONS = ("trio_chirp", "libchirp", "pyzmq")


@dataclass
class Row:
    """One measurement (or why there is none: ``note``)."""

    implementation: str
    workload: str
    title: str
    transport: str  # "plaintext" or "tls"
    unit: str
    size: int
    tasks: int
    rate: float | None = None
    mb_per_s: float | None = None
    recv_cpu: float | None = None
    send_cpu: float | None = None
    other_cpu: float | None = None
    note: str | None = None


def commit() -> str | None:
    """The git commit of the checkout trio_chirp runs from, if it runs from one (``+`` if modified)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def write_json(path: Path, rows: Sequence[Row], machine: str, settings: dict[str, Any]) -> None:
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "version": trio_chirp.__version__,
        "machine": machine,
        "settings": settings,
        "results": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def _ours(rows: Sequence[Row], row: Row) -> Row | None:
    for other in rows:
        if (other.implementation, other.workload, other.transport) == (
            "trio_chirp",
            row.workload,
            row.transport,
        ):
            return other
    return None


def ratio(rows: Sequence[Row], row: Row) -> float | None:
    """trio_chirp's rate over ``row``'s (same workload and transport): above 1, we are faster."""
    ours = _ours(rows, row)
    if ours is None or ours.rate is None or not row.rate:
        return None
    return ours.rate / row.rate


def _rate(rows: Sequence[Row], workload: str | None, transport: str) -> float | None:
    for row in rows:
        if (row.implementation, row.workload, row.transport) == ("trio_chirp", workload, transport):
            return row.rate
    return None


def _times(rate: float | None, other: float | None) -> str:
    return "-" if rate is None or not other else f"{rate / other:.2f}"


def table(rows: Sequence[Row]) -> str:
    """The summary: one line per workload and transport, the references' columns as ratios.

    ``x ceiling``: the rate over its raw-Trio baseline's (plaintext, the same run);
    ``x base``: over the workload it is compared with (``sync-1k``, the same transport).
    """
    others = [name for name in IMPLEMENTATIONS[1:] if any(r.implementation == name for r in rows)]
    head = f"| {'workload':<40} | {'transport':<9} | {'msg/s':>10} | {'MB/s':>8} | x ceiling | x base |"
    for name in others:
        head += f" {name + ' msg/s':>15} | {'ratio':>6} |"
    lines = [head, "|" + "|".join("-" * len(cell) for cell in head.split("|")[1:-1]) + "|"]
    for row in rows:
        if row.implementation != "trio_chirp":
            continue
        rate = "-" if row.rate is None else f"{row.rate:,.0f}"
        mb = "-" if row.mb_per_s is None else f"{row.mb_per_s:,.1f}"
        w = ALL_WORKLOADS.get(row.workload)
        ceiling = None if w is None else _rate(rows, w.ceiling, "plaintext")
        base = None if w is None else _rate(rows, w.base, row.transport)
        line = f"| {row.title:<40} | {row.transport:<9} | {rate:>10} | {mb:>8} |"
        line += f" {_times(row.rate, ceiling):>9} | {_times(row.rate, base):>6} |"
        for name in others:
            theirs = next(
                (
                    r
                    for r in rows
                    if (r.implementation, r.workload, r.transport) == (name, row.workload, row.transport)
                ),
                None,
            )
            their_rate = "-" if theirs is None or theirs.rate is None else f"{theirs.rate:,.0f}"
            found = None if theirs is None else ratio(rows, theirs)
            line += f" {their_rate:>15} | {'-' if found is None else f'{found:.2f}':>6} |"
        lines.append(line)
    notes = sorted({f"{r.implementation}: {r.note}" for r in rows if r.note})
    if others:
        lines.append("ratio: trio_chirp's rate divided by the reference's (above 1: trio_chirp is faster).")
    return "\n".join(lines + notes)


def write_chart(path: Path, rows: Sequence[Row], title: str) -> str | None:
    """A horizontal bar chart of messages/s; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install 'trio-chirp[bench]')"
    measured = [r for r in rows if r.rate is not None]
    labels = sorted(
        {(r.title, r.transport) for r in measured}, key=lambda key: [r.title for r in rows].index(key[0])
    )
    impls = [name for name in IMPLEMENTATIONS if any(r.implementation == name for r in measured)]
    height = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(labels) * max(1, len(impls))))
    for i, impl in enumerate(impls):
        values: list[float] = []
        for workload_title, transport in labels:
            found = [
                r.rate or 0.0
                for r in measured
                if (r.implementation, r.title, r.transport) == (impl, workload_title, transport)
            ]
            values.append(found[0] if found else 0.0)
        positions = [n + i * height for n in range(len(labels))]
        ax.barh(positions, values, height=height, label=impl)
    ax.set_yticks([n + height * (len(impls) - 1) / 2 for n in range(len(labels))])
    ax.set_yticklabels([f"{t} ({transport})" for t, transport in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")  # the workloads' rates differ a hundredfold
    ax.set_xlabel("messages (round trips for echo) per second, log scale")
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
