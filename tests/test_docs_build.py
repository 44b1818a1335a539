"""The Sphinx site builds offline with warnings as errors, and its API reference is complete.

One build per session (a few seconds), into a temporary directory. Needs the ``docs`` extra
(``dev.py test`` installs it) and Graphviz's ``dot`` (Debian: ``apt-get install graphviz``;
``.ci/run`` installs it); without them the tests skip locally and fail under CI.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import trio_chirp
import trio_chirp.pki
import trio_chirp.testing

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.timeout(300)


def public_names(module: ModuleType) -> list[str]:
    """``__all__`` where a module has one, else its names without a leading underscore (no submodules)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    return sorted(n for n in names if not isinstance(getattr(module, n), ModuleType))


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sphinx", reason="Sphinx is missing: pip install -e '.[docs]' (dev.py test does)")
    pytest.importorskip("myst_parser", reason="myst-parser is missing: pip install -e '.[docs]'")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is missing: apt-get install graphviz (.ci/run does)")
    out = tmp_path_factory.mktemp("html")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    done = subprocess.run(
        [*command, "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_with_warnings_as_errors(built_site: Path) -> None:
    pages = {p.stem for p in DOCS.glob("*.md")}
    built = {p.stem for p in built_site.glob("*.html")}
    assert pages <= built, f"pages without HTML: {sorted(pages - built)}"


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([a-z][\w-]*)$", index, re.MULTILINE))
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert pages == listed, f"not listed: {sorted(pages - listed)}; listed, no page: {sorted(listed - pages)}"


@pytest.mark.parametrize("module", [trio_chirp, trio_chirp.testing, trio_chirp.pki], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(built_site: Path, module: ModuleType) -> None:
    page = (built_site / "api.html").read_text()
    documented = {html.unescape(m) for m in re.findall(r'<dt class="sig[^"]*" id="([^"]+)"', page)}
    names = public_names(module)
    assert names, f"{module.__name__} has no public names?"
    missing = [n for n in names if f"{module.__name__}.{n}" not in documented]
    assert not missing, f"{module.__name__}: not in docs/api.md: {missing}"


def test_diagrams_are_rendered_offline(built_site: Path) -> None:
    concepts = (built_site / "concepts.html").read_text()
    assert concepts.count('class="graphviz') >= 4, "concepts.md should show four Graphviz diagrams"
    assert "http://" not in (DOCS / "conf.py").read_text()  # nothing to fetch: no intersphinx


def test_the_built_pages_name_no_file_outside_the_repository(built_site: Path) -> None:
    for page in built_site.glob("*.html"):
        assert "shared/PROTOCOL.md" not in page.read_text(), f"{page.name} cites ../shared/PROTOCOL.md"
