"""What ``Config.verify_peer`` is shown of a TLS peer: a plain value, so that ``_config``
can name it without importing the TLS machinery (which itself reads a ``Config``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, final

__all__ = ["PeerCertificate", "VerifyPeer"]


@final
@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The peer of a TLS connection, after its certificate passed the chain check.

    Given to ``Config.verify_peer``, which returns True to admit the peer.
    """

    address: str
    """The peer's IP address."""
    port: int | None
    """The port dialled (outgoing); None for an accepted connection (the peer's chirp
    handshake, which announces its port, has not arrived yet)."""
    outgoing: bool
    """True when this node dialled (it is the TLS client)."""
    der: bytes | None
    """The peer's certificate, DER-encoded (None if a custom context did not ask for one)."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """``ssl.SSLObject.getpeercert()``: subject, issuer, notBefore, notAfter, subjectAltName..."""
    version: str | None = None
    """The negotiated TLS version, e.g. ``"TLSv1.3"``."""
    cipher: str | None = None
    """The negotiated cipher suite, e.g. ``"TLS_AES_256_GCM_SHA384"``."""

    @property
    def common_name(self) -> str | None:
        """The subject's commonName, if it has one."""
        for rdn in self.info.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None


VerifyPeer = Callable[[PeerCertificate], bool]
