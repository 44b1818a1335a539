"""A libchirp producer's requests through our Router to our Workers.

A working handler's reply travels back through the router to libchirp like any response.
A failing handler's error response cannot (it reaches the router only for a synchronous
producer, whose forward asks for an ACK; libchirp marks no request, so an asynchronous
one's forward asks the worker for no answer at all): libchirp would take it for an ordinary (empty)
response, a false success. So the router sends none to a producer that is not trio_chirp
(no header map on its frames, no announcement), releases its message without ACK, says so
in its log, and libchirp's request ends by its own timeout, as it would with a libchirp
worker that never answered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from interop_helpers import LOCAL, poll_until, trio_config
from peer_process import open_peer

import trio_chirp

pytestmark = pytest.mark.interop

TIMEOUT = 1.0  # libchirp's request timeout


@pytest.mark.parametrize("producer_sync", [True, False], ids=["sync-producer", "async-producer"])
async def test_a_libchirp_producer_gets_replies_through_a_router_and_never_an_error_response_as_data(
    reference_python: Path, caplog: pytest.LogCaptureFixture, producer_sync: bool
) -> None:
    async def handle(msg: trio_chirp.Message) -> None:
        if msg.data == b"fail":
            raise ValueError("the handler failed")
        await worker.reply(msg, b"answer to " + msg.data)

    async with (
        trio_chirp.open_chirp(trio_config(synchronous=False)) as worker,
        trio_chirp.open_chirp(trio_config()) as router_node,
        open_peer(reference_python, name="producer", TIMEOUT=TIMEOUT, SYNCHRONOUS=producer_sync) as producer,
        trio.open_nursery() as nursery,
    ):
        workers = trio_chirp.Workers(worker, handle)
        router = trio_chirp.Router(router_node, lambda msg: (LOCAL, worker.port))
        await nursery.start(workers.run)
        await nursery.start(router.run)

        good = await producer.request(LOCAL, router_node.port, data=b"question")
        answer = await producer.wait_response(good["id"])
        assert answer["ok"], answer
        assert bytes.fromhex(answer["data_hex"]) == b"answer to question"

        bad = await producer.request(LOCAL, router_node.port, data=b"fail")
        outcome = await producer.wait_response(bad["id"])
        assert not outcome["ok"], f"libchirp took the error response for an answer: {outcome}"
        assert outcome["error_type"] == "TimeoutError", outcome
        with trio.fail_after(5):
            await poll_until(lambda: workers.statistics().failed == 1)
        stats = router.statistics()
        assert stats.responses == 1  # only the good answer went back
        assert router_node.statistics().error_responses_out == 0  # libchirp was not sent one
        if producer_sync:
            assert workers.statistics().error_responses == 1  # the worker answered the router
            # The router forwarded synchronously (as the producer asked): the worker's error
            # response failed that forward at once, and the router says it could not pass it on.
            assert stats.failed == {"next hop failed": 1}
            line = next(r.getMessage() for r in caplog.records if "failed downstream" in r.getMessage())
            assert line.endswith(
                "ValueError: the handler failed (not passed back: the producer is not trio_chirp or"
                " does not wait for an answer)"
            ), line
        else:
            # libchirp marks no request: the router forwards an ordinary asynchronous message
            # (accepted when written), which asks the worker for no answer, so none comes back.
            assert stats.failed == {}
            assert workers.statistics().error_responses == 0
        nursery.cancel_scope.cancel()
