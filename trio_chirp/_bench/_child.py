"""The two processes of a workload: a receiver and a sender (``python -m trio_chirp._bench._child``).

Shape of a throughput workload: the orchestrator (``_orchestrate.py``) only starts them.
The *receiver* is one node with one task doing ``receive()`` + ``release()``; the *sender*
one node with one task (``--tasks N``: N tasks) doing ``await chirp.send(msg)`` in a loop,
reusing one ``Message``. The measuring side counts messages; after a warm-up (``--warmup``
seconds and at least ``WARMUP_MSGS`` messages) it measures for ``--duration`` seconds. A
child reports on stdout, one ``TAG {json}`` line each: PORT, READY, START, PROGRESS
(every ``PROGRESS_EVERY`` s while measuring, for the live display), RESULT, STEPS.

* ``async-*``: both nodes asynchronous (16 receive slots); counted at the receiver.
* ``sync-*``: both nodes synchronous: every ``send()`` returns on its ACK; one slot.
* ``echo-1k``: request/response. The sender node is synchronous: it sends (returns on the
  ACK), then awaits the reply. The receiver node is asynchronous: its worker sets
  ``msg.data`` on the received message, sends the same object back, then releases it.
  Round trips are counted at the sender.
* ``idle-*``: one asynchronous receiver node; sender processes of 100 nodes each send one
  asynchronous message to it and then idle; the receiver reports its VmRSS before and after.
* ``raw-*``: baselines without trio_chirp, raw trio SocketStreams moving the same bytes.

Every node listens on 127.0.0.1 only and has ``reuse_time=3600`` so nothing is collected;
with ``--tls-dir`` the receiver listens on 127.0.0.2 and senders dial from 127.0.0.3.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import resource
import signal
import time
from pathlib import Path
from typing import Any

import trio

import trio_chirp

from ._workloads import (
    CHECK_EVERY,
    FRAME_HEAD,
    HOST,
    PROGRESS_EVERY,
    REUSE_TIME,
    TLS_RECEIVER,
    TLS_SENDER,
    WARMUP_MSGS,
)


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
        self.next_progress = 0.0

    def check(self, n: int) -> bool:
        """Called every CHECK_EVERY messages with the running count; True once measured."""
        now = time.perf_counter()
        if now >= self.next_progress:  # for the live display: messages measured so far
            self.next_progress = now + PROGRESS_EVERY
            emit("PROGRESS", count=0 if self.t_start is None else n - self.n_start)
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
        trio_chirp.open_chirp(
            node_config(synchronous=mode == "sync" and not args.async_receiver, receiver=True)
        ) as chirp,
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
    if args.sender_nodes > 1:
        await run_fan_in_sender(args)
        return
    mode = args.mode
    async with (
        trio_chirp.open_chirp(node_config(synchronous=mode in ("sync", "echo"))) as chirp,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
        msg = trio_chirp.Message(b"s" * args.size, address=dest(), port=args.port)
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
        if args.tasks > 1:  # sync-1k-16: many tasks, in flight together up to the receiver's window
            for _ in range(args.tasks):
                nursery.start_soon(
                    _send_forever, send, trio_chirp.Message(msg.data, address=dest(), port=args.port)
                )
            return
        await _send_forever(send, msg)


async def run_fan_in_sender(args: argparse.Namespace) -> None:
    """``fanin-*``: ``--sender-nodes`` synchronous nodes in this one Trio run, one task each."""
    async with contextlib.AsyncExitStack() as stack:
        chirps = [
            await stack.enter_async_context(trio_chirp.open_chirp(node_config(synchronous=True)))
            for _ in range(args.sender_nodes)
        ]
        async with trio.open_nursery() as nursery:  # inside: the nodes close after their tasks
            nursery.start_soon(cancel_on_sigterm, nursery.cancel_scope)
            for chirp in chirps:
                msg = trio_chirp.Message(b"s" * args.size, address=dest(), port=args.port)
                send = _application_send(chirp, args)
                nursery.start_soon(_send_forever, send, msg)


async def _send_forever(send: Any, msg: trio_chirp.Message) -> None:
    n = 0
    while True:
        await send(msg)
        n += 1
        if not n % CHECK_EVERY:
            MESSAGES[0] += CHECK_EVERY


def _application_send(chirp: trio_chirp.Chirp, args: argparse.Namespace) -> Any:
    """``send`` as applications call it: ``--new-message`` builds a new ``Message`` per send
    (ignoring the one passed), ``--deadline`` puts each send in a caller's cancel scope, so
    the deadline travels in our header map (unless ``--no-header-map``); with neither, the
    node's own ``send``, which sends the one message it is given."""
    if not (args.new_message or args.deadline):
        return chirp.send
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


def child_parser() -> argparse.ArgumentParser:
    """The options the orchestrator passes to a child."""
    parser = argparse.ArgumentParser(prog="python -m trio_chirp._bench._child")
    parser.add_argument("--role", choices=list(ROLES), required=True)
    parser.add_argument("--mode")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--port", type=int)
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--tls-dir", type=Path)
    parser.add_argument("--sender-nodes", type=int, default=1)
    flags = ("instrument", "release-first", "new-message", "deadline", "no-header-map", "tracemalloc")
    for flag in (*flags, "async-receiver"):
        parser.add_argument(f"--{flag}", action="store_true")
    return parser


def main() -> None:
    args = child_parser().parse_args()
    if args.no_header_map:
        HEADER_MAP[0] = False
    TLS_DIR[0] = args.tls_dir
    child_main(args)


if __name__ == "__main__":
    main()
