"""Stream factories: how a node gets byte streams, so TCP can be swapped for anything.

The node never opens sockets itself. It asks a ``Transport`` to listen (reporting each
accepted stream with the peer's IP address) and to connect to ``(address, port)``,
optionally from a given source address, learning the source address the peer sees
(libchirp's plaintext rule looks at that address on the other side). TCP lives in
``_tcp.py``; ``trio_chirp.testing`` provides an in-memory network of IP-addressed hosts
that runs the same node code under ``MockClock``; TLS (``_tls.py``) wraps either.

Any ``trio.abc.Stream`` works. A stream may also offer two optional methods that the
connection uses when present (duck-typed, so wrappers need not implement them):

* ``send_nowait(data) -> int``: write what can be written without blocking and return
  how much (0 when full). Lets an ACK or a synchronous message be written by the task
  that queued it while the writer task is idle, saving two task switches per frame. What
  it did not take, the connection passes to its next ``send_all`` before anything else
  (``_tlsstream.TLSStream`` relies on that: it may have encrypted more than it reports).
* ``async send_parts(parts)``: ``send_all`` of the concatenation without concatenating
  (``sendmsg``), so large payloads are copied only by the kernel.
* ``is_broken() -> bool``: whether the peer reset the connection, without reading or
  blocking; a reader that stopped reading (its slots are all held) asks it every second,
  so a dead peer does not keep its descriptor until garbage collection.
* ``local``: this end's ``(ip, port)``, used to tell a peer on this host announcing our
  own listening address (a loop with ourselves) from another node.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import trio

__all__ = ["AcceptErrorHandler", "AcceptHandler", "Transport"]

AcceptHandler = Callable[[trio.abc.Stream, str], None]
"""Called synchronously for each accepted stream with the peer's IP address (text)."""

AcceptErrorHandler = Callable[[OSError], None]
"""Called synchronously when accepting failed for want of resources (EMFILE, ENFILE, ...)."""


class Transport(ABC):
    """Where a node's streams come from."""

    @abstractmethod
    async def connect(
        self, address: str, port: int, *, bind: str | None = None
    ) -> tuple[trio.abc.Stream, str]:
        """Open a stream to ``address`` (an IP literal) and ``port``.

        ``bind`` (an IP literal of the same family, or None) is the local address to
        connect from; None lets the system choose. Returns the stream and the local IP
        address the peer sees as this connection's source (normalised text).

        Raises ``OSError`` when the connection cannot be made (``bind`` not an address
        of this host included); may block until the caller's cancel scope expires (the
        node applies the connect timeout).
        """

    @abstractmethod
    async def serve(
        self,
        *,
        port: int,
        bind_v4: str | None,
        bind_v6: str | None,
        backlog: int,
        on_accept: AcceptHandler,
        on_error: AcceptErrorHandler | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; report the bound port with ``task_status.started(port)``.

        ``port=0`` means: pick one port that is free on every requested address family.
        Accepted streams are handed to ``on_accept``, which takes ownership of them. A
        transport that can run out of resources while accepting reports it to
        ``on_error`` (and keeps listening, backing off) instead of failing silently.
        Raises ``OSError`` before ``started()`` when the port cannot be bound.
        """
