"""Idle connections, NOOP probes and garbage collection across implementations (PROTOCOL.md 7.2, 7.6).

Both sides run with short timers so the interplay happens within a second or two.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, node_errors, poll_until, receive_released, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop


async def test_noop_probe_after_idle_both_directions(reference_python: Path) -> None:
    """Idle between 3/4 R and R: the next frame is preceded by a NOOP, which takes a serial.

    TIMEOUT 0.2, REUSE_TIME 1.0: R = 1.0 s, NOOP threshold 0.75 s; we idle 0.875 s so
    neither side has collected anything yet and the connection is reused.
    """
    idle = 0.875
    async with (
        open_peer(reference_python, name="peer", TIMEOUT=0.2, REUSE_TIME=1.0) as peer,
        trio_chirp.open_chirp(trio_config(timeout=0.2, reuse_time=1.0)) as chirp,
    ):
        assert peer.started is not None
        assert peer.started["config"]["REUSE_TIME"] == 1.0
        # trio_chirp -> libchirp
        with trio.fail_after(5):
            m1 = trio_chirp.Message(b"before idle", address=LOCAL, port=peer.port)
            await chirp.send(m1)
            e1 = await peer.next_event("received")
        await trio.sleep(idle)
        frames_in = chirp.statistics().frames_in
        with trio.fail_after(5):
            m2 = trio_chirp.Message(b"after idle", address=LOCAL, port=peer.port)
            await chirp.send(m2)
            e2 = await peer.next_event("received")
        assert (e1["serial"], e2["serial"]) == (m1.serial, m2.serial)
        assert (m2.serial - m1.serial) & 0xFFFFFFFF == 2, "our NOOP must precede the message"
        assert chirp.statistics().frames_in == frames_in + 1  # just the ACK
        assert chirp.statistics().connections == 1

        # libchirp -> trio_chirp, on the same connection
        with trio.fail_after(5):
            s1 = await peer.send(LOCAL, chirp.port, data=b"before idle")
            (g1,) = await receive_released(chirp, 1)
            assert (await peer.wait_sent(s1))["ok"]
        await trio.sleep(idle)
        frames_in = chirp.statistics().frames_in
        with trio.fail_after(5):
            s2 = await peer.send(LOCAL, chirp.port, data=b"after idle")
            (g2,) = await receive_released(chirp, 1)
            assert (await peer.wait_sent(s2))["ok"]
        assert (g2.serial - g1.serial) & 0xFFFFFFFF == 2, "libchirp's NOOP must precede its message"
        assert chirp.statistics().frames_in == frames_in + 2  # NOOP + message
        assert g2.remote_identity == g1.remote_identity == peer.identity
        assert chirp.statistics().connections == 1
        assert node_errors(chirp) == {}


async def test_exchange_after_idle_periods(reference_python: Path) -> None:
    """TIMEOUT 0.2, REUSE_TIME 0.6 on both sides (R = 0.6 s, probe after 0.45 s idle, GC
    every 0.3..0.6 s): after each silence, one synchronous message each way still gets
    through exactly once, whatever the NOOP probes and either side's GC did meanwhile.

    Idles between R and 2R race one side's GC against the other's probe; 1.5 s > 2R means
    both sides have certainly collected the connection and the remote.
    """
    idles = [0.7, 0.9, 1.1, 1.5]
    async with (
        open_peer(reference_python, name="peer", TIMEOUT=0.2, REUSE_TIME=0.6) as peer,
        trio_chirp.open_chirp(trio_config(timeout=0.2, reuse_time=0.6)) as chirp,
    ):
        assert peer.started is not None
        assert peer.started["config"]["REUSE_TIME"] == pytest.approx(0.6)  # a C float
        assert chirp.config.effective_reuse_time == pytest.approx(0.6)
        failures: list[tuple[str, float, object]] = []
        for rnd, idle in enumerate([0.0, *idles]):
            await trio.sleep(idle)
            if idle > 1.2:  # > 2R: both GCs ran at least once after R of silence
                assert chirp.statistics().connections == 0
            data = b"round %d" % rnd
            with trio.fail_after(5):
                m = trio_chirp.Message(b"t2l " + data, address=LOCAL, port=peer.port)
                try:
                    await chirp.send(m)
                except trio_chirp.ChirpError as exc:
                    failures.append(("trio_chirp -> libchirp", idle, exc))
                else:
                    got = await peer.next_event("received")
                    assert got["identity"] == m.identity.hex()
                    assert got["data_hex"] == m.data.hex()
                    assert got["remote_identity"] == chirp.identity.hex()
                    assert got["port"] == chirp.port
                s = await peer.send(LOCAL, chirp.port, data=b"l2t " + data)
                with trio.move_on_after(2):  # libchirp's send completes on our release
                    (g,) = await receive_released(chirp, 1)
                    assert g.data == b"l2t " + data
                    assert g.remote_identity == peer.identity
                    assert g.port == peer.port
                sent = await peer.wait_sent(s)
                if not sent["ok"]:
                    failures.append(("libchirp -> trio_chirp", idle, sent))
        assert failures == [], "every send after an idle period must succeed"
        with trio.move_on_after(0.1):
            extra = await chirp.receive()
            extra.release()
            raise AssertionError(f"unexpected extra delivery {extra!r} {extra.data!r}")
        assert peer.drain("received") == []
        # A peer's GC close looks like any EOF to us; nothing else may have gone wrong.
        assert set(node_errors(chirp)) <= {"ConnectionLostError"}


class _SlowestRandom(random.Random):
    """``uniform`` always picks its upper bound: debounce 0.55 s, GC interval = R."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_send_right_after_peer_collected_the_connection(reference_python: Path) -> None:
    """Minimal reproduction: after the *peer's* GC closes an idle connection, our remote is
    reconnect-blocked (PROTOCOL.md 7.5) for up to 0.55 s. libchirp keeps a message queued
    meanwhile (queued messages have no timeout) and it gets through; trio_chirp's send
    deadline (config.timeout from the call) also covers the blocked time, so with
    timeout=0.2 the send fails with ChirpTimeoutError ("still connecting") although the
    peer is up and idle-close is routine.
    """
    async with (
        open_peer(reference_python, name="collector", TIMEOUT=0.2, REUSE_TIME=0.6) as peer,
        trio_chirp.open_chirp(trio_config(timeout=0.2, reuse_time=30), rng=_SlowestRandom()) as chirp,
    ):
        with trio.fail_after(5):
            await chirp.send(trio_chirp.Message(b"first", address=LOCAL, port=peer.port))
            await peer.next_event("received")
        # libchirp collects the idle connection within R..2R
        await poll_until(lambda: chirp.statistics().connections == 0)
        blocked = chirp.statistics().remotes[0].reconnect_blocked  # as libchirp's would be
        second = trio_chirp.Message(b"second", address=LOCAL, port=peer.port)
        with trio.fail_after(5):
            try:
                await chirp.send(second)  # expected: queued until the block ends, then delivered
            except trio_chirp.ChirpTimeoutError as exc:
                raise AssertionError(
                    f"send failed while the remote was reconnect-blocked={blocked} after the"
                    f" peer's idle close: {exc}"
                ) from exc
            got = await peer.next_event("received")
        assert got["identity"] == second.identity.hex()


async def test_libchirp_sends_right_after_trio_collected_the_connection(reference_python: Path) -> None:
    """The mirror, as the reference behaves: libchirp's remote is reconnect-blocked after our
    GC closed the connection, its send waits for the block to end and succeeds."""
    async with (
        trio_chirp.open_chirp(trio_config(timeout=0.2, reuse_time=0.6)) as chirp,
        open_peer(reference_python, name="sender", TIMEOUT=0.2, REUSE_TIME=30) as peer,
    ):
        with trio.fail_after(5):
            first = await peer.send(LOCAL, chirp.port, data=b"first")
            await receive_released(chirp, 1)
            assert (await peer.wait_sent(first))["ok"]
        # our GC closes the idle connection within R..2R
        await poll_until(lambda: chirp.statistics().connections == 0)
        with trio.fail_after(5):
            second = await peer.send(LOCAL, chirp.port, data=b"second")
            (got,) = await receive_released(chirp, 1)
            outcome = await peer.wait_sent(second)
        assert outcome["ok"], outcome
        assert got.data == b"second"
        assert got.remote_identity == peer.identity
