"""Sphinx configuration: Markdown pages (MyST), an API reference from the docstrings, Graphviz diagrams.

The build is offline by design: no intersphinx (it would fetch other projects' inventories),
no remote images, and ``python -m sphinx -W`` turns every warning into an error
(``tests/test_docs_build.py`` runs exactly that).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the checkout, not whatever trio_chirp is installed

import trio_chirp  # noqa: E402

project = "trio_chirp"
author = "the trio_chirp developers"
copyright = "the trio_chirp developers"
release = trio_chirp.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.graphviz",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for "page.md#a-heading" links, and the ":::" fence for directives.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: signatures as written, members in source order, the class docstring only.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True}

graphviz_output_format = "svg"

html_theme = "alabaster"
html_title = f"trio_chirp {release}"
html_theme_options = {
    "description": "Message passing for Trio apps, wire-compatible with libchirp 1.2.1",
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
