"""The in-memory network: stream semantics, flow control, latency and injected faults."""

from __future__ import annotations

import errno
from functools import partial

import pytest
import trio
import trio.testing

from trio_chirp._transport import Transport
from trio_chirp.testing import MemoryNetwork, MemoryStream, MemoryTransport

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"

Accepted = trio.MemoryReceiveChannel[tuple[MemoryStream, str]]


async def listen(nursery: trio.Nursery, host: MemoryTransport, port: int = 0) -> tuple[int, Accepted]:
    """Serve on ``host``; accepted ``(stream, peer_ip)`` pairs arrive on the returned channel."""
    send, receive = trio.open_memory_channel[tuple[MemoryStream, str]](100)

    def on_accept(stream: trio.abc.Stream, peer: str) -> None:
        assert isinstance(stream, MemoryStream)
        send.send_nowait((stream, peer))

    serve = partial(host.serve, port=port, bind_v4="0.0.0.0", bind_v6="::", backlog=8, on_accept=on_accept)
    bound: int = await nursery.start(serve)
    return bound, receive


async def connected(
    net: MemoryNetwork, nursery: trio.Nursery, client: str = A, server: str = B
) -> tuple[MemoryStream, MemoryStream]:
    port, accepted = await listen(nursery, net.host(server))
    client_end, _ = await net.host(client).connect(server, port)
    server_end, _ = await accepted.receive()
    return client_end, server_end


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "unexpected EOF"
        data += chunk
    return bytes(data)


# ---- basics ----


async def test_connect_reports_the_source_and_binds_only_to_the_hosts_own_address(
    nursery: trio.Nursery,
) -> None:
    net = MemoryNetwork()
    port, accepted = await listen(nursery, net.host(B))
    client, source = await net.host("fd00::1").connect(B, port, bind="FD00::1")
    assert source == "fd00::1" == client.local[0]
    assert (await accepted.receive())[1] == "fd00::1"
    with pytest.raises(OSError, match="not the address of host") as info:
        await net.host(A).connect(B, port, bind=C)
    assert info.value.errno == errno.EADDRNOTAVAIL


