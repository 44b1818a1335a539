"""Talking to a libchirp node: a trio_chirp node and libchirp 1.2.1's echo, over loopback TCP.

libchirp runs in its own process, under the Python of an environment that has the
libchirp binding (it runs its own libuv thread and must not share an interpreter with
Trio). The test suite builds one into ``.cache/libchirp-ref/venv``
(``python tests/interop/reference.py`` builds it and prints its path):

    python3 examples/libchirp_peer.py [LIBCHIRP_PYTHON]

What it shows:

* a synchronous ``send()`` to libchirp returns when libchirp's application released the
  message (its queue API releases in ``get()``);
* libchirp answers the way its documentation shows, by sending the received message back
  with new data; the answer keeps the request's identity, so ``request()`` matches it;
* ``Config(header_map=False)``: libchirp sees exactly the header we send (with the map on,
  a deadline or a request flag would travel in the header as our msgpack map, which a
  libchirp application reading headers would see, docs/deadlines.md).
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

import trio_chirp

LOCAL = "127.0.0.1"
DEFAULT_PYTHON = Path(__file__).resolve().parents[1] / ".cache" / "libchirp-ref" / "venv" / "bin" / "python"

# The libchirp side: an echo node that answers `count` messages, reporting on stdout.
LIBCHIRP_ECHO = """
import socket, sys
import libchirp, libchirp.queue

count = int(sys.argv[1])
with socket.socket() as s:  # a free port (libchirp takes none of its own choosing)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
config = libchirp.Config()
config.PORT = port
config.BIND_V4 = "127.0.0.1"
config.SYNCHRONOUS = False
config.DISABLE_ENCRYPTION = True  # plaintext on 127.0.0.1 needs no certificates
config.DISABLE_SIGNALS = True
loop = libchirp.Loop()
chirp = libchirp.queue.Chirp(loop, config)
print(port, flush=True)
for _ in range(count):
    msg = chirp.get()  # the queue API releases (ACKs) here
    print(f"  libchirp: got {msg.data!r} with header {msg.header!r}", flush=True)
    msg.data = b"echo: " + msg.data  # libchirp's reply: the same message, new data
    chirp.send(msg).result()
chirp.stop()
loop.stop()
"""


class Lines:
    """Lines from a process's stdout (a Trio receive stream)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("the libchirp process ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


async def main(libchirp_python: str) -> None:
    count = 3
    command = [libchirp_python, "-c", LIBCHIRP_ECHO, str(count)]
    config = trio_chirp.Config(port=0, header_map=False)  # libchirp sees our headers as sent
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, command, stdout=subprocess.PIPE, check=True)
        process: trio.Process = await nursery.start(run)
        assert process.stdout is not None
        lines = Lines(process.stdout)
        with trio.fail_after(10):
            port = int(await lines.next())
        print(f"libchirp echo node on port {port}")
        async with trio_chirp.open_chirp(config) as chirp:
            with trio.fail_after(10):
                msg = trio_chirp.Message(b"hello", address=LOCAL, port=port)
                await chirp.send(msg)  # synchronous: returns once libchirp released it
                print("trio_chirp: send() returned: libchirp's application has the message")
                print(await lines.next())
                echo = await chirp.receive()
                with echo:
                    same = "the same identity" if echo.identity == msg.identity else "a new identity"
                    print(f"trio_chirp: received {echo.data!r} ({same}) from libchirp")

                for data, header in ((b"question", b""), (b"with a header", b"app-header")):
                    request = trio_chirp.Message(data, header=header, address=LOCAL, port=port)
                    response = await chirp.request(request)
                    print(await lines.next())
                    print(
                        f"trio_chirp: request() answered with {response.data!r}, header {response.header!r}"
                    )
        with trio.fail_after(10):
            await process.wait()
    print(f"libchirp exited with {process.returncode}")


if __name__ == "__main__":
    python = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_PYTHON)
    if not Path(python).exists():
        sys.exit(f"no libchirp Python at {python}: build it with `python tests/interop/reference.py`")
    trio.run(main, python)
