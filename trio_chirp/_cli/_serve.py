"""``trio-chirp echo``, ``listen`` and ``router``: nodes that run until Ctrl-C (or ``--count``).

Each prints ``<command>: listening on port N ...`` once its node listens (scripts and the
tests wait for that line), then one line per message. Consumers (echo, listen) are
asynchronous nodes, as the lock-up rule asks (docs/lockups.md); the router is synchronous,
as docs/requests.md asks, so a producer's synchronous send returns once the next hop
acknowledged.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

import trio_chirp

from ._common import (
    EXIT_CODES_HELP,
    CliError,
    Destination,
    Formatter,
    add_node_options,
    destination,
    fail,
    format_address,
    node_config,
    positive,
    resolve,
    run,
    setup_logging,
    show_data,
)

NODE_TIMEOUT = "seconds its sends and connects may take: Config.timeout"

ECHO_EXAMPLES = """examples:
  trio-chirp echo                      # on port 2998; then, in another terminal:
  trio-chirp request 127.0.0.1:2998 hello
  trio-chirp echo --port 3000 --workers 4 --quiet
  trio-chirp echo --cert-chain pki/node.pem --bind-v4 10.0.0.7   # TLS

"""

LISTEN_EXAMPLES = """examples:
  trio-chirp listen                    # on port 2998; then: trio-chirp send 127.0.0.1:2998 hi
  trio-chirp listen --port 3000 --count 1

"""

ROUTER_EXAMPLES = """examples:
  trio-chirp router                              # on port 2999, to each message's destination
  trio-chirp send 127.0.0.1:2999 job --destination 127.0.0.1:2998
  trio-chirp router --port 3001 --to 127.0.0.1:2998   # every message to one next hop

"""


def _add(commands: Any, name: str, *, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=f"{description} Stop it with Ctrl-C.",
        epilog=examples + EXIT_CODES_HELP,
        formatter_class=Formatter,
    )


def _node_options(parser: argparse.ArgumentParser, port: int) -> None:
    listen_help = f"port to listen on (default: {port})"
    add_node_options(parser, port=port, port_help=listen_help, timeout_help=NODE_TIMEOUT)


def add_parsers(commands: Any) -> None:
    echo = _add(
        commands,
        "echo",
        help="an asynchronous worker answering every message with its data",
        description=(
            "Answer every message with its own data (Chirp.reply: the response is written before"
            " the request is released), from --workers handler tasks."
        ),
        examples=ECHO_EXAMPLES,
    )
    _node_options(echo, 2998)
    echo.add_argument("--workers", type=positive, default=16, help="handler tasks (default: 16)")
    echo.add_argument("--count", type=positive, help="stop after answering this many messages")
    echo.add_argument("--quiet", action="store_true", help="no line per message")
    echo.set_defaults(run=_echo)

    listen = _add(
        commands,
        "listen",
        help="print messages as they arrive",
        description=(
            "Print every message as it arrives: sender, serial, size, whether it asked for an ACK,"
            " trio_chirp's header map decoded (the deadline left, the destination) and the data;"
            " then release it (the ACK)."
        ),
        examples=LISTEN_EXAMPLES,
    )
    _node_options(listen, 2998)
    listen.add_argument("--count", type=positive, help="stop after this many messages")
    listen.set_defaults(run=_listen)

    router = _add(
        commands,
        "router",
        help="forward messages by their destination or to a fixed next hop",
        description=(
            "Forward every message to the destination its producer named (send --destination),"
            " or with --to to one next hop; the producer's deadline travels on, shrunk by a margin,"
            " and responses come back the same way (trio_chirp.Router, docs/requests.md)."
        ),
        examples=ROUTER_EXAMPLES,
    )
    _node_options(router, 2999)
    router.add_argument("--to", type=destination, metavar="HOST:PORT", help="forward every message here")
    router.set_defaults(run=_router)


def _listening(command: str, chirp: trio_chirp.Chirp, extra: str = "") -> None:
    print(f"{command}: listening on port {chirp.port} (identity {chirp.identity.hex()}){extra}", flush=True)


def _describe(msg: trio_chirp.Message) -> str:
    """One line for a received message, our header map's fields decoded."""
    parts = [
        f"from {format_address(msg.address, msg.port)}",
        f"serial {msg.serial}",
        f"{len(msg.data)} bytes",
    ]
    if msg.ack_requested:
        parts.append("ACK requested")
    if msg.deadline is not None:
        parts.append(f"deadline in {msg.deadline - trio.current_time():.3f} s")
    if msg.destination is not None:
        parts.append(f"destination {format_address(*msg.destination)}")
    if msg.header:
        parts.append(f"header {msg.header!r}")
    return ", ".join(parts) + f": {show_data(msg.data)}"


async def _echo_main(args: argparse.Namespace, config: trio_chirp.Config) -> None:
    done = trio.Event()
    answered = 0
    async with trio_chirp.open_chirp(config) as chirp, trio.open_nursery() as nursery:

        async def answer(msg: trio_chirp.Message) -> None:
            nonlocal answered
            line = _describe(msg)
            await chirp.reply(msg, msg.data)
            answered += 1
            if not args.quiet:
                print(f"answered {line}", flush=True)
            if args.count is not None and answered >= args.count:
                done.set()

        workers = trio_chirp.Workers(chirp, answer, count=args.workers)
        await nursery.start(workers.run)
        _listening("echo", chirp)
        await done.wait()
        nursery.cancel_scope.cancel()


async def _listen_main(args: argparse.Namespace, config: trio_chirp.Config) -> None:
    async with trio_chirp.open_chirp(config) as chirp:
        _listening("listen", chirp)
        received = 0
        while args.count is None or received < args.count:
            msg = await chirp.receive()
            with msg:  # released with ACK after printing
                print(_describe(msg), flush=True)
            received += 1


async def _router_main(args: argparse.Namespace, config: trio_chirp.Config) -> None:
    to: Destination | None = args.to
    fixed = None if to is None else (await resolve(to), to.port)

    def route(msg: trio_chirp.Message) -> tuple[str, int] | None:
        hop = fixed or msg.destination
        where = "no destination: refused" if hop is None else f"-> {format_address(*hop)}"
        print(f"forward {_describe(msg)} {where}", flush=True)
        return hop

    async with trio_chirp.open_chirp(config) as chirp, trio.open_nursery() as nursery:
        router = trio_chirp.Router(chirp, route)
        await nursery.start(router.run)
        _listening("router", chirp, "" if fixed is None else f", to {format_address(*fixed)}")
        try:
            await trio.sleep_forever()
        finally:
            stats = router.statistics()
            print(
                f"router: {stats.forwarded} forwarded, {stats.responses} responses returned,"
                f" failed {dict(stats.failed)}",
                file=sys.stderr,
                flush=True,
            )


def _serve(command: str, args: argparse.Namespace, main: Any, *, synchronous: bool) -> int:
    setup_logging(command, args.verbose, quiet_by_default=False)
    try:
        config = node_config(args, synchronous=synchronous)
    except CliError as exc:
        return fail(command, exc)
    return run(command, args, main, args, config)


def _echo(args: argparse.Namespace) -> int:
    return _serve("echo", args, _echo_main, synchronous=False)


def _listen(args: argparse.Namespace) -> int:
    return _serve("listen", args, _listen_main, synchronous=False)


def _router(args: argparse.Namespace) -> int:
    return _serve("router", args, _router_main, synchronous=True)
