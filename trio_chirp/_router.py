"""Router: forwards messages to their next hop, under the producer's deadline, and responses back.

A router forwarding for a synchronous producer must itself be synchronous, or the
producer's ACK would mean "the router has it" rather than "the worker has it". So a
message that asked for an ACK is forwarded synchronously, inside a cancel scope whose
deadline is the producer's (``msg.deadline``) minus a margin, and the producer's message
is released with ACK only after the next hop acknowledged; the deadline travels on, so a
chain of routers keeps the producer's time budget. A message that asked for no ACK is
forwarded asynchronously.

Responses come back the same way: the router remembers identity -> previous hop (bounded,
until the deadline) and catches a message with that identity *from the hop it forwarded
to* before the application channel, writes it to the previous hop, and only then releases
the producer's request, so the ACK follows the response on that hop too.

When the next hop fails or time runs out, a producer whose frame carried our map gets an
error response (its ``send()``/``request()`` fails at once with ``RemoteError``); any other
producer (libchirp, or a plain ``send()`` with no caller deadline) gets its message released
without ACK, so it never sees success for undelivered work. A hop count in our map ends
routing loops.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, final

import trio

from ._address import destination_of, format_peer
from ._errors import ChirpError, ChirpTimeoutError, MessageInUseError, RemoteError, ShutdownError
from ._header import ChirpMeta
from ._message import Message, SendOptions, meta_of
from ._node import Chirp, node_services
from ._requests import describe_hop, destination_key

__all__ = ["AllowList", "Route", "Router", "RouterStats", "forward_margin"]

logger = logging.getLogger("trio_chirp.router")

Route = Callable[[Message], "tuple[str, int] | None"]

MAX_HOPS: Final = 8
"""Routers a message may pass; the next one refuses it (a routing loop)."""

CAPACITY: Final = 4096
"""Identities remembered for returning responses; when full, the oldest goes (counted)."""


class AllowList:
    """Where a router may forward: networks (any port) and exact ``(address, port)`` destinations."""

    def __init__(self, entries: Iterable[str | tuple[str, int]]) -> None:
        if isinstance(entries, str | tuple):
            raise TypeError(f"Router allow must be a list of entries, not one entry: allow=[{entries!r}]")
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._destinations: set[tuple[str, int]] = set()
        for entry in entries:
            if isinstance(entry, str):
                try:
                    self._networks.append(ipaddress.ip_network(entry))
                except ValueError as exc:
                    raise ValueError(
                        f"Router allow entry {entry!r} is not an IP address or network: {exc}"
                    ) from None
            elif isinstance(entry, tuple) and len(entry) == 2:
                try:
                    self._destinations.add(destination_of(*entry))
                except ValueError as exc:
                    raise ValueError(f"Router allow entry {entry!r}: {exc}") from None
            else:
                raise TypeError(f"Router allow entries are 'ip/network' or (address, port), got {entry!r}")

    def permits(self, key: tuple[str, int]) -> bool:
        if key in self._destinations:
            return True
        address = ipaddress.ip_address(key[0])
        return any(address in network for network in self._networks)


def forward_margin(remaining: float) -> float:
    """Time a router keeps for itself out of the producer's remaining time: min(0.1 s, 10 %)."""
    return min(0.1, 0.1 * max(remaining, 0.0))


@final
@dataclass(frozen=True, slots=True)
class RouterStats:
    forwarded: int
    """Messages the next hop accepted (ACKed, or written when no ACK was asked)."""
    responses: int
    """Responses written back to the previous hop."""
    failed: Mapping[str, int]
    """Messages that could not be forwarded, by reason."""
    remembered: int
    """Identities remembered now, to return responses."""
    forgotten: int
    """Identities dropped early because ``CAPACITY`` was reached."""


class _Entry:
    __slots__ = ("deadline", "identity", "prev", "prev_is_trio_chirp", "returned", "returning")

    def __init__(
        self, identity: bytes, prev: tuple[str, int], deadline: float, prev_is_trio_chirp: bool
    ) -> None:
        self.identity = identity
        self.prev = prev
        self.deadline = deadline
        self.prev_is_trio_chirp = prev_is_trio_chirp
        """Whether the producer is trio_chirp (its map or its announcement): it reads error responses."""
        self.returning = False
        self.returned = trio.Event()


