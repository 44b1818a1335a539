#!/usr/bin/env python3
"""Throughput of the sans-IO wire layer: FrameParser (receive side) and encode_frame (send side).

    python bench/bench_parser.py                    # the table in bench/README.md
    python bench/bench_parser.py --quick            # fewer frames, for a smoke run
    python bench/bench_parser.py --against HEAD     # also time parser.py as of a git revision

The parser is fed the way a connection's reader feeds it: a handshake, then a stream of
data frames cut into 64 KiB ``bytes`` chunks (what ``receive_some(65536)`` returns), each
chunk followed by ``next_event()`` calls until ``NEED_DATA``. Chunks are cut before the
clock starts, so only parsing is timed. Every frame yields two events (its ``FrameHead``,
then the ``DataFrame``); the count is checked so a broken parser cannot look fast.

Each figure is the best of ``--repeat`` runs (the least disturbed one); with ``--against``
the two parsers take turns, so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trio_chirp._protocol import (  # noqa: E402
    NEED_DATA,
    TYPE_REQ_ACK,
    DataFrame,
    FrameParser,
    encode_frame,
    encode_handshake,
)

CHUNK = 64 * 1024
MAX_MSG_SIZE = 100 * 1024 * 1024
IDENTITY = bytes(range(16))

# data size -> frames per run (about 20-60 MB of stream per run)
SIZES: dict[str, tuple[int, int]] = {
    "100 B": (100, 200_000),
    "1 KiB": (1024, 50_000),
    "64 KiB": (64 * 1024, 1_000),
}

ParserFactory = Callable[[int], FrameParser]


def build_chunks(data_size: int, frames: int) -> list[bytes]:
    data = b"x" * data_size
    frame = encode_frame(IDENTITY, 1, TYPE_REQ_ACK, b"", data)
    stream = encode_handshake(2998, IDENTITY) + frame * frames
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def parse_all(make_parser: ParserFactory, chunks: list[bytes]) -> int:
    parser = make_parser(MAX_MSG_SIZE)
    receive, next_event = parser.receive_data, parser.next_event
    frames = 0
    for chunk in chunks:
        receive(chunk)
        while (event := next_event()) is not NEED_DATA:
            if type(event) is DataFrame:
                frames += 1
    return frames


def time_parsers(
    parsers: list[tuple[str, ParserFactory]], data_size: int, frames: int, repeat: int
) -> dict[str, float]:
    """Frames per second of each parser, best of ``repeat``; runs alternate between the
    parsers so a burst of load on the machine hits them alike."""
    chunks = build_chunks(data_size, frames)
    best = dict.fromkeys((label for label, _ in parsers), float("inf"))
    for _ in range(repeat):
        for label, make_parser in parsers:
            start = time.perf_counter()
            got = parse_all(make_parser, chunks)
            elapsed = time.perf_counter() - start
            if got != frames:
                raise SystemExit(f"{label} returned {got} frames, expected {frames}")
            best[label] = min(best[label], elapsed)
    return {label: frames / elapsed for label, elapsed in best.items()}


def time_encode(data_size: int, frames: int, repeat: int) -> float:
    """encode_frame calls per second, best of ``repeat``."""
    data = b"x" * data_size
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for serial in range(frames):
            encode_frame(IDENTITY, serial, TYPE_REQ_ACK, b"", data)
        best = min(best, time.perf_counter() - start)
    return frames / best


def load_parser_at(rev: str) -> ParserFactory:
    """FrameParser from ``trio_chirp/_protocol/parser.py`` as of git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:trio_chirp/_protocol/parser.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "trio_chirp._protocol._bench_baseline_parser"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "trio_chirp._protocol"
    sys.modules[name] = module
    exec(compile(source, f"<parser.py at {rev}>", "exec"), module.__dict__)
    return _factory(module)


def _factory(module: ModuleType) -> ParserFactory:
    cls = module.FrameParser
    return lambda max_msg_size: cls(max_msg_size)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} ({platform.system()})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is kept")
    ap.add_argument("--quick", action="store_true", help="a tenth of the frames, 2 runs")
    ap.add_argument("--against", metavar="REV", help="also time parser.py from this git revision")
    args = ap.parse_args()
    repeat = 2 if args.quick else args.repeat
    scale = 10 if args.quick else 1

    parsers: list[tuple[str, ParserFactory]] = []
    if args.against:
        parsers.append((f"parser @ {args.against}", load_parser_at(args.against)))
    parsers.append(("parser (working tree)", FrameParser))

    print(f"machine: {machine()}")
    print(f"stream fed in {CHUNK // 1024} KiB chunks, best of {repeat} runs\n")
    header = f"{'what':<24} {'data':>7} {'frames/s':>12} {'MB/s':>9}"
    print(header)
    print("-" * len(header))
    for size_name, (size, frames) in SIZES.items():
        rates = time_parsers(parsers, size, max(frames // scale, 10), repeat)
        for label, rate in rates.items():
            print(f"{label:<24} {size_name:>7} {rate:>12,.0f} {rate * (27 + size) / 1e6:>9,.1f}")
    for size_name, (size, frames) in SIZES.items():
        rate = time_encode(size, max(frames // scale, 10), repeat)
        print(f"{'encode_frame':<24} {size_name:>7} {rate:>12,.0f} {rate * (27 + size) / 1e6:>9,.1f}")


if __name__ == "__main__":
    main()
