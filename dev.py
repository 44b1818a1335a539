#!/usr/bin/env python3
"""Project tasks that work on a fresh machine with only python3 and pip.

    python3 dev.py demo    # run the main job: a producer, a router and two workers
    python3 dev.py test    # the whole check suite: ruff, mypy --strict, pytest
    python3 dev.py mutate  # mutation testing, time-boxed (docs/mutation.md); not part of CI

Both create (or reuse) ``.venv`` inside the checkout, so nothing leaks into the
system Python. The venv is reinstalled when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
# What ruff checks. Only docs/conf.py of docs/: ruff would also reformat the Markdown pages' snippets.
LINTED = ("trio_chirp", "tests", "examples", "bench", "tools", "docs/conf.py", "dev.py")


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    result = subprocess.run([str(a) for a in args], cwd=ROOT)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_venv(extras: str) -> None:
    """Install the project (editable) with ``extras`` unless an identical install is there.

    ``editable_mode=compat`` puts the checkout on ``sys.path`` through a ``.pth`` file.
    setuptools' default editable install uses an import hook instead, which mypy cannot
    follow: ``mypy --strict`` on code that imports trio_chirp would see nothing of it.
    """
    stamp_value = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras or 'base'}"
    if PY.exists() and stamp.exists() and stamp.read_text() == stamp_value:
        return
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    _run(
        PY,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "--config-settings",
        "editable_mode=compat",
        "-e",
        target,
    )
    stamp.write_text(stamp_value)


def demo(argv: list[str]) -> None:
    ensure_venv("")
    _run(PY, ROOT / "examples" / "demo.py", *argv)


def test(argv: list[str]) -> None:
    ensure_venv("test,docs,bench")
    _run(BIN / "ruff", "check", *LINTED)
    _run(BIN / "ruff", "format", "--check", *LINTED)
    _run(PY, "-m", "mypy", "--strict", "trio_chirp", "examples")
    _run(BIN / "lint-imports", "--no-cache")  # the layering contract (pyproject.toml, docs/architecture.md)
    _run(PY, "-m", "pytest", *argv)


def mutate(argv: list[str]) -> None:
    """Mutation testing, time-boxed: ``dev.py mutate [--minutes N] [module ...]`` (docs/mutation.md)."""
    ensure_venv("mutate")
    _run(PY, ROOT / "tools" / "mutate.py", *argv)


TASKS = {"demo": demo, "test": test, "mutate": mutate}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(TASKS)}}} [args...]")
    TASKS[sys.argv[1]](sys.argv[2:])
