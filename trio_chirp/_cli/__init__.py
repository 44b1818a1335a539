"""The ``trio-chirp`` command (also ``python -m trio_chirp``): one module per group of commands.

    trio-chirp echo | listen | router            nodes that run until Ctrl-C (_serve.py)
    trio-chirp send | request HOST:PORT DATA     one message (_client.py)
    trio-chirp make-pki DIR [NODE ...]           certificates for TLS (_make_pki.py)
    trio-chirp bench                             the standard workloads (_bench.py)

docs/cli.md describes them; every command has ``--help`` with examples and exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio_chirp

from . import _bench, _client, _make_pki, _serve
from ._common import reader_gone

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-chirp",
        description="trio_chirp: message passing for Trio apps, wire-compatible with libchirp 1.2.1.",
        epilog=(
            "Run 'trio-chirp COMMAND --help' for a command's options and examples. Quick start, in two"
            " terminals: 'trio-chirp echo', then 'trio-chirp request 127.0.0.1:2998 hello'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"trio-chirp {trio_chirp.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _serve.add_parsers(commands)
    _client.add_parsers(commands)
    _make_pki.add_parser(commands)
    _bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: list them
        parser.print_help()
        return 0
    try:
        code: int = args.run(args)
    except BrokenPipeError:  # make-pki or bench piped into a reader that stopped reading
        return reader_gone()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
