"""Delivery: where a received message goes, and what happens to those a closed connection left.

A received message is, in this order: an error response (it settles a send or a request
and is never delivered), a response someone waits for (``Requests`` takes it in the
reader, before any queue), or the application's, queued in the ``Inbox`` for
``receive()``. The inbox and the node-wide ``Budget`` bound the memory all of this holds
(docs/memory.md).
"""

from __future__ import annotations

from typing import Final

from .._address import RemoteKey
from .._config import Config
from .._connection import Connection
from .._errors import ChirpError, ProtocolError
from .._inbox import Budget, Inbox
from .._message import Message, meta_of
from .._protocol import FrameHead
from .._requests import Requests
from ._log import NodeLog
from ._state import StartSoon

__all__ = ["Delivery"]

MAX_PENDING_REFUSALS: Final = 64
"""Error responses for oversized messages being written at once, node-wide; past it, a
further oversized frame closes its connection."""


class Delivery:
    """The node's inbox and budget, and the route of every received message."""

    def __init__(self, config: Config, requests: Requests, log: NodeLog, start_soon: StartSoon) -> None:
        self._start_soon = start_soon
        self._requests = requests
        self._request_table = requests.table
        self._log = log
        self.budget = Budget(
            config.max_unreleased,
            config.max_unreleased_bytes,
            config.effective_max_connections,
            config.max_msg_size,
        )
        self.inbox = Inbox()
        self.leftovers_dropped = 0
        self.header_errors = 0
        self.oversized_refused = 0
        self._refusals_pending = 0

    def deliver(self, source: Connection, message: Message) -> None:
        """A received message: an error response, an awaited response, or the application's."""
        meta = meta_of(message)
        if meta is not None and meta.error is not None:
            self._requests.on_error_response(message, meta.error)
            return
        if self._request_table.active and self._requests.offer(message):
            return
        inbox = self.inbox
        if inbox.closed:
            message.release(ack=False)
            return
        inbox.put(source, message)

    def on_bad_header(self, conn: Connection) -> None:
        """A header that starts like our map but is not a valid one: delivered untouched, counted."""
        self.header_errors += 1
        self._log.limited(
            conn.peer_address,
            "bad header map",
            "malformed trio_chirp header maps",
            "%r sent a malformed trio_chirp header map; the message is delivered with its header untouched",
            conn,
        )

    def refuse_oversized(self, conn: Connection, head: FrameHead, limit: int, hop: str) -> bool:
        """An announced peer's message above ``limit`` was skipped unread: counted, logged, and
        its sender told with an error response (the connection and the rest on it go on).

        False when ``MAX_PENDING_REFUSALS`` error responses are still being written: a flood
        of oversized frames then closes its connection, as libchirp would, instead of
        growing tasks and queued responses without bound."""
        if self._refusals_pending >= MAX_PENDING_REFUSALS:
            return False
        self.oversized_refused += 1
        size = head.header_len + head.data_len
        self._log.limited(
            conn.peer_address,
            "oversized message refused",
            "oversized messages refused",
            "message %s of %d bytes from %r refused unread: above max_msg_size=%d (the connection is kept)",
            head.identity.hex(),
            size,
            conn,
            limit,
        )
        if conn.remote is not None:
            self._refusals_pending += 1
            self._start_soon(self._refuse, conn.remote.key, head.identity, size, limit, hop)
        return True

    async def _refuse(self, key: RemoteKey, identity: bytes, size: int, limit: int, hop: str) -> None:
        try:
            await self._requests.refuse_oversized(key, identity, size, limit, hop)
        finally:
            self._refusals_pending -= 1

    def retire(self, conn: Connection, cause: ChirpError) -> None:
        """What a closed connection delivered and the application has not taken yet.

        Messages that asked for an ACK go (their sender has failed already: the ACK
        cannot travel on a closed connection); asynchronous ones stay as leftovers, unless
        the peer broke the protocol. Leftovers count against the budget and are the first
        to go when it overflows. Each dropped message is counted and logged (rate-limited).
        """
        trusted = not isinstance(cause, ProtocolError)
        dropped = self.inbox.retire(conn, lambda m: trusted and not m.ack_requested)
        for message in dropped:
            message.release(ack=False)  # gives its budget back: released before leftovers are judged
        budget = self.budget
        while budget.over:
            oldest = self.inbox.drop_oldest_leftover()
            if oldest is None:
                break
            oldest.release(ack=False)  # here, so the loop stops as soon as the budget is not over
            dropped.append(oldest)
        if dropped:
            self.leftovers_dropped += len(dropped)
            self._log.limited(
                conn.peer_address,
                "leftovers dropped",
                "undelivered messages of closed connections dropped",
                "%d undelivered message(s) of %r dropped (%s)",
                len(dropped),
                conn,
                cause,
            )

    def close(self) -> None:
        """The node closed: every message still waiting is released without ACK."""
        for message in self.inbox.close():
            message.release(ack=False)
