"""TLS as libchirp speaks it (docs/protocol.md, section 2.3): contexts, the handshakes, and their failures.

* ``TLSContexts`` is the client/server ``ssl.SSLContext`` pair of a node, built from
  libchirp's two files (``from_files``) or handed in ready-made (``open_chirp(tls=...)``).
* ``TLSLayer`` runs a node's handshakes: explicitly, at connect/accept time, inside the
  caller's deadline; it asks ``Config.verify_peer`` about the peer's certificate and turns
  every TLS failure into a ``TLSError`` that names the reason.
* Handshake CPU work (RSA signatures, DHE) runs on Trio's one thread. A node's handshakes
  take turns (``_tlsstream.HandshakeTurns``): one computing step at a time, never holding
  the turn while waiting for the network, and while handshakes queue they get at most half
  of the thread, so a flood of handshakes cannot stall established peers, and a peer that
  stalls in its handshake holds nothing.
* The stream itself is ``_tlsstream.TLSStream``.

There is no hostname check, as in libchirp: any certificate signed by a CA in the trust
anchors is admitted (docs/tls.md); ``Config.verify_peer`` may refuse more.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import trio

from ._address import format_peer
from ._dhparams import FFDHE2048_PEM
from ._errors import TLSError
from ._peercert import PeerCertificate, VerifyPeer
from ._tlsstream import HandshakeTurns, TLSStream

if TYPE_CHECKING:
    from ._config import Config, StrPath

__all__ = [
    "DHE_CIPHERS",
    "PeerCertificate",
    "TLSContexts",
    "TLSLayer",
    "contexts_for",
    "describe_tls_failure",
    "ssl_cause",
]

DHE_CIPHERS: Final = (
    "-ALL:DHE-DSS-AES256-GCM-SHA384:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES256-SHA256:DHE-DSS-AES256-SHA256:"
)
"""libchirp's cipher list for TLS 1.2 and below (TLS 1.3 suites are OpenSSL's defaults)."""


# --- contexts ------------------------------------------------------------------------------


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; chirp (like libchirp) needs an unencrypted key")


def _check_file(label: str, path: StrPath) -> str:
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ValueError(f"{label}={text!r} does not name an existing file")
    try:
        with open(text, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ValueError(f"{label}={text!r} cannot be read: {exc.strerror or exc}") from None
    return text


def _load(prefix: str, cert_chain_pem: StrPath, dh_params_pem: StrPath | None) -> TLSContexts:
    chain = _check_file(f"{prefix}cert_chain_pem", cert_chain_pem)
    dh_label = f"{prefix}dh_params_pem"
    dh = str(FFDHE2048_PEM) if dh_params_pem is None else _check_file(dh_label, dh_params_pem)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client.check_hostname = False  # libchirp checks no name: see docs/tls.md
    server.num_tickets = 0  # nobody resumes sessions; save the work
    for context in (client, server):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.options |= ssl.OP_NO_COMPRESSION
        context.set_ciphers(DHE_CIPHERS)
        try:
            context.load_verify_locations(cafile=chain)
        except ssl.SSLError as exc:
            raise ValueError(
                f"{prefix}cert_chain_pem={chain!r} holds no usable CA certificate: {exc.reason or exc}"
            ) from None
        try:
            context.load_cert_chain(chain, password=_no_password)
        except ssl.SSLError as exc:
            raise ValueError(
                f"{prefix}cert_chain_pem={chain!r} is not a PEM certificate chain with its private key"
                f" (leaf certificate, then CA certificate(s), then the leaf's key): {exc.reason or exc}"
            ) from None
        except ValueError as exc:
            raise ValueError(f"{prefix}cert_chain_pem={chain!r}: {exc}") from None
    try:
        server.load_dh_params(dh)
    except ssl.SSLError as exc:
        raise ValueError(f"{dh_label}={dh!r} holds no PEM DH PARAMETERS: {exc.reason or exc}") from None
    return TLSContexts(client=client, server=server)


@final
@dataclass(frozen=True, slots=True, eq=False)
class TLSContexts:
    """A node's TLS contexts: ``client`` for connections it dials, ``server`` for accepted ones.

    ``from_files`` builds libchirp's parameters; a ready pair may be given to
    ``open_chirp(tls=...)`` instead of the certificate files (e.g. one built by
    ``from_files`` and then adjusted). The node never changes them; connections it dials
    pass the dialled IP as ``server_hostname``, so a client context with
    ``check_hostname=True`` checks it against the certificate's IP addresses.
    """

    client: ssl.SSLContext
    server: ssl.SSLContext

    def __post_init__(self) -> None:
        for name in ("client", "server"):
            if not isinstance(getattr(self, name), ssl.SSLContext):
                raise TypeError(f"TLSContexts.{name} must be an ssl.SSLContext")
        if self.client.protocol == ssl.PROTOCOL_TLS_SERVER:
            raise ValueError("TLSContexts.client is a server context (PROTOCOL_TLS_SERVER)")
        if self.server.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError("TLSContexts.server is a client context (PROTOCOL_TLS_CLIENT)")

    @classmethod
    def from_files(cls, cert_chain_pem: StrPath, dh_params_pem: StrPath | None = None) -> TLSContexts:
        """libchirp's contexts (docs/protocol.md, section 2.3) from its two files.

        ``cert_chain_pem``: one PEM file with the node's certificate, the CA certificate(s)
        (every certificate in it is a trust anchor) and the node's unencrypted private key.
        ``dh_params_pem``: PEM DH parameters for TLS 1.2's DHE suites; None uses the shipped
        RFC 7919 ffdhe2048 (``FFDHE2048_PEM``). Both ends require a certificate; TLS 1.2 or
        later; no hostname check. Raises ``ValueError`` naming the file and what is wrong.
        """
        return _load("", cert_chain_pem, dh_params_pem)


def contexts_for(config: Config, tls: TLSContexts | None) -> TLSContexts | None:
    """The node's contexts: ``tls=``, or built from the Config's files, or None (no certificates).

    Raises ``ValueError`` naming the field and the path when a configured file is missing,
    unreadable or unusable, and when ``tls=`` and files are both given.
    """
    files = config.cert_chain_pem is not None or config.dh_params_pem is not None
    if tls is not None:
        if not isinstance(tls, TLSContexts):
            raise TypeError(f"tls= must be a trio_chirp.TLSContexts, got {type(tls).__name__}")
        if files:
            raise ValueError("give either tls= or Config.cert_chain_pem/dh_params_pem, not both")
        if config.disable_encryption:
            raise ValueError("tls= was given but Config.disable_encryption=True never uses it")
        return tls
    if config.disable_encryption:
        return None
    if config.cert_chain_pem is None:
        if config.dh_params_pem is not None:
            raise ValueError(
                f"Config.dh_params_pem={os.fspath(config.dh_params_pem)!r} is set but"
                " Config.cert_chain_pem is None: TLS needs the certificate chain"
            )
        return None
    return _load("Config.", config.cert_chain_pem, config.dh_params_pem)


# --- failures ------------------------------------------------------------------------------

_NOT_TLS = "the peer does not speak TLS on this connection (it sent something else, e.g. plaintext chirp)"
_REASONS: Final = {
    "TLSV1_ALERT_UNKNOWN_CA": "the peer refused our certificate: it does not trust the CA that signed it",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: it has expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate (certificate unknown)",
    "TLSV1_ALERT_DECRYPT_ERROR": "the peer could not verify our handshake signature",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "the peer sent no client certificate (chirp requires one from both ends)"
    ),
    "NO_SHARED_CIPHER": (
        "no cipher suite in common (under TLS 1.2 libchirp offers only DHE suites, which need RSA keys)"
    ),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer aborted the handshake (no cipher suite or version in common?)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (chirp needs TLS 1.2 or later)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (chirp needs TLS 1.2 or later)",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common (chirp needs TLS 1.2 or later)",
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "HTTP_REQUEST": _NOT_TLS,
    "UNKNOWN_PROTOCOL": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
}
_VERIFY_CODES: Final = {
    2: "the peer's certificate is not signed by a CA in our trust anchors (unknown CA)",
    20: "the peer's certificate is not signed by a CA in our trust anchors (unknown CA)",
    21: "the peer's certificate is not signed by a CA in our trust anchors (unknown CA)",
    18: "the peer's certificate is self-signed and not one of our trust anchors",
    19: "the peer's certificate chain ends in a CA that is not one of our trust anchors (unknown CA)",
    10: "the peer's certificate has expired",
    9: "the peer's certificate is not valid yet",
}
_EOF = (
    "the peer closed the connection during the TLS handshake: it may be at its limit of"
    " connections or handshakes, or expect plaintext (libchirp sends plaintext to and from"
    " exactly 127.0.0.1 and ::1, see docs/tls.md)"
)


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc`` (itself, or the cause of trio's ``BrokenResourceError``)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 4:
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__
        seen += 1
    return None


def describe_tls_failure(error: ssl.SSLError) -> str:
    """A human reason for a TLS failure, with OpenSSL's own code in brackets."""
    if isinstance(error, ssl.SSLEOFError | ssl.SSLSyscallError | ssl.SSLZeroReturnError):
        return _EOF
    reason = error.reason or type(error).__name__
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        text = _VERIFY_CODES.get(code, "the peer's certificate failed verification")
        return f"{text} [{reason}: {error.verify_message}]"
    return f"{_REASONS.get(reason, 'TLS failure')} [{reason}]"


