#!/usr/bin/env python3
"""CPU instructions per message, counted by valgrind: a measure that load on the machine cannot move.

    .venv/bin/python bench/count_instructions.py                       # every workload, N = 2000 and 6000
    .venv/bin/python bench/count_instructions.py async-1k sync-1k      # some workloads only
    .venv/bin/python bench/count_instructions.py --n 1000 3000 async-1k
    .venv/bin/python bench/count_instructions.py --against 75e2390     # also a git revision, side by side
    .venv/bin/python bench/count_instructions.py --callgrind DIR async-1k  # callgrind files to annotate
    .venv/bin/python bench/count_instructions.py --cprofile async-1k   # a Python-level profile instead
    .venv/bin/python bench/count_instructions.py --run async-1k 5000   # one run, what valgrind counts

Wall-clock benchmarks (``bench_node.py``, ``trio-chirp bench``) swing by 2x when other jobs
share the machine. Instructions do not: this script runs one workload in one process, two
nodes on ``trio_chirp.testing``'s in-memory network (or loopback TCP with ``--tcp``), under
``valgrind --tool=cachegrind --cache-sim=no`` for two message counts N1 < N2, and reports
``(instructions(N2) - instructions(N1)) / (N2 - N1)``: the cost of one more message, sender
and receiver together, with start-up, imports and shutdown cancelled out. Trio's scheduler
randomness and the hash seed are fixed, so repeated runs agree to a few instructions per
message; a difference of 1 % is real.

Every workload builds a new ``Message`` per send, as applications do:

* ``async-1k``: both nodes asynchronous, 1 KiB, the receiver ``receive()`` + ``release()``;
* ``async-1k-deadline``: the same, each send inside the caller's ``trio.move_on_after(60)``
  (the deadline travels in our header map);
* ``sync-1k``: both nodes synchronous (each ``send()`` returns on its ACK);
* ``sync-1k-16``: 16 tasks of a synchronous node sending to an asynchronous one (a worker
  with 16 slots): pipelined, up to 16 waiting for their ACKs at once;
* ``async-64k``: asynchronous, 64 KiB (best with ``--tcp``: the writer's joins and system
  calls are what it prices);
* ``raw-pingpong``: no trio_chirp at all, the floor ``sync-1k`` is measured against (the
  benchmark's ping-pong ceiling): plain Trio streams, one task per side, a 1 KiB frame one
  way and a 27-byte reply back.

Instructions are not time (a system call or a cache miss costs more than its count), so
check a win that is mostly in the kernel (``sendmsg``, copies) with ``bench_node.py`` on a
quiet machine too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("async-1k", "async-1k-deadline", "sync-1k", "sync-1k-16", "async-64k", "raw-pingpong")
SIZES = {
    "async-1k": 1024,
    "async-1k-deadline": 1024,
    "sync-1k": 1024,
    "sync-1k-16": 1024,
    "async-64k": 65536,
    "raw-pingpong": 1024,
}
TASKS = {"sync-1k-16": 16}  # sending tasks (the count is split between them)


def run_workload(name: str, count: int, *, tcp: bool) -> None:
    """Send ``count`` messages of workload ``name`` from one node to another, in this process."""
    sys.path.insert(0, str(ROOT))
    import random

    import trio

    import trio_chirp
    from trio_chirp.testing import MemoryNetwork

    scheduler_random = getattr(getattr(trio, "_core", None), "_run", None)
    if isinstance(getattr(scheduler_random, "_r", None), random.Random):
        scheduler_random._r.seed(0)  # type: ignore[union-attr]  # the same batch order every run

    synchronous = name.startswith("sync")  # the sender's mode
    receiver_synchronous = name == "sync-1k"  # sync-1k-16: an asynchronous receiver (a worker)
    tasks = TASKS.get(name, 1)
    count -= count % tasks  # each task sends count / tasks
    data = b"x" * SIZES[name]
    deadline = name == "async-1k-deadline"

    if name == "raw-pingpong":
        trio.run(raw_pingpong, count, tcp)
        return

    async def main() -> None:
        if tcp:
            config = trio_chirp.Config(port=0, synchronous=synchronous, bind_v6=None)
            net_a = net_b = None
            host = "127.0.0.1"
        else:
            config = trio_chirp.Config(port=0, synchronous=synchronous, disable_encryption=True)
            network = MemoryNetwork()
            net_a, net_b = network.host("10.0.0.1"), network.host("10.0.0.2")
            host = "10.0.0.2"
        receiver_config = dataclasses.replace(config, synchronous=receiver_synchronous)
        rng_a, rng_b = random.Random(1), random.Random(2)
        async with (
            trio_chirp.open_chirp(config, transport=net_a, rng=rng_a) as sender,
            trio_chirp.open_chirp(receiver_config, transport=net_b, rng=rng_b) as receiver,
            trio.open_nursery() as nursery,
        ):
            port = receiver.port
            received = [0]

            async def receive() -> None:
                for _ in range(count):
                    msg = await receiver.receive()
                    msg.release()
                    received[0] += 1

            nursery.start_soon(receive)
            send, Message = sender.send, trio_chirp.Message
            if tasks > 1:

                async def one_task() -> None:
                    for _ in range(count // tasks):
                        await send(Message(data, address=host, port=port))

                async with trio.open_nursery() as senders:
                    for _ in range(tasks):
                        senders.start_soon(one_task)
            elif deadline:
                for _ in range(count):
                    with trio.move_on_after(60):
                        await send(Message(data, address=host, port=port))
            else:
                for _ in range(count):
                    await send(Message(data, address=host, port=port))
        if received[0] != count:
            raise SystemExit(f"received {received[0]} of {count} messages")

    trio.run(main)


async def raw_pingpong(count: int, tcp: bool) -> None:
    """The ceiling: one task per side, a 1 KiB frame (plus chirp's 27-byte head) and a 27-byte reply."""
    import trio
    import trio.testing

    head = 27
    frame, reply = b"f" * (head + 1024), b"a" * head
    if tcp:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
    else:
        client, server = trio.testing.memory_stream_pair()

    async def answer() -> None:
        have = 0
        for _ in range(count):
            while have < len(frame):
                have += len(await server.receive_some(65536))
            have -= len(frame)
            await server.send_all(reply)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        for _ in range(count):
            await client.send_all(frame)
            have = 0
            while have < head:
                have += len(await client.receive_some(65536))


def count_instructions(script: Path, name: str, count: int, *, tcp: bool, callgrind: Path | None) -> int:
    """Instructions of one whole run of the workload (``script``'s copy of it), as valgrind counts them."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [sys.executable, str(script), "--run", name, str(count), *(["--tcp"] * tcp)]
    if callgrind is not None:
        tool = ["--tool=callgrind", f"--callgrind-out-file={callgrind / f'callgrind.{name}.{count}'}"]
    else:
        tool = ["--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    result = subprocess.run(
        ["valgrind", *tool, *command], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"{name} N={count} failed:\n{result.stderr[-3000:]}")
    match = re.search(r"(?:I\s+refs|Collected)\s*:\s*([\d,]+)", result.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{result.stderr[-3000:]}")
    return int(match.group(1).replace(",", ""))


def per_message(script: Path, name: str, n1: int, n2: int, *, tcp: bool, callgrind: Path | None) -> float:
    """One more message's instructions: the difference of two runs over the difference of counts.

    A short run outside valgrind first writes the byte-code caches (``__pycache__``), so the
    first counted run does not pay for compiling what the second one reads.
    """
    warm = [sys.executable, str(script), "--run", name, "10", *(["--tcp"] * tcp)]
    subprocess.run(warm, check=True, capture_output=True)
    first = count_instructions(script, name, n1, tcp=tcp, callgrind=callgrind)
    second = count_instructions(script, name, n2, tcp=tcp, callgrind=callgrind)
    return (second - first) / (n2 - n1)


def checkout(revision: str, into: Path) -> Path:
    """The package as of ``revision`` in ``into`` (``git archive``: no worktree is registered),
    with this script beside it, so both columns run the same workload."""
    (into / "bench").mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "trio_chirp"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "bench" / "count_instructions.py").write_bytes(Path(__file__).read_bytes())
    return into


def cprofile(name: str, count: int, *, tcp: bool) -> None:
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.runcall(run_workload, name, count, tcp=tcp)
    pstats.Stats(profile).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workloads", nargs="*", help=f"some of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--n", nargs=2, type=int, default=(2000, 6000), metavar=("N1", "N2"))
    parser.add_argument("--tcp", action="store_true", help="loopback TCP instead of the in-memory network")
    parser.add_argument("--against", metavar="REV", help="also count a git revision of the package")
    parser.add_argument("--callgrind", type=Path, metavar="DIR", help="run callgrind, keep its files in DIR")
    parser.add_argument("--cprofile", action="store_true", help="a cProfile of N2 messages, no valgrind")
    parser.add_argument("--run", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_workload(args.run[0], int(args.run[1]), tcp=args.tcp)
        return
    names = args.workloads or list(WORKLOADS)
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    n1, n2 = args.n
    if args.cprofile:
        for name in names:
            print(f"--- {name}, {n2} messages")
            cprofile(name, n2, tcp=args.tcp)
        return
    if args.callgrind is not None:
        args.callgrind.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="count_instructions_") as tmp:
        columns = [("this checkout", ROOT)]
        if args.against:
            columns.insert(0, (args.against, checkout(args.against, Path(tmp) / "against")))
        print(f"instructions per message, (I(N={n2}) - I(N={n1})) / {n2 - n1}", flush=True)
        print(f"{'workload':<20}" + "".join(f"{label:>16}" for label, _ in columns), flush=True)
        for name in names:
            row = f"{name:<20}"
            for _, tree in columns:
                script = tree / "bench" / "count_instructions.py"
                figure = per_message(script, name, n1, n2, tcp=args.tcp, callgrind=args.callgrind)
                row += f"{figure:>16,.0f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
