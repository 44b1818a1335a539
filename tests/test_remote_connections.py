"""A remote's connections (``_remote.Remote``).

* When two nodes dial each other at once, each remote ends up with two connections, the
  later handshake's as current and the other kept as old (still read) until the garbage
  collection closes it when idle.
* After a long idle, one NOOP probe precedes the next frames, however many are queued.
"""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import PORT, A, B, FakePeer, node, to

from trio_chirp import Chirp
from trio_chirp.testing import MemoryNetwork


def _connections_to(chirp: Chirp, address: str) -> int:
    (remote,) = [r for r in chirp.statistics().remotes if r.address == address]
    return remote.connections


async def test_crossing_dials_keep_the_replaced_connection_as_old_until_it_is_collected(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, to(B, b"from a"))
            nursery.start_soon(b.send, to(A, b"from b"))
        await a.flush(B, PORT)
        await b.flush(A, PORT)
        for chirp, expected in ((a, b"from b"), (b, b"from a")):
            msg = await chirp.receive()
            assert msg.data == expected
            msg.release()
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().connections == 2
        assert _connections_to(a, B) == 2  # the current one and the one it replaced
        assert _connections_to(b, A) == 2
        reuse = a.config.effective_reuse_time
        for _ in range(8):  # the current one stays busy, the old one idles for 2 x reuse
            await trio.sleep(reuse / 4)
            await a.send(to(B, b"busy"))
            await a.flush(B, PORT)
            (await b.receive()).release()
        assert a.statistics().connections == 1
        assert _connections_to(a, B) == 1


async def test_after_a_long_idle_one_noop_probe_precedes_a_burst(autojump_clock: trio.abc.Clock) -> None:
    """Idle past ``noop_threshold``, the next frames are preceded by one NOOP (the peer may
    be collecting us: docs/protocol.md, section 7.2), not by one per message queued."""
    net = MemoryNetwork()
    peer = FakePeer(net, B)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        async with node(net, A, synchronous=False) as a:
            await a.send(to(B, b"first"))
            await a.flush(B, PORT)
            await trio.sleep(a.config.noop_threshold + 1.0)
            for _ in range(3):
                await a.send(to(B, b"burst"))
            await a.flush(B, PORT)
            await trio.testing.wait_all_tasks_blocked()
            kinds = ["NOOP" if f.is_noop else "DATA" for f in peer.frames()]
            assert kinds == ["DATA", "NOOP", "DATA", "DATA", "DATA"]
        nursery.cancel_scope.cancel()
