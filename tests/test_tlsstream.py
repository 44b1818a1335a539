"""_tlsstream.TLSStream on its own: handshake turns, send_nowait's partial writes, EOFs, large writes."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
from memnet_helpers import memory_pair
from tls_helpers import PKISet, handshaken

from trio_chirp import TLSContexts
from trio_chirp._tlsstream import HandshakeTurns, TLSStream
from trio_chirp.testing import MemoryNetwork

A, B = "10.0.0.1", "10.0.0.2"


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "unexpected EOF"
        data += chunk
    return bytes(data)


async def test_handshake_steps_wait_for_the_turn_and_waiting_holds_none(pki: PKISet) -> None:
    turns = HandshakeTurns()
    contexts = TLSContexts.from_files(pki["alpha"])
    lonely_raw, _ = trio.testing.memory_stream_pair()
    lonely = TLSStream(lonely_raw, contexts.server, server_side=True)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    done: list[str] = []
    both = trio.Event()

    async def handshake(side: str, stream: TLSStream) -> None:
        await stream.do_handshake(turns)
        done.append(side)
        if len(done) == 2:
            both.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lonely.do_handshake, turns)  # its peer never speaks
        await trio.testing.wait_all_tasks_blocked()
        assert not turns.locked()  # waiting for the network holds no turn
        await turns._lock.acquire()  # as if another handshake computed: nobody else may
        nursery.start_soon(handshake, "client", TLSStream(client_raw, contexts.client, server_side=False))
        nursery.start_soon(handshake, "server", TLSStream(server_raw, contexts.server, server_side=True))
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        turns._lock.release()
        with trio.fail_after(30):  # the pauses between queued steps are real milliseconds
            await both.wait()
        assert sorted(done) == ["client", "server"]
        nursery.cancel_scope.cancel()


async def test_queued_handshake_steps_get_at_most_their_share_of_the_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    ticks = iter(range(1000))
    turns = HandshakeTurns(share=0.25, timer=lambda: next(ticks) * 0.010)  # every step "takes" 10 ms
    ran_at: list[float] = []

    def step() -> None:
        ran_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(turns.run, step)
    # Queued behind each other: each waits 10 ms * (1 - 0.25) / 0.25 = 30 ms after the one before.
    assert ran_at == pytest.approx([0.0, 0.03, 0.06])
    await turns.run(step)  # alone: no pause (nobody was waiting after the last one)
    assert ran_at[-1] == pytest.approx(0.06)
    with pytest.raises(ValueError, match="share"):
        HandshakeTurns(share=0)


async def test_send_nowait_keeps_what_the_transport_did_not_take_for_the_next_send_all(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        client_raw, server_raw = await memory_pair(net, nursery)
        client, server = await handshaken(pki, client_raw, server_raw)
        assert callable(getattr(client, "send_nowait", None))
        assert client.send_nowait(b"small") == 5  # all of it went out
        assert await _receive_exactly(server, 5) == b"small"
        net.set_window(A, B, 300)
        payload = bytes(range(256)) * 8
        taken = client.send_nowait(payload)
        assert taken == len(payload) - 1  # ciphertext kept; one byte "not taken"
        assert client.send_nowait(b"more") == 0  # nothing more before that byte is handed back
        async with trio.open_nursery() as inner:
            inner.start_soon(client.send_all, payload[taken:])  # the caller's duty, as with a socket
            assert await _receive_exactly(server, len(payload)) == payload
        await client.send_all(b"after")
        assert await _receive_exactly(server, 5) == b"after"
        nursery.cancel_scope.cancel()


async def test_send_nowait_only_when_the_transport_has_it(pki: PKISet) -> None:
    left, _ = trio.testing.memory_stream_pair()
    contexts = TLSContexts.from_files(pki["alpha"])
    assert getattr(TLSStream(left, contexts.client, server_side=False), "send_nowait", None) is None


@pytest.mark.parametrize("close_notify", [False, True])
async def test_the_peers_eof_is_a_clean_end_with_or_without_close_notify(
    close_notify: bool, pki: PKISet
) -> None:
    contexts = TLSContexts.from_files(pki["alpha"])
    client_raw, server_raw = trio.testing.memory_stream_pair()
    ours = TLSStream(client_raw, contexts.client, server_side=False)
    theirs = trio.SSLStream(server_raw, contexts.server, server_side=True, https_compatible=not close_notify)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.do_handshake)
        nursery.start_soon(theirs.do_handshake)
    await theirs.send_all(b"bye")
    await theirs.aclose()  # https_compatible=False sends close_notify; True just closes
    assert await ours.receive_some() == b"bye"
    assert await ours.receive_some() == b""


async def test_large_writes_arrive_whole_and_a_tls_failure_is_broken_resource(pki: PKISet) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client, server = await handshaken(pki, client_raw, server_raw)
    payload = bytes(range(251)) * 4177  # about 1 MiB, not a multiple of anything
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, payload)
        assert await _receive_exactly(server, len(payload)) == payload
    await client.send_all(b"last words")
    await client_raw.send_all(b"\x17\x03\x03\x00\x05junk!")  # a forged record under the client's feet
    assert await server.receive_some() == b"last words"  # what came before it, then the failure
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)


async def test_a_failed_handshake_sends_its_alert(pki: PKISet) -> None:
    strict = TLSContexts.from_files(pki["stranger"])  # trusts CA 2 only
    other = TLSContexts.from_files(pki["alpha"])  # CA 1
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = TLSStream(client_raw, strict.client, server_side=False)
    server = trio.SSLStream(server_raw, other.server, server_side=True)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            with pytest.raises(trio.BrokenResourceError) as info:
                await server.do_handshake()
            assert "UNKNOWN_CA" in str(info.value.__cause__)  # it got the reason, not a bare EOF

        nursery.start_soon(serve)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        await client_raw.aclose()
