"""``trio-chirp send`` and ``trio-chirp request``: one message to a node, from a node of our own.

The client's node listens on a free port (``--port 0``) so it never collides with a worker
on 2998; its replies come back to that port. ``--timeout`` bounds the whole command (the
connection included) as the caller's deadline, so it travels with the message and a
worker runs its handler under it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

import trio_chirp

from ._common import (
    EXIT_CODES_HELP,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    Destination,
    Formatter,
    add_node_options,
    destination,
    format_address,
    node_config,
    resolve,
    run,
    setup_logging,
    show_data,
)

SEND_EXAMPLES = """examples:
  trio-chirp send 127.0.0.1:2998 hello
  trio-chirp send [::1]:2998 hello --timeout 1
  echo -n hello | trio-chirp send localhost:2998 -
  trio-chirp send 127.0.0.1:2999 job --destination 127.0.0.1:2998   # through a router
  trio-chirp send 10.0.0.7:2998 hi --cert-chain pki/node.pem          # TLS

"""

REQUEST_EXAMPLES = """examples:
  trio-chirp request 127.0.0.1:2998 hello            # prints the reply's data
  trio-chirp request localhost:2999 job --destination 127.0.0.1:2998 --timeout 2

"""


def _add_message_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", type=destination, metavar="HOST:PORT", help="the node to send to")
    parser.add_argument("data", metavar="DATA", help="the message's data (UTF-8); '-' reads standard input")
    parser.add_argument(
        "--destination",
        type=destination,
        metavar="HOST:PORT",
        help="the final destination, for a router at HOST:PORT to forward to (Message.destination)",
    )
    add_node_options(
        parser,
        port=0,
        port_help="port this command's node listens on (default: 0, a free one)",
        timeout_help="give up after this many seconds; the deadline travels with the message",
    )


def add_parsers(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="send one message synchronously and print the outcome",
        description=(
            "Send DATA to HOST:PORT from a synchronous node and print the outcome once the receiving"
            " application released it (the ACK)."
        ),
        epilog=SEND_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    _add_message_arguments(send)
    send.set_defaults(run=_send)
    request = commands.add_parser(
        "request",
        help="send a request and print the reply",
        description=(
            "Send DATA to HOST:PORT as a request (Chirp.request) and print the response's data."
            " An error response from a worker or router is printed as the error."
        ),
        epilog=REQUEST_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )
    _add_message_arguments(request)
    request.set_defaults(run=_request)


def _data(args: argparse.Namespace) -> bytes:
    if args.data == "-":
        return sys.stdin.buffer.read()
    return str(args.data).encode()


async def _message(args: argparse.Namespace) -> trio_chirp.Message:
    target: Destination = args.address
    final: Destination | None = args.destination
    msg = trio_chirp.Message(_data(args), address=await resolve(target), port=target.port)
    if final is not None:
        msg.destination = (await resolve(final), final.port)
    return msg


@contextmanager
def _within(timeout: float, what: str) -> Iterator[None]:
    """``trio.fail_after(timeout)``, its TooSlowError turned into a line that says what timed out."""
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError:
        raise CliError(f"{what}: no outcome within --timeout {timeout:g} s", EXIT_TIMEOUT) from None


async def _send_main(args: argparse.Namespace, config: trio_chirp.Config) -> None:
    with _within(args.timeout, f"send to {args.address}"):
        msg = await _message(args)
        async with trio_chirp.open_chirp(config) as chirp:
            start = time.perf_counter()
            await chirp.send(msg)
            took = (time.perf_counter() - start) * 1000
    print(
        f"acknowledged: {len(msg.data)} bytes to {format_address(msg.address, msg.port)}"
        f" (serial {msg.serial}) in {took:.1f} ms"
    )


async def _request_main(args: argparse.Namespace, config: trio_chirp.Config) -> None:
    with _within(args.timeout, f"request to {args.address}"):
        msg = await _message(args)
        async with trio_chirp.open_chirp(config) as chirp:
            reply = await chirp.request(msg)
    print(show_data(reply.data))


def _send(args: argparse.Namespace) -> int:
    return _client("send", args, _send_main)


def _request(args: argparse.Namespace) -> int:
    return _client("request", args, _request_main)


def _client(command: str, args: argparse.Namespace, main: Any) -> int:
    setup_logging(command, args.verbose, quiet_by_default=True)
    try:
        config = node_config(args, synchronous=True)
    except CliError as exc:
        print(f"trio-chirp {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run(command, args, main, args, config)
