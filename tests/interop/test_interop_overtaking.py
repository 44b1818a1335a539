"""Responses overtake our synchronous message in flight, to libchirp too (issue 14, section 3).

A response (``reply()``, a router returning one, an error response) is a plain type-0 frame
that asks for no ACK: writing it while our own REQ_ACK message to that peer waits for its
ACK pipelines no second REQ_ACK (libchirp's sharp edge 10 stays untouched). Here libchirp
holds our synchronous message unreleased, and our reply to its earlier message still
reaches it at once; then it releases, and our send completes. docs/node.md, "Ordering".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, node_errors, remote_stats, sha, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop


async def test_our_reply_overtakes_our_synchronous_message_that_libchirp_holds(
    reference_python: Path,
) -> None:
    async with (
        open_peer(reference_python, name="holder", AUTO_RELEASE=False, HOLD=True, SYNCHRONOUS=False) as peer,
        trio_chirp.open_chirp(trio_config(synchronous=True, timeout=5)) as chirp,
        trio.open_nursery() as nursery,
    ):
        asked = await peer.send(LOCAL, chirp.port, data=b"a question")
        with trio.fail_after(10):
            question = await chirp.receive()
        assert (await peer.wait_sent(asked))["ok"]
        held = trio_chirp.Message(b"held by libchirp", address=LOCAL, port=peer.port)
        returned = trio.Event()

        async def send_held() -> None:
            await chirp.send(held)
            returned.set()

        nursery.start_soon(send_held)
        got = await peer.next_event("received")
        assert got["identity"] == held.identity.hex()
        remote = remote_stats(chirp, peer.port)
        assert remote is not None
        assert remote.in_flight == 1
        with trio.fail_after(5):  # without overtaking it would wait behind the held message
            await chirp.reply(question, b"the answer")
        answer = await peer.next_event("received")
        assert answer["identity"] == question.identity.hex()
        assert answer["data_sha256"] == sha(b"the answer")
        assert not returned.is_set(), "our synchronous message still waits for libchirp's release"
        await peer.command("release", all=True)
        with trio.fail_after(5):
            await returned.wait()
        assert node_errors(chirp) == {}
