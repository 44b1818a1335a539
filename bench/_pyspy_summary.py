#!/usr/bin/env python3
"""Summarize py-spy ``--format raw`` (collapsed stacks) files written by ``bench_node.py --profile``.

    python bench/_pyspy_summary.py DIR/*.txt [--top 25] [--rate 200] [--seconds 3]

Per file: samples (with ``--rate`` and ``--seconds``, the share of one CPU that was busy:
py-spy drops idle samples), then the functions with most *self* samples (the leaf frame)
and the functions with most *inclusive* samples (anywhere on the stack, counted once per
stack), each as a share of all busy samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/file.py:123)`` without the line number, so one function is one key."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m['func']} ({m['file']})"


def summarize(path: Path, top: int, rate: float | None, seconds: float | None) -> None:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    busy = ""
    if rate and seconds:
        busy = f", about {total / (rate * seconds):.0%} of one CPU busy"
    print(f"== {path.name}: {total} busy samples{busy}")
    if not total:
        return
    print("  self:")
    for frame, count in self_counts.most_common(top):
        print(f"    {count / total:6.1%}  {frame}")
    print("  inclusive (trio_chirp and bench frames):")
    shown = 0
    for frame, count in incl_counts.most_common():
        if "trio_chirp/" in frame or "bench_node" in frame:
            print(f"    {count / total:6.1%}  {frame}")
            shown += 1
            if shown >= top:
                break
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=float, default=200.0, help="py-spy sampling rate used")
    parser.add_argument("--seconds", type=float, default=None, help="seconds recorded")
    args = parser.parse_args()
    for path in args.files:
        summarize(path, args.top, args.rate, args.seconds)


if __name__ == "__main__":
    main()
