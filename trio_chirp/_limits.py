"""The connection limit: who gets in when the node is full, so one address cannot lock out the rest.

A plain "refuse the newest" policy lets whoever opens connections first keep everyone
else out (measured before: 1 014 connections from one address, kept alive by NOOPs,
locked every new peer out). So at the limit a newcomer is let in by *shedding*:

1. a connection of the address that holds the most connections, if that address holds
   more than the newcomer's would after admission (one address cannot keep hundreds
   while a fresh peer waits); among its connections the cheapest goes first: one still
   in its handshake, then the longest idle one that holds nothing, then the oldest;
2. otherwise an idle connection of anyone (one that holds no slot, writes nothing, has no
   message in flight, and was idle for ``IDLE_SHED_AFTER``): it is re-opened on demand;
3. otherwise the newcomer is refused (counted).

Accepted connections still in their handshake have their own, smaller limit
(``max_handshakes``) under the same rule, so a slowloris flood sheds itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Final, Protocol, TypeVar

from ._errors import ChirpError, ShutdownError

__all__ = ["Admission", "Candidate"]

IDLE_SHED_AFTER: Final = 1.0
"""Seconds without traffic after which an idle connection may be shed for a newcomer."""


class Candidate(Protocol):
    """What admission needs to know of a connection (``_connection.Connection`` is one)."""

    @property
    def peer_address(self) -> str: ...
    @property
    def outgoing(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def last_activity(self) -> float: ...
    @property
    def in_handshake(self) -> bool:
        """No chirp handshake from the peer yet."""
        ...

    def holds_nothing(self) -> bool: ...
    def close(self, cause: ChirpError) -> None: ...


C = TypeVar("C", bound=Candidate)


def _pending(conn: Candidate) -> bool:
    return conn.in_handshake


class Admission:
    """Decides, at the limits, which connection goes for a newcomer, or that it is refused."""

    def __init__(self, max_connections: int, max_handshakes: int) -> None:
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.refused = 0
        self.shed = 0

    def admit(self, connections: Collection[C], address: str, *, incoming: bool, now: float) -> bool:
        """Make room for a connection from/to ``address``; False if it must be refused."""
        live = [c for c in connections if not c.closed]
        if incoming:
            handshaking = [c for c in live if _pending(c) and not c.outgoing]
            full = len(handshaking) >= self.max_handshakes
            if full and not self._shed(handshaking, address, now, "at the limit of handshakes"):
                self.refused += 1
                return False
        full = len(live) >= self.max_connections
        if full and not self._shed(live, address, now, "at the connection limit"):
            self.refused += 1
            return False
        return True

    def shed_one(self, connections: Collection[C], now: float, why: str) -> bool:
        """Free one connection (say, for a file descriptor): the cheapest by the rules above."""
        return self._shed([c for c in connections if not c.closed], "", now, why)

    def _shed(self, candidates: list[C], address: str, now: float, what: str) -> bool:
        if not candidates:
            return False
        victim = self._victim(candidates, address, now)
        if victim is None:
            return False
        self.shed += 1
        victim.close(ShutdownError(f"{victim} shed: {what}"))
        return True

    @staticmethod
    def _victim(candidates: list[C], address: str, now: float) -> C | None:
        by_address = Counter(c.peer_address for c in candidates)
        heaviest, count = by_address.most_common(1)[0]
        if count > by_address[address] + 1:
            theirs = [c for c in candidates if c.peer_address == heaviest]
            return min(
                theirs,
                key=lambda c: (not _pending(c), not c.holds_nothing(), c.last_activity),
            )
        idle = [c for c in candidates if c.holds_nothing() and now - c.last_activity >= IDLE_SHED_AFTER]
        if idle:
            return min(idle, key=lambda c: c.last_activity)
        return None
