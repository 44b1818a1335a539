"""The node's delivery service (``_node._delivery.Delivery``) driven directly: leftovers of a
closed connection over the budget, the oldest first, each released without ACK and
counted; at the node's close every waiting message released without ACK."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trio_chirp import Config, ConnectionLostError, Message, ProtocolError
from trio_chirp._message import received_message
from trio_chirp._node._delivery import Delivery
from trio_chirp._node._log import NodeLog
from trio_chirp._requests import Requests


@dataclass(eq=False)
class Conn:
    peer_address: str = "10.0.0.1"


class NoSend:
    async def __call__(self, *args: object) -> None:
        raise AssertionError("nothing is sent here")


class NothingInFlight:
    def awaiting_ack(self, key: object, identity: bytes) -> bool:
        return False

    def settle_in_flight(self, key: object, identity: bytes, error: object) -> bool:
        return False

    def peer_announced(self, key: object) -> bool:
        return False  # as libchirp: only a frame with our map reads an error response


def delivery(nursery: trio.Nursery, **config: object) -> Delivery:
    settings = Config(**config)  # type: ignore[arg-type]
    log = NodeLog(nursery.start_soon)
    requests = Requests(settings, NoSend(), NothingInFlight(), log)  # type: ignore[arg-type]
    return Delivery(settings, requests, log, nursery.start_soon)


def arrive(d: Delivery, conn: Conn, tag: str, released: dict[str, bool], *, ack: bool = False) -> Message:
    """A received message as a reader makes it: it takes budget, and gives it back when released."""
    d.budget.take(10)

    def hook(m: Message, acked: bool) -> None:
        released[tag] = acked
        d.budget.give(10)

    msg = received_message(bytes(16), 1, b"", tag.encode(), conn.peer_address, 2998, b"\0" * 16, ack, hook)
    d.deliver(conn, msg)  # type: ignore[arg-type]
    return msg


async def test_leftovers_over_the_budget_go_oldest_first_released_without_ack() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery, max_unreleased=2)
        gone, live = Conn("10.0.0.1"), Conn("10.0.0.2")
        released: dict[str, bool] = {}
        for tag in ("old", "mid", "new"):
            arrive(d, gone, tag, released)
        arrive(d, live, "live", released)
        assert d.budget.over
        d.retire(gone, ConnectionLostError("closed"))  # type: ignore[arg-type]
        assert released == {"old": False, "mid": False}  # two go: 4 held, 2 allowed
        assert d.leftovers_dropped == 2
        assert not d.budget.over
        assert (len(d.inbox), d.inbox.leftovers) == (2, 1)
        d.close()
        nursery.cancel_scope.cancel()


async def test_a_protocol_breaker_leaves_no_leftovers_and_synchronous_messages_go() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery)
        bad, closed = Conn("10.0.0.1"), Conn("10.0.0.2")
        released: dict[str, bool] = {}
        arrive(d, bad, "async", released)
        d.retire(bad, ProtocolError("garbage"))  # type: ignore[arg-type]
        assert released == {"async": False}
        arrive(d, closed, "sync", released, ack=True)
        arrive(d, closed, "kept", released)
        d.retire(closed, ConnectionLostError("closed"))  # type: ignore[arg-type]
        assert released == {"async": False, "sync": False}
        assert d.leftovers_dropped == 2
        assert d.inbox.leftovers == 1
        d.close()
        nursery.cancel_scope.cancel()


async def test_close_releases_every_waiting_message_without_ack_and_refuses_more() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery)
        released: dict[str, bool] = {}
        arrive(d, Conn(), "a", released)
        arrive(d, Conn(), "b", released)
        d.close()
        assert released == {"a": False, "b": False}
        arrive(d, Conn(), "late", released)  # after the close: released at once
        assert released["late"] is False
        assert len(d.inbox) == 0
        assert d.budget.count == 0
        nursery.cancel_scope.cancel()


async def test_the_closed_connections_synchronous_messages_give_their_budget_back_first() -> None:
    """Dropping them may already bring the budget under its limit: then no leftover goes."""
    async with trio.open_nursery() as nursery:
        d = delivery(nursery, max_unreleased=2)
        closed = Conn()
        released: dict[str, bool] = {}
        arrive(d, closed, "sync", released, ack=True)
        arrive(d, closed, "a1", released)
        arrive(d, closed, "a2", released)
        assert d.budget.over
        d.retire(closed, ConnectionLostError("closed"))  # type: ignore[arg-type]
        assert released == {"sync": False}
        assert (d.leftovers_dropped, d.inbox.leftovers) == (1, 2)
        d.close()
        nursery.cancel_scope.cancel()


async def test_over_the_budget_without_leftovers_nothing_is_dropped() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery, max_unreleased=1)
        released: dict[str, bool] = {}
        live = Conn("10.0.0.2")
        arrive(d, live, "l1", released)
        arrive(d, live, "l2", released)
        assert d.budget.over
        d.retire(Conn("10.0.0.3"), ConnectionLostError("closed"))  # type: ignore[arg-type]
        assert released == {}
        assert (d.leftovers_dropped, len(d.inbox)) == (0, 2)
        d.close()
        nursery.cancel_scope.cancel()


async def test_an_error_response_settles_and_is_never_delivered() -> None:
    from trio_chirp._header import ChirpMeta, ErrorInfo

    async with trio.open_nursery() as nursery:
        d = delivery(nursery)
        released: list[bool] = []
        info = ErrorInfo(kind="X", text="y", hop="z")
        msg = received_message(
            bytes(16), 1, b"", b"", "10.0.0.1", 2998, b"\0" * 16, False,
            lambda m, ack: released.append(ack), None, ChirpMeta(error=info),
        )  # fmt: skip
        d.deliver(Conn(), msg)  # type: ignore[arg-type]
        assert len(d.inbox) == 0
        assert released == [True]  # matched nothing: counted and released
        assert d._requests.error_responses_in == 1
        assert d._requests.unmatched_error_responses == 1
        nursery.cancel_scope.cancel()


async def test_while_a_request_waits_other_messages_still_reach_the_inbox() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery)
        d._request_table.expect(b"\1" * 16, ("10.0.0.1", 2998))
        assert d._request_table.active
        released: dict[str, bool] = {}
        arrive(d, Conn(), "other", released)  # identity 0...0: not the awaited one
        assert len(d.inbox) == 1
        d.close()
        nursery.cancel_scope.cancel()


async def test_a_bad_header_is_counted() -> None:
    async with trio.open_nursery() as nursery:
        d = delivery(nursery)
        assert d.header_errors == 0
        d.on_bad_header(Conn())  # type: ignore[arg-type]
        d.on_bad_header(Conn())  # type: ignore[arg-type]
        assert d.header_errors == 2
        nursery.cancel_scope.cancel()
