"""The connection limit: one address cannot lock others out; refusals and fd exhaustion counted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing
from memnet_helpers import PORT, A, B, C, node, to

from trio_chirp import CannotConnectError
from trio_chirp._protocol import encode_handshake
from trio_chirp.testing import MemoryNetwork, MemoryStream

ROOT = Path(__file__).resolve().parents[1]


async def _raw(net: MemoryNetwork, source: str, *, handshake: bool = True) -> MemoryStream:
    stream, _ = await net.host(source).connect(A, PORT)
    assert isinstance(stream, MemoryStream)
    if handshake:
        await stream.send_all(encode_handshake(PORT, source.encode().ljust(16, b"-")))
    return stream


async def test_one_address_holding_the_limit_does_not_lock_out_a_fresh_peer(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False, max_connections=20) as a,
        node(net, C, synchronous=False) as good,
    ):
        hog = [await _raw(net, B) for _ in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().connections == 20
        await good.send(to(A, b"let me in"))
        msg = await a.receive()
        assert msg.data == b"let me in"
        msg.release()
        stats = a.statistics()
        assert stats.connections <= 20
        assert stats.connections_shed >= 1
        # One of the hog's connections was closed for it, by A (not reset: a clean close).
        closed_by_a = [end for end in net.streams(A, B, include_closed=True) if end.closed]
        assert len(closed_by_a) == stats.connections_shed
        assert len(hog) == 20


async def test_a_slowloris_flood_sheds_itself(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False, max_handshakes=10) as a,
        node(net, C, synchronous=False) as good,
    ):
        for _ in range(100):  # connect and never say hello
            await _raw(net, B, handshake=False)
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().connections <= 10
        await good.send(to(A, b"hello"))
        msg = await a.receive()
        assert msg.data == b"hello"
        msg.release()
        stats = a.statistics()
        # The flood's own newcomers are refused (its address holds the most); the good peer
        # from another address sheds one of the flood's handshakes.
        assert stats.connections_refused >= 89
        assert stats.connections_shed >= 1


async def test_when_every_connection_is_busy_a_newcomer_is_refused(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        node(net, A, synchronous=False, max_connections=2) as a,
        node(net, B, synchronous=False) as b,
        node(net, C, synchronous=False) as c,
    ):
        await b.send(to(A, b"b"))
        await c.send(to(A, b"c"))
        held = [await a.receive(), await a.receive()]  # both connections hold a slot
        d, _ = await net.host("10.0.0.4").connect(A, PORT)
        assert await d.receive_some(100) == b""  # refused: closed at once
        stats = a.statistics()
        assert (stats.connections, stats.connections_refused) == (2, 1)
        # A's own dial at the limit fails at once too (nothing to shed).
        with pytest.raises(CannotConnectError, match="limit of 2 connections"):
            await a.send(to("10.0.0.5"), synchronous=True)
        for m in held:
            m.release()


_EMFILE_CHILD = textwrap.dedent(
    """
    import logging, resource, socket, sys
    import trio, trio_chirp

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")

    async def main():
        config = trio_chirp.Config(port=0, synchronous=False, max_connections=1000, bind_v6=None)
        async with trio_chirp.open_chirp(config) as node:
            socks = []
            for _ in range(60):  # more than the process has descriptors for
                try:
                    s = socket.socket()
                except OSError:
                    break
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", node.port))
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    break
                socks.append(s)
                await trio.sleep(0.01)
            await trio.sleep(0.5)
            stats = node.statistics()
            print("EMFILE", stats.errors.get("EMFILE", 0), "CONNECTIONS", stats.connections, flush=True)
            for s in socks:
                s.close()

    trio.run(main)
    """
)


def test_running_out_of_file_descriptors_is_counted_and_logged() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EMFILE_CHILD],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    (result,) = [line.split() for line in done.stdout.splitlines() if line.startswith("EMFILE ")]
    assert int(result[1]) > 0, done.stdout  # counted in statistics().errors
    log_lines = [line for line in done.stdout.splitlines() if "accepting a connection failed" in line]
    assert 1 <= len(log_lines) <= 2, done.stdout  # rate-limited: not one line per failure


async def test_a_thousand_slowloris_timeouts_log_two_lines(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    async with node(net, A, synchronous=False, max_handshakes=2000, handshake_timeout=1.0) as a:
        for _ in range(1000):
            await _raw(net, B, handshake=False)
        await trio.sleep(12)  # every handshake times out (at 1 s); the summary window ends (at 11 s)
        warnings = [r for r in caplog.records if r.name == "trio_chirp.node" and r.levelname == "WARNING"]
        assert a.statistics().errors == {"ChirpTimeoutError": 1000}  # all counted
        assert len(warnings) == 2  # the first, and "999 more ... in the last 10 s"
        assert "999 more ChirpTimeoutError connection failures with 10.0.0.2" in warnings[1].getMessage()
