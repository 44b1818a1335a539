"""trio_chirp: message passing for Trio apps, wire-compatible with libchirp 1.2.1."""

import logging as _logging

from ._config import Config as Config
from ._errors import CannotConnectError as CannotConnectError
from ._errors import ChirpError as ChirpError
from ._errors import ChirpTimeoutError as ChirpTimeoutError
from ._errors import ConnectionLostError as ConnectionLostError
from ._errors import MessageInUseError as MessageInUseError
from ._errors import MessageTooLargeError as MessageTooLargeError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import ShutdownError as ShutdownError
from ._errors import TLSError as TLSError
from ._message import Message as Message

__version__ = "0.2.0"
from ._node import Chirp as Chirp
from ._node import open_chirp as open_chirp
from ._node import serve_chirp as serve_chirp
from ._peercert import PeerCertificate as PeerCertificate
from ._router import Route as Route
from ._router import Router as Router
from ._router import RouterStats as RouterStats
from ._stats import NodeStats as NodeStats
from ._stats import RemoteStats as RemoteStats
from ._tls import TLSContexts as TLSContexts
from ._transport import Transport as Transport
from ._workers import Handler as Handler
from ._workers import Workers as Workers
from ._workers import WorkerStats as WorkerStats


def _fix_module_names(namespace: dict[str, object], public: str) -> None:
    """Show public classes and functions as ``trio_chirp.X`` in tracebacks and reprs, as Trio does."""
    for value in list(namespace.values()):
        module = getattr(value, "__module__", None)
        public_kind = isinstance(value, type) or callable(value)
        if public_kind and isinstance(module, str) and module.startswith(f"{public}._"):
            value.__module__ = public


_fix_module_names(globals(), __name__)

# A library adds no output of its own (the logging HOWTO): without the application's own
# logging configuration, our warnings are not printed through Python's last resort.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
