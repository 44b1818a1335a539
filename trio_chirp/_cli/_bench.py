"""``trio-chirp bench``: the options; the harness is ``trio_chirp._bench`` (shared with bench/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Formatter,
    positive,
    seconds,
)

EXAMPLES = """examples:
  trio-chirp bench                                   # every standard workload, plaintext and TLS
  trio-chirp bench async-1k echo-1k --transport plaintext --duration 1
  trio-chirp bench --reference-python .cache/libchirp-ref/venv/bin/python   # with ratios

"""


EXIT_CODES = """exit codes:
  0    done
  1    a run failed (a process died)
  2    bad arguments, or no 'cryptography' package for the TLS runs
  5    a process did not report within --timeout
  130  stopped by Ctrl-C"""


def add_parser(commands: Any) -> None:
    from .._bench._workloads import BENCH_WORKLOADS, STANDARD

    bench = commands.add_parser(
        "bench",
        help="measure the standard workloads between two processes on loopback",
        description=(
            "Run the standard workloads (async one-way 100 B / 1 KiB / 64 KiB, sync 1 KiB with 1 and"
            " 16 sending tasks and from 100 sender nodes, echo 1 KiB), each between two processes on"
            " loopback with a new Message per send (as applications do), in plaintext"
            " and over TLS, with a live progress display; print messages/s and MB/s, and write JSON"
            " (date, commit, machine) and a PNG chart (matplotlib: pip install 'trio-chirp[bench]')."
            " With --reference-python, the same workloads on libchirp and pyzmq in that interpreter,"
            " and the ratios. The machine should be otherwise idle: each run first waits up to"
            " --wait-quiet seconds for other processes to leave the CPUs alone."
        ),
        epilog=EXAMPLES + EXIT_CODES,
        formatter_class=Formatter,
    )
    bench.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"any of {', '.join(BENCH_WORKLOADS)} (default: {' '.join(STANDARD)})",
    )
    bench.add_argument(
        "--transport", choices=["both", "plaintext", "tls"], default="both", help="default: both"
    )
    bench.add_argument("--duration", type=seconds, default=3.0, help="seconds measured per run (default: 3)")
    bench.add_argument(
        "--warmup", type=seconds, default=0.5, help="seconds of warm-up per run (default: 0.5)"
    )
    bench.add_argument(
        "--repeat", type=positive, default=1, help="runs per workload, the best kept (default: 1)"
    )
    bench.add_argument(
        "--wait-quiet",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait for other load to go (default: 10)",
    )
    bench.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up when a process does not report for this long (default: 30)",
    )
    bench.add_argument(
        "--reference-python", type=Path, metavar="PATH", help="Python with libchirp and/or pyzmq"
    )
    bench.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="default: bench-results.json"
    )
    bench.add_argument(
        "--chart", type=Path, default=Path("bench-results.png"), help="default: bench-results.png"
    )
    bench.add_argument("--no-chart", dest="chart", action="store_const", const=None, help="write no chart")
    bench.add_argument("--tls-dir", type=Path, help="make-pki output with receiver.pem and sender.pem")
    bench.add_argument(
        "--no-progress", action="store_true", help="no live display (also off without a terminal)"
    )
    bench.add_argument(
        "--reuse-message",
        action="store_true",
        help="send one Message object again and again (faster than applications do it)",
    )
    bench.set_defaults(run=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from .._bench._workloads import BENCH_WORKLOADS

    unknown = [name for name in args.workloads if name not in BENCH_WORKLOADS]
    if unknown:
        print(
            f"trio-chirp bench: unknown workload {unknown[0]!r}; choose from {', '.join(BENCH_WORKLOADS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.reference_python is not None and not args.reference_python.exists():
        print(f"trio-chirp bench: --reference-python {args.reference_python}: no such file", file=sys.stderr)
        return EXIT_USAGE
    for output in (args.json, args.chart):  # found out before minutes of measuring, not after
        if output is not None and not output.resolve().parent.is_dir():
            print(f"trio-chirp bench: cannot write {output}: no directory {output.parent}", file=sys.stderr)
            return EXIT_USAGE
    from .._bench._command import BenchUsageError, run
    from .._bench._orchestrate import ChildDied, ChildSilent

    try:
        outcome = run(args)
    except KeyboardInterrupt:
        print("trio-chirp bench: stopped (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BenchUsageError as exc:
        print(f"trio-chirp bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChildSilent as exc:
        print(f"trio-chirp bench: {exc} (--timeout)", file=sys.stderr)
        return EXIT_TIMEOUT
    except (ChildDied, OSError) as exc:  # OSError: the JSON or chart file cannot be written
        print(f"trio-chirp bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"\nwrote {outcome.json_path}" + ("" if outcome.chart_path is None else f" and {outcome.chart_path}")
    )
    if outcome.chart_note:
        print(outcome.chart_note)
    return EXIT_OK
