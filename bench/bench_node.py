#!/usr/bin/env python3
"""End-to-end node throughput and memory over loopback TCP, two processes per workload.

    .venv/bin/python bench/bench_node.py                      # every workload (the table in bench/README.md)
    .venv/bin/python bench/bench_node.py --quick              # 1 s runs and 200 idle connections: a smoke run
    .venv/bin/python bench/bench_node.py async-1k echo-1k     # some workloads only
    .venv/bin/python bench/bench_node.py --profile DIR ...    # also py-spy both processes while measuring
    .venv/bin/python bench/bench_node.py --tls async-1k ...   # the same over TLS (127.0.0.3 -> 127.0.0.2)

Shape of a throughput workload: this process only orchestrates. It starts a *receiver*
process (one node, one task doing ``receive()`` + ``release()``) and a *sender* process (one
node, one task doing ``await chirp.send(msg)`` in a loop, reusing one ``Message``). The
measuring process counts messages; after a warm-up (``--warmup`` seconds and at least
``WARMUP_MSGS`` messages) it measures for ``--duration`` seconds and reports the rate.
While it measures, the orchestrator samples both processes' CPU time (``/proc/PID/stat``)
so the table shows which side is the bottleneck (a process at ~100 % is saturated).

* ``async-*``: both nodes asynchronous (16 receive slots); counted at the receiver.
* ``sync-1k``: both nodes synchronous: every ``send()`` returns on its ACK; one slot.
* ``echo-1k``: request/response. The sender node is synchronous: it sends (returns on the
  ACK), then awaits the reply. The receiver node is asynchronous: its worker sets
  ``msg.data`` on the received message, sends the same object back, then releases it.
  Round trips are counted at the sender.
* ``idle-1000``: one asynchronous receiver node; ``--connections`` sender nodes, 100 per
  process, each sends one asynchronous message to it and then idles. The receiver's VmRSS
  before (node started) and after (all messages released, ``gc.collect()``) divided by the
  number of connections is the cost of one idle connection (user space only: kernel socket
  buffers are not in RSS). With ``--profile`` the receiver also runs ``tracemalloc`` and
  reports the Python allocations per connection by source line.

Every node listens on 127.0.0.1 only and has ``reuse_time=3600`` so nothing is collected.
With ``--tls`` the receiver listens on 127.0.0.2 and senders dial it from 127.0.0.3 (only
127.0.0.1 and ::1 are plaintext), with certificates from ``trio_chirp.pki.make_pki`` in a
temporary directory (RSA 2048, TLS 1.3 negotiated); the raw baselines stay plaintext.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import platform
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import trio_chirp  # noqa: E402

HOST = "127.0.0.1"
REUSE_TIME = 3600.0
NODES_PER_PROCESS = 100
WARMUP_MSGS = 2000
CHECK_EVERY = 64  # the measuring loop looks at the clock every this many messages
QUIET_LOAD = 0.2  # CPUs kept busy by other processes above which a figure is flagged
PYSPY_RATE = 500  # py-spy samples per second


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    mode: str  # "async", "sync", "echo" or "idle"
    size: int
    target: float
    unit: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("async-1k", "async one-way 1 KiB", "async", 1024, 200_000, "msg/s"),
        Workload("async-100", "async one-way 100 B", "async", 100, 220_000, "msg/s"),
        Workload("async-64k", "async one-way 64 KiB", "async", 64 * 1024, 40_000, "msg/s"),
        Workload("sync-1k", "sync 1 KiB (ACK each)", "sync", 1024, 12_000, "msg/s"),
        Workload("echo-1k", "echo 1 KiB (sync request, async reply)", "echo", 1024, 12_000, "round trips/s"),
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
FRAME_HEAD = 27


# ======================================================================================
# Child processes
# ======================================================================================
def emit(tag: str, **fields: Any) -> None:
    print(tag, json.dumps(fields), flush=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def proc_status(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


HEADER_MAP = [True]  # --no-header-map sets it False in the child
TLS_DIR: list[Path | None] = [None]  # --tls DIR in the child: certificates from make_pki
TLS_RECEIVER, TLS_SENDER = "127.0.0.2", "127.0.0.3"


def dest() -> str:
    """The address senders send to."""
    return HOST if TLS_DIR[0] is None else TLS_RECEIVER


def node_config(*, synchronous: bool, receiver: bool = False) -> trio_chirp.Config:
    extra: dict[str, Any] = {} if HEADER_MAP[0] else {"header_map": False}  # also runs on older versions
    bind = HOST
    if TLS_DIR[0] is not None:
        bind = TLS_RECEIVER if receiver else TLS_SENDER
        extra["cert_chain_pem"] = TLS_DIR[0] / ("receiver.pem" if receiver else "sender.pem")
    if receiver and hasattr(trio_chirp.Config(), "max_handshakes"):
        # idle-*: 100 sender nodes per process dial at once from one address; the default
        # limit on handshakes in progress (64) would refuse many (more with TLS, whose
        # handshakes take longer), and this measures memory, not admission.
        extra["max_handshakes"] = 4096
    return trio_chirp.Config(
        port=0, synchronous=synchronous, reuse_time=REUSE_TIME, bind_v4=bind, bind_v6=None, **extra
    )


class StepCounter(trio.abc.Instrument):
    """``--instrument``: scheduler work per message (task steps, blocking and polling I/O waits)."""

    def __init__(self) -> None:
        self.steps = self.sleeps = self.polls = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        if timeout > 0:
            self.sleeps += 1
        else:
            self.polls += 1


STEPS: StepCounter | None = None
MESSAGES = [0]  # messages handled by this process, updated every CHECK_EVERY


async def cancel_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            # Queued async messages are reported lost on shutdown; not news here.
            logging.getLogger("trio_chirp").setLevel(logging.ERROR)
            if STEPS is not None:
                emit("STEPS", messages=MESSAGES[0], steps=STEPS.steps, sleeps=STEPS.sleeps, polls=STEPS.polls)
            scope.cancel()
            return


class Meter:
    """Warm-up, then a fixed measuring window; reports START and RESULT on stdout."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.warmup = warmup
        self.duration = duration
        self.t_first: float | None = None
        self.t_start: float | None = None
        self.n_start = 0
        self.done = False

    def check(self, n: int) -> bool:
        """Called every CHECK_EVERY messages with the running count; True once measured."""
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        elif self.t_start is None:
            if n >= WARMUP_MSGS and now - self.t_first >= self.warmup:
                self.t_start, self.n_start = now, n
                emit("START")
        elif now - self.t_start >= self.duration:
            elapsed = now - self.t_start
            count = n - self.n_start
            self.done = True
            emit("RESULT", rate=count / elapsed, count=count, seconds=elapsed)
        return self.done


