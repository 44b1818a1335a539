"""Certificates for the TLS tests, made once per session with ``trio_chirp.pki`` (RSA keys).

``make_test_pki(directory)`` writes one chain file per case (certificate + CA
certificate(s) + key, libchirp's ``CERT_CHAIN_PEM`` layout):

* ``alpha``, ``beta``, ``gamma``: good nodes of CA 1;
* ``mallory``: also signed by CA 1 (a ``verify_peer`` callback refuses it by name);
* ``expired``: signed by CA 1, expired yesterday;
* ``stranger``: signed by CA 2, trusts CA 2 only (each side refuses the other);
* ``half_stranger``: signed by CA 2, trusts CA 1 and CA 2 (it admits CA 1's nodes; they refuse it).
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trio

from trio_chirp import Config, PeerCertificate, TLSContexts
from trio_chirp._tlsstream import TLSStream
from trio_chirp.pki import FFDHE2048_PEM, CertificateAuthority


@dataclass(frozen=True)
class PKISet:
    directory: Path
    chains: dict[str, Path]
    ca1: Path
    ca2: Path
    dh: Path = FFDHE2048_PEM

    def __getitem__(self, name: str) -> Path:
        return self.chains[name]

    def config(self, name: str, **settings: object) -> Config:
        return Config(cert_chain_pem=self.chains[name], **settings)  # type: ignore[arg-type]


def _key_of(chain: bytes) -> bytes:
    return chain[chain.index(b"-----BEGIN RSA PRIVATE KEY-----") :]


def _cert_of(chain: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----\n"
    return chain[: chain.index(end) + len(end)]


def make_test_pki(directory: Path) -> PKISet:
    ca1 = CertificateAuthority.create("test CA 1")
    ca2 = CertificateAuthority.create("test CA 2")
    now = datetime.datetime.now(datetime.UTC)
    chains = {
        "alpha": ca1.issue("alpha"),
        "beta": ca1.issue("beta"),
        "gamma": ca1.issue("gamma"),
        "mallory": ca1.issue("mallory"),
        "expired": ca1.issue(
            "expired",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "stranger": ca2.issue("stranger"),
    }
    half = ca2.issue("half_stranger")
    chains["half_stranger"] = _cert_of(half) + ca2.cert_pem + ca1.cert_pem + _key_of(half)
    paths = {}
    for name, pem in chains.items():
        path = directory / f"{name}.pem"
        path.write_bytes(pem)
        paths[name] = path
    (directory / "ca1.pem").write_bytes(ca1.cert_pem)
    (directory / "ca2.pem").write_bytes(ca2.cert_pem)
    return PKISet(directory, paths, directory / "ca1.pem", directory / "ca2.pem")


def without_client_certificate(chain: Path) -> TLSContexts:
    """libchirp's contexts, except that the client side presents no certificate."""
    good = TLSContexts.from_files(chain)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.load_verify_locations(cafile=chain)
    return TLSContexts(client=client, server=good.server)


def tls12_only(chain: Path) -> TLSContexts:
    """libchirp's contexts with TLS 1.2 as the highest version on both sides."""
    contexts = TLSContexts.from_files(chain)
    contexts.client.maximum_version = ssl.TLSVersion.TLSv1_2
    contexts.server.maximum_version = ssl.TLSVersion.TLSv1_2
    return contexts


@dataclass
class Seen:
    """A ``verify_peer`` callback that records what it saw and admits (or refuses) by name."""

    refuse: set[str] = field(default_factory=set)
    peers: list[PeerCertificate] = field(default_factory=list)

    def __call__(self, peer: PeerCertificate) -> bool:
        self.peers.append(peer)
        return peer.common_name not in self.refuse


__all__ = ["PKISet", "Seen", "make_test_pki", "tls12_only", "without_client_certificate"]


async def handshaken(
    pki: PKISet, client_raw: trio.abc.Stream, server_raw: trio.abc.Stream, server_name: str = "10.0.0.2"
) -> tuple[TLSStream, TLSStream]:
    """``client_raw`` and ``server_raw`` wrapped in ``_tlsstream.TLSStream``, handshake done."""
    contexts = TLSContexts.from_files(pki["alpha"])
    client = TLSStream(client_raw, contexts.client, server_side=False, server_hostname=server_name)
    server = TLSStream(server_raw, contexts.server, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server
