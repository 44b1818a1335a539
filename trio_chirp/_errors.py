"""The exception hierarchy: one root so applications can catch everything chirp raises.

The classes also derive from the builtin a careful caller would already catch
(``TimeoutError``, ``ConnectionError``), so generic networking code keeps working.
A chirp timeout is deliberately *not* a ``trio.TooSlowError``: the caller's own
deadline and the node's ``config.timeout`` must stay distinguishable.

This module has no dependencies, so the sans-IO protocol layer can raise these too.
"""

from __future__ import annotations

__all__ = [
    "CannotConnectError",
    "ChirpError",
    "ChirpTimeoutError",
    "ConnectionLostError",
    "MessageInUseError",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteError",
    "ShutdownError",
    "TLSError",
]


class ChirpError(Exception):
    """Root of every error trio_chirp raises on purpose."""


class ProtocolError(ChirpError):
    """The peer sent bytes that break the wire protocol; its connection is closed."""


class MessageTooLargeError(ProtocolError):
    """A frame announced ``header_len + data_len`` above ``max_msg_size``.

    Raised by the parser before any payload byte is buffered, so a hostile length
    costs no memory. libchirp reports this case as ``CH_ENOMEM``.
    """


class ChirpTimeoutError(ChirpError, TimeoutError):
    """``config.timeout`` (or the connect timer) expired inside chirp.

    The caller's own ``trio.fail_after`` raises ``trio.TooSlowError`` instead and
    never this class.
    """


class CannotConnectError(ChirpError, ConnectionError):
    """No connection to the remote could be opened (refused, unreachable, reset)."""


class ConnectionLostError(ChirpError, ConnectionError):
    """The connection carrying a message broke before the message completed."""


class TLSError(ChirpError):
    """TLS could not be set up or failed on a connection (or is required but unconfigured)."""


class ShutdownError(ChirpError):
    """The node (or the remote, on garbage collection) is closing; the message was not sent."""


class MessageInUseError(ChirpError, RuntimeError):
    """The same ``Message`` object is already being sent; libchirp's ``CH_USED``."""


class RemoteError(ChirpError):
    """A trio_chirp hop downstream reported that it could not deliver or handle the message.

    Raised at once by the ``send()`` or ``request()`` it answers (an *error response*,
    docs/requests.md), instead of a timeout. ``hop`` names the node that failed
    (``"address:port"`` or a description), ``kind`` the class of its failure (e.g.
    ``"ChirpTimeoutError"``, ``"ValueError"`` for a handler that raised), ``text`` its
    message. libchirp peers never send one.
    """

    def __init__(self, message: str, *, hop: str = "", kind: str = "", text: str = "") -> None:
        super().__init__(message)
        self.hop = hop
        self.kind = kind
        self.text = text

    def __reduce__(self) -> tuple[object, ...]:
        return (_remote_error, (str(self), self.hop, self.kind, self.text))


def _remote_error(message: str, hop: str, kind: str, text: str) -> RemoteError:
    return RemoteError(message, hop=hop, kind=kind, text=text)
