"""The same workloads against libchirp and pyzmq, in the interpreter of another environment.

``--reference-python PATH`` names it (for example the libchirp reference venv the test
suite builds in ``.cache/libchirp-ref/venv``, with ``pip install pyzmq`` added). Each side
runs ``_reference_peer.py`` there; the orchestrator measures it exactly like ours
(``run_throughput`` with another ``spawn``), so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

from ._orchestrate import Child, Progress, run_throughput
from ._workloads import Workload

PEER = Path(__file__).resolve().with_name("_reference_peer.py")

NO_TLS = {
    "libchirp": (
        "not measured over TLS: libchirp decides TLS by address and does not bind its outgoing"
        " connections, so two libchirp nodes on one host's loopback disagree (docs/tls.md)"
    ),
    "pyzmq": "not measured over TLS: ZeroMQ has no TLS (CURVE is another protocol)",
}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def unavailable(python: Path, implementation: str) -> str | None:
    """None when ``implementation`` imports under ``python``; else why not, in one line."""
    try:
        done = subprocess.run(
            [
                str(python),
                str(PEER),
                "--impl",
                implementation,
                "--role",
                "receiver",
                "--mode",
                "async",
                "--check",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=_clean_env(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {python}: {exc}"
    tag, _, payload = done.stdout.strip().partition(" ")
    if tag == "OK":
        return None
    if tag == "MISSING":
        return f"not installed under {python}: {json.loads(payload)['error']}"
    return f"{python} failed: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1]}"


def _spawn(python: Path, implementation: str, role: str, *options: str) -> Child:
    command = [str(python), str(PEER), "--impl", implementation, "--role", role.removeprefix("raw-")]
    return Child(f"{implementation} {role}", *options, command=command)


def run_reference(
    implementation: str, w: Workload, args: argparse.Namespace, python: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """One plaintext run of ``w`` on ``implementation`` (its mode must be async, sync or echo)."""
    return run_throughput(w, args, progress, spawn=partial(_spawn, python, implementation))
