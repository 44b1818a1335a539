"""TLS on the in-memory network (PROTOCOL.md 2.2, 2.3; docs/tls.md), under MockClock.

Certificates come from ``tls_helpers.make_test_pki`` (trio_chirp.pki, RSA keys). Every
failure path ends the same way: the sender's ``send()`` raises ``TLSError`` with the
reason at once, the receiving node counts and logs it, and keeps serving a good peer.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, LowRandom
from tls_helpers import PKISet, Seen, tls12_only, without_client_certificate

import trio_chirp._tls
from trio_chirp import (
    CannotConnectError,
    Chirp,
    ChirpTimeoutError,
    Config,
    Message,
    TLSContexts,
    TLSError,
    open_chirp,
)
from trio_chirp._protocol import encode_frame, encode_handshake
from trio_chirp._sniff import client_hello_verdict
from trio_chirp._tlsstream import TLSStream
from trio_chirp.testing import MemoryNetwork

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
LOCAL, LOOPBACK2 = "127.0.0.1", "127.0.0.2"
PORT2 = PORT + 1  # a node on 127.0.0.2: its own port (127/8 is one host to a wildcard listener)


@asynccontextmanager
async def node(
    net: MemoryNetwork, ip: str, config: Config, tls: TLSContexts | None = None
) -> AsyncIterator[Chirp]:
    async with open_chirp(config, transport=net.host(ip), rng=LowRandom(7), tls=tls) as chirp:
        yield chirp


def to(address: str, data: bytes = b"x") -> Message:
    return Message(data, address=address, port=PORT2 if address == LOOPBACK2 else PORT)


async def deliver(sender: Chirp, receiver: Chirp, message: Message) -> Message:
    """``sender`` sends ``message`` (synchronously); ``receiver`` gets and releases it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, message)
        got = await receiver.receive()
        got.release()
    return got


async def refused_at_once(chirp: Chirp, message: Message, error: type[Exception] = TLSError) -> str:
    """The send fails with ``error`` without waiting (virtual time stands still); its text."""
    start = trio.current_time()
    with pytest.raises(error) as info:
        await chirp.send(message)
    assert trio.current_time() == start
    await trio.testing.wait_all_tasks_blocked()  # let the other end count its side
    return str(info.value)


def client_hello() -> bytes:
    """The first flight of a real TLS client (for raw peers)."""
    obj = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(ssl.MemoryBIO(), (out := ssl.MemoryBIO()))
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


# --- working TLS ------------------------------------------------------------------------------


