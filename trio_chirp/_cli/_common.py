"""What every ``trio-chirp`` command shares: exit codes, destinations, node options, running.

Commands use only the public API (``trio_chirp``); the library takes IP literals, so host
names are resolved here. Errors become one line on stderr and an exit code (``EXIT_*``,
listed in ``--help`` and docs/cli.md), never a traceback: a traceback is left for bugs.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

import trio_chirp

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_LISTEN = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    done
  1    the message failed (lost connection, error response, TLS)
  2    bad arguments (invalid address, unknown host, bad option or file)
  3    cannot connect (refused, unreachable)
  4    cannot listen (port in use)
  5    timed out (--timeout)
  130  stopped by Ctrl-C"""


class Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps indented blocks (examples, exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip("\n").split("\n\n"):
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                paragraphs.append(paragraph)
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent))
        return "\n\n".join(paragraphs) + "\n"


class CliError(Exception):
    """A failure the user caused or must fix: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Destination:
    """``HOST:PORT`` as typed (``host``) and the port; ``resolve()`` gives the IP literal."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def destination(text: str) -> Destination:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT`` (an argparse ``type``: errors exit with 2)."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:2998")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT with a port 1..65535, e.g. 127.0.0.1:2998"
        )
    return Destination(host, int(port_text))


async def resolve(dest: Destination) -> str:
    """The IP literal for ``dest.host``: itself if it is one, else the first address the resolver gives."""
    try:
        return str(ipaddress.ip_address(dest.host))
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CliError(f"cannot resolve host {dest.host!r}: {exc.strerror}", EXIT_USAGE) from None
    return str(infos[0][4][0])


def port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be more than 0 and at most 3600")
    return value


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_node_options(
    parser: argparse.ArgumentParser, *, port: int, port_help: str, timeout_help: str
) -> None:
    """The options of the node every command runs: where it listens, its timeout, TLS."""
    parser.add_argument("--port", type=port_number, default=port, help=port_help)
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help=f"{timeout_help} (default: 5)",
    )
    tls = parser.add_argument_group("TLS (docs/tls.md; plaintext only between 127.0.0.1 or ::1)")
    tls.add_argument(
        "--cert-chain", metavar="PEM", help="Config.cert_chain_pem (trio-chirp make-pki writes it)"
    )
    tls.add_argument(
        "--dh-params", metavar="PEM", help="Config.dh_params_pem (default: the shipped ffdhe2048)"
    )
    tls.add_argument(
        "--disable-encryption", action="store_true", help="never use TLS (Config.disable_encryption)"
    )
    tls.add_argument(
        "--bind-v4",
        metavar="ADDRESS",
        default="0.0.0.0",
        help="IPv4 address to listen on and connect from, or 'none' (default 0.0.0.0)",
    )
    tls.add_argument(
        "--bind-v6",
        metavar="ADDRESS",
        default="::",
        help="IPv6 address to listen on and connect from, or 'none' (default ::)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show trio_chirp's log")


def node_config(args: argparse.Namespace, *, synchronous: bool) -> trio_chirp.Config:
    """``Config`` from the node options; a value it refuses is a usage error."""
    try:
        return trio_chirp.Config(
            port=args.port,
            timeout=args.timeout,
            synchronous=synchronous,
            cert_chain_pem=args.cert_chain,
            dh_params_pem=args.dh_params,
            disable_encryption=args.disable_encryption,
            bind_v4=None if args.bind_v4 == "none" else args.bind_v4,
            bind_v6=None if args.bind_v6 == "none" else args.bind_v6,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def format_address(address: str | None, port: int | None) -> str:
    if address is None or port is None:
        return "?"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def show_data(data: bytes) -> str:
    """Data as text where it is UTF-8, with escapes for the bytes that are not."""
    return data.decode("utf-8", errors="backslashreplace")


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside groups of one (nurseries wrap what their tasks raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _exit_for(exc: BaseException, port: int) -> tuple[int, str] | None:
    """The exit code and one-line message for an expected failure; None for a bug."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, trio_chirp.CannotConnectError):
        return EXIT_CONNECT, str(exc)
    if isinstance(exc, trio.TooSlowError | trio_chirp.ChirpTimeoutError):
        return EXIT_TIMEOUT, str(exc) or "timed out"
    if isinstance(exc, trio_chirp.RemoteError):
        return EXIT_FAILED, f"error response from {exc.hop}: {exc.kind}: {exc.text}"
    if isinstance(exc, trio_chirp.ChirpError):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        text = exc.strerror or str(exc)  # the node's own names the address and port
        if not text.startswith("cannot listen"):
            text = f"cannot listen on port {port}: {text}"
        return EXIT_LISTEN, text
    if isinstance(exc, ValueError):  # certificate files the node refused at start
        return EXIT_USAGE, str(exc)
    return None


def setup_logging(command: str, verbose: bool, quiet_by_default: bool) -> None:
    """trio_chirp's log on stderr, prefixed; client commands show it only with ``-v``.

    A client's failure is already the one error line: the library's warning about the
    same refused connection would repeat it.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"trio-chirp {command}: %(levelname)s: %(message)s"))
    logger = logging.getLogger("trio_chirp")
    logger.addHandler(handler)
    logger.propagate = False
    if verbose:
        logger.setLevel(logging.INFO)
    elif quiet_by_default:
        logger.setLevel(logging.CRITICAL)
    else:
        logger.setLevel(logging.WARNING)


def run(command: str, args: argparse.Namespace, main: Callable[..., Awaitable[Any]], *main_args: Any) -> int:
    """``trio.run(main, *main_args)`` with expected failures turned into an exit code and one line."""
    try:
        trio.run(main, *main_args)
    except BaseException as raised:
        exc = _leaf(raised)
        interrupted = isinstance(raised, BaseExceptionGroup) and raised.split(KeyboardInterrupt)[0]
        if isinstance(exc, KeyboardInterrupt) or interrupted:
            print(f"trio-chirp {command}: stopped (Ctrl-C)", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, BrokenPipeError):  # e.g. `trio-chirp listen | head -1`: the reader is done
            return reader_gone()
        found = _exit_for(exc, getattr(args, "port", 0))
        if found is None:
            raise
        code, message = found
        print(f"trio-chirp {command}: {message}", file=sys.stderr)
        return code
    return EXIT_OK


def reader_gone() -> int:
    """Standard output's reader stopped reading: a normal end (exit 0), not an error.

    Standard output is pointed at /dev/null so Python's final flush does not fail again.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def fail(command: str, exc: CliError) -> int:
    print(f"trio-chirp {command}: {exc}", file=sys.stderr)
    return exc.code
