"""One side of a workload on libchirp or pyzmq, run by the *reference* interpreter (not ours).

    REFERENCE_PYTHON _reference_peer.py --impl libchirp|pyzmq --role receiver|sender --mode async ...

``trio-chirp bench --reference-python PATH`` runs this file (by path) under the Python of
an environment with the libchirp binding and/or pyzmq, so neither is ever imported into
trio_chirp's own interpreter. It speaks the same ``TAG {json}`` lines as ``_child.py``
(PORT, START, PROGRESS, RESULT) and measures the same way (warm-up, then a window), so the
orchestrator treats both alike. It imports nothing from trio_chirp (whose import needs
trio, which the reference environment need not have): hence its own small ``Meter``.

The same workloads, each library in its natural style:

* libchirp (``libchirp.queue``): ``async``: both nodes asynchronous, up to 256 sends
  outstanding (a new ``Message`` per send: one in use cannot be sent again); ``sync``: both
  synchronous (``--async-receiver``: the receiver asynchronous), ``send(msg).result()``
  with a new message each, ``--tasks`` threads (libchirp keeps one in flight per remote
  whatever the threads); ``echo``: the
  receiver answers with the received message (libchirp's reply pattern), the synchronous
  sender waits for the ACK and then the reply.
* pyzmq: ``async``: PUSH -> PULL; ``sync``: REQ -> REP with an empty reply as the
  acknowledgement, ``--tasks`` REQ sockets in threads; ``echo``: REQ -> REP with the data.

Exit: SIGTERM/SIGINT end the process at once (``os._exit``): it only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
import time
import traceback
from typing import Any

CHECK_EVERY = 64
WARMUP_MSGS = 2000
PROGRESS_EVERY = 0.25
OUTSTANDING = 256


def emit(tag: str, **fields: Any) -> None:
    print(tag, json.dumps(fields), flush=True)


class Meter:
    """Warm-up, then a fixed measuring window: START, PROGRESS and RESULT lines."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.warmup, self.duration = warmup, duration
        self.t_first: float | None = None
        self.t_start: float | None = None
        self.n_start = 0
        self.done = False
        self.next_progress = 0.0

    def check(self, n: int) -> bool:
        now = time.perf_counter()
        if now >= self.next_progress:
            self.next_progress = now + PROGRESS_EVERY
            emit("PROGRESS", count=0 if self.t_start is None else n - self.n_start)
        if self.t_first is None:
            self.t_first = now
        elif self.t_start is None:
            if n >= WARMUP_MSGS and now - self.t_first >= self.warmup:
                self.t_start, self.n_start = now, n
                emit("START")
        elif now - self.t_start >= self.duration:
            count = n - self.n_start
            self.done = True
            emit("RESULT", rate=count / (now - self.t_start), count=count, seconds=now - self.t_start)
        return self.done


def free_port() -> int:
    """A port free on 0.0.0.0 and :: (libchirp listens on both), above 1024 (libchirp's range)."""
    for _ in range(50):
        with socket.socket() as s4:
            s4.bind(("0.0.0.0", 0))
            port = int(s4.getsockname()[1])
        if port > 1024:
            return port
    raise RuntimeError("no free port above 1024")


class Counter:
    """Messages done, shared by sending threads; the meter is checked every CHECK_EVERY."""

    def __init__(self, meter: Meter | None) -> None:
        self.n = 0
        self.meter = meter
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1
            if self.meter is not None and not self.n % CHECK_EVERY:
                self.meter.check(self.n)


# ----------------------------------------------------------------------------- libchirp
def libchirp_node(args: argparse.Namespace, *, synchronous: bool, port: int) -> Any:
    import libchirp
    import libchirp.queue

    config = libchirp.Config()
    config.PORT = port
    config.SYNCHRONOUS = synchronous
    config.DISABLE_SIGNALS = True
    config.REUSE_TIME = 3600
    config.BIND_V4 = "127.0.0.1"
    config.DISABLE_ENCRYPTION = True  # plaintext runs only (see NO_TLS); else it wants DH_PARAMS_PEM
    return libchirp.queue.Chirp(libchirp.Loop(), config)