# --- handshakes ----------------------------------------------------------------------------

HANDSHAKE_TURNS: Final = True
"""Whether a node's handshakes compute in turns (``bench/bench_tls_flood.py --no-turns`` flips it)."""

HANDSHAKE_SHARE: Final = 0.5
"""Of Trio's one thread, what handshakes may take while they queue (``HandshakeTurns``)."""


class TLSLayer:
    """A node's TLS: its contexts, its peer check, and the turns its handshakes take."""

    def __init__(self, contexts: TLSContexts, verify_peer: VerifyPeer | None) -> None:
        self.contexts = contexts
        self._verify_peer = verify_peer
        self._turns = HandshakeTurns(HANDSHAKE_SHARE) if HANDSHAKE_TURNS else None

    async def client(
        self, stream: trio.abc.Stream, address: str, port: int, bufsize: int
    ) -> tuple[trio.abc.Stream, bytes]:
        """TLS over a dialled stream; returns it and the first bytes the peer sent inside it.

        Under TLS 1.3 the server checks our certificate after our side of the handshake is
        done, so a refusal shows only at our first read: we read once here, before the
        connection writes anything, so it is reported like any other handshake failure.
        Raises ``TLSError`` (with the reason) for TLS failures, the transport's error
        otherwise. The caller closes ``stream`` on failure.
        """
        tls = TLSStream(stream, self.contexts.client, server_side=False, server_hostname=address)
        await self._handshake(tls)
        self._check_peer(tls, address, port, outgoing=True)
        try:
            first = await tls.receive_some(bufsize)
        except trio.BrokenResourceError as exc:
            cause = ssl_cause(exc)
            if cause is None:
                raise
            raise TLSError(f"refused after the TLS handshake: {describe_tls_failure(cause)}") from cause
        if not first:
            raise TLSError(
                "the peer closed the connection right after the TLS handshake, before its chirp"
                " handshake: it most likely refused our certificate"
            )
        return tls, bytes(first)

    async def server(self, stream: trio.abc.Stream, received: bytes, address: str) -> trio.abc.Stream:
        """TLS over an accepted stream whose first bytes (``received``) were already read."""
        tls = TLSStream(stream, self.contexts.server, server_side=True, received=received)
        await self._handshake(tls)
        self._check_peer(tls, address, None, outgoing=False)
        return tls

    async def _handshake(self, tls: TLSStream) -> None:
        try:
            await tls.do_handshake(self._turns)
        except trio.BrokenResourceError as exc:
            cause = ssl_cause(exc)
            if cause is None:
                raise
            raise TLSError(f"TLS handshake failed: {describe_tls_failure(cause)}") from cause

    def _check_peer(self, tls: TLSStream, address: str, port: int | None, *, outgoing: bool) -> None:
        verify = self._verify_peer
        if verify is None:
            return
        cipher = tls.cipher()
        peer = PeerCertificate(
            address=address,
            port=port,
            outgoing=outgoing,
            der=tls.getpeercert(binary_form=True),
            info=tls.getpeercert() or {},
            version=tls.version(),
            cipher=None if cipher is None else cipher[0],
        )
        where = address if port is None else format_peer(address, port)
        try:
            admitted = verify(peer)
        except Exception as exc:
            raise TLSError(f"Config.verify_peer refused {where}: it raised {exc!r}") from exc
        if admitted is not True:
            name = peer.common_name
            raise TLSError(
                f"Config.verify_peer refused {where} (certificate {name!r})"
                if name
                else f"Config.verify_peer refused {where}"
            )
