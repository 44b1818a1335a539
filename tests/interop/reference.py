"""Build and locate the reference implementation: PyPI ``libchirp==1.2.1b3`` (C core + cffi).

Interop tests run the real libchirp in a separate process (``libchirp_peer.py``), under
its own interpreter: a venv cached at ``<repo>/.cache/libchirp-ref/venv`` (``.cache/`` is
git-ignored), so the project's venv never sees the C extension.

Why a recipe at all: PyPI has only an sdist for 1.2.1b3 (no wheels), and it does not
build against OpenSSL 3 as is: ``ch_en_tls_cleanup`` calls ``FIPS_mode_set(0)``, removed in
OpenSSL 3, so the extension links but fails at import with ``undefined symbol:
FIPS_mode_set``. Defining it away with ``CFLAGS=-DFIPS_mode_set(x)=0`` is the only change
needed (the call only runs in libchirp's atexit cleanup). The sdist's ``setup.py`` needs
cffi at setup time (``cffi_modules``), hence a venv with cffi/setuptools/wheel first and
``--no-build-isolation``. ``--no-cache-dir`` matters: pip would otherwise reuse a wheel it
cached from an earlier build without the CFLAGS.

System requirements (this module never installs them; CI's ``.ci/run`` does): a C
compiler, Python headers, ``libuv1-dev`` and ``libssl-dev`` (Debian names). Build time on
a warm machine is a few seconds (venv ~3 s, build deps ~1.5 s, libchirp ~1.5 s).

Use ``require_reference()`` (or the ``reference_python`` fixture in ``conftest.py``) in
tests: it skips when the reference cannot be built locally, but fails hard when ``CI`` is
set to a true value, so CI can never silently skip interop tests.

Run ``python tests/interop/reference.py`` to build it by hand and print the interpreter.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

LIBCHIRP_REQUIREMENT = "libchirp==1.2.1b3"
BUILD_REQUIREMENTS = ("cffi>=1.15", "setuptools", "wheel")
EXTRA_CFLAGS = "-DFIPS_mode_set(x)=0"
# Bump when the recipe changes, so existing caches get rebuilt.
RECIPE = {"v": 1, "req": LIBCHIRP_REQUIREMENT, "cflags": EXTRA_CFLAGS}

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "libchirp-ref"
VENV_DIR = CACHE_DIR / "venv"
PEER_SCRIPT = HERE / "libchirp_peer.py"
_MARKER = VENV_DIR / ".libchirp-ref.json"
_LOG = CACHE_DIR / "build.log"
_LOCK_TIMEOUT = 900.0

SYSTEM_PACKAGES_HINT = "apt-get update && apt-get install -y libuv1-dev libssl-dev gcc python3-dev"


class ReferenceUnavailable(RuntimeError):
    """The reference libchirp cannot be built or imported; the message says why."""


def in_ci() -> bool:
    """True when running under CI (``CI=true``/``1``/``yes``): skipping is not allowed."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def _works(python: Path) -> bool:
    """Whether ``import libchirp.queue`` succeeds there (it loads the C extension)."""
    if not python.exists():
        return False
    try:
        proc = subprocess.run(
            [str(python), "-c", "import libchirp.queue"],
            capture_output=True,
            timeout=60,
            cwd=CACHE_DIR,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _clean_env() -> dict[str, str]:
    """Environment for the reference interpreter: nothing from the project's venv."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    return env


def _check_toolchain() -> None:
    """Fail early, with the package names to install, if headers or compiler are missing.

    Preprocesses a file including everything the build includes; much clearer than a
    compiler error buried in pip's output.
    """
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not shutil.which(cc[0]):
        raise ReferenceUnavailable(
            f"no C compiler ({cc[0]!r}) to build {LIBCHIRP_REQUIREMENT}; install one, "
            f"e.g. `{SYSTEM_PACKAGES_HINT}`"
        )
    include = sysconfig.get_paths()["include"]
    missing = []
    for header, package in (
        ("uv.h", "libuv1-dev"),
        ("openssl/ssl.h", "libssl-dev"),
        ("Python.h", "python3-dev"),
    ):
        proc = subprocess.run(
            [*cc, "-E", "-x", "c", "-I", include, "-o", os.devnull, "-"],
            input=f"#include <{header}>\n".encode(),
            capture_output=True,
        )
        if proc.returncode != 0:
            missing.append(f"{header} (Debian: {package})")
    if missing:
        raise ReferenceUnavailable(
            f"cannot build {LIBCHIRP_REQUIREMENT}: missing headers {', '.join(missing)}. "
            f"Install the system packages, e.g. `{SYSTEM_PACKAGES_HINT}`"
        )


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Inter-process lock (flock) so parallel pytest workers build only once."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "lock", "w") as fh:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ReferenceUnavailable(f"timed out waiting for {CACHE_DIR / 'lock'}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_step(args: list[str], env: dict[str, str], log: IO[str]) -> None:
    log.write(f"\n$ {shlex.join(args)}\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=CACHE_DIR, timeout=900)
    log.write(f"# exit {proc.returncode} after {time.monotonic() - start:.1f}s\n")
    log.flush()
    if proc.returncode != 0:
        log.close()
        tail = "".join(_LOG.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise ReferenceUnavailable(
            f"building {LIBCHIRP_REQUIREMENT} failed at `{shlex.join(args)}` (full log: {_LOG}):\n{tail}"
        )


def _build() -> None:
    _check_toolchain()
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    env = _clean_env()
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["CFLAGS"] = f"{env.get('CFLAGS', '')} {EXTRA_CFLAGS}".strip()
    python = str(venv_python())
    pip = [python, "-m", "pip", "install", "--no-cache-dir", "--no-input"]
    with open(_LOG, "w") as log:
        _run_step([sys.executable, "-m", "venv", str(VENV_DIR)], env, log)
        _run_step([*pip, "--upgrade", *BUILD_REQUIREMENTS], env, log)
        _run_step([*pip, "--no-build-isolation", "--no-binary", "libchirp", LIBCHIRP_REQUIREMENT], env, log)
    if not _works(venv_python()):
        raise ReferenceUnavailable(
            f"{LIBCHIRP_REQUIREMENT} built but `import libchirp.queue` fails in {VENV_DIR}; "
            f"see {_LOG} and run `{venv_python()} -c 'import libchirp.queue'`"
        )
    _MARKER.write_text(json.dumps(RECIPE))


def _is_current() -> bool:
    try:
        recipe_ok = json.loads(_MARKER.read_text()) == RECIPE
    except (OSError, ValueError):
        return False
    return recipe_ok and _works(venv_python())


_result: Path | ReferenceUnavailable | None = None


def ensure_reference() -> Path:
    """Return the reference venv's python, building the venv once if needed.

    Cached per process; across processes a file lock serialises the build and later
    callers reuse the venv as long as ``import libchirp.queue`` works there.
    Raises ``ReferenceUnavailable`` (with what to install) when it cannot be built.
    """
    global _result
    if _result is None:
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            if not _is_current():
                with _build_lock():
                    if not _is_current():  # another worker may have built it meanwhile
                        _build()
            _result = venv_python()
        except ReferenceUnavailable as exc:
            _result = exc
        except (OSError, subprocess.SubprocessError) as exc:
            _result = ReferenceUnavailable(f"cannot build {LIBCHIRP_REQUIREMENT}: {exc!r}")
    if isinstance(_result, ReferenceUnavailable):
        raise _result
    return _result


def unavailable_reason() -> str | None:
    """None if the reference is usable, else why not (builds it on first call)."""
    try:
        ensure_reference()
    except ReferenceUnavailable as exc:
        return str(exc)
    return None


def reference_available() -> bool:
    return unavailable_reason() is None


def require_reference() -> Path:
    """For tests: the reference python, or skip; under CI a failure is an error, never a skip."""
    import pytest

    try:
        return ensure_reference()
    except ReferenceUnavailable as exc:
        if in_ci():
            raise
        pytest.skip(f"reference libchirp unavailable: {skip_reason(exc)}")


def skip_reason(exc: ReferenceUnavailable) -> str:
    """One line: what is missing and what to install; a build log tail stays in the log file."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else repr(exc)


if __name__ == "__main__":
    started = time.monotonic()
    print(ensure_reference())
    print(f"ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
