"""The trio_chirp announcement against the real libchirp: tolerated both ways, never mistaken.

Every connection a trio_chirp node opens or accepts starts with its handshake and, in the
same write, its announcement: a NOOP whose identity carries our magic, version, window and
max_msg_size (docs/protocol.md, "The trio_chirp announcement"). libchirp must take it for a
keep-alive and go on as usual: here messages flow both ways on a connection that began with
it, in both modes, dialling and dialled, and libchirp reports no error; and our node, which
learns nothing from libchirp, treats it as libchirp. TLS: test_interop_tls.py checks the same
inside TLS (both directions).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, node_errors, receive_released, remote_stats, sha, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop

MODES = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])


@MODES
async def test_we_dial_libchirp_and_it_answers_after_our_announcement(
    reference_python: Path, sync: bool
) -> None:
    async with (
        open_peer(reference_python, name="echo", ECHO=True, SYNCHRONOUS=sync) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=sync)) as chirp,
    ):
        with trio.fail_after(10):
            for i in range(3):
                await chirp.send(
                    trio_chirp.Message(b"after the announcement %d" % i, address=LOCAL, port=peer.port)
                )
        echoes = await receive_released(chirp, 3, timeout=10)
        assert [e.data for e in echoes] == [b"after the announcement %d" % i for i in range(3)]
        received = await peer.next_event("received")
        assert received["data_sha256"] == sha(b"after the announcement 0")
        remote = remote_stats(chirp, peer.port)
        assert remote is not None
        assert remote.trio_chirp_version is None, "libchirp announces nothing: it is treated as libchirp"
        assert node_errors(chirp) == {}
        assert chirp.statistics().connections == 1  # libchirp answered on our connection


@MODES
async def test_libchirp_dials_us_and_gets_our_ack_after_our_announcement(
    reference_python: Path, sync: bool
) -> None:
    async with (
        trio_chirp.open_chirp(trio_config(synchronous=False)) as chirp,
        open_peer(reference_python, name="sender", SYNCHRONOUS=sync) as peer,
    ):
        send_ids = [await peer.send(LOCAL, chirp.port, data=b"%d" % i) for i in range(3)]
        got = await receive_released(chirp, 3, timeout=10)
        assert [g.data for g in got] == [b"0", b"1", b"2"]
        for send_id in send_ids:
            outcome = await peer.wait_sent(send_id)
            assert outcome["ok"], outcome  # in sync mode: our ACKs came after our announcement
        remote = remote_stats(chirp, peer.port)
        assert remote is not None
        assert remote.trio_chirp_version is None
        assert node_errors(chirp) == {}
