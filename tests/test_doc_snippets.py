"""Every code block in README.md and docs/*.md runs, or says why it does not (see doc_snippets.py)."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from doc_snippets import PAGES, ROOT, Block, blocks, matches

ALL = [block for page in PAGES for block in blocks(page)]
KINDS = {"python", "console", "text"}
PROGRAMS = [b for b in ALL if b.lang == "python" and not b.marker]
FRAGMENTS = [b for b in ALL if b.lang == "python" and b.marker.startswith("fragment")]
PYTEST_MODULES = [b for b in ALL if b.lang == "python" and b.marker == "pytest"]
SHELL_RUN = [b for b in ALL if b.lang == "console" and b.marker == "shell: run"]

pytestmark = pytest.mark.timeout(120)


def _env() -> dict[str, str]:
    """The checkout first on the path, and this venv's scripts (``trio-chirp``) on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PYTHONPATH": str(ROOT), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def test_every_block_is_of_a_known_kind_with_a_valid_marker() -> None:
    for block in ALL:
        if block.lang.startswith("{"):  # a MyST directive (toctree, eval-rst, graphviz)
            continue
        assert block.lang in KINDS, f"{block.name}: fence `{block.lang}`: use python, console or text"
        if block.lang == "python":
            assert block.marker in ("", "pytest") or block.marker.startswith("fragment: "), (
                f"{block.name}: unknown marker {block.marker!r}"
            )
        if block.marker.startswith("fragment"):
            assert block.marker.removeprefix("fragment:").strip(), f"{block.name}: a fragment needs a reason"
        if block.lang == "console":
            ok = block.marker == "shell: run" or (
                block.marker.startswith("shell: not run: ") and block.marker.removeprefix("shell: not run: ")
            )
            assert ok, (
                f"{block.name}: a console block needs <!-- shell: run --> or <!-- shell: not run: REASON -->"
            )
            assert block.code.lstrip().startswith("$ "), f"{block.name}: commands start with '$ '"


def test_there_is_something_to_run() -> None:
    assert len(PROGRAMS) >= 8
    assert PYTEST_MODULES
    assert SHELL_RUN


@pytest.mark.parametrize("block", PROGRAMS, ids=lambda b: b.name)
def test_program_runs_and_prints_what_the_page_shows(block: Block, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", block.code],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
        env=_env(),
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}{done.stderr}"
    if block.output is not None:
        assert matches(block.output, done.stdout), (
            f"{block.name} printed:\n{done.stdout}\nthe page shows:\n{block.output}"
        )


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.name)
def test_fragment_compiles(block: Block) -> None:
    compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", PYTEST_MODULES, ids=lambda b: b.name)
def test_pytest_module_passes(block: Block, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_snippet=block.code)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 1


@pytest.mark.parametrize("block", SHELL_RUN, ids=lambda b: b.name)
def test_shell_commands_run(block: Block, tmp_path: Path) -> None:
    """Each command in a fresh shell, in an empty directory (so ``make-pki pki`` writes there)."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    for command, output in commands:
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env()
        )
        assert done.returncode == 0, (
            f"{block.name}: {shlex.quote(command)} failed:\n{done.stdout}{done.stderr}"
        )
        if any(line.strip() for line in output):
            assert matches("\n".join(output), done.stdout), f"{block.name}: {command} printed:\n{done.stdout}"
