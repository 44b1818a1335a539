"""The plaintext rule and the TLS preludes: which connections are encrypted, and how they start.

libchirp sends plaintext only between the address literals 127.0.0.1 and ::1, as each end
sees the other (docs/protocol.md, section 2.2, docs/tls.md); everything else is TLS. A node without
certificates can therefore neither dial nor accept a non-local peer, and says so in a
``TLSError`` that names the address and the fix. A node with certificates sniffs the first
bytes of every accepted stream (``_sniff.py``): a ClientHello starts TLS, plaintext is
admitted from the local literals only.

The preludes run inside the connection, before its reader and writer, under its handshake
timer (``_connection.py``).
"""

from __future__ import annotations

import ipaddress

import trio

from .._address import LOCAL_ADDRESSES, format_peer
from .._config import Config
from .._connection import Connection, Prelude
from .._errors import ConnectionLostError, TLSError
from .._sniff import client_hello_verdict
from .._tls import TLSLayer

__all__ = ["Encryption"]


class Encryption:
    """One node's plaintext rule and its TLS layer (None: no certificates configured)."""

    def __init__(self, config: Config, layer: TLSLayer | None) -> None:
        self._config = config
        self._layer = layer
        self.can_serve_tls = layer is not None

    def needs_tls(self, address: str) -> bool:
        """Whether a connection to or from ``address`` must be encrypted (as the peer sees it)."""
        return not self._config.disable_encryption and address not in LOCAL_ADDRESSES

    def missing_tls_error(self, address: str, *, source: bool = False) -> TLSError:
        """TLS is needed, no certificates are configured; ``source``: our own address is the non-local one."""
        if source:
            why = (
                f"the peer sees this node as {address}, which is not 127.0.0.1 or ::1, so chirp requires TLS"
            )
        elif ipaddress.ip_address(address).is_loopback:
            why = (
                f"{address} is a loopback address, but libchirp sends plaintext only to the literals"
                " 127.0.0.1 and ::1, so chirp requires TLS for it"
            )
        else:
            why = f"{address} is not 127.0.0.1 or ::1, so chirp requires TLS for it"
        return TLSError(
            f"{why}, but no certificates are configured: set Config.cert_chain_pem (see docs/tls.md),"
            " or disable_encryption=True"
        )

    def client_hello_refused(self, address: str) -> TLSError:
        if self._config.disable_encryption:
            why = "but this node has disable_encryption=True"
        else:
            why = "but this node has no certificates (Config.cert_chain_pem), so it cannot serve TLS"
        return TLSError(
            f"{address} sent a TLS ClientHello instead of a chirp handshake, {why} (libchirp encrypts"
            " whenever it dials an address other than 127.0.0.1 or ::1)"
        )

    # --- accepted connections -----------------------------------------------------------
    def accept_refusal(self, address: str) -> TLSError | None:
        """Why a connection from ``address`` cannot be served at all (it needs TLS we lack), or None."""
        if self._layer is None and self.needs_tls(address):
            return self.missing_tls_error(address)
        return None

    def accept_prelude(self) -> Prelude | None:
        """Sniffing and TLS for an accepted stream, when this node can serve TLS."""
        return None if self._layer is None else self._accept

    async def _accept(self, conn: Connection) -> tuple[trio.abc.Stream, bytes]:
        """Sniff the first bytes, then TLS, or plaintext from 127.0.0.1/::1 only.

        Our own handshake waits until the first bytes decided (it goes inside TLS if the
        peer speaks TLS), within the handshake timeout; meanwhile the connection counts as
        a handshake in progress.
        """
        assert self._layer is not None
        address = conn.peer_address
        conn.waiting_for = "its first bytes"
        hello, prefix = await self._sniff(conn.stream, address)
        if not hello:
            if address not in LOCAL_ADDRESSES:
                raise TLSError(
                    f"{address} sent plaintext, but it is not 127.0.0.1 or ::1, so chirp requires"
                    " TLS: is its encryption disabled?"
                )
            return conn.stream, prefix
        conn.waiting_for = "the TLS handshake"
        try:
            return await self._layer.server(conn.stream, prefix, address), b""
        except TLSError as exc:
            raise TLSError(f"connection from {address}: {exc}") from exc.__cause__

    async def _sniff(self, stream: trio.abc.Stream, address: str) -> tuple[bool, bytes]:
        """Read until the first bytes tell a TLS ClientHello from anything else (``_sniff.py``)."""
        data = b""
        while (verdict := client_hello_verdict(data)) is None:
            chunk = await stream.receive_some(self._config.effective_buffer_size)
            if not chunk:
                raise ConnectionLostError(f"{address} closed the connection before its handshake")
            data += chunk
        return verdict, data

    # --- dialled connections ------------------------------------------------------------
    def dial_prelude(self, address: str, port: int, source: str) -> Prelude | None:
        """TLS for a stream dialled to ``address`` from ``source``, or None for plaintext.

        Raises ``TLSError`` when TLS is needed and this node has no certificates.
        """
        if not (self.needs_tls(address) or self.needs_tls(source)):
            return None
        if self._layer is None:
            local = not self.needs_tls(address)
            why = self.missing_tls_error(source, source=True) if local else self.missing_tls_error(address)
            raise TLSError(f"cannot connect to {format_peer(address, port)}: {why}")
        return self._dial

    async def _dial(self, conn: Connection) -> tuple[trio.abc.Stream, bytes]:
        """TLS for a dialled connection, and its first read (see ``TLSLayer.client``)."""
        assert self._layer is not None
        assert conn.outgoing_remote is not None
        conn.waiting_for = "the TLS handshake"
        remote = conn.outgoing_remote
        return await self._layer.client(
            conn.stream, remote.address, remote.port, self._config.effective_buffer_size
        )
