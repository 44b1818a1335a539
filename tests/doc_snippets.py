"""Code blocks of the Markdown docs, with the markers that say how each one is checked.

The convention (docs/contributing.md, "Snippets"):

* A ```` ```python ```` block is a complete program; the tests run it. A ```` ```text ````
  block that follows it (only blank lines between) is its expected standard output, where
  ``...`` stands for any text within a line (identities, ports, addresses).
* ``<!-- fragment: REASON -->`` on the line before a python block: not a program (it
  shows a piece of one). It must still compile; the reason is required.
* ``<!-- pytest -->`` on the line before a python block: a test module, run by pytest
  (with pytest-trio's ``trio_mode``); all its tests must pass.
* Shell commands are ```` ```console ```` blocks, each command after a ``$ `` prompt,
  expected output (optional, ``...`` as above) on the lines below it. The line before says
  ``<!-- shell: run -->`` (safe: the tests run each command with a timeout) or
  ``<!-- shell: not run: REASON -->`` (installs packages, runs forever, ...).
* Other fences are ``text`` (or a MyST directive such as ``{toctree}``); ``sh``/``bash``
  blocks and untagged fences are refused, so every block is one of the kinds above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(`{3,})(.*)$")
MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str  # the comment on the line before the fence, "" if none
    output: str | None  # a python block's expected output (the text block after it)

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, in order, with its marker and (python) expected output."""
    lines = page.read_text().splitlines()
    raw: list[tuple[int, str, str, str, int]] = []  # line, lang, code, marker, end line
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang = match[1], match[2].strip()
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        previous = lines[i - 1].strip() if i else ""
        comment = MARKER.match(previous)
        raw.append((i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", comment[1] if comment else "", end))
        i = end + 1
    found = []
    for index, (line, lang, code, marker, end) in enumerate(raw):
        output = None
        if lang == "python" and index + 1 < len(raw):
            next_line, next_lang, next_code, _, _ = raw[index + 1]
            between = lines[end + 1 : next_line - 1]
            if next_lang == "text" and not any(s.strip() for s in between):
                output = next_code
        found.append(Block(page, line, lang, code, marker, output))
    return found


def matches(expected: str, actual: str) -> bool:
    """``actual`` equals ``expected`` line by line (trailing spaces ignored), ``...`` matching any text."""
    want = [line.rstrip() for line in expected.strip("\n").splitlines()]
    got = [line.rstrip() for line in actual.strip("\n").splitlines()]
    if len(want) != len(got):
        return False
    for pattern, line in zip(want, got, strict=True):
        regex = ".*?".join(re.escape(part) for part in pattern.split("..."))
        if not re.fullmatch(regex, line):
            return False
    return True
