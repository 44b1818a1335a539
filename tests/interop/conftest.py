"""Fixtures for interop tests against the real libchirp (see ``reference.py``).

The helper modules live next to the tests and are imported by plain name; putting this
directory on ``sys.path`` here keeps that working under any pytest import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import require_reference


@pytest.fixture(scope="session")
def reference_python() -> Path:
    """Interpreter of the cached reference venv; skips locally, fails under CI=true."""
    return require_reference()
