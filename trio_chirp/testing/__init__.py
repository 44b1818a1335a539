"""Test helpers: an in-memory network so whole networks of nodes run in one process.

    net = MemoryNetwork()
    a, b = net.host("10.0.0.1"), net.host("fd00::2")  # Transports: give one to each node
    net.set_latency("10.0.0.1", "fd00::2", 0.05)
    net.crash("fd00::2")

Deterministic under ``trio.testing.MockClock(autojump_threshold=0)``; see ``MemoryNetwork``.
"""

from ._network import MemoryNetwork as MemoryNetwork
from ._network import MemoryTransport as MemoryTransport
from ._stream import MemoryStream as MemoryStream
from ._stream import StreamStats as StreamStats

__all__ = ["MemoryNetwork", "MemoryStream", "MemoryTransport", "StreamStats"]

from .. import _fix_module_names

_fix_module_names(globals(), __name__)
del _fix_module_names
