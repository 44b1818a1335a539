"""examples/libchirp_peer.py runs against the reference libchirp and says what it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def test_libchirp_example(reference_python: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "libchirp_peer.py"), str(reference_python)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[1:] == [
        "trio_chirp: send() returned: libchirp's application has the message",
        "  libchirp: got b'hello' with header b''",
        "trio_chirp: received b'echo: hello' (the same identity) from libchirp",
        "  libchirp: got b'question' with header b''",
        "trio_chirp: request() answered with b'echo: question', header b''",
        "  libchirp: got b'with a header' with header b'app-header'",
        "trio_chirp: request() answered with b'echo: with a header', header b'app-header'",
        "libchirp exited with 0",
    ]
