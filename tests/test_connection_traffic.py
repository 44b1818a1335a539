"""The traffic a connection counts (``statistics()``'s ``messages_*`` and ``bytes_*``), as a
user compares them between two nodes: every byte one wrote, the other read.

* What a node reads is the peer's handshake and announcement plus every frame it wrote.
* A batch that ``write_now()`` could not finish at once (a small window) is finished by
  the writer task and counted like any other.
* The bytes a prelude read (sniffing a local peer's first bytes) count as read.
"""

from __future__ import annotations

import trio
import trio.testing
from memnet_helpers import PORT, A, B, LowRandom, node, to
from tls_helpers import PKISet

from trio_chirp import Chirp, open_chirp
from trio_chirp._protocol import encode_announcement, encode_frame, encode_handshake
from trio_chirp.testing import MemoryNetwork

OPENING = len(encode_handshake(PORT, bytes(16))) + len(encode_announcement(1, 1))
"""Our handshake and announcement: written before any frame, not counted in ``bytes_out``."""


async def _receive_all(chirp: Chirp, count: int) -> None:
    for _ in range(count):
        (await chirp.receive()).release()


async def test_what_one_node_writes_the_other_reads(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False) as a, node(net, B, synchronous=False) as b:
        for size in (1, 1000, 70_000):
            await a.send(to(B, b"x" * size))
        await a.flush(B, PORT)
        await _receive_all(b, 3)
        await trio.testing.wait_all_tasks_blocked()
        sent, got = a.statistics(), b.statistics()
        assert (sent.messages_out, got.messages_in) == (3, 3)
        assert sent.bytes_out > 71_000
        assert got.bytes_in == sent.bytes_out + OPENING


async def test_a_batch_the_writer_finishes_for_write_now_is_counted(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    net.set_window(A, B, 1024)
    async with node(net, B) as b, node(net, A) as a, trio.open_nursery() as nursery:
        nursery.start_soon(_receive_all, b, 2)
        await a.send(to(B, b"first"))
        await trio.testing.wait_all_tasks_blocked()  # idle: the next sync send writes at once
        await a.send(to(B, b"y" * 8192))  # more than the window: the writer finishes it
        await trio.testing.wait_all_tasks_blocked()
        sent, got = a.statistics(), b.statistics()
        assert (sent.messages_out, got.messages_in) == (2, 2)
        assert got.bytes_in == sent.bytes_out + OPENING


async def test_bytes_a_prelude_read_are_counted(pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    """A node with certificates sniffs a local peer's first bytes (TLS or plaintext?); what
    the sniffing read counts as read like the rest."""
    net = MemoryNetwork()
    config = pki.config("beta", port=PORT, synchronous=False)
    async with open_chirp(config, transport=net.host("127.0.0.2"), rng=LowRandom(7)) as b:
        raw, _ = await net.host("127.0.0.1").connect("127.0.0.2", PORT)
        sent = encode_handshake(PORT + 5, bytes(range(1, 17))) + encode_frame(bytes(16), 1, 0, b"", b"plain")
        await raw.send_all(sent)
        with trio.fail_after(5.0):
            msg = await b.receive()
        assert msg.data == b"plain"
        msg.release()
        assert b.statistics().bytes_in == len(sent)
        await raw.aclose()
