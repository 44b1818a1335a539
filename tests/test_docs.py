"""Docs name tests and files that exist, cite the protocol inside the repository, show measured figures."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "bench" / "README.md"]

# `test_x.py::test_name` or `interop/test_x.py::test_name[param]`, and `::test_name` after one
REFERENCE = re.compile(r"((?:interop/)?test_\w+\.py)?::(test_\w+)")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _references(doc: Path) -> list[tuple[str, str]]:
    found = []
    for line in doc.read_text().splitlines():
        current = None
        for match in REFERENCE.finditer(line):
            current = match[1] or current
            if current is not None:
                found.append((current, match[2]))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_test_exists(doc: Path) -> None:
    for file, name in _references(doc):
        path = ROOT / "tests" / file
        assert path.is_file(), f"{doc.name} names {file}, which does not exist"
        assert name in _tests_in(path), f"{doc.name} names {file}::{name}, which does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_linked_file_exists(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links {target}, which does not exist"


def test_performance_tables_are_the_measured_ones() -> None:
    """Every table row on docs/performance.md is a row of bench/README.md, word for word."""
    measured = (ROOT / "bench" / "README.md").read_text().splitlines()
    rows = [
        line for line in (ROOT / "docs" / "performance.md").read_text().splitlines() if line.startswith("|")
    ]
    assert len(rows) >= 20
    assert [row for row in rows if row not in measured] == []


def test_performance_page_keeps_the_place_for_the_bench_output() -> None:
    assert "## trio-chirp bench output" in (ROOT / "docs" / "performance.md").read_text()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_protocol_is_cited_inside_the_repository(doc: Path) -> None:
    """docs/protocol.md, not the workplace's PROTOCOL.md, which a user's clone does not have."""
    assert "PROTOCOL.md" not in doc.read_text()


def test_docstrings_cite_the_protocol_inside_the_repository() -> None:
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "trio_chirp").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "PROTOCOL.md" in line
    ]
    assert citing == []
