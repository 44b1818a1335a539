"""The package as a user gets it: wheel and sdist build, the wheel installs into a clean venv
and works there (import, the command line, ``mypy --strict`` on a user's file), and the
declared minimum versions of the dependencies (``trio>=0.25``, ``msgpack>=1.0``) run it.

Slow (a build and two venvs, a minute or so), but it runs in CI. Needs the package index
that ``pip`` is configured with, for the build backend and the dependencies.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import trio_chirp

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
MINIMUMS = {"trio": "0.25.0", "msgpack": "1.0.0"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SMOKE = """
import trio, trio.testing
from trio_chirp import Config, Message, Router, Workers, open_chirp
from trio_chirp.testing import open_nodes

async def over_tcp() -> None:
    async with (
        open_chirp(Config(port=0, synchronous=False)) as worker,
        open_chirp(Config(port=0)) as router_node,
        open_chirp(Config(port=0)) as producer,
        trio.open_nursery() as nursery,
    ):
        async def handle(msg: Message) -> None:
            assert msg.deadline is not None  # travelled in the msgpack header map
            await worker.reply(msg, msg.data.upper())
        await nursery.start(Workers(worker, handle).run)
        await nursery.start(Router(router_node).run)
        with trio.fail_after(5):
            job = Message(b"job", address="127.0.0.1", port=router_node.port,
                          destination=("127.0.0.1", worker.port))
            response = await producer.request(job)
        assert response.data == b"JOB", response.data
        nursery.cancel_scope.cancel()

async def in_memory() -> None:
    async with open_nodes({"10.0.0.1": None, "10.0.0.2": Config(synchronous=False)}, latency=0.05) as nodes:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(nodes["10.0.0.1"].send, nodes.message(b"x", to="10.0.0.2"))
            with await nodes["10.0.0.2"].receive():
                assert abs(trio.current_time() - 0.15) < 1e-9, trio.current_time()  # 3 one-way trips

trio.run(over_tcp)
trio.run(in_memory, clock=trio.testing.MockClock(autojump_threshold=0))
print("smoke ok")
"""

USER_FILE = """
import trio
import trio_chirp
from trio_chirp.testing import MemoryNodes, open_nodes


async def main() -> None:
    async with trio_chirp.open_chirp(trio_chirp.Config(port=0)) as chirp:
        stats: trio_chirp.NodeStats = chirp.statistics()
        port: int = stats.port
        print(port)
    async with open_nodes({"10.0.0.1": None}) as nodes:
        checked: MemoryNodes = nodes
        print(len(checked))


trio.run(main)
"""

# the error a type checker must report if it sees trio_chirp's types at all
USER_FILE_WRONG = USER_FILE.replace("port: int = stats.port", "port: str = stats.port")


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the build package is missing: pip install -e '.[test]'")
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT)
    return out


def test_wheel_and_sdist_hold_the_package(dist: Path) -> None:
    (wheel,) = dist.glob(f"trio_chirp-{VERSION}-*.whl")
    (sdist,) = dist.glob(f"trio_chirp-{VERSION}.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("trio_chirp/py.typed", "trio_chirp/ffdhe2048.pem", "trio_chirp/testing/_nodes.py"):
        assert needed in names, f"{needed} missing from the wheel"
    assert not any(name.startswith(("tests/", "docs/", "bench/")) for name in names)
    with tarfile.open(sdist) as archive:
        top = f"trio_chirp-{VERSION}/"
        members = {name.removeprefix(top) for name in archive.getnames() if name.startswith(top)}
    assert {"pyproject.toml", "README.md", "trio_chirp/__init__.py"} <= members


def test_the_installed_wheel_works_and_type_checks(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    python = _venv(tmp_path / "venv")
    _run(python, "-m", "pip", "install", "-q", wheel)
    where = _run(python, "-c", "import trio_chirp; print(trio_chirp.__file__)", cwd=tmp_path)
    assert str(tmp_path / "venv") in where, "imported from the checkout, not the installed wheel"
    assert _run(python, "-m", "pip", "show", "trio-chirp").count(f"Version: {VERSION}") == 1
    assert "make-pki" in _run(tmp_path / "venv" / "bin" / "trio-chirp", "--help")
    assert "DIR" in _run(tmp_path / "venv" / "bin" / "trio-chirp", "make-pki", "--help")
    assert _run(python, "-c", SMOKE, cwd=tmp_path).strip() == "smoke ok"

    # mypy --strict on a user's file, against the packages installed in that venv
    (tmp_path / "user.py").write_text(USER_FILE)
    mypy: list[str | Path] = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        python,
    ]
    _run(*mypy, "user.py", cwd=tmp_path)
    (tmp_path / "user.py").write_text(USER_FILE_WRONG)
    wrong = subprocess.run([*map(str, mypy), "user.py"], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 1
    assert (
        'Incompatible types in assignment (expression has type "int", variable has type "str")'
        in wrong.stdout
    )


def test_the_editable_install_dev_py_makes_is_visible_to_mypy(tmp_path: Path) -> None:
    """dev.py's ``editable_mode=compat``: the checkout is on sys.path through a .pth file mypy reads."""
    dev = (ROOT / "dev.py").read_text()
    assert re.search(r'"--config-settings",\s*"editable_mode=compat"', dev)
    python = _venv(tmp_path / "venv")
    _run(python, "-m", "pip", "install", "-q", "--config-settings", "editable_mode=compat", "-e", ROOT)
    (tmp_path / "user.py").write_text(USER_FILE_WRONG)
    mypy = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        python,
        "user.py",
    ]
    wrong = subprocess.run([str(a) for a in mypy], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 1
    assert 'variable has type "str"' in wrong.stdout, wrong.stdout


def test_the_declared_minimum_versions_run_it(dist: Path, tmp_path: Path) -> None:
    declared = PYPROJECT["project"]["dependencies"]
    for name, version in MINIMUMS.items():
        assert f"{name}>={version.removesuffix('.0')}" in declared, f"pyproject declares {declared}"
    (wheel,) = dist.glob("*.whl")
    python = _venv(tmp_path / "venv")
    pins = [f"{name}=={version}" for name, version in MINIMUMS.items()]
    _run(python, "-m", "pip", "install", "-q", *pins)
    _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    installed = _run(python, "-m", "pip", "list", "--format=freeze")
    for pin in pins:
        assert pin in installed.splitlines()
    assert _run(python, "-c", SMOKE, cwd=tmp_path).strip() == "smoke ok"


def test_the_module_version_is_the_package_version() -> None:
    assert trio_chirp.__version__ == VERSION
