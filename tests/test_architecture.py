"""The package's shape (docs/architecture.md): sizes, no import cycles, and no reaching up.

The layering itself is import-linter's contracts in pyproject.toml, run by ``dev.py test``;
these tests pin what those contracts do not say.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

import trio_chirp
from trio_chirp import Chirp

PACKAGE = Path(trio_chirp.__file__).parent
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 450


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_longer_than_600_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}


def test_no_class_is_longer_than_450_lines() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                span = node.end_lineno - node.lineno + 1
                if span > MAX_CLASS_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = span
    assert long == {}


def test_no_import_cycles_between_modules_type_checking_imports_included() -> None:
    graph = grimp.build_graph("trio_chirp", include_external_packages=False)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == "trio_chirp" or module == "trio_chirp":
                continue  # the package's face re-exports everything; testing reads one helper from it
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append((module, *back))
    assert cycles == []


def test_the_graph_sees_imports_made_only_for_the_type_checker() -> None:
    """The cycle check would be blind if grimp skipped ``if TYPE_CHECKING:`` imports."""
    graph = grimp.build_graph("trio_chirp", include_external_packages=False)
    # _config imports PeerCertificate only under TYPE_CHECKING.
    assert "trio_chirp._peercert" in graph.find_modules_directly_imported_by("trio_chirp._config")
    source = (PACKAGE / "_config.py").read_text()
    assert "if TYPE_CHECKING:\n    from ._peercert import PeerCertificate" in source


def test_chirp_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match=r"no public constructor: use `async with trio_chirp.open_chirp"):
        Chirp()


async def test_port_identity_and_config_are_read_only() -> None:
    from trio_chirp.testing import MemoryNetwork

    async with trio_chirp.open_chirp(
        trio_chirp.Config(port=0), transport=MemoryNetwork().host("127.0.0.1")
    ) as chirp:
        for name, value in (("port", 1), ("identity", b"x" * 16), ("config", trio_chirp.Config())):
            with pytest.raises(AttributeError):
                setattr(chirp, name, value)
        assert chirp.port != 0
        assert len(chirp.identity) == 16