async def test_round_trip_addresses_and_counters(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    a = net.host(A)
    assert isinstance(a, Transport)
    assert net.host("10.0.0.1") is a
    port, accepted = await listen(nursery, net.host(B))

    client, _ = await a.connect(B, port)
    server, peer = await accepted.receive()

    assert peer == A
    assert client.local == (A, 32768)
    assert client.remote == (B, port)
    assert server.local == (B, port)
    assert server.remote == client.local
    assert client.peer is server
    assert server.peer is client

    await client.send_all(b"ping")
    assert await receive_exactly(server, 4) == b"ping"
    await server.send_all(bytearray(b"pong!"))
    assert await receive_exactly(client, 5) == b"pong!"

    assert client.stats.bytes_sent == 4
    assert client.stats.bytes_delivered == 4
    assert client.stats.bytes_received == 5
    assert server.stats.bytes_sent == 5
    assert server.stats.bytes_unconsumed == 0


async def test_ipv6_hosts_are_normalised(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    v6 = net.host("fd00:0:0::2")
    assert v6.address == "fd00::2"
    port, accepted = await listen(nursery, v6)

    client, _ = await net.host("fd00::1").connect("FD00::0:2", port)
    _, peer = await accepted.receive()

    assert peer == "fd00::1"
    assert client.remote == ("fd00::2", port)
    assert repr(client) == f"<MemoryStream [fd00::1]:32768 -> [fd00::2]:{port}>"


async def test_eof_arrives_after_buffered_data(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery)

    await client.send_all(b"abc")
    await client.send_all(b"def")
    await client.aclose()

    assert await server.receive_some(4) == b"abcd"
    assert await server.receive_some() == b"ef"
    assert await server.receive_some() == b""
    assert await server.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"too late")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


async def test_send_eof_half_closes(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery)

    await client.send_all(b"q")
    await client.send_eof()

    assert await server.receive_some() == b"q"
    assert await server.receive_some() == b""
    await server.send_all(b"answer")
    assert await receive_exactly(client, 6) == b"answer"
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")


async def test_receive_some_returns_at_most_max_bytes(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery)
    await client.send_all(b"0123456789")

    assert await server.receive_some(3) == b"012"
    assert await server.receive_some(1) == b"3"
    assert await server.receive_some(100) == b"456789"
    with pytest.raises(ValueError, match="max_bytes"):
        await server.receive_some(0)


# ---- connecting and listening ----


async def test_connect_without_listener_is_refused() -> None:
    net = MemoryNetwork()
    net.host(B)

    with pytest.raises(ConnectionRefusedError) as info:
        await net.host(A).connect(B, 2998)
    assert info.value.errno == errno.ECONNREFUSED


async def test_connect_to_unknown_host_or_non_ip_fails_with_oserror() -> None:
    net = MemoryNetwork()
    a = net.host(A)

    with pytest.raises(OSError, match=r"10\.9\.9\.9") as unreachable:
        await a.connect("10.9.9.9", 2998)
    assert unreachable.value.errno == errno.EHOSTUNREACH
    with pytest.raises(OSError, match="not an IP address") as invalid:
        await a.connect("example.org", 2998)
    assert invalid.value.errno == errno.EINVAL


async def test_refuse_and_unrefuse(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    a = net.host(A)
    port1, _ = await listen(nursery, net.host(B))
    port2, _ = await listen(nursery, net.host(B))

    net.refuse(B)
    with pytest.raises(ConnectionRefusedError):
        await a.connect(B, port1)
    with pytest.raises(ConnectionRefusedError):
        await a.connect(B, port2)
    net.unrefuse(B)
    net.refuse(B, port1)
    with pytest.raises(ConnectionRefusedError):
        await a.connect(B, port1)
    assert (await a.connect(B, port2))[0].remote == (B, port2)
    net.unrefuse(B, port1)
    assert (await a.connect(B, port1))[0].remote == (B, port1)


async def test_port_zero_counts_up_per_host(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    first, _ = await listen(nursery, net.host(A))
    second, _ = await listen(nursery, net.host(A))
    other_host, _ = await listen(nursery, net.host(B))

    assert (first, second, other_host) == (49152, 49153, 49152)
    assert net.host(A).listening_ports == [49152, 49153]
    assert net.listeners() == [(A, 49152), (A, 49153), (B, 49152)]


async def test_port_in_use_raises_eaddrinuse_and_cancel_frees_it(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    b = net.host(B)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await listen(inner, b, 5000)
            with pytest.raises(OSError, match="5000") as info:
                await listen(nursery, b, 5000)
            assert info.value.errno == errno.EADDRINUSE
            assert (await listen(nursery, net.host(C), 5000))[0] == 5000  # another host: free
            scope.cancel()

    assert net.listeners() == [(C, 5000)]
    with pytest.raises(ConnectionRefusedError):
        await net.host(A).connect(B, 5000)
    assert (await listen(nursery, b, 5000))[0] == 5000


# ---- flow control ----


async def test_full_window_blocks_the_sender_until_the_receiver_reads(nursery: trio.Nursery) -> None:
    net = MemoryNetwork(window=8)
    client, server = await connected(net, nursery)
    done = trio.Event()

    async def send() -> None:
        await client.send_all(b"x" * 20)
        done.set()

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    assert client.stats.bytes_sent == 8
    assert client.stats.bytes_delivered == 0

    assert await server.receive_some(5) == b"xxxxx"
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    assert client.stats.bytes_sent == 13
    assert client.stats.bytes_unconsumed == 8

    assert await receive_exactly(server, 15) == b"x" * 15
    await done.wait()
    assert client.stats.bytes_delivered == 20


async def test_stopped_receiver_leaves_payload_unconsumed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork(window=4)
    client, server = await connected(net, nursery)

    with trio.move_on_after(1) as scope:
        await client.send_all(b"payload")
    assert scope.cancelled_caught
    await server.aclose()

    stats = net.streams(A, B)[0].stats
    assert stats.bytes_sent == 4
    assert stats.bytes_delivered == 0
    assert stats.bytes_unconsumed == 4
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"more")


async def test_set_window_overrides_one_link(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork()
    net.set_window(A, B, 3)
    to_b, _ = await connected(net, nursery, A, B)
    to_c, _ = await connected(net, nursery, A, C)

    with trio.move_on_after(1):
        await to_b.send_all(b"12345")
    await to_c.send_all(b"12345")

    assert to_b.stats.bytes_sent == 3
    assert to_c.stats.bytes_sent == 5


# ---- latency (virtual time) ----


async def test_latency_delays_bytes_by_exactly_the_configured_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 0.25)
    port, accepted = await listen(nursery, net.host(B))

    client, _ = await net.host(A).connect(B, port)
    assert trio.current_time() == 0.5  # one round trip
    server, _ = await accepted.receive()

    await client.send_all(b"one")
    await client.send_all(b"two")
    await trio.sleep(0.125)
    await client.send_all(b"three")
    assert trio.current_time() == 0.625  # sending does not wait for the latency

    assert await server.receive_some() == b"onetwo"  # chunks sent together arrive together
    assert trio.current_time() == 0.75
    assert await server.receive_some() == b"three"
    assert trio.current_time() == 0.875

    await server.aclose()
    assert await client.receive_some() == b""
    assert trio.current_time() == 1.125


async def test_latency_also_delays_refusal(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    net.host(B)
    net.set_latency(A, B, 1.5)

    with pytest.raises(ConnectionRefusedError):
        await net.host(A).connect(B, 2998)
    assert trio.current_time() == 3.0


async def test_connect_cancelled_mid_handshake_resets_accepted_end(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork()
    net.set_latency(A, B, 1)
    port, accepted = await listen(nursery, net.host(B))

    with trio.move_on_after(1.5) as scope:
        await net.host(A).connect(B, port)
    assert scope.cancelled_caught
    server, _ = await accepted.receive()

    assert server.broken
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()


# ---- faults ----


async def test_cut_breaks_both_ends_and_leaves_other_links(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery, A, B)
    other, other_server = await connected(net, nursery, A, C)
    await client.send_all(b"lost")
    outcome: list[type[BaseException]] = []

    async def pending_receive() -> None:
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some()
        outcome.append(info.type)

    nursery.start_soon(pending_receive)
    await trio.testing.wait_all_tasks_blocked()
    net.cut(B, A)
    await trio.testing.wait_all_tasks_blocked()

    assert outcome == [trio.BrokenResourceError]
    assert client.broken
    assert server.broken
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    assert client.stats.bytes_unconsumed == 4

    await other.send_all(b"fine")
    assert await receive_exactly(other_server, 4) == b"fine"
    assert (await connected(net, nursery, A, B))[0].remote[0] == B  # new connects still work


async def test_crash_resets_streams_and_removes_listeners(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    port, _ = await listen(nursery, net.host(B))
    from_a, _ = await connected(net, nursery, A, B)
    to_c, _ = await connected(net, nursery, B, C)
    bystander, bystander_server = await connected(net, nursery, A, C)

    net.crash(B)

    assert (B, port) not in net.listeners()
    assert net.host(B).listening_ports == []
    with pytest.raises(ConnectionRefusedError):
        await net.host(A).connect(B, port)
    with pytest.raises(trio.BrokenResourceError):
        await from_a.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await to_c.send_all(b"x")
    await bystander.send_all(b"ok")
    assert await receive_exactly(bystander_server, 2) == b"ok"

    # The restarted node may take the same port; the crashed serve task, when finally
    # cancelled, must not remove the new listener.
    assert (await listen(nursery, net.host(B), port))[0] == port
    assert (await net.host(A).connect(B, port))[0].remote == (B, port)


async def test_black_hole_connect_hangs_until_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork()
    port, _ = await listen(nursery, net.host(B))
    net.black_hole(B)
    net.refuse(B)  # a dead machine does not even refuse

    with trio.move_on_after(3) as scope:
        await net.host(A).connect(B, port)
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0

    net.unrefuse(B)
    connected_at: list[float] = []

    async def connect() -> None:
        await net.host(A).connect(B, port)
        connected_at.append(trio.current_time())

    nursery.start_soon(connect)
    await trio.sleep(2)
    assert connected_at == []
    net.unblack_hole(B)
    await trio.testing.wait_all_tasks_blocked()
    assert connected_at == [5.0]


async def test_black_hole_stalls_existing_streams_until_lifted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork(window=4)
    client, server = await connected(net, nursery)
    net.black_hole(A)

    with trio.move_on_after(10):
        await client.send_all(b"held back")
    with trio.move_on_after(10) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    assert client.stats.bytes_sent == 4
    assert client.stats.bytes_delivered == 0

    net.unblack_hole(A)
    assert await server.receive_some() == b"held"


async def test_partition_is_between_two_hosts_only(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery, A, B)
    port_b = client.remote[1]
    port_c, _ = await listen(nursery, net.host(C))
    net.partition(B, A)

    await client.send_all(b"wait")
    with trio.move_on_after(1) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    with trio.move_on_after(1) as scope:
        await net.host(A).connect(B, port_b)
    assert scope.cancelled_caught
    assert (await net.host(A).connect(C, port_c))[0].remote == (C, port_c)

    net.heal(A, B)
    assert await server.receive_some() == b"wait"
    assert trio.current_time() == 2.0


async def test_streams_finds_the_ends_between_two_hosts(nursery: trio.Nursery) -> None:
    net = MemoryNetwork()
    client, server = await connected(net, nursery, A, B)
    await connected(net, nursery, A, C)

    assert net.streams(A, B) == [client]
    assert net.streams(B, A) == [server]
    assert net.streams(remote=C)[0].local[0] == A
    assert len(net.streams(A)) == 2

    await client.aclose()
    assert net.streams(A, B) == []
    assert net.streams(A, B, include_closed=True) == [client]
    assert client.closed


# ---- trio's generic Stream conformance suite ----


@pytest.mark.parametrize(("window", "latency"), [(65536, 0.0), (1000, 0.01)])
async def test_trio_stream_conformance(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, window: int, latency: float
) -> None:
    net = MemoryNetwork(window=window)
    net.set_latency(A, B, latency)
    port, accepted = await listen(nursery, net.host(B))

    async def stream_maker() -> tuple[MemoryStream, MemoryStream]:
        client, _ = await net.host(A).connect(B, port)
        server, _ = await accepted.receive()
        return client, server

    async def clogged_stream_maker() -> tuple[MemoryStream, MemoryStream]:
        # check_two_way_stream flips the pair too, so both directions must be full.
        client, server = await stream_maker()
        await client.send_all(b"x" * window)
        await server.send_all(b"y" * window)
        return client, server

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)