async def test_tls_between_non_local_nodes_both_ways(pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    seen_a, seen_b = Seen(), Seen()
    async with (
        node(net, A, pki.config("alpha", port=PORT, verify_peer=seen_a)) as a,
        node(net, B, pki.config("beta", port=PORT, verify_peer=seen_b)) as b,
    ):
        got = await deliver(a, b, to(B, b"to beta"))
        assert (got.data, got.address, got.remote_identity) == (b"to beta", A, a.identity)
        back = await deliver(b, a, to(A, b"to alpha"))  # the same connection, the other way
        assert (back.data, back.address) == (b"to alpha", B)
        assert a.statistics().errors == b.statistics().errors == {}
        # Each announced itself inside TLS, and each learned the other is trio_chirp.
        assert [r.trio_chirp_version for r in a.statistics().remotes] == [1]
        assert [r.trio_chirp_version for r in b.statistics().remotes] == [1]
    [server] = seen_a.peers
    assert (server.common_name, server.address, server.port, server.outgoing) == ("beta", B, PORT, True)
    [client] = seen_b.peers
    assert (client.common_name, client.address, client.port, client.outgoing) == ("alpha", A, None, False)
    assert server.version == client.version == "TLSv1.3"
    assert server.der is not None
    assert ssl.DER_cert_to_PEM_cert(server.der).strip() in pki["beta"].read_text()


async def test_tls12_forced_negotiates_libchirps_dhe_suite(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    seen_a, seen_b = Seen(), Seen()
    a_config = Config(port=PORT, verify_peer=seen_a)
    async with (
        node(net, A, a_config, tls=tls12_only(pki["alpha"])) as a,
        node(net, B, pki.config("beta", port=PORT, verify_peer=seen_b)) as b,
    ):
        assert (await deliver(a, b, to(B, b"dhe"))).data == b"dhe"
    for peer in (*seen_a.peers, *seen_b.peers):
        assert (peer.version, peer.cipher) == ("TLSv1.2", "DHE-RSA-AES256-GCM-SHA384")
    assert len(seen_a.peers) == len(seen_b.peers) == 1


async def test_a_tls_peer_closing_without_close_notify_is_routine(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # libchirp never sends close_notify; our own GC does not either. The peer's EOF on an
    # idle TLS connection is a routine close: not counted, and the next send reconnects.
    net = MemoryNetwork()
    quick_gc = pki.config("beta", port=PORT, synchronous=False, timeout=0.2, reuse_time=0.6)
    async with (
        node(net, A, pki.config("alpha", port=PORT, timeout=0.2, reuse_time=30.0)) as a,
        node(net, B, quick_gc) as b,
    ):
        await deliver(a, b, to(B, b"one"))
        await trio.sleep(2.0)  # virtual: B collects the idle connection
        assert a.statistics().connections == b.statistics().connections == 0
        assert (await deliver(a, b, to(B, b"two"))).data == b"two"
        assert a.statistics().errors == b.statistics().errors == {}


async def test_a_write_now_that_the_network_takes_only_in_part_is_finished_by_the_writer(
    pki: PKISet, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A synchronous message on an idle connection is written by the sender's task
    # (send_nowait); through a 1000-byte window only part of its ciphertext goes at once.
    partial: list[int] = []
    original = TLSStream._send_nowait

    def counting(self: TLSStream, data: bytes | bytearray | memoryview) -> int:
        taken = original(self, data)
        if 0 < taken < len(data):
            partial.append(taken)
        return taken

    monkeypatch.setattr(TLSStream, "_send_nowait", counting)
    net = MemoryNetwork()
    payload = bytes(range(256)) * 400
    async with (
        node(net, A, pki.config("alpha", port=PORT)) as a,
        node(net, B, pki.config("beta", port=PORT, synchronous=False)) as b,
    ):
        await deliver(a, b, to(B, b"connect first"))
        net.set_window(A, B, 1000)
        got = await deliver(a, b, to(B, payload))
        assert got.data == payload
        assert (await deliver(a, b, to(B, b"and after"))).data == b"and after"
        assert a.statistics().errors == b.statistics().errors == {}
    assert partial, "the partial path was not taken"


# --- failures: each reaches the sender at once, is counted by the receiver, which serves on ----


async def _good_peer_still_served(net: MemoryNetwork, pki: PKISet, b: Chirp, ip: str = C) -> None:
    async with node(net, ip, pki.config("gamma", port=PORT)) as good:
        assert (await deliver(good, b, to(B, b"good"))).data == b"good"


async def test_a_certificate_from_another_ca_is_refused_by_both_ends(
    pki: PKISet, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, pki.config("stranger", port=PORT)) as a,
        node(net, B, pki.config("beta", port=PORT)) as b,
    ):
        text = await refused_at_once(a, to(B))
        assert text.startswith(f"cannot connect to {B}:{PORT}: TLS handshake failed:")
        assert "(unknown CA)" in text
        assert "CERTIFICATE_VERIFY_FAILED" in text
        assert a.statistics().errors == {"TLSError": 1}
        assert b.statistics().errors == {"TLSError": 1}
        await _good_peer_still_served(net, pki, b)
    warnings = [r.getMessage() for r in caplog.records if r.name == "trio_chirp.node"]
    assert any(
        f"connection from {A}: TLS handshake failed: the peer refused our certificate" in w for w in warnings
    )


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13-at-first-read", "tls12-in-handshake"])
async def test_a_client_certificate_the_server_does_not_trust(
    tls12: bool, pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # half_stranger trusts beta's CA, but beta does not trust half_stranger's. Under TLS 1.3
    # the client's handshake completes before the server has checked its certificate: the
    # refusal arrives at the client's first read, and must still fail the send at once.
    net = MemoryNetwork()
    if tls12:
        a_node = node(net, A, Config(port=PORT), tls=tls12_only(pki["half_stranger"]))
    else:
        a_node = node(net, A, pki.config("half_stranger", port=PORT))
    async with a_node as a, node(net, B, pki.config("beta", port=PORT)) as b:
        text = await refused_at_once(a, to(B))
        assert "the peer refused our certificate: it does not trust the CA that signed it" in text
        assert "TLSV1_ALERT_UNKNOWN_CA" in text
        assert ("after the TLS handshake" in text) is not tls12
        assert b.statistics().errors == {"TLSError": 1}
        await _good_peer_still_served(net, pki, b)


async def test_no_client_certificate(pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, Config(port=PORT), tls=without_client_certificate(pki["alpha"])) as a,
        node(net, B, pki.config("beta", port=PORT)) as b,
    ):
        text = await refused_at_once(a, to(B))
        assert "the peer requires a client certificate and we sent none" in text
        assert "TLSV13_ALERT_CERTIFICATE_REQUIRED" in text
        assert b.statistics().errors == {"TLSError": 1}
        await _good_peer_still_served(net, pki, b)


@pytest.mark.parametrize("expired", ["client", "server"])
async def test_an_expired_certificate(expired: str, pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    a_name, b_name = ("expired", "beta") if expired == "client" else ("alpha", "expired")
    async with (
        node(net, A, pki.config(a_name, port=PORT)) as a,
        node(net, B, pki.config(b_name, port=PORT)) as b,
    ):
        text = await refused_at_once(a, to(B))
        if expired == "client":
            assert "the peer refused our certificate: it has expired" in text
        else:
            assert "the peer's certificate has expired" in text
        assert b.statistics().errors == {"TLSError": 1}
        if expired == "client":
            await _good_peer_still_served(net, pki, b)


async def test_verify_peer_refuses_on_the_accepting_side(pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    guard = Seen(refuse={"mallory"})
    async with (
        node(net, A, pki.config("mallory", port=PORT)) as a,
        node(net, B, pki.config("beta", port=PORT, verify_peer=guard)) as b,
    ):
        text = await refused_at_once(a, to(B))
        assert "closed the connection right after the TLS handshake" in text
        assert "most likely refused our certificate" in text
        assert b.statistics().errors == {"TLSError": 1}
        await _good_peer_still_served(net, pki, b)
    assert [p.common_name for p in guard.peers] == ["mallory", "gamma"]


async def test_verify_peer_refuses_on_the_dialling_side(pki: PKISet, autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, pki.config("alpha", port=PORT, verify_peer=Seen(refuse={"beta"}))) as a,
        node(net, B, pki.config("beta", port=PORT)),
    ):
        text = await refused_at_once(a, to(B))
        assert (
            text
            == f"cannot connect to {B}:{PORT}: Config.verify_peer refused {B}:{PORT} (certificate 'beta')"
        )
        # Fail-fast: during the debounce the same error comes back without dialling again.
        assert await refused_at_once(a, to(B)) == text
        assert a.statistics().errors == {"TLSError": 1}


async def test_a_verify_peer_that_raises_refuses_and_keeps_the_cause(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    def broken(peer: Any) -> bool:
        return bool(peer.info["no such field"])

    net = MemoryNetwork()
    async with (
        node(net, A, pki.config("alpha", port=PORT, verify_peer=broken)) as a,
        node(net, B, pki.config("beta", port=PORT)),
    ):
        with pytest.raises(TLSError, match=r"Config.verify_peer refused .* it raised KeyError") as info:
            await a.send(to(B))
        assert isinstance(info.value.__cause__, KeyError)


async def test_a_plaintext_peer_to_a_node_that_expects_tls(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, Config(port=PORT, disable_encryption=True)) as plain,
        node(net, B, pki.config("beta", port=PORT)) as b,
    ):
        text = await refused_at_once(plain, to(B), CannotConnectError)
        assert "the connection ended before the peer's chirp handshake" in text
        assert b.statistics().errors == {"TLSError": 1}
        await _good_peer_still_served(net, pki, b)


@pytest.mark.parametrize("disable_encryption", [False, True])
async def test_a_client_hello_to_a_node_without_certificates(
    disable_encryption: bool, pki: PKISet, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # 127.0.0.1 dials 127.0.0.2: it encrypts (the destination is not local); the node at
    # 127.0.0.2 sees 127.0.0.1 and, without certificates, can only speak plaintext.
    net = MemoryNetwork()
    async with (
        node(net, LOCAL, pki.config("alpha", port=PORT)) as a,
        node(net, LOOPBACK2, Config(port=PORT2, disable_encryption=disable_encryption)) as b,
    ):
        text = await refused_at_once(a, to(LOOPBACK2))
        # The node at 127.0.0.2 wrote its plaintext handshake and closed: the TLS client
        # reads one or the other first.
        assert "TLS handshake failed: the peer " in text
        assert "does not speak TLS on this connection" in text or "or expect plaintext" in text
        assert b.statistics().errors == {"TLSError": 1}
    why = "disable_encryption=True" if disable_encryption else "no certificates (Config.cert_chain_pem)"
    warnings = [r.getMessage() for r in caplog.records if r.name == "trio_chirp.node"]
    assert any(
        f"{LOCAL} sent a TLS ClientHello instead of a chirp handshake, but this node has {why}" in w
        for w in warnings
    )


async def test_a_tls_failure_after_the_first_read_but_before_the_chirp_handshake_is_a_tls_error(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # A fake server: TLS, one byte of a chirp handshake inside it, then bytes that are no
    # TLS record. The connection fails before the peer's handshake: fail fast, as TLSError.
    net = MemoryNetwork()
    server = TLSContexts.from_files(pki["beta"]).server

    async def fake(stream: trio.abc.Stream) -> None:
        tls = trio.SSLStream(stream, server, server_side=True, https_compatible=True)
        await tls.do_handshake()
        await tls.send_all(b"\x0b")
        await stream.send_all(b"no TLS record at all")
        await _read_to_eof(stream)

    async with trio.open_nursery() as nursery:

        def on_accept(stream: trio.abc.Stream, peer: str) -> None:
            nursery.start_soon(fake, stream)

        await nursery.start(
            partial(
                net.host(B).serve, port=PORT, bind_v4="0.0.0.0", bind_v6=None, backlog=8, on_accept=on_accept
            )
        )
        async with node(net, A, pki.config("alpha", port=PORT)) as a:
            text = await refused_at_once(a, to(B))
            assert text.startswith(
                f"cannot connect to {B}:{PORT}: the connection ended before the peer's chirp"
            )
            assert "the peer does not speak TLS on this connection" in text
            assert a.statistics().errors == {"TLSError": 1}
        nursery.cancel_scope.cancel()


async def test_a_tls_handshake_that_never_completes_times_out_as_still_connecting(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # A peer that accepts and never answers the ClientHello: the connect timeout, named.
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        accepted: list[trio.abc.Stream] = []
        serve = partial(
            net.host(B).serve,
            port=PORT,
            bind_v4="0.0.0.0",
            bind_v6=None,
            backlog=8,
            on_accept=lambda s, _: accepted.append(s),
        )
        await nursery.start(serve)
        async with node(net, A, pki.config("alpha", port=PORT, timeout=0.5)) as a:
            start = trio.current_time()
            with pytest.raises(ChirpTimeoutError, match="still connecting"):
                await a.send(to(B))
            assert trio.current_time() - start == pytest.approx(0.5)  # the send's own deadline
            await trio.sleep(0.6)  # virtual: past the connect timeout of the attempt, 2 * timeout
            assert a.statistics().errors == {"ChirpTimeoutError": 1}
            [remote] = a.statistics().remotes
            assert remote.last_error == (
                f"<Connection to {B}:?>: no chirp handshake within the connect timeout (1.0s),"
                " waiting for the TLS handshake"
            )
        assert len(accepted) == 1
        nursery.cancel_scope.cancel()


async def test_without_certificates_a_non_local_source_needs_tls_too(autojump_clock: trio.abc.Clock) -> None:
    # Dialling 127.0.0.1 from another address: the peer sees a non-local source.
    net = MemoryNetwork()
    async with node(net, A, Config(port=PORT)) as a, node(net, LOCAL, Config(port=PORT)):
        text = await refused_at_once(a, to(LOCAL))
        assert text.startswith(f"cannot connect to {LOCAL}:{PORT}: the peer sees this node as {A}")
        assert "no certificates are configured" in text


# --- sniffing ---------------------------------------------------------------------------------


async def test_tls_from_a_local_source_is_sniffed_and_served(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # libchirp's 127.0.0.2 case: the dialler encrypts, the acceptor sees 127.0.0.1.
    net = MemoryNetwork()
    seen = Seen()
    async with (
        node(net, LOCAL, pki.config("alpha", port=PORT)) as a,
        node(net, LOOPBACK2, pki.config("beta", port=PORT2, verify_peer=seen)) as b,
    ):
        got = await deliver(a, b, to(LOOPBACK2, b"sniffed"))
        assert (got.data, got.address) == (b"sniffed", LOCAL)
        assert (await deliver(b, a, Message(b"back", address=LOCAL, port=PORT))).data == b"back"
        assert a.statistics().errors == b.statistics().errors == {}
    assert [(p.common_name, p.address, p.outgoing) for p in seen.peers] == [("alpha", LOCAL, False)]


async def test_a_plaintext_peer_on_port_5635_is_not_taken_for_tls(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # Port 5635 is 0x1603, the first two bytes of a TLS handshake record. This identity
    # also looks like a ClientHello up to the tenth byte (record length 48, client_hello,
    # length 44); the 11 sniffed bytes tell it apart. Until they are in, the node holds its
    # own handshake back, and the connection counts as one in progress.
    identity = bytes([0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2C, 0x02]) + b"\x77" * 8
    hello = encode_handshake(0x1603, identity)
    assert client_hello_verdict(hello[:9]) is None
    assert client_hello_verdict(hello) is False
    net = MemoryNetwork()
    async with node(net, LOOPBACK2, pki.config("beta", port=PORT2, synchronous=False)) as b:
        raw, _ = await net.host(LOCAL).connect(LOOPBACK2, PORT2)
        await raw.send_all(hello[:9])
        await trio.testing.wait_all_tasks_blocked()
        assert raw.peer.stats.bytes_sent == 0  # our handshake waits for the verdict
        assert b.statistics().connections == 1
        await raw.send_all(hello[9:] + encode_frame(b"\x05" * 16, 1, 0, b"", b"plain"))
        msg = await b.receive()
        msg.release()
        assert (msg.data, msg.port, msg.remote_identity, msg.address) == (b"plain", 0x1603, identity, LOCAL)
        assert await raw.receive_some(18) == encode_handshake(b.port, b.identity)
        assert b.statistics().errors == {}


async def test_an_identity_crafted_like_a_client_hello_is_taken_for_tls(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # The documented ambiguity: 11 bytes that are a ClientHello's are one. A random identity
    # does this with a probability of about 1e-9; this one is made to.
    identity = bytes([0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2C, 0x03, 0x03]) + b"\x77" * 7
    assert client_hello_verdict(encode_handshake(0x1603, identity)) is True
    net = MemoryNetwork()
    async with node(net, LOOPBACK2, pki.config("beta", port=PORT2)) as b:
        raw, _ = await net.host(LOCAL).connect(LOOPBACK2, PORT2)
        await raw.send_all(encode_handshake(0x1603, identity) + b"\x00" * 40)
        assert (await _read_to_eof(raw)).startswith(b"\x15\x03")  # a TLS alert, then the close
        assert b.statistics().errors == {"TLSError": 1}


async def _read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    seen = b""
    try:
        while chunk := await stream.receive_some(65536):
            seen += chunk
    except trio.BrokenResourceError:
        pass
    return seen


@pytest.mark.parametrize(("sent", "phase"), [(b"\x16\x03", "its first bytes"), (None, "the TLS handshake")])
async def test_a_stalled_handshake_ends_at_the_handshake_timeout(
    sent: bytes | None,
    phase: str,
    pki: PKISet,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = MemoryNetwork()
    async with node(net, B, pki.config("beta", port=PORT, handshake_timeout=0.5)) as b:
        raw, _ = await net.host(A).connect(B, PORT)
        start = trio.current_time()
        await raw.send_all(client_hello() if sent is None else sent)
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().connections == 1
        await _read_to_eof(raw)
        assert trio.current_time() - start == pytest.approx(0.5)
        assert b.statistics().connections == 0
        assert b.statistics().errors == {"ChirpTimeoutError": 1}
        warnings = [r.getMessage() for r in caplog.records if r.name == "trio_chirp.node"]
        assert any(f"within the handshake timeout (0.5s), waiting for {phase}" in w for w in warnings)
        await _good_peer_still_served(net, pki, b)


async def test_sniffing_and_tls_handshakes_count_against_max_handshakes(
    pki: PKISet, autojump_clock: trio.abc.Clock
) -> None:
    # Connections in their sniff or TLS handshake are handshakes in progress like any other:
    # the limit's policy (_limits.py) refuses the flooding address's next one and lets a
    # fresh peer in by shedding one of the flood's.
    net = MemoryNetwork()
    async with node(net, B, pki.config("beta", port=PORT, handshake_timeout=30, max_handshakes=2)) as b:
        stalled = [(await net.host(A).connect(B, PORT))[0] for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().connections == 2
        third, _ = await net.host(A).connect(B, PORT)
        assert await third.receive_some(100) == b""  # refused: closed at once
        assert b.statistics().connections_refused == 1
        await _good_peer_still_served(net, pki, b)
        stats = b.statistics()
        assert stats.connections_shed == 1
        assert sum(stream.closed for stream in (s.peer for s in stalled)) == 1
        assert stats.errors == {}  # refusals and sheds are counted apart, not as failures


async def test_tls_failures_of_one_peer_log_one_line_and_a_summary(
    pki: PKISet, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    async with node(net, B, pki.config("beta", port=PORT)) as b:
        for _ in range(5):
            raw, _ = await net.host(C).connect(B, PORT)
            await raw.send_all(encode_handshake(4000, bytes(16)))  # plaintext from a non-local peer
            await _read_to_eof(raw)
        assert b.statistics().errors == {"TLSError": 5}
        await trio.sleep(10)
    lines = [
        r.getMessage() for r in caplog.records if r.name == "trio_chirp.node" and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 2
    assert f"{C} sent plaintext, but it is not 127.0.0.1 or ::1" in lines[0]
    assert lines[1] == f"4 more TLSError connection failures with {C} in the last 10 s"


# --- binding outgoing connections ----------------------------------------------------------------


async def test_outgoing_connections_bind_to_bind_v4_except_to_local_literals(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, B, Config(port=PORT, disable_encryption=True)) as b,
        node(net, LOCAL, Config(port=PORT, disable_encryption=True)) as local,
        node(net, A, Config(port=PORT, disable_encryption=True, bind_v4=C)) as a,  # not A's address
    ):
        text = await refused_at_once(a, to(B), CannotConnectError)
        assert f"{C} is not the address of host {A}" in text
        got = await deliver(a, local, to(LOCAL, b"unbound"))  # 127.0.0.1 is dialled unbound
        assert got.data == b"unbound"
        assert b.statistics().errors == {}
    async with (
        node(net, B, Config(port=PORT, disable_encryption=True)) as b,
        node(net, A, Config(port=PORT, disable_encryption=True, bind_v4="127.0.0.5")) as a,
    ):
        got = await deliver(a, b, to(B, b"loopback bind, remote peer"))  # could not be reached bound
        assert (got.data, got.address) == (b"loopback bind, remote peer", A)


# --- start-up ---------------------------------------------------------------------------------


async def _start(config: Config, tls: TLSContexts | None = None) -> None:
    async with open_chirp(config, transport=MemoryNetwork().host(A), tls=tls):
        pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not name an existing file"),
        (b"not pem at all\n", "holds no usable CA certificate"),
        ("ca1", "is not a PEM certificate chain with its private key"),
    ],
)
async def test_unusable_certificate_files_fail_at_start_naming_field_and_path(
    content: bytes | str | None, message: str, pki: PKISet, tmp_path: Path
) -> None:
    path = tmp_path / "chain.pem"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_bytes(pki.ca1.read_bytes())
    with pytest.raises(ValueError, match="^" + re.escape(f"Config.cert_chain_pem={str(path)!r} {message}")):
        await _start(Config(port=PORT, cert_chain_pem=path))


async def test_an_unreadable_certificate_file_fails_at_start(
    pki: PKISet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Tests may run as root, who reads any file: the refusal is simulated.)
    def refused(path: str, mode: str = "r") -> object:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(trio_chirp._tls, "open", refused, raising=False)
    path = str(pki["alpha"])
    with pytest.raises(
        ValueError, match="^" + re.escape(f"Config.cert_chain_pem={path!r} cannot be read: Permission denied")
    ):
        await _start(Config(port=PORT, cert_chain_pem=pki["alpha"]))


async def test_a_directory_is_not_a_certificate_file(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match="^" + re.escape(f"Config.cert_chain_pem={str(tmp_path)!r} does not name an existing file"),
    ):
        await _start(Config(port=PORT, cert_chain_pem=tmp_path))


async def test_an_encrypted_private_key_is_refused_without_a_prompt(pki: PKISet, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    chain = pki["alpha"].read_bytes()
    start = chain.index(b"-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(chain[start:], password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path = tmp_path / "encrypted.pem"
    path.write_bytes(chain[:start] + encrypted)
    with pytest.raises(ValueError, match=r"Config.cert_chain_pem=.*the private key is encrypted"):
        await _start(Config(port=PORT, cert_chain_pem=path))


async def test_unusable_dh_parameters_fail_at_start(pki: PKISet, tmp_path: Path) -> None:
    dh = tmp_path / "dh.pem"
    dh.write_text("-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n")
    with pytest.raises(
        ValueError, match="^" + re.escape(f"Config.dh_params_pem={str(dh)!r} holds no PEM DH PARAMETERS")
    ):
        await _start(Config(port=PORT, cert_chain_pem=pki["alpha"], dh_params_pem=dh))
    with pytest.raises(
        ValueError, match="^" + re.escape(f"Config.dh_params_pem={str(tmp_path / 'x')!r} does not name")
    ):
        await _start(Config(port=PORT, cert_chain_pem=pki["alpha"], dh_params_pem=tmp_path / "x"))
    with pytest.raises(ValueError, match=r"Config.dh_params_pem=.* is set but Config.cert_chain_pem is None"):
        await _start(Config(port=PORT, dh_params_pem=pki.dh))


async def test_a_ready_context_pair_excludes_the_files_and_disable_encryption(pki: PKISet) -> None:
    contexts = TLSContexts.from_files(pki["alpha"])
    with pytest.raises(ValueError, match=re.escape("either tls= or Config.cert_chain_pem")):
        await _start(Config(port=PORT, cert_chain_pem=pki["alpha"]), tls=contexts)
    with pytest.raises(ValueError, match=re.escape("disable_encryption=True never uses it")):
        await _start(Config(port=PORT, disable_encryption=True), tls=contexts)
    with pytest.raises(TypeError, match=re.escape("tls= must be a trio_chirp.TLSContexts")):
        await _start(Config(port=PORT), tls=contexts.client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("TLSContexts.client is a server context")):
        TLSContexts(client=contexts.server, server=contexts.server)
    with pytest.raises(ValueError, match=re.escape("TLSContexts.server is a client context")):
        TLSContexts(client=contexts.client, server=contexts.client)
    with pytest.raises(ValueError, match=r"^cert_chain_pem='/nonexistent' does not name"):
        TLSContexts.from_files("/nonexistent")


def test_verify_peer_and_paths_are_type_checked() -> None:
    with pytest.raises(TypeError, match=re.escape("Config.verify_peer must be callable or None, got int")):
        Config(verify_peer=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("Config.cert_chain_pem must be a path or None, got bytes")):
        Config(cert_chain_pem=b"/x")  # type: ignore[arg-type]
