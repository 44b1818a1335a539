"""TLS over real sockets on loopback: 127.0.0.2 and 127.0.0.3 (on Linux all of 127/8 is loopback).

Only 127.0.0.1 and ::1 are plaintext, so these two addresses give real TLS on one machine;
outgoing connections bind to ``bind_v4``, so each end sees the other's listening address.
"""

from __future__ import annotations

import socket

import pytest
import trio
from tls_helpers import PKISet, Seen

from trio_chirp import Chirp, Config, Message, TLSError, open_chirp

pytestmark = pytest.mark.timeout(30)

X, Y = "127.0.0.2", "127.0.0.3"


def _has_loopback(address: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((address, 0))
    except OSError:
        return False
    return True


if not (_has_loopback(X) and _has_loopback(Y)):  # pragma: no cover - Linux has all of 127/8
    pytest.skip(f"{X} and {Y} are not local addresses here (Linux: all of 127/8 is)", allow_module_level=True)


def config(pki: PKISet, name: str, bind: str, **settings: object) -> Config:
    return pki.config(name, port=0, bind_v4=bind, bind_v6=None, **settings)


async def deliver(sender: Chirp, receiver: Chirp, message: Message) -> Message:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, message)
        with trio.fail_after(10):
            got = await receiver.receive()
        got.release()
    return got


async def test_tls_between_127_0_0_2_and_127_0_0_3_both_ways(pki: PKISet) -> None:
    seen_x, seen_y, seen_w = Seen(), Seen(), Seen()
    async with (
        open_chirp(config(pki, "alpha", X, verify_peer=seen_x)) as x,
        open_chirp(config(pki, "beta", Y, verify_peer=seen_y)) as y,
        open_chirp(config(pki, "gamma", X, verify_peer=seen_w)) as w,
    ):
        got = await deliver(x, y, Message(b"x to y", address=Y, port=y.port))
        assert (got.data, got.address, got.port) == (b"x to y", X, x.port)  # x dialled from its bind_v4
        back = await deliver(y, x, Message(b"reply", address=got.address, port=got.port))
        assert back.data == b"reply"
        got = await deliver(y, w, Message(b"y to w", address=X, port=w.port))  # now y dials
        assert (got.data, got.address) == (b"y to w", Y)
        for chirp in (x, y, w):
            assert chirp.statistics().errors == {}
    assert [(p.common_name, p.outgoing, p.version) for p in seen_x.peers] == [("beta", True, "TLSv1.3")]
    assert [(p.common_name, p.address, p.outgoing) for p in seen_y.peers] == [
        ("alpha", X, False),
        ("gamma", X, True),
    ]
    assert [(p.common_name, p.address, p.outgoing) for p in seen_w.peers] == [("beta", Y, False)]


async def test_127_0_0_1_stays_plaintext_and_unbound_with_certificates(pki: PKISet) -> None:
    seen_x, seen_y = Seen(), Seen()
    async with (
        open_chirp(config(pki, "alpha", X, verify_peer=seen_x)) as x,
        open_chirp(pki.config("beta", port=0, verify_peer=seen_y)) as y,  # listens on 0.0.0.0
    ):
        got = await deliver(x, y, Message(b"local", address="127.0.0.1", port=y.port))
        assert (got.data, got.address) == (b"local", "127.0.0.1")  # not bound to 127.0.0.2
        assert x.statistics().errors == y.statistics().errors == {}
    assert seen_x.peers == seen_y.peers == []  # no TLS handshake on either side


@pytest.mark.parametrize("name", ["stranger", "half_stranger", "expired"])
async def test_a_refused_certificate_fails_the_send_at_once_over_tcp(name: str, pki: PKISet) -> None:
    # half_stranger is refused by the server under TLS 1.3 after its own handshake completed:
    # the alert must be read before the kernel's reset could hide it.
    async with (
        open_chirp(config(pki, name, X, timeout=30)) as bad,
        open_chirp(config(pki, "beta", Y)) as y,
        open_chirp(config(pki, "gamma", X)) as good,
    ):
        with trio.fail_after(5), pytest.raises(TLSError, match="TLS handshake") as info:
            await bad.send(Message(b"no", address=Y, port=y.port))
        assert "certificate" in str(info.value)
        assert (await deliver(good, y, Message(b"yes", address=Y, port=y.port))).data == b"yes"
        assert y.statistics().errors == {"TLSError": 1}  # counted long before good's round trip


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "async"])
async def test_16_mib_messages_over_tls_both_ways(synchronous: bool, pki: PKISet) -> None:
    # Large frames are encrypted and sent in steps, on real sockets.
    import hashlib
    import os

    big = os.urandom(16 << 20)
    settings = {"max_msg_size": 32 << 20, "synchronous": synchronous, "timeout": 20}
    async with (
        open_chirp(config(pki, "alpha", X, **settings)) as x,
        open_chirp(config(pki, "beta", Y, **settings)) as y,
    ):
        got = await deliver(x, y, Message(big, address=Y, port=y.port))
        assert hashlib.sha256(got.data).digest() == hashlib.sha256(big).digest()
        back = await deliver(y, x, Message(big[::-1], address=X, port=x.port))
        assert back.data == big[::-1]
        assert x.statistics().errors == y.statistics().errors == {}
