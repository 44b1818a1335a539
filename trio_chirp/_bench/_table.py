"""bench/bench_node.py's command line and report: the options, the per-workload lines, the table.

Kept here so ``bench/bench_node.py`` stays a thin wrapper with its command line and output
unchanged, while ``trio-chirp bench`` (``_command.py``) runs the same harness.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._orchestrate import machine, make_tls_dir, run_workload
from ._workloads import ALL_WORKLOADS, PYSPY_RATE, QUIET_LOAD, TLS_RECEIVER, TLS_SENDER, WORKLOADS


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.1f}" if unit == "KiB/conn" else f"{value:,.0f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bench_node.py's options."""
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
    parser.add_argument(
        "--reuse-message",
        dest="new_message",
        action="store_false",
        help="send one Message again and again (default: a new Message per send, as apps do)",
    )
    parser.add_argument("--new-message", action="store_true", help="(the default)")
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


def apply_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on ``--quick``."""
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    if args.duration is None:
        args.duration = 1.0 if args.quick else 3.0
    if args.connections is None:
        args.connections = 200 if args.quick else 1000


def orchestrate(
    args: argparse.Namespace, summarize: Callable[[Path, int, int, float], Any] | None = None
) -> None:
    """Run ``args.workloads`` (default: all of ``WORKLOADS``) and print bench_node.py's report.

    ``summarize(path, top, rate, seconds)`` prints a py-spy profile (``--profile``); bench/
    has it (``_pyspy_summary.py``), the package does not.
    """
    names = args.workloads or list(WORKLOADS)
    for name in names:
        if name not in ALL_WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(ALL_WORKLOADS)}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.same_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit it
    if args.tls and args.tls_dir is None:
        args.tls_dir = make_tls_dir()
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
        w = ALL_WORKLOADS[name]
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
    if args.profile and summarize is not None:
        print(f"\npy-spy profiles (raw collapsed stacks) in {args.profile}:\n")
        for path in sorted(args.profile.glob("*.txt")):
            summarize(path, 25, PYSPY_RATE, args.duration)
