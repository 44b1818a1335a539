"""The workloads: what each one sends, its target, and the standard set ``trio-chirp bench`` runs.

One table for ``bench/bench_node.py`` (every workload and the raw baselines) and for
``trio-chirp bench`` (``STANDARD``, plaintext and TLS), so both measure the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"
REUSE_TIME = 3600.0
NODES_PER_PROCESS = 100
WARMUP_MSGS = 2000
CHECK_EVERY = 64  # the measuring loop looks at the clock every this many messages
QUIET_LOAD = 0.2  # CPUs kept busy by other processes above which a figure is flagged
PYSPY_RATE = 500  # py-spy samples per second
FRAME_HEAD = 27
PROGRESS_EVERY = 0.25  # seconds between a measuring child's PROGRESS lines
TLS_RECEIVER, TLS_SENDER = "127.0.0.2", "127.0.0.3"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    mode: str  # "async", "sync", "echo", "idle", "raw-stream" or "raw-pingpong"
    size: int
    target: float
    unit: str
    tasks: int = 1  # sending tasks in the sender process (per sender node)
    nodes: int = 1  # sender nodes in the sender process (one Trio run)
    async_receiver: bool = False
    """The receiver is an asynchronous node (a worker: many slots) while the sender is
    synchronous; otherwise both are in the workload's mode."""
    ceiling: str | None = None
    """The raw-Trio baseline that bounds it (its rate divided by this one's, in the table)."""
    base: str | None = None
    """The workload it is compared with in the same run (one sending task, one sender node)."""


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("async-1k", "async one-way 1 KiB", "async", 1024, 200_000, "msg/s", ceiling="raw-stream-1k"),
        Workload("async-100", "async one-way 100 B", "async", 100, 220_000, "msg/s"),
        Workload(
            "async-64k", "async one-way 64 KiB", "async", 64 * 1024, 40_000, "msg/s", ceiling="raw-stream-64k"
        ),
        Workload(
            "sync-1k", "sync 1 KiB (ACK each)", "sync", 1024, 12_000, "msg/s", ceiling="raw-pingpong-1k"
        ),
        Workload(
            "echo-1k",
            "echo 1 KiB (sync request, async reply)",
            "echo",
            1024,
            12_000,
            "round trips/s",
            ceiling="raw-pingpong-1k",
        ),
        Workload("idle-1000", "RSS per idle connection", "idle", 16, 40, "KiB/conn"),
        # Baselines without trio_chirp: raw trio SocketStreams moving the same bytes.
        Workload(
            "raw-stream-1k", "baseline: raw trio, 1 write per 1 KiB frame", "raw-stream", 1024, 0, "msg/s"
        ),
        Workload(
            "raw-stream-64k", "baseline: raw trio, 1 write per 64 KiB frame", "raw-stream", 65536, 0, "msg/s"
        ),
        Workload(
            "raw-pingpong-1k",
            "baseline: raw trio 1 KiB / 27 B ping-pong",
            "raw-pingpong",
            1024,
            0,
            "round trips/s",
        ),
    )
}

# Not in bench_node.py's default list (its table stays as before); trio-chirp bench runs it.
EXTRA_WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "sync-1k-16",
            "sync 1 KiB, 16 tasks to an async receiver",
            "sync",
            1024,
            0,
            "msg/s",
            tasks=16,
            async_receiver=True,
            base="sync-1k",
        ),
        Workload(
            "fanin-1k-100",
            "sync 1 KiB from 100 sender nodes",
            "sync",
            1024,
            0,
            "msg/s",
            nodes=100,
            base="sync-1k",
        ),
    )
}

ALL_WORKLOADS: dict[str, Workload] = {**WORKLOADS, **EXTRA_WORKLOADS}

BENCH_WORKLOADS: dict[str, Workload] = {name: w for name, w in ALL_WORKLOADS.items() if w.mode != "idle"}
"""What ``trio-chirp bench`` can run: rates (idle-1000 measures memory: bench/bench_node.py)."""

STANDARD = (
    "async-100",
    "async-1k",
    "async-64k",
    "sync-1k",
    "sync-1k-16",
    "fanin-1k-100",
    "echo-1k",
    "raw-pingpong-1k",
    "raw-stream-64k",
)
"""What ``trio-chirp bench`` runs by default, each in plaintext and over TLS (the raw-Trio
ceilings in plaintext only)."""


def megabytes_per_second(workload: Workload, rate: float) -> float:
    """Data moved per second (MB = 10**6 bytes, the data only; an echo moves it both ways)."""
    return rate * workload.size * (2 if workload.mode == "echo" else 1) / 1e6
