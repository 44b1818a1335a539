"""The connection's writer (``_connection.Connection._write``) on a stream without gathered
writes (the in-memory network, TLS): a batch with a part too large to join with the rest
(above ``_batching.DIRECT_WRITE``) is written part by part, whole and in order."""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import PORT, A, B, node, to

from trio_chirp._batching import DIRECT_WRITE
from trio_chirp.testing import MemoryNetwork


async def test_a_batch_with_a_part_above_the_direct_write_size_arrives_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    big = bytes(range(256)) * (DIRECT_WRITE // 256 + 1)
    async with (
        node(net, A, synchronous=False) as a,
        node(net, B, synchronous=False, max_msg_size=4 * DIRECT_WRITE) as b,
    ):
        await a.send(to(B, b"small"))
        await a.send(to(B, big))
        await a.send(to(B, b"after"))
        await a.flush(B, PORT)
        got = []
        for _ in range(3):
            msg = await b.receive()
            got.append(bytes(msg.data))
            msg.release()
        assert got == [b"small", big, b"after"]
        assert a.statistics().errors == {}
