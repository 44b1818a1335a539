#!/usr/bin/env python3
"""Node memory under attack, against the bound the configuration predicts (docs/memory.md).

    .venv/bin/python bench/bench_memory.py                 # 1000 connections, then the reconnect flood
    .venv/bin/python bench/bench_memory.py --connections 200 --seconds 3   # a quick run

A receiver process runs one asynchronous node with ``max_msg_size=64 KiB`` (the other
limits at their defaults: ``max_unreleased=1024``, ``max_unreleased_bytes=64 MiB``) and an
application that takes every message and never releases it: every slot stays held.
Then, from raw sockets in this process (no chirp node, so they cost us little):

1. **Flood**: ``--connections`` connections, each handshakes and writes 64 KiB messages as
   fast as the kernel takes them, for ``--seconds``.
2. **Reconnect flood**: one peer that connects, writes 16 messages, resets (RST) and
   reconnects, for ``--seconds``: the attack that grew memory without bound before.

The receiver reports its RSS (VmRSS) before (node started, nothing connected), during
(the peak, sampled every 50 ms) and after (application released everything, peers gone,
``gc.collect()``), with ``statistics()``. The prediction: RSS before + the bound on
unreleased bytes (``Config.worst_case_unreleased_bytes`` with the connections actually
open) + the measured per-connection cost (``--per-connection-kib``, from
``bench_node.py idle-1000``); the peak must fall within +-25 % of it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import trio_chirp  # noqa: E402
from trio_chirp._protocol import encode_frame, encode_handshake  # noqa: E402

SIZE = 64 * 1024
PAYLOAD = SIZE - 0  # data bytes per message (no header)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def emit(tag: str, **fields: object) -> None:
    print(tag, json.dumps(fields), flush=True)


# --- the receiver (a child process) -------------------------------------------------------
def receiver_config(max_connections: int) -> trio_chirp.Config:
    return trio_chirp.Config(
        port=0,
        synchronous=False,
        max_msg_size=SIZE,
        max_connections=max_connections,
        bind_v4="127.0.0.1",
        bind_v6=None,
        reuse_time=3600,
    )


async def receiver_main(max_connections: int) -> None:
    """One node whose application holds every message; commands on stdin (read in a thread)."""
    config = receiver_config(max_connections)
    held: list[trio_chirp.Message] = []
    async with trio_chirp.open_chirp(config) as chirp, trio.open_nursery() as nursery:
        gc.collect()
        emit("READY", port=chirp.port, rss_kib=rss_kib(), worst_case=config.worst_case_unreleased_bytes)
        peak: list[object] = [rss_kib(), None]

        async def sample() -> None:
            while True:
                rss = rss_kib()
                if rss > int(peak[0]):  # type: ignore[call-overload]
                    s = chirp.statistics()
                    peak[:] = [rss, [s.unreleased, s.unreleased_bytes, s.connections]]
                await trio.sleep(0.05)

        async def hold() -> None:
            async for msg in chirp:
                held.append(msg)

        nursery.start_soon(sample)
        nursery.start_soon(hold)
        while True:
            command = (await trio.to_thread.run_sync(sys.stdin.readline)).strip()
            stats = chirp.statistics()
            report: dict[str, object] = {
                "rss_kib": rss_kib(),
                "peak_rss_kib": peak[0],
                "at_peak": peak[1],
                "connections": stats.connections,
                "unreleased": stats.unreleased,
                "unreleased_bytes": stats.unreleased_bytes,
                "leftovers": stats.leftovers,
                "leftovers_dropped": stats.leftovers_dropped,
                "refused": stats.connections_refused,
                "shed": stats.connections_shed,
                "errors": dict(stats.errors),
            }
            if command == "release":
                for msg in held:
                    msg.release()
                held.clear()
                await trio.sleep(1.0)
                gc.collect()
                report["rss_kib"] = rss_kib()
            peak[:] = [rss_kib(), None]
            emit("REPORT", command=command, **report)
            if command in ("quit", ""):
                nursery.cancel_scope.cancel()
                return


# --- the attackers (this process, raw sockets) ------------------------------------------
FRAME = encode_frame(b"\x11" * 16, 1, 0, b"", b"m" * PAYLOAD)


def flood(port: int, connections: int, seconds: float) -> int:
    socks: list[socket.socket] = []
    for i in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(encode_handshake(40000 + i % 20000, struct.pack(">QQ", i, 7)))
        s.setblocking(False)
        socks.append(s)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        progress = False
        for s in socks:
            try:
                sent += s.send(FRAME)
                progress = True
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
        if not progress:
            time.sleep(0.01)
    for s in socks:
        s.close()
    return sent


def reconnect_flood(port: int, seconds: float) -> int:
    rounds = 0
    end = time.monotonic() + seconds
    burst = encode_handshake(45000, b"\x22" * 16) + FRAME * 16
    while time.monotonic() < end:
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.send(burst)
        time.sleep(0.002)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        s.close()
        rounds += 1
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument(
        "--per-connection-kib", type=float, default=20.4, help="bench_node idle-1000's figure"
    )
    parser.add_argument("--role", choices=["receiver"], help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        trio.run(receiver_main, args.max_connections)
        return
    max_connections = args.connections + 16  # the limit a server sized for these peers would set
    config = receiver_config(max_connections)
    print(
        f"max_msg_size 64 KiB, max_connections {max_connections}, max_unreleased {config.max_unreleased},"
        f" max_unreleased_bytes {config.max_unreleased_bytes >> 20} MiB: worst case of unreleased bytes"
        f" {config.worst_case_unreleased_bytes / 2**20:.1f} MiB (Config.worst_case_unreleased_bytes)"
    )
    flood_name = f"flood: {args.connections} connections x 64 KiB messages"
    run_attack(flood_name, lambda port: flood(port, args.connections, args.seconds), config, args)
    reconnect_name = "reconnect flood: connect, 16 x 64 KiB, reset, repeat"
    run_attack(reconnect_name, lambda port: reconnect_flood(port, args.seconds), config, args)


def run_attack(
    name: str, attack: Callable[[int], int], config: trio_chirp.Config, args: argparse.Namespace
) -> None:
    """A fresh receiver per attack, so one attack's freed heap does not hide the next one's growth."""
    command_line = [
        sys.executable,
        __file__,
        "--role",
        "receiver",
        "--max-connections",
        str(config.max_connections),
    ]
    child = subprocess.Popen(command_line, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None
    assert child.stdout is not None

    def expect(tag: str) -> dict[str, Any]:
        assert child.stdout is not None
        while True:
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("receiver exited")
            got, _, payload = line.partition(" ")
            if got == tag:
                result: dict[str, Any] = json.loads(payload)
                return result

    def command(name: str) -> dict[str, Any]:
        assert child.stdin is not None
        child.stdin.write(name + "\n")
        child.stdin.flush()
        return expect("REPORT")

    ready = expect("READY")
    before = int(ready["rss_kib"])
    start = time.monotonic()
    amount = attack(int(ready["port"]))
    during = command("measure")
    after = command("release")
    command("quit")
    child.wait(timeout=30)
    peak = int(during["peak_rss_kib"])
    at_peak = during["at_peak"]
    live = int(at_peak[2]) if isinstance(at_peak, list) else 0
    per_conn = args.per_connection_kib
    predicted = before + config.worst_case_unreleased_bytes / 1024 + live * per_conn
    ratio = (peak - before) / (predicted - before)
    verdict = "within" if 0.75 <= ratio <= 1.25 else "OUTSIDE"
    what = "rounds" if "reconnect" in name else "bytes sent"
    print(f"\n{name} ({time.monotonic() - start:.1f} s, {amount} {what})")
    print(
        f"  RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB,"
        f" after release {int(after['rss_kib']) / 1024:.1f} MiB"
    )
    print(f"  at the peak: unreleased, bytes, connections = {at_peak}")
    print(
        f"  predicted peak: before + worst case + {live} connections x {per_conn} KiB ="
        f" {predicted / 1024:.1f} MiB; measured growth / predicted growth = {ratio:.2f} ({verdict} +-25 %)"
    )
    print(
        f"  statistics: unreleased {during['unreleased']} ({int(during['unreleased_bytes']) / 2**20:.1f}"
        f" MiB), leftovers {during['leftovers']}, dropped {during['leftovers_dropped']},"
        f" refused {during['refused']}, shed {during['shed']}, errors {during['errors']}"
    )


if __name__ == "__main__":
    main()