def libchirp_receiver(args: argparse.Namespace) -> None:
    port = free_port()
    chirp = libchirp_node(args, synchronous=args.mode == "sync" and not args.async_receiver, port=port)
    emit("PORT", port=port)
    meter = Meter(args.warmup, args.duration)
    reply = b"r" * args.size
    n = 0
    while True:
        msg = chirp.get()  # released here (AUTO_RELEASE)
        if args.mode == "echo":
            msg.data = reply
            chirp.send(msg)
            continue
        n += 1
        if not n % CHECK_EVERY and not meter.done:
            meter.check(n)


def libchirp_sender(args: argparse.Namespace) -> None:
    import libchirp.queue

    chirp = libchirp_node(args, synchronous=args.mode != "async", port=free_port())
    data = b"s" * args.size

    def message() -> Any:
        msg = libchirp.queue.Message()
        msg.data, msg.address, msg.port = data, "127.0.0.1", args.port
        return msg

    if args.mode == "async":
        room = threading.Semaphore(OUTSTANDING)
        while True:
            room.acquire()
            chirp.send(message()).add_done_callback(lambda _: room.release())
    if args.mode == "echo":
        meter = Meter(args.warmup, args.duration)
        msg, n = message(), 0
        while not meter.done:
            chirp.send(msg).result()
            chirp.get()
            n += 1
            if not n % CHECK_EVERY:
                meter.check(n)
        threading.Event().wait()
    counter = Counter(None)

    def loop() -> None:
        while True:
            chirp.send(message()).result()  # a new message per send, as applications do
            counter.add()

    run_threads(loop, args.tasks)


# ----------------------------------------------------------------------------- pyzmq
def zmq_receiver(args: argparse.Namespace) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PULL if args.mode == "async" else zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    emit("PORT", port=port)
    meter = Meter(args.warmup, args.duration)
    reply = b"r" * args.size if args.mode == "echo" else b""
    n = 0
    while True:
        sock.recv(copy=False)
        if args.mode != "async":
            sock.send(reply)
        if args.mode == "echo":
            continue
        n += 1
        if not n % CHECK_EVERY and not meter.done:
            meter.check(n)


def zmq_sender(args: argparse.Namespace) -> None:
    import zmq

    context = zmq.Context.instance()
    data = b"s" * args.size
    address = f"tcp://127.0.0.1:{args.port}"
    if args.mode == "async":
        sock = context.socket(zmq.PUSH)
        sock.connect(address)
        while True:
            sock.send(data)
    meter = Meter(args.warmup, args.duration) if args.mode == "echo" else None
    counter = Counter(meter)

    def loop() -> None:
        sock = context.socket(zmq.REQ)
        sock.connect(address)
        while meter is None or not meter.done:
            sock.send(data)
            sock.recv(copy=False)
            counter.add()
        threading.Event().wait()

    run_threads(loop, args.tasks)


def run_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    threading.Event().wait()


ROLES = {
    ("libchirp", "receiver"): libchirp_receiver,
    ("libchirp", "sender"): libchirp_sender,
    ("pyzmq", "receiver"): zmq_receiver,
    ("pyzmq", "sender"): zmq_sender,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["libchirp", "pyzmq"], required=True)
    parser.add_argument("--role", choices=["receiver", "sender"], required=True)
    parser.add_argument("--mode", choices=["async", "sync", "echo"], required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--port", type=int)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--check", action="store_true", help="only say whether the library imports")
    parser.add_argument("--new-message", action="store_true", help="(always: a new message per send)")
    parser.add_argument("--async-receiver", action="store_true", help="the receiver is asynchronous")
    args = parser.parse_args()
    if args.check:
        module = "libchirp.queue" if args.impl == "libchirp" else "zmq"
        try:
            __import__(module)
        except ImportError as exc:
            emit("MISSING", error=f"{type(exc).__name__}: {exc}")
        else:
            emit("OK")
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    try:
        ROLES[args.impl, args.role](args)
    except BaseException:
        traceback.print_exc()
        os._exit(1)  # libchirp's loop thread would keep a failed process alive


if __name__ == "__main__":
    main()