async def run_receiver(args: argparse.Namespace) -> None:
    mode = args.mode
    async with (
        trio_chirp.open_chirp(node_config(synchronous=mode == "sync", receiver=True)) as chirp,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        emit("PORT", port=chirp.port)
        receive = chirp.receive
        if mode == "echo":
            reply = b"r" * args.size
            send = chirp.send
            n = 0
            while True:
                msg = await receive()
                msg.data = reply
                if args.release_first:
                    msg.release()  # the ACK is queued before the reply: one write for both
                    await send(msg)
                else:
                    await send(msg)
                    msg.release()
                n += 1
                if not n % CHECK_EVERY:
                    MESSAGES[0] = n
        meter = Meter(args.warmup, args.duration)
        n = 0
        while True:
            msg = await receive()
            msg.release()
            n += 1
            if not n % CHECK_EVERY:
                MESSAGES[0] = n
                if not meter.done:
                    meter.check(n)


async def run_sender(args: argparse.Namespace) -> None:
    mode = args.mode
    async with (
        trio_chirp.open_chirp(node_config(synchronous=mode in ("sync", "echo"))) as chirp,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        msg = trio_chirp.Message(b"s" * args.size, address=dest(), port=args.port)
        send = chirp.send
        if args.new_message or args.deadline:
            send = _application_send(chirp, args)
        if mode == "echo":
            receive = chirp.receive
            meter = Meter(args.warmup, args.duration)
            n = 0
            while not meter.done:
                await send(msg)
                reply = await receive()
                reply.release()
                n += 1
                if not n % CHECK_EVERY:
                    MESSAGES[0] = n
                    meter.check(n)
            await trio.sleep_forever()
        n = 0
        while True:
            await send(msg)
            n += 1
            if not n % CHECK_EVERY:
                MESSAGES[0] = n


def _application_send(chirp: trio_chirp.Chirp, args: argparse.Namespace) -> Any:
    """``send`` as applications call it: ``--new-message`` builds a new ``Message`` per send
    (ignoring the one passed), ``--deadline`` puts each send in a caller's cancel scope, so
    the deadline travels in our header map (unless ``--no-header-map``)."""
    data, port, send, host = b"s" * args.size, args.port, chirp.send, dest()
    Message, move_on_after = trio_chirp.Message, trio.move_on_after

    if args.new_message and args.deadline:

        async def new_with_deadline(_: trio_chirp.Message) -> None:
            with move_on_after(60):
                await send(Message(data, address=host, port=port))

        return new_with_deadline
    if args.new_message:

        async def new(_: trio_chirp.Message) -> None:
            await send(Message(data, address=host, port=port))

        return new

    async def with_deadline(msg: trio_chirp.Message) -> None:
        with move_on_after(60):
            await send(msg)

    return with_deadline


async def run_idle_receiver(args: argparse.Namespace) -> None:
    import tracemalloc

    raise_fd_limit()
    config = node_config(synchronous=False, receiver=True)
    async with trio_chirp.open_chirp(config) as chirp, trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        await trio.sleep(0.2)
        gc.collect()
        before = proc_status("VmRSS")
        if args.tracemalloc:
            tracemalloc.start(1)
            snap_before = tracemalloc.take_snapshot()
        emit("PORT", port=chirp.port)
        for _ in range(args.connections):
            msg = await chirp.receive()
            msg.release()
        del msg
        # Let the last handshakes and writers settle, then count what stays.
        await trio.sleep(1.0)
        gc.collect()
        after = proc_status("VmRSS")
        stats = chirp.statistics()
        result: dict[str, Any] = {
            "before_kib": before,
            "after_kib": after,
            "hwm_kib": proc_status("VmHWM"),
            "connections": stats.connections,
            "remotes": len(stats.remotes),
            "tasks": len(_all_tasks()),
        }
        if args.tracemalloc:
            snap_after = tracemalloc.take_snapshot()
            diff = snap_after.compare_to(snap_before, "lineno")
            traced, _ = tracemalloc.get_traced_memory()
            result["traced_kib"] = traced / 1024
            result["top"] = [
                {"where": str(d.traceback[0]), "bytes": d.size_diff, "count": d.count_diff} for d in diff[:25]
            ]
            tracemalloc.stop()
        emit("RESULT", **result)
        await trio.sleep_forever()


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []
    root = trio.lowlevel.current_root_task()
    assert root is not None
    todo = [root]
    while todo:
        task = todo.pop()
        tasks.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return tasks


async def run_idle_sender(args: argparse.Namespace) -> None:
    raise_fd_limit()
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(trio_chirp.open_chirp(node_config(synchronous=False)))
            for _ in range(args.nodes)
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
            for node in nodes:
                await node.send(trio_chirp.Message(b"i" * args.size, address=dest(), port=args.port))
            for node in nodes:
                await node.flush(dest(), args.port)
            emit("READY")
            await trio.sleep_forever()


async def run_raw_receiver(args: argparse.Namespace) -> None:
    """Receive fixed-size frames on a plain trio SocketStream; count them or answer 27 bytes each."""
    frame = FRAME_HEAD + args.size
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        emit("PORT", port=listeners[0].socket.getsockname()[1])
        stream = await listeners[0].accept()
        receive_some = stream.receive_some
        if args.mode == "raw-pingpong":
            reply = b"a" * FRAME_HEAD
            have = n = 0
            while True:
                chunk = await receive_some(65536)
                have += len(chunk)
                while have >= frame:
                    have -= frame
                    await stream.send_all(reply)
                    n += 1
                    MESSAGES[0] = n
        meter = Meter(args.warmup, args.duration)
        total = checked = 0
        while True:
            total += len(await receive_some(65536))
            n = total // frame
            if n - checked >= CHECK_EVERY:
                MESSAGES[0] = checked = n
                if not meter.done:
                    meter.check(n)


async def run_raw_sender(args: argparse.Namespace) -> None:
    frame = b"f" * (FRAME_HEAD + args.size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        stream = await trio.open_tcp_stream(HOST, args.port)
        send_all = stream.send_all
        if args.mode == "raw-pingpong":
            receive_some = stream.receive_some
            meter = Meter(args.warmup, args.duration)
            n = 0
            while not meter.done:
                await send_all(frame)
                have = 0
                while have < FRAME_HEAD:
                    have += len(await receive_some(65536))
                n += 1
                if not n % CHECK_EVERY:
                    MESSAGES[0] = n
                    meter.check(n)
            await trio.sleep_forever()
        n = 0
        while True:
            await send_all(frame)
            n += 1
            if not n % CHECK_EVERY:
                MESSAGES[0] = n


ROLES = {
    "receiver": run_receiver,
    "sender": run_sender,
    "idle-receiver": run_idle_receiver,
    "idle-sender": run_idle_sender,
    "raw-receiver": run_raw_receiver,
    "raw-sender": run_raw_sender,
}


def child_main(args: argparse.Namespace) -> None:
    global STEPS
    instruments = []
    if args.instrument:
        STEPS = StepCounter()
        instruments.append(STEPS)
    trio.run(ROLES[args.role], args, instruments=instruments)


# ======================================================================================
# Orchestrator
# ======================================================================================
class Child:
    """A child process whose stdout lines ("TAG {json}") arrive on a queue."""

    def __init__(self, role: str, *extra: str) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]
        self.role = role
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
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

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.role} (pid {self.pid}) sent no {tag} within {timeout}s") from None
            if item is None:
                raise RuntimeError(f"{self.role} (pid {self.pid}) exited with {self.proc.wait()}")
            if item[0] == tag:
                return item[1]

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


def run_throughput(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    timing = ["--mode", w.mode, "--size", str(w.size), "--warmup", str(args.warmup)]
    timing += ["--duration", str(args.duration)]
    timing += ["--instrument"] * args.instrument + ["--release-first"] * args.release_first
    timing += ["--new-message"] * args.new_message + ["--deadline"] * args.deadline
    timing += ["--no-header-map"] * args.no_header_map
    prefix = "raw-" if w.mode.startswith("raw-") else ""
    if args.tls is not None and not prefix:
        timing += ["--tls-dir", str(args.tls)]
    receiver = Child(prefix + "receiver", *timing)
    sender: Child | None = None
    try:
        port = receiver.expect("PORT", 10)["port"]
        sender = Child(prefix + "sender", *timing, "--port", str(port))
        meter = sender if w.mode in ("echo", "raw-pingpong") else receiver
        meter.expect("START", 30)
        t0 = time.perf_counter()
        cpu0 = receiver.cpu_seconds(), sender.cpu_seconds()
        sys0 = system_busy_seconds()
        spies = []
        if args.profile:
            for child in (receiver, sender):
                out = args.profile / f"{w.name}-{child.role}.txt"
                spies.append(start_pyspy(child, out, args.duration))
        result = meter.expect("RESULT", args.duration + 30)
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


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.1f}" if unit == "KiB/conn" else f"{value:,.0f}"


def wait_for_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds for other processes to leave the CPUs alone; the last load seen."""
    deadline = time.monotonic() + limit
    load = other_load()
    while load > QUIET_LOAD and time.monotonic() < deadline:
        print(f"  (other processes keep {load:.1f} CPUs busy; waiting for quiet)", flush=True)
        time.sleep(2.0)
        load = other_load()
    return load


def run_workload(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Best of ``--repeat`` runs (the least disturbed one)."""
    best: dict[str, Any] | None = None
    for _ in range(args.repeat):
        wait_for_quiet(args.wait_quiet)
        result = run_idle(w, args) if w.mode == "idle" else run_throughput(w, args)
        lower_is_better = w.mode == "idle"
        if best is None or (result["rate"] < best["rate"]) == lower_is_better:
            best = result
    assert best is not None
    return best


def orchestrate(args: argparse.Namespace) -> None:
    names = args.workloads or list(WORKLOADS)
    for name in names:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.same_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit it
    if args.tls and args.tls_dir is None:
        import tempfile

        from trio_chirp.pki import make_pki

        args.tls_dir = Path(tempfile.mkdtemp(prefix="bench-tls-"))
        make_pki(args.tls_dir, ["receiver", "sender"])
    args.tls = args.tls_dir if args.tls else None  # from here on: the directory, or None
    print(machine())
    if args.tls is not None:
        print(
            f"TLS: receiver {TLS_RECEIVER}, senders {TLS_SENDER}, certificates in {args.tls}"
            " (raw-* stay plaintext)"
        )
    print(
        f"warm-up {args.warmup}s, measuring {args.duration}s per workload, best of {args.repeat};"
        f" CPUs {sorted(os.sched_getaffinity(0))}\n"
    )
    rows = []
    for name in names:
        w = WORKLOADS[name]
        result = run_workload(w, args)
        if not w.target:
            ok = None
        else:
            ok = result["rate"] <= w.target if w.mode == "idle" else result["rate"] >= w.target
        rows.append((w, result, ok))
        if w.mode == "idle":
            print(
                f"  {w.name}: receiver VmRSS {result['before_kib'] / 1024:.1f} -> "
                f"{result['after_kib'] / 1024:.1f} MiB with {result['connections']} connections, "
                f"{result['remotes']} remotes, {result['tasks']} tasks",
                flush=True,
            )
            if "traced_kib" in result:
                print(
                    f"      tracemalloc: {result['traced_kib'] * 1024 / args.connections:,.0f} B/conn traced"
                    " (tracing inflates the RSS figure; measure RSS without --profile)"
                )
            for top in result.get("top", []):
                print(
                    f"      {top['bytes'] / args.connections:8.0f} B/conn "
                    f"{top['count'] / args.connections:6.2f} blocks/conn  {top['where']}"
                )
        else:
            print(
                f"  {w.name}: {result['rate']:,.0f} {w.unit} (CPU: receiver {result['recv_cpu']:.0%}"
                f" ({result['recv_sys']:.0%} of it in the kernel), sender {result['send_cpu']:.0%}"
                f" ({result['send_sys']:.0%} kernel), other processes {result['other_cpu']:.0%};"
                f" CPU per message: receiver {result['recv_cpu'] / result['rate'] * 1e6:.1f} us,"
                f" sender {result['send_cpu'] / result['rate'] * 1e6:.1f} us;"
                f" VmHWM receiver {result['recv_hwm_kib'] / 1024:.1f} MiB,"
                f" sender {result['send_hwm_kib'] / 1024:.1f} MiB)",
                flush=True,
            )
            for key in sorted(k for k in result if k.endswith("_steps")):
                per = result[key]
                print(
                    f"      {key[:-6]}: per message {per['steps']:.2f} task steps,"
                    f" {per['polls']:.2f} scheduler rounds without sleeping, {per['sleeps']:.2f} with"
                )
    print()
    header = (
        f"| {'workload':<44} | {'measured':>10} | {'target':>11} | {'unit':<13} | ok  "
        f"| recv CPU | send CPU | other CPU | recv VmHWM |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    busy = False
    for w, result, ok in rows:
        target = ("<= " if w.mode == "idle" else ">= ") + fmt_rate(w.target, w.unit) if w.target else "-"
        verdict = "-" if ok is None else "yes" if ok else "NO"
        if w.mode == "idle":
            cpu = ["", "", ""]
        else:
            cpu = [f"{result[k]:.0%}" for k in ("recv_cpu", "send_cpu", "other_cpu")]
            if result["other_cpu"] > QUIET_LOAD:
                busy = True
                cpu[2] += " !"
        print(
            f"| {w.title:<44} | {fmt_rate(result['rate'], w.unit):>10} | {target:>11} | {w.unit:<13} "
            f"| {verdict:<3} | {cpu[0]:>8} | {cpu[1]:>8} | {cpu[2]:>9} "
            f"| {result['recv_hwm_kib'] / 1024:>6.1f} MiB |"
        )
    print("\nCPU columns: share of one CPU during the measuring window (100% = one core saturated).")
    if busy:
        print("! other processes used the CPUs meanwhile: those figures are understated.")
    if args.profile:
        summary: Any = importlib.import_module("_pyspy_summary")  # bench/ is on sys.path

        print(f"\npy-spy profiles (raw collapsed stacks) in {args.profile}:\n")
        for path in sorted(args.profile.glob("*.txt")):
            summary.summarize(path, 25, PYSPY_RATE, args.duration)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workloads", nargs="*", help=f"any of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 200 idle connections")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (default 0.5)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured (default 3)")
    parser.add_argument("--connections", type=int, default=None, help="idle connections (default 1000)")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy both processes into this dir")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload; the best is shown")
    parser.add_argument(
        "--wait-quiet", type=float, default=10.0, help="seconds to wait for other load to go (default 10)"
    )
    parser.add_argument("--same-cpu", action="store_true", help="pin every process to one CPU")
    parser.add_argument(
        "--instrument", action="store_true", help="count trio task steps and I/O waits per message"
    )
    parser.add_argument(
        "--release-first", action="store_true", help="echo worker releases (ACKs) before sending the reply"
    )
    parser.add_argument("--new-message", action="store_true", help="a new Message per send, as apps do")
    parser.add_argument(
        "--deadline", action="store_true", help="each send in a caller's cancel scope: the deadline travels"
    )
    parser.add_argument(
        "--no-header-map", action="store_true", help="Config(header_map=False): no deadline on the wire"
    )
    parser.add_argument("--tls", action="store_true", help="TLS: senders on 127.0.0.3, receiver on 127.0.0.2")
    parser.add_argument(
        "--tls-dir", type=Path, default=None, help="with --tls: make-pki output with receiver.pem, sender.pem"
    )
    # internal: child roles
    parser.add_argument("--role", choices=list(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    if args.duration is None:
        args.duration = 1.0 if args.quick else 3.0
    if args.connections is None:
        args.connections = 200 if args.quick else 1000
    if args.no_header_map:
        HEADER_MAP[0] = False
    if args.role and args.tls_dir is not None:
        TLS_DIR[0] = args.tls_dir
    if args.role:
        child_main(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
