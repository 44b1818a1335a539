"""``open_chirp`` and ``serve_chirp``: a node's lifetime inside the caller's Trio app.

The node's tasks run in a nursery of its own, opened here; whatever the caller's block
raises comes out exactly as it would without ``open_chirp`` (docs/node.md), and a crash
of the node comes out unwrapped. This is the only module that makes a ``Chirp``, starts
and closes it: the private calls below are the node package talking to itself.
"""

# ruff: noqa: SLF001
# The node's own package: this module creates (``Chirp._create``), starts and closes the
# node it opens, which are the facade's private lifecycle steps, on purpose not public.

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from .._config import Config
from .._tcp import TCPTransport
from .._tls import TLSContexts, TLSLayer, contexts_for
from .._transport import Transport
from ._chirp import Chirp

__all__ = ["open_chirp", "raise_after_node", "serve_chirp"]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, if that is all there is."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_chirp(
    config: Config | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
    tls: TLSContexts | None = None,
) -> AsyncIterator[Chirp]:
    """Run a node for the duration of the ``async with`` block.

    ``transport`` replaces TCP (e.g. ``trio_chirp.testing.MemoryNetwork().host(ip)``);
    ``rng`` drives every random choice (initial serials, debounce, GC jitter) so tests
    can assert exact virtual times. ``tls`` is a ready ``TLSContexts`` pair, instead of
    ``Config.cert_chain_pem``/``dh_params_pem`` (docs/tls.md). Certificate files that are
    missing, unreadable or unusable raise ``ValueError`` (naming the field and path) here.

    Whatever the block raises comes out exactly as it would without ``open_chirp`` (a
    bare exception stays bare, a group stays the same group); the node's own nursery
    is never visible. A block that ends normally closes gracefully (``aclose()``);
    one that raises, is cancelled or interrupted closes at once.
    """
    config = config or Config()
    contexts = contexts_for(config, tls)
    layer = None if contexts is None else TLSLayer(contexts, config.verify_peer)
    body_error: BaseException | None = None
    close_error: BaseException | None = None
    internal: BaseExceptionGroup[BaseException] | None = None
    try:
        async with trio.open_nursery() as nursery:
            chirp = Chirp._create(config, transport or TCPTransport(), rng or random.Random(), nursery, layer)
            await chirp._start()
            try:
                yield chirp
            except BaseException as exc:
                # Kept aside, not raised into our nursery, so it is not wrapped in a group.
                body_error = exc
            if body_error is None:
                try:
                    await chirp.aclose()
                except BaseException as exc:
                    close_error = exc
            else:
                chirp._close_now()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        internal = group
    raise_after_node(body_error or close_error, internal)


def raise_after_node(own: BaseException | None, internal: BaseExceptionGroup[BaseException] | None) -> None:
    """Raise what leaves ``open_chirp``: the block's own exception as it was, unless the node crashed.

    ``internal`` is what the node's nursery raised: crashed node tasks (bugs, a port
    that cannot be bound) and Cancelled from an outer scope that reached the nursery's
    exit. A crash is raised unwrapped when it is alone; the block's own Cancelled is
    then the node's doing and is dropped, any other exception of the block joins it.
    """
    crashed = None if internal is None else internal.split(trio.Cancelled)[1]
    if crashed is not None:
        # The block's Cancelled (bare or grouped) came from the node's own scope: dropped.
        rest = own.split(trio.Cancelled)[1] if isinstance(own, BaseExceptionGroup) else own
        if rest is None or isinstance(rest, trio.Cancelled):
            _raise_without_context(_single_exception(crashed) or crashed)
        _raise_without_context(
            BaseExceptionGroup("trio_chirp node crashed while its block raised", [*crashed.exceptions, rest])
        )
    if own is not None:
        raise own
    if internal is not None:
        _raise_without_context(_first_leaf(internal))  # an outer cancellation that reached the nursery's exit


def _raise_without_context(exc: BaseException) -> NoReturn:
    """Raise ``exc`` keeping its own ``__context__``.

    ``__aexit__`` runs while the block's exception is being handled, so a new raise would
    get it as context and print it twice ("During handling of the above exception").
    """
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context


async def serve_chirp(
    config: Config | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
    tls: TLSContexts | None = None,
    task_status: trio.TaskStatus[Chirp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled, or until ``await chirp.aclose()`` closed it.

    For ``chirp = await nursery.start(serve_chirp, config)``. Cancelled, it closes at
    once (sends awaiting ACKs fail with ``ShutdownError``); for a graceful stop call
    ``await chirp.aclose()`` first, after which this returns by itself.
    """
    async with open_chirp(config, transport=transport, rng=rng, tls=tls) as chirp:
        task_status.started(chirp)
        await chirp._wait_closed()
