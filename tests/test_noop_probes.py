"""The NOOP probe (docs/protocol.md, section 7.2): first on a connection idle for more than
3/4 of the reuse time, so a peer about to collect it sees it alive; never on a busy one.

Node B here has ``timeout=1`` and ``reuse_time=4``: R = max(4, 3 x 1) = 4 s, so its
threshold is 3 s, below its garbage collection at 4 s.
"""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import A, B, node, to

from trio_chirp.testing import MemoryNetwork

THRESHOLD = 3.0


async def test_an_ack_after_a_long_hold_goes_after_one_probe_and_a_prompt_ack_without(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, timeout=1.0, reuse_time=4.0) as b,
        node(net, A, timeout=20.0) as a,
        trio.open_nursery() as nursery,
    ):
        await trio.sleep(10.0)  # the clock well past 0: an idle time is a difference of times
        nursery.start_soon(a.send, to(B, b"prompt"))
        (await b.receive()).release()
        await trio.testing.wait_all_tasks_blocked()
        assert (b.statistics().acks_out, b.statistics().noops_out) == (1, 0)

        nursery.start_soon(a.send, to(B, b"held"))
        held = await b.receive()
        await trio.sleep(THRESHOLD + 0.5)  # B heard nothing from A for longer than its threshold
        held.release()
        await trio.testing.wait_all_tasks_blocked()
        assert (b.statistics().acks_out, b.statistics().noops_out) == (2, 1)
        assert a.statistics().noops_in == 1
        assert a.statistics().errors == {}


async def test_a_send_after_exactly_the_threshold_has_no_probe_and_one_after_it_has(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, timeout=1.0, reuse_time=4.0, synchronous=False) as b,
        node(net, A, timeout=20.0, synchronous=False) as a,
    ):
        await a.send(to(B, b"hello"))
        (await b.receive()).release()
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(THRESHOLD)  # exactly the threshold: not more than it
        await b.send(to(A, b"at the threshold"))
        (await a.receive()).release()
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().noops_out == 0
        await trio.sleep(THRESHOLD + 0.001)
        await b.send(to(A, b"past the threshold"))
        (await a.receive()).release()
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().noops_out == 1
        assert a.statistics().noops_in == 1
