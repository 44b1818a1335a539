"""The orchestrating process: starts a workload's two children, samples their CPU, takes the result.

This process only orchestrates (``_child.py`` is the two sides). While a child measures,
both children's CPU time is sampled from ``/proc/PID/stat``, so each figure says which side
was the bottleneck (a process at ~100 % is saturated), and the CPU time other processes
used meanwhile (``other_cpu``), so a figure from a busy machine is flagged. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import trio_chirp

from ._child import proc_status, raise_fd_limit
from ._workloads import NODES_PER_PROCESS, PYSPY_RATE, QUIET_LOAD, Workload

PACKAGE_ROOT = Path(trio_chirp.__file__).resolve().parents[1]

Progress = Callable[[int], None]
"""Called with the messages counted so far in the measuring window."""


class ChildDied(RuntimeError):
    """A workload's process ended before it reported (its stderr, inherited, says why)."""


class ChildSilent(TimeoutError):
    """A workload's process did not report in time."""


class Child:
    """A child process whose stdout lines ("TAG {json}") arrive on a queue."""

    def __init__(self, role: str, *extra: str, command: list[str] | None = None) -> None:
        """``role`` of ``_child.py``, or ``command`` (then ``role`` only names it in errors)."""
        if command is None:
            cmd = [sys.executable, "-m", "trio_chirp._bench._child", "--role", role, *extra]
            # The child imports this very trio_chirp (a checkout's, when bench_node.py runs from one).
            path = [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        else:
            cmd = [*command, *extra]
            env = {
                k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
            }
        self.role = role
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            tag, _, payload = line.strip().partition(" ")
            try:
                fields = json.loads(payload) if payload else {}
            except json.JSONDecodeError:
                print(f"[{self.role}] {line}", end="", file=sys.stderr)
                continue
            self.lines.put((tag, fields))
        self.lines.put(None)

    def expect(self, tag: str, timeout: float, progress: Progress | None = None) -> dict[str, Any]:
        """The next ``tag`` line's fields; PROGRESS lines meanwhile go to ``progress(count)``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildSilent(f"{self.role} (pid {self.pid}) sent no {tag} within {timeout}s") from None
            if item is None:
                raise ChildDied(f"{self.role} (pid {self.pid}) exited with {self.proc.wait()}")
            if item[0] == tag:
                return item[1]
            if item[0] == "PROGRESS" and progress is not None:
                progress(item[1]["count"])

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # fields[0] is field 3 (state): utime and stime are fields 14 and 15
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(2.0)


def system_busy_seconds() -> float:
    """CPU seconds of user + system time on all CPUs since boot (/proc/stat), to see competing load.

    Interrupt and softirq time is left out: loopback TCP of the benchmark itself runs there.
    """
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def other_load(seconds: float = 0.5) -> float:
    """How many CPUs other processes keep busy right now (sampled over ``seconds``)."""
    busy0, t0 = system_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (system_busy_seconds() - busy0) / (time.perf_counter() - t0)


def start_pyspy(child: Child, out: Path, duration: float) -> subprocess.Popen[bytes]:
    pyspy = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(pyspy), "record", "--pid", str(child.pid), "--duration", str(max(1, round(duration))),
        "--rate", str(PYSPY_RATE), "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_throughput(
    w: Workload,
    args: argparse.Namespace,
    progress: Progress | None = None,
    spawn: Callable[..., Child] = Child,
) -> dict[str, Any]:
    """One run of a throughput workload; ``spawn(role, *options)`` starts a side (default: ``_child.py``)."""
    timing = ["--mode", w.mode, "--size", str(w.size), "--tasks", str(w.tasks), "--warmup", str(args.warmup)]
    timing += ["--duration", str(args.duration)]
    timing += ["--instrument"] * args.instrument + ["--release-first"] * args.release_first
    timing += ["--new-message"] * args.new_message + ["--deadline"] * args.deadline
    timing += ["--async-receiver"] * w.async_receiver + ["--sender-nodes", str(w.nodes)] * (w.nodes > 1)
    timing += ["--no-header-map"] * args.no_header_map
    prefix = "raw-" if w.mode.startswith("raw-") else ""
    if args.tls is not None and not prefix:
        timing += ["--tls-dir", str(args.tls)]
    receiver = spawn(prefix + "receiver", *timing)
    sender: Child | None = None
    try:
        limit = getattr(args, "child_timeout", None)  # trio-chirp bench --timeout
        port = receiver.expect("PORT", limit or 10)["port"]
        sender = spawn(prefix + "sender", *timing, "--port", str(port))
        meter = sender if w.mode in ("echo", "raw-pingpong") else receiver
        meter.expect("START", limit or 30)
        t0 = time.perf_counter()
        cpu0 = receiver.cpu_seconds(), sender.cpu_seconds()
        sys0 = system_busy_seconds()
        spies = []
        if args.profile:
            for child in (receiver, sender):
                out = args.profile / f"{w.name}-{child.role}.txt"
                spies.append(start_pyspy(child, out, args.duration))
        result = meter.expect("RESULT", args.duration + (limit or 30), progress)
        wall = time.perf_counter() - t0
        cpu1 = receiver.cpu_seconds(), sender.cpu_seconds()
        sys1 = system_busy_seconds()
        for i, side in enumerate(("recv", "send")):
            user, system = cpu1[i][0] - cpu0[i][0], cpu1[i][1] - cpu0[i][1]
            result[f"{side}_cpu"] = (user + system) / wall
            result[f"{side}_sys"] = system / max(user + system, 1e-9)
        result["other_cpu"] = max(0.0, (sys1 - sys0) / wall - result["recv_cpu"] - result["send_cpu"])
        result["recv_hwm_kib"] = proc_status("VmHWM", receiver.pid)
        result["send_hwm_kib"] = proc_status("VmHWM", sender.pid)
        for spy in spies:
            spy.wait(args.duration + 30)
        if args.instrument:
            sender.stop()
            receiver.stop()
            for child in (receiver, sender):
                steps = child.expect("STEPS", 10)
                count = max(1, steps.pop("messages"))
                result[f"{child.role}_steps"] = {k: v / count for k, v in steps.items()}
        return result
    finally:
        if sender is not None:
            sender.stop()
        receiver.stop()


def run_idle(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    extra = ["--connections", str(args.connections), "--size", str(w.size)]
    if args.tls is not None:
        extra += ["--tls-dir", str(args.tls)]
    if args.profile:
        extra.append("--tracemalloc")
    receiver = Child("idle-receiver", *extra)
    senders: list[Child] = []
    try:
        port = receiver.expect("PORT", 10)["port"]
        left = args.connections
        while left > 0:
            nodes = min(NODES_PER_PROCESS, left)
            left -= nodes
            tls = [] if args.tls is None else ["--tls-dir", str(args.tls)]
            senders.append(
                Child("idle-sender", "--port", str(port), "--nodes", str(nodes), "--size", str(w.size), *tls)
            )
        for sender in senders:
            sender.expect("READY", 60)
        result = receiver.expect("RESULT", 60)
        result["rate"] = (result["after_kib"] - result["before_kib"]) / args.connections
        result["recv_hwm_kib"] = result["hwm_kib"]
        return result
    finally:
        for sender in senders:
            sender.stop()
        receiver.stop()


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, trio_chirp {trio_chirp.__version__}"
    )


def wait_for_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds for other processes to leave the CPUs alone; the last load seen."""
    deadline = time.monotonic() + limit
    load = other_load()
    while load > QUIET_LOAD and time.monotonic() < deadline:
        print(f"  (other processes keep {load:.1f} CPUs busy; waiting for quiet)", flush=True)
        time.sleep(2.0)
        load = other_load()
    return load


def run_workload(w: Workload, args: argparse.Namespace, progress: Progress | None = None) -> dict[str, Any]:
    """Best of ``--repeat`` runs (the least disturbed one)."""
    best: dict[str, Any] | None = None
    for _ in range(args.repeat):
        if args.wait_quiet > 0:
            wait_for_quiet(args.wait_quiet)
        result = run_idle(w, args) if w.mode == "idle" else run_throughput(w, args, progress)
        lower_is_better = w.mode == "idle"
        if best is None or (result["rate"] < best["rate"]) == lower_is_better:
            best = result
    assert best is not None
    return best


def make_tls_dir() -> Path:
    """Certificates for ``--tls`` (receiver.pem, sender.pem) in a new temporary directory."""
    import tempfile

    from trio_chirp.pki import make_pki

    directory = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    make_pki(directory, ["receiver", "sender"])
    return directory
