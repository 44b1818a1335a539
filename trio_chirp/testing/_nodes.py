"""``open_nodes``: a set of chirp nodes on one ``MemoryNetwork``, opened in one call.

An application's tests want several nodes that talk to each other, with faults to inject
and exact virtual times. Wiring that by hand means a ``MemoryNetwork``, one ``open_chirp``
per node with its host as the transport, ``disable_encryption`` (the hosts' addresses are
not ``127.0.0.1``, so chirp would demand TLS), and a seeded ``random.Random`` per node so
that debounce and GC jitter repeat from run to run. This module does that once.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import combinations

import trio

from .._config import Config
from .._message import Message
from .._node import Chirp, open_chirp
from ._network import MemoryNetwork

__all__ = ["MemoryNodes", "open_nodes"]


def _prepared(config: Config | None) -> Config:
    """The node's config: plaintext between memory hosts unless it brings certificates."""
    config = config or Config()
    if config.cert_chain_pem is None and not config.disable_encryption:
        config = dataclasses.replace(config, disable_encryption=True)
    return config


class MemoryNodes:
    """The nodes ``open_nodes`` started, by IP address, and the network they share.

    ``nodes["10.0.0.1"]`` is that host's ``Chirp``; ``nodes.network`` is the
    ``MemoryNetwork`` for faults (``set_latency``, ``cut``, ``partition``, ``black_hole``,
    ``refuse``). ``crash`` and ``start`` stop and (re)start one node while the others run.
    """

    def __init__(self, network: MemoryNetwork, stack: AsyncExitStack, seed: int) -> None:
        self._network = network
        self._stack = stack
        self._seed = seed
        self._nodes: dict[str, Chirp] = {}
        self._running: set[str] = set()
        self._starts = 0

    @property
    def network(self) -> MemoryNetwork:
        """The ``MemoryNetwork`` all nodes are hosts of."""
        return self._network

    def __getitem__(self, address: str) -> Chirp:
        return self._nodes[self._network.host(address).address]

    def __iter__(self) -> Iterator[str]:
        """The nodes' addresses, in the order they were started."""
        return iter(list(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def message(
        self, data: bytes, to: str, *, header: bytes = b"", destination: tuple[str, int] | None = None
    ) -> Message:
        """A ``Message`` addressed to the node at ``to`` (its IP and announced port).

        Saves looking up the port of a node started with ``Config(port=0)``;
        ``destination`` names a final hop for a ``Router`` at ``to``.
        """
        port = self[to].port
        return Message(
            data, header=header, address=self._network.host(to).address, port=port, destination=destination
        )

    async def start(self, address: str, config: Config | None = None) -> Chirp:
        """Start a node on host ``address`` (one that is not running), e.g. after ``crash``.

        A restarted node has a fresh identity (unless its config names one), like a
        restarted process; its peers reconnect to it when they next send.
        """
        ip = self._network.host(address).address
        if ip in self._running:
            raise ValueError(f"a node is already running on {ip}")
        rng = random.Random(f"{self._seed}:{ip}:{self._starts}")
        self._starts += 1
        chirp = await self._stack.enter_async_context(
            open_chirp(_prepared(config), transport=self._network.host(ip), rng=rng)
        )
        self._nodes[ip] = chirp
        self._running.add(ip)
        return chirp

    async def crash(self, address: str) -> None:
        """The node's process dies: its connections reset, its port closes, the node stops.

        Peers see what they would see of a killed process (``MemoryNetwork.crash``); the
        node itself closes at once, without the graceful wait for ACKs, so sends still
        waiting in it fail with ``ShutdownError``.
        """
        chirp = self[address]
        self._running.discard(self._network.host(address).address)
        self._network.crash(address)
        with trio.CancelScope() as scope:
            scope.cancel()  # a cancelled aclose() is the immediate close
            await chirp.aclose()


@asynccontextmanager
async def open_nodes(
    configs: Mapping[str, Config | None],
    *,
    latency: float = 0.0,
    network: MemoryNetwork | None = None,
    seed: int = 0,
) -> AsyncIterator[MemoryNodes]:
    """Run one node per ``{ip: Config}`` entry on a ``MemoryNetwork`` for the ``async with`` block.

    * ``Config(...)`` or None (the defaults: port 2998, synchronous) per IP address; a
      config without ``cert_chain_pem`` gets ``disable_encryption=True``, because memory
      hosts are not ``127.0.0.1`` and chirp would otherwise require TLS between them.
    * ``latency``: the one-way delay between every two of these hosts
      (``MemoryNetwork.set_latency``; change it per pair on ``nodes.network``).
    * ``network``: an existing ``MemoryNetwork`` (e.g. one with a smaller ``window``, or
      with hosts of a test's own); by default a new one.
    * ``seed``: each node's ``random.Random`` is seeded from it and the node's address, so
      debounce and GC jitter, and so every virtual time, repeat exactly between runs.

    Run it under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
    ``autojump_clock`` fixture) and every timeout and latency is virtual and instant.
    Leaving the block closes the nodes as ``open_chirp`` does: gracefully on a normal
    exit, at once on an exception, which comes out unchanged.
    """
    network = MemoryNetwork() if network is None else network
    for a, b in combinations([network.host(ip).address for ip in configs], 2):
        network.set_latency(a, b, latency)
    async with AsyncExitStack() as stack:
        nodes = MemoryNodes(network, stack, seed)
        for ip, config in configs.items():
            await nodes.start(ip, config)
        yield nodes
