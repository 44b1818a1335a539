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
