"""Test helpers: an in-memory network so whole networks of nodes run in one process.

    net = MemoryNetwork()
    a, b = net.host("10.0.0.1"), net.host("fd00::2")  # Transports: give one to each node
    net.set_latency("10.0.0.1", "fd00::2", 0.05)
    net.crash("fd00::2")

Deterministic under ``trio.testing.MockClock(autojump_threshold=0)``; see ``MemoryNetwork``.
``open_nodes`` opens a set of nodes on such a network in one call (docs/testing.md):

    async with open_nodes({"10.0.0.1": Config(), "10.0.0.2": Config(synchronous=False)}) as nodes:
        await nodes["10.0.0.1"].send(nodes.message(b"hi", to="10.0.0.2"))
"""

from ._network import MemoryNetwork as MemoryNetwork
from ._network import MemoryTransport as MemoryTransport
from ._nodes import MemoryNodes as MemoryNodes
from ._nodes import open_nodes as open_nodes
from ._stream import MemoryStream as MemoryStream
from ._stream import StreamStats as StreamStats

__all__ = ["MemoryNetwork", "MemoryNodes", "MemoryStream", "MemoryTransport", "StreamStats", "open_nodes"]

from .. import _fix_module_names

_fix_module_names(globals(), __name__)
del _fix_module_names
