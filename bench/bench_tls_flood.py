#!/usr/bin/env python3
"""An established TLS peer's round-trip latency while others flood the node with TLS handshakes.

    .venv/bin/python bench/bench_tls_flood.py                 # flood with 32 clients at a time, 5 s
    .venv/bin/python bench/bench_tls_flood.py --no-turns      # the same without handshake turns
    .venv/bin/python bench/bench_tls_flood.py --clients 64 --seconds 10

Three processes: a *receiver* node on 127.0.0.2 (TLS, asynchronous, answers every message
it gets with the same message), a *prober* node on 127.0.0.3 that sends a synchronous
message, waits for its echo and records the round trip, and a *flooder* that keeps
``--clients`` raw TLS clients (client certificates from the same CA) connecting to the
receiver, completing the TLS handshake and closing. The prober reports round trips
before the flood (baseline) and during it; the flooder reports handshakes per second.

``--no-turns`` switches off the receiver's handshake turns (``_tls.py``), so every
handshake in progress computes whenever it is scheduled: the figure to compare with.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import trio_chirp  # noqa: E402
import trio_chirp._tls  # noqa: E402

RECEIVER, PROBER = "127.0.0.2", "127.0.0.3"


def emit(tag: str, **fields: Any) -> None:
    print(tag, json.dumps(fields), flush=True)


def config(directory: Path, name: str, bind: str, *, synchronous: bool) -> trio_chirp.Config:
    return trio_chirp.Config(
        port=0,
        bind_v4=bind,
        bind_v6=None,
        cert_chain_pem=directory / f"{name}.pem",
        synchronous=synchronous,
        reuse_time=3600,
        handshake_timeout=30,
    )


async def receiver(args: argparse.Namespace) -> None:
    logging.getLogger("trio_chirp").setLevel(logging.ERROR)  # the flood's closes are counted, not news
    if args.no_turns:
        trio_chirp._tls.HANDSHAKE_TURNS = False  # type: ignore[misc]
    async with trio_chirp.open_chirp(config(args.dir, "receiver", RECEIVER, synchronous=False)) as chirp:
        emit("PORT", port=chirp.port)
        async for msg in chirp:
            msg.release()
            await chirp.send(msg)


async def prober(args: argparse.Namespace) -> None:
    async with trio_chirp.open_chirp(config(args.dir, "prober", PROBER, synchronous=True)) as chirp:
        msg = trio_chirp.Message(b"p" * 100, address=RECEIVER, port=args.port)
        await chirp.send(msg)  # connect, handshake
        (await chirp.receive()).release()
        emit("READY")
        phases: dict[str, list[float]] = {"baseline": [], "flood": []}
        end_baseline = time.perf_counter() + args.baseline
        end = end_baseline + args.seconds
        while (now := time.perf_counter()) < end:
            phase = "baseline" if now < end_baseline else "flood"
            if phase == "flood" and not phases["flood"]:
                emit("FLOOD")
            await chirp.send(msg)
            (await chirp.receive()).release()
            phases[phase].append(time.perf_counter() - now)
        emit("RESULT", **phases)


async def flooder(args: argparse.Namespace) -> None:
    client = trio_chirp.TLSContexts.from_files(args.dir / "flooder.pem").client
    done = 0
    stop = trio.Event()

    async def one_client() -> None:
        nonlocal done
        while not stop.is_set():
            try:
                stream = await trio.open_tcp_stream(RECEIVER, args.port, local_address=PROBER)
                tls = trio.SSLStream(stream, client, server_hostname=RECEIVER, https_compatible=True)
                await tls.do_handshake()
                await tls.aclose()
                done += 1
            except (OSError, trio.BrokenResourceError, ssl.SSLError):
                await trio.sleep(0.01)

    line = sys.stdin.readline()  # "GO"
    assert line.strip() == "GO"
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(args.clients):
            nursery.start_soon(one_client)
        await trio.sleep(args.seconds)
        stop.set()
    emit("RESULT", handshakes=done, seconds=time.perf_counter() - start)


def child(role: str, args: argparse.Namespace, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--role", role, "--dir", str(args.dir), *extra]
    cmd += ["--seconds", str(args.seconds), "--baseline", str(args.baseline), "--clients", str(args.clients)]
    cmd += ["--no-turns"] * args.no_turns
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def expect(proc: subprocess.Popen[str], tag: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        got, _, payload = line.strip().partition(" ")
        if got == tag:
            fields: dict[str, Any] = json.loads(payload) if payload else {}
            return fields
    raise RuntimeError(f"child exited with {proc.wait()} before {tag}")


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def orchestrate(args: argparse.Namespace) -> None:
    from trio_chirp.pki import make_pki

    args.dir = Path(tempfile.mkdtemp(prefix="bench-tls-flood-"))
    make_pki(args.dir, ["receiver", "prober", "flooder"])
    procs = []
    try:
        recv = child("receiver", args)
        procs.append(recv)
        port = str(expect(recv, "PORT")["port"])
        flood = child("flooder", args, "--port", port)
        probe = child("prober", args, "--port", port)
        procs += [flood, probe]
        expect(probe, "READY")
        expect(probe, "FLOOD")
        assert flood.stdin is not None
        flood.stdin.write("GO\n")
        flood.stdin.flush()
        rtts = expect(probe, "RESULT")
        flooded = expect(flood, "RESULT")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    turns = "off (--no-turns)" if args.no_turns else "on"
    print(f"handshake turns {turns}; {args.clients} flooding clients for {args.seconds} s")
    print(f"flood: {flooded['handshakes'] / flooded['seconds']:,.0f} TLS handshakes/s completed")
    print("| phase | round trips | p50 ms | p99 ms | max ms | mean ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for phase in ("baseline", "flood"):
        values = rtts[phase]
        mean = f"{statistics.fmean(values) * 1000:.1f}" if values else "-"
        cells = [phase, str(len(values)), ms(values, 0.5), ms(values, 0.99), ms(values, 1.0), mean]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32, help="flooding clients at a time (default 32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of flood (default 5)")
    parser.add_argument("--baseline", type=float, default=2.0, help="seconds measured before (default 2)")
    parser.add_argument("--no-turns", action="store_true", help="switch the receiver's handshake turns off")
    parser.add_argument("--role", choices=["receiver", "prober", "flooder"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        trio.run({"receiver": receiver, "prober": prober, "flooder": flooder}[args.role], args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
