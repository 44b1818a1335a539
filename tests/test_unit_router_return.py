"""A router whose response cannot go back (the producer is cut off) counts it as not returned."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, FakePeer, node

from trio_chirp import ChirpError, Message, Router
from trio_chirp._protocol import encode_ack, encode_frame
from trio_chirp.testing import MemoryNetwork


@pytest.mark.parametrize("fault", ["refused", "black hole"])
async def test_a_response_that_cannot_go_back_is_counted_not_returned(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """A refused connection fails the return at once (a ``ChirpError``); a black hole makes it wait
    until the producer's deadline (the cancel scope). Both are counted the same."""
    net = MemoryNetwork()
    hop = FakePeer(net, C)
    async with (
        trio.open_nursery() as nursery,
        node(net, B) as router_node,
        node(net, A, timeout=5) as producer,
    ):
        await nursery.start(hop.run)
        router = Router(router_node)
        await nursery.start(router.run)

        async def produce() -> None:
            try:
                with trio.fail_after(2.0):
                    await producer.send(Message(b"x", address=B, port=PORT, destination=(C, PORT)))
            except (ChirpError, trio.TooSlowError):
                pass

        nursery.start_soon(produce)
        await trio.testing.wait_all_tasks_blocked()
        [head] = [f for f in hop.frames() if f.data_len]
        net.cut(A, B)
        if fault == "refused":
            net.refuse(A)  # the producer can no longer be reached
        else:
            net.black_hole(A)
        await hop.streams[0].send_all(encode_ack(head.identity, 1))
        await hop.streams[0].send_all(encode_frame(head.identity, 2, 0, b"", b"answer"))
        await trio.sleep(3.0)  # past the producer's deadline
        stats = router.statistics()
        assert stats.failed == {"response not returned": 1}
        assert stats.responses == 0
        assert router_node.statistics().unreleased == 0
        could_not = [r for r in caplog.records if "could not go back" in r.getMessage()]
        assert len(could_not) == (1 if fault == "refused" else 0)
        nursery.cancel_scope.cancel()