@final
class Router:
    """Forward every message ``chirp`` receives to ``route(msg)``, or the producer's destination.

    ``route`` returns the next hop ``(address, port)``; without it the router uses the
    ``destination`` the producer named (``Message(..., destination=(address, port))``,
    carried in our header map). ``route()`` raising or returning None, or no destination,
    fails that message. ``await nursery.start(router.run)``; runs until cancelled.

    Without ``route`` and ``allow`` the router forwards wherever producers ask: anyone who
    can reach it can make it dial any chirp node it can reach. ``allow`` limits every next
    hop, checked before dialling: IP literals or networks (``"10.0.0.0/8"``, any port) and
    ``(address, port)`` destinations. A next hop outside it fails the message like any
    routing failure (reason ``"not allowed"``). See docs/requests.md.
    """

    def __init__(
        self,
        chirp: Chirp,
        route: Route | None = None,
        *,
        allow: Iterable[str | tuple[str, int]] | None = None,
        max_hops: int = MAX_HOPS,
    ) -> None:
        self._allow = None if allow is None else AllowList(allow)
        self._chirp = chirp
        services = node_services(chirp)
        self._requests = services.requests
        self._send = services.send
        self._log = services.log
        self._route = route
        self._max_hops = max_hops
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self._wake_at = math.inf
        self._sooner = trio.lowlevel.ParkingLot()
        self._forwarded = self._responses = self._forgotten = 0
        self._failed: Counter[str] = Counter()

    def statistics(self) -> RouterStats:
        """A frozen snapshot of what this router forwarded, returned and failed (``RouterStats``)."""
        return RouterStats(
            forwarded=self._forwarded,
            responses=self._responses,
            failed=dict(self._failed),
            remembered=len(self._entries),
            forgotten=self._forgotten,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled, or until the node closes."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._expire)
                task_status.started()
                while True:
                    try:
                        msg = await self._chirp.receive()
                    except ShutdownError:
                        break
                    nursery.start_soon(self._forward, msg)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None  # also when cancelled: a late response is then released, not returned

    async def _expire(self) -> None:
        """Forget remembered identities when their deadline passes, also while nothing is forwarded."""
        while True:
            now = trio.current_time()
            for entry in [e for e in self._entries.values() if e.deadline <= now]:
                self._forget(entry)
            self._wake_at = min((e.deadline for e in self._entries.values()), default=math.inf)
            with trio.move_on_at(self._wake_at):
                await self._sooner.park()

    # --- forwarding -------------------------------------------------------------------
    def _next_hop(self, msg: Message) -> tuple[str, int] | str:
        """The next hop, or why there is none."""
        meta = meta_of(msg)
        if meta is not None and meta.hops >= self._max_hops:
            return "hop limit"
        if self._route is None:
            hop = msg.destination
        else:
            try:
                hop = self._route(msg)
            except Exception as exc:
                logger.warning("route() raised for message %s: %r", msg.identity.hex(), exc, exc_info=exc)
                return "route raised"
        return "no route" if hop is None else hop

    async def _forward(self, msg: Message) -> None:
        chirp = self._chirp
        hop = self._next_hop(msg)
        if isinstance(hop, str):
            await self._fail(msg, hop, ChirpError(hop), self._name())
            return
        meta = meta_of(msg)
        now = trio.current_time()
        if msg.deadline is not None:
            # The next hop gets the producer's time minus the margin; we wait half the margin
            # longer, so its error response still reaches us, and ours the producer, in time.
            margin = forward_margin(msg.deadline - now)
            travel: float | None = msg.deadline - margin
            deadline = msg.deadline - margin / 2
            remember_until = msg.deadline
        else:  # the router's own config.timeout, which does not travel further
            travel = None
            deadline = math.inf
            remember_until = now + chirp.config.timeout
        out = Message(msg.data, header=msg.header, address=hop[0], port=hop[1], destination=msg.destination)
        out.identity = msg.identity
        hops = 1 if meta is None else meta.hops + 1
        options = SendOptions(
            ChirpMeta(hops=hops, destination=msg.destination, request=meta is not None and meta.request),
            deadline_travels=travel is not None,
            travel_at=travel,
        )
        try:
            next_key = destination_key(out)
        except ValueError as exc:
            await self._fail(msg, "bad route", ChirpError(f"route returned {hop!r}: {exc}"), self._name())
            return
        if self._allow is not None and not self._allow.permits(next_key):
            refused = ChirpError(f"{format_peer(*next_key)} is not in this router's allow list")
            await self._fail(msg, "not allowed", refused, self._name())
            return
        entry = self._remember(msg, remember_until, next_key)
        if entry is None:
            duplicate = MessageInUseError(
                "duplicate identity: this router is already forwarding it (a routing loop?)"
            )
            await self._fail(msg, "duplicate identity", duplicate, self._name())
            return
        error: ChirpError | None = None
        try:
            with trio.move_on_at(deadline) as scope:
                await self._send(out, msg.ack_requested, options)
            if scope.cancelled_caught:
                error = ChirpTimeoutError(
                    f"next hop {format_peer(*next_key)} did not acknowledge within the producer's deadline"
                )
        except ChirpError as exc:
            error = exc
        except BaseException:
            self._forget(entry)
            msg.release(ack=False)
            raise
        if error is not None:
            self._forget(entry)
            await self._fail(msg, "next hop failed", error, format_peer(*next_key))
            return
        if entry.returning:
            # The response came before the ACK (the rule): it goes back before our ACK.
            with trio.move_on_at(remember_until):
                await entry.returned.wait()
        self._forwarded += 1
        msg.release()

    def _name(self) -> str:
        return describe_hop("router", self._chirp.port, self._chirp.identity)

    async def _fail(self, msg: Message, reason: str, error: BaseException, hop: str) -> None:
        self._failed[reason] += 1
        source = format_peer(msg.address, msg.port)
        identity = msg.identity.hex()  # read before fail_message() releases it
        if isinstance(error, RemoteError):  # it failed further on, not here: say where
            told = await self._requests.fail_message(msg, error, hop)
            self._log.limited(
                msg.address,
                f"router: failed at {error.hop}",
                f"messages that failed downstream ({error.kind})",
                "message %s from %s failed downstream at %s: %s: %s (%s)",
                identity,
                source,
                error.hop,
                error.kind,
                error.text,
                "passed back"
                if told
                else "not passed back: the producer is not trio_chirp or does not wait for an answer",
                log=logger,
            )
            return
        self._log.limited(
            msg.address,
            f"router: {reason}",
            f"messages not forwarded ({reason})",
            "could not forward message %s from %s: %s",
            identity,
            source,
            error,
            log=logger,
        )
        await self._requests.fail_message(msg, error, hop)

    # --- responses --------------------------------------------------------------------
    def _remember(self, msg: Message, until: float, next_key: tuple[str, int]) -> _Entry | None:
        now = trio.current_time()
        entries = self._entries
        while entries:  # expired ones first
            first = next(iter(entries.values()))
            if first.deadline > now:
                break
            self._forget(first)
        if msg.identity in entries:
            return None
        entry = _Entry(
            msg.identity, (msg.address, msg.port), until, self._requests.understands_error_responses(msg)
        )
        try:
            self._requests.expect(msg.identity, next_key, lambda r: self._on_response(entry, r))
        except MessageInUseError:
            return None
        entries[msg.identity] = entry
        if until < self._wake_at:
            self._sooner.unpark_all()  # the expiry task sleeps past this one's deadline
        while len(entries) > CAPACITY:
            self._forgotten += 1
            self._forget(next(iter(entries.values())))
        return entry

    def _forget(self, entry: _Entry) -> None:
        if self._entries.pop(entry.identity, None) is not None:
            self._requests.forget(entry.identity)

    def _on_response(self, entry: _Entry, response: Message) -> None:
        """Called from the reader with the response from the next hop: send it back."""
        self._entries.pop(entry.identity, None)
        if self._nursery is None or entry.deadline < trio.current_time():
            response.release()
            return
        entry.returning = True
        self._nursery.start_soon(self._return, entry, response)

    async def _return(self, entry: _Entry, response: Message) -> None:
        back = Message(response.data, header=response.header, address=entry.prev[0], port=entry.prev[1])
        back.identity = response.identity
        meta = meta_of(response)
        error = None if meta is None else meta.error
        try:
            if error is not None and not entry.prev_is_trio_chirp:
                # The producer would take it for an empty response.
                self._failed["error response not understood upstream"] += 1
                return
            with trio.move_on_at(entry.deadline) as scope:
                await self._requests.send_response(back, error=error)
            if scope.cancelled_caught:
                self._failed["response not returned"] += 1
            else:
                self._responses += 1
        except ChirpError as exc:
            self._failed["response not returned"] += 1
            logger.warning(
                "response %s could not go back to %s: %s", entry.identity.hex(), format_peer(*entry.prev), exc
            )
        finally:
            response.release()
            entry.returned.set()
