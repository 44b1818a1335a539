"""A small PKI for chirp nodes: a CA and node certificates (``trio-chirp make-pki``).

Every node needs one PEM file holding its certificate, the CA certificate and its private
key (libchirp's ``CERT_CHAIN_PEM``; ``Config.cert_chain_pem``), and PEM DH parameters for
TLS 1.2 (``DH_PARAMS_PEM``; the shipped RFC 7919 ffdhe2048, see ``_dhparams.py``). Keys
are RSA: under TLS 1.2 libchirp offers only DHE-RSA and DHE-DSS suites, so an ECDSA key
finds no cipher in common with it.

Needs the ``cryptography`` package (``pip install 'trio-chirp[pki]'``); the rest of
trio_chirp never imports this module. The public names are in ``trio_chirp.pki``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as exc:  # pragma: no cover - the pki extra is installed with the tests
    raise ImportError(
        "making certificates needs the 'cryptography' package: pip install 'trio-chirp[pki]'"
    ) from exc

from ._dhparams import FFDHE2048_PEM

if TYPE_CHECKING:
    from ._config import StrPath

__all__ = ["CertificateAuthority", "PKIFiles", "make_pki"]

KEY_SIZE: Final = 2048
CA_DAYS: Final = 3650
NODE_DAYS: Final = 825


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=not sign_certs,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


@final
@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that signs node certificates; ``cert_pem`` is what every node trusts."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def create(
        cls, common_name: str = "trio_chirp CA", *, days: int = CA_DAYS, key_size: int = KEY_SIZE
    ) -> CertificateAuthority:
        """A fresh self-signed CA with an RSA key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign_certs=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    @classmethod
    def load(cls, cert_path: StrPath, key_path: StrPath) -> CertificateAuthority:
        """A CA from its certificate and key files (``ca.pem``, ``ca.key`` of ``make_pki``)."""
        return cls(Path(cert_path).read_bytes(), Path(key_path).read_bytes())

    def issue(
        self,
        common_name: str,
        *,
        days: int = NODE_DAYS,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        ip_addresses: Iterable[str] = (),
        key_size: int = KEY_SIZE,
    ) -> bytes:
        """A node's ``cert_chain_pem`` content: its certificate, this CA's, and its RSA key.

        The certificate is good for both TLS roles (a node dials and accepts). The
        ``common_name`` is also a DNS name of the certificate; ``ip_addresses`` are added
        as IP names (chirp checks neither, see docs/tls.md, but other tools may).
        ``not_before``/``not_after`` (timezone-aware) override the validity, e.g. for tests.
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, rsa.RSAPrivateKey):
            raise ValueError("the CA key is not an RSA key")
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        now = _now()
        start = not_before or now - datetime.timedelta(hours=1)
        end = not_after or now + datetime.timedelta(days=days)
        names: list[x509.GeneralName] = [x509.DNSName(common_name)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # a node is both
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign_certs=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem + _key_pem(key)


# --- a directory of files --------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class PKIFiles:
    """What ``make_pki`` wrote (or reused)."""

    ca_cert: Path
    """The CA certificate (trusted by every node; already inside every node file)."""
    ca_key: Path
    """The CA's private key: needed only to issue more node certificates. Keep it off the nodes."""
    dh_params: Path
    """RFC 7919 ffdhe2048: ``Config.dh_params_pem`` / libchirp's ``DH_PARAMS_PEM``."""
    nodes: dict[str, Path]
    """Node name -> its ``Config.cert_chain_pem`` / libchirp's ``CERT_CHAIN_PEM`` file."""


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("ca"):
        raise ValueError(f"node name {name!r} must be a plain file name not starting with 'ca'")


def make_pki(
    directory: StrPath,
    nodes: Sequence[str] = ("node",),
    *,
    days: int = NODE_DAYS,
    ip_addresses: Iterable[str] = (),
) -> PKIFiles:
    """Create (or extend) a PKI in ``directory``: ``ca.pem``, ``ca.key``, ``dh.pem``, ``<node>.pem``.

    An existing ``ca.pem``/``ca.key`` pair is reused, so running it again with new node
    names adds nodes signed by the same CA. An existing node file is never overwritten
    (``FileExistsError``). Files with private keys are created with mode 0600.
    """
    for name in nodes:
        _check_name(name)
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"node names repeat: {list(nodes)}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, dh = root / "ca.pem", root / "ca.key", root / "dh.pem"
    node_paths = {name: root / f"{name}.pem" for name in nodes}
    for path in node_paths.values():
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another node name or remove it")
    if ca_cert.exists() != ca_key.exists():
        raise FileExistsError(f"only one of {ca_cert} and {ca_key} exists; both or neither are needed")
    if ca_cert.exists():
        ca = CertificateAuthority.load(ca_cert, ca_key)
    else:
        ca = CertificateAuthority.create()
        _write_private(ca_key, ca.key_pem)
        ca_cert.write_bytes(ca.cert_pem)
    if not dh.exists():
        dh.write_bytes(FFDHE2048_PEM.read_bytes())
    ips = list(ip_addresses)
    for name, path in node_paths.items():
        _write_private(path, ca.issue(name, days=days, ip_addresses=ips))
    return PKIFiles(ca_cert=ca_cert, ca_key=ca_key, dh_params=dh, nodes=node_paths)
