"""TLS with the real libchirp (PROTOCOL.md 2.2, 2.3): both directions, TLS 1.2, refusals, sniffing.

Our node listens on 127.0.0.3 and dials from it (``bind_v4``); libchirp listens on every
address and is dialled at 127.0.0.2, so both ends encrypt. libchirp does not bind its
outgoing connections: dialling our 127.0.0.3 it encrypts (the destination is not local)
from the source 127.0.0.1, which by the rule means plaintext to us; the first bytes
(a ClientHello) decide, and we serve TLS (the sniffing case of sharp edge 12).
Certificates: ``tls_helpers.make_test_pki`` (RSA, trio_chirp.pki); DH: the shipped ffdhe2048.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_helpers import sha
from peer_process import PeerProcess, open_peer
from tls_helpers import PKISet, Seen, tls12_only

import trio_chirp
from trio_chirp import Message, TLSError

pytestmark = pytest.mark.interop

OURS, THEIRS = "127.0.0.3", "127.0.0.2"
MODES = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])


def libchirp_tls(pki: PKISet, name: str = "beta", **config: Any) -> dict[str, Any]:
    return {
        "DISABLE_ENCRYPTION": False,
        "CERT_CHAIN_PEM": str(pki[name]),
        "DH_PARAMS_PEM": str(pki.dh),
        **config,
    }


@asynccontextmanager
async def our_node(
    pki: PKISet, seen: Seen, *, tls: trio_chirp.TLSContexts | None = None, **settings: Any
) -> AsyncIterator[trio_chirp.Chirp]:
    files = {} if tls is not None else {"cert_chain_pem": pki["alpha"]}
    config = trio_chirp.Config(port=0, bind_v4=OURS, bind_v6=None, verify_peer=seen, **files, **settings)
    async with trio_chirp.open_chirp(config, tls=tls) as chirp:
        yield chirp


async def receive_one(chirp: trio_chirp.Chirp) -> Message:
    with trio.fail_after(10):
        msg = await chirp.receive()
    msg.release()
    return msg


@MODES
async def test_trio_dials_libchirp_over_tls_and_gets_the_echo(
    reference_python: Path, pki: PKISet, sync: bool
) -> None:
    seen = Seen()
    async with (
        open_peer(reference_python, name="echo", **libchirp_tls(pki, ECHO=True, SYNCHRONOUS=sync)) as peer,
        our_node(pki, seen, synchronous=sync) as chirp,
    ):
        with trio.fail_after(10):
            await chirp.send(Message(b"over tls", address=THEIRS, port=peer.port))
        received = await peer.next_event("received")
        assert (received["address"], received["port"]) == (OURS, chirp.port)  # our source was bound
        assert received["data_sha256"] == sha(b"over tls")
        echo = await receive_one(chirp)
        assert (echo.data, echo.address, echo.port, echo.remote_identity) == (
            b"over tls",
            THEIRS,
            peer.port,
            peer.identity,
        )
        assert chirp.statistics().errors == {}
        # Our announcement went first inside TLS; libchirp took it, and is treated as libchirp.
        assert [r.trio_chirp_version for r in chirp.statistics().remotes] == [None]
    [server] = seen.peers  # libchirp answered on our connection: one handshake
    assert (server.common_name, server.outgoing, server.version) == ("beta", True, "TLSv1.3")


@MODES
async def test_libchirp_dials_our_127_0_0_3_encrypted_from_127_0_0_1_and_we_sniff_it(
    reference_python: Path, pki: PKISet, sync: bool
) -> None:
    seen = Seen()
    async with (
        our_node(pki, seen, synchronous=False) as chirp,
        open_peer(reference_python, name="sender", **libchirp_tls(pki, SYNCHRONOUS=sync)) as peer,
    ):
        send_id = await peer.send(OURS, chirp.port, data=b"sniffed")
        msg = await receive_one(chirp)
        assert (msg.data, msg.address, msg.port, msg.ack_requested) == (
            b"sniffed",
            "127.0.0.1",
            peer.port,
            sync,
        )
        outcome = await peer.wait_sent(send_id)
        assert outcome["ok"], outcome  # in sync mode our ACK went back inside TLS
        assert chirp.statistics().errors == {}
        assert [r.trio_chirp_version for r in chirp.statistics().remotes] == [None]
    [client] = seen.peers
    assert (client.common_name, client.address, client.outgoing, client.version) == (
        "beta",
        "127.0.0.1",
        False,
        "TLSv1.3",
    )


async def test_tls12_dialling_libchirp_negotiates_its_dhe_suite(reference_python: Path, pki: PKISet) -> None:
    seen = Seen()
    async with (
        our_node(pki, seen, tls=tls12_only(pki["alpha"]), synchronous=False) as chirp,
        open_peer(reference_python, name="tls12", **libchirp_tls(pki, SYNCHRONOUS=False)) as peer,
    ):
        with trio.fail_after(10):
            await chirp.send(Message(b"we dial", address=THEIRS, port=peer.port))
        assert (await peer.next_event("received"))["data_sha256"] == sha(b"we dial")
    [server] = seen.peers
    assert (server.outgoing, server.version, server.cipher) == (True, "TLSv1.2", "DHE-RSA-AES256-GCM-SHA384")


async def test_libchirp_client_under_tls12_gets_dhe_from_our_ffdhe2048(
    reference_python: Path, pki: PKISet
) -> None:
    seen = Seen()
    async with (
        our_node(pki, seen, tls=tls12_only(pki["alpha"]), synchronous=False) as chirp,
        open_peer(reference_python, name="tls12-client", **libchirp_tls(pki, SYNCHRONOUS=True)) as peer,
    ):
        send_id = await peer.send(OURS, chirp.port, data=b"dhe")
        assert (await receive_one(chirp)).data == b"dhe"
        assert (await peer.wait_sent(send_id))["ok"]
    [client] = seen.peers
    assert (client.outgoing, client.version, client.cipher) == (False, "TLSv1.2", "DHE-RSA-AES256-GCM-SHA384")


async def _failed(peer: PeerProcess, send_id: str) -> dict[str, Any]:
    outcome = await peer.wait_sent(send_id, timeout=20)
    assert not outcome["ok"], outcome
    return outcome


async def test_libchirp_with_another_cas_certificate_is_refused_while_a_good_peer_is_served(
    reference_python: Path, pki: PKISet
) -> None:
    seen = Seen()
    async with (
        our_node(pki, seen, synchronous=False) as chirp,
        open_peer(reference_python, name="stranger", **libchirp_tls(pki, "stranger", TIMEOUT=2.0)) as bad,
        open_peer(reference_python, name="good", **libchirp_tls(pki, "gamma")) as good,
    ):
        bad_id = await bad.send(OURS, chirp.port, data=b"from the stranger")
        good_id = await good.send(OURS, chirp.port, data=b"from the good peer")
        msg = await receive_one(chirp)
        assert (msg.data, msg.port) == (b"from the good peer", good.port)
        assert (await good.wait_sent(good_id))["ok"]
        await _failed(bad, bad_id)
        errors = chirp.statistics().errors
        assert set(errors) == {"TLSError"}  # libchirp may have tried more than once
        # And the other way: dialling the stranger fails at once with the reason.
        with trio.fail_after(5), pytest.raises(TLSError, match=r"\(unknown CA\)"):
            await chirp.send(Message(b"x", address=THEIRS, port=bad.port), synchronous=True)
    assert [p.common_name for p in seen.peers] == ["gamma"]


async def test_libchirp_refuses_our_certificate_and_the_send_says_why(
    reference_python: Path, pki: PKISet
) -> None:
    # libchirp (beta) trusts only CA 1; our half_stranger (signed by CA 2) trusts both, so our
    # handshake completes and libchirp's refusal of our certificate comes at our first read.
    config = trio_chirp.Config(port=0, bind_v4=OURS, bind_v6=None, cert_chain_pem=pki["half_stranger"])
    async with (
        trio_chirp.open_chirp(config) as chirp,
        open_peer(reference_python, **libchirp_tls(pki)) as peer,
    ):
        with trio.fail_after(5), pytest.raises(TLSError) as info:
            await chirp.send(Message(b"x", address=THEIRS, port=peer.port))
    text = str(info.value)
    assert (
        "refused after the TLS handshake: the peer refused our certificate: it does not trust the CA" in text
    )


async def test_libchirp_with_encryption_on_is_plaintext_on_127_0_0_1(
    reference_python: Path, pki: PKISet
) -> None:
    seen = Seen()
    config = trio_chirp.Config(port=0, cert_chain_pem=pki["alpha"], verify_peer=seen, synchronous=False)
    async with (
        trio_chirp.open_chirp(config) as chirp,
        open_peer(reference_python, name="local", **libchirp_tls(pki, ECHO=True)) as peer,
    ):
        send_id = await peer.send("127.0.0.1", chirp.port, data=b"plain")
        assert (await receive_one(chirp)).data == b"plain"
        assert (await peer.wait_sent(send_id))["ok"]
        with trio.fail_after(10):
            await chirp.send(Message(b"plain back", address="127.0.0.1", port=peer.port))
        assert (await receive_one(chirp)).data == b"plain back"  # the echo
    assert seen.peers == []
