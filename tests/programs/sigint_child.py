"""A small app for the SIGINT test: a synchronous send in flight (never ACKed) or an idle
receive() when Ctrl-C arrives. Prints READY when in place, then FINALLY from its finally
blocks and the context of the KeyboardInterrupt it saw."""

from __future__ import annotations

import sys

import trio

import trio_chirp


async def main(mode: str) -> None:
    config = trio_chirp.Config(port=0, timeout=30, bind_v6=None)
    # b, the never-releasing receiver, is the outer block: it stays up while a closes.
    async with trio_chirp.open_chirp(config) as b, trio_chirp.open_chirp(config) as a:
        try:
            if mode == "send":
                async with trio.open_nursery() as nursery:

                    async def hold() -> None:
                        await b.receive()  # never released: the send waits for its ACK
                        print("READY", flush=True)

                    nursery.start_soon(hold)
                    await a.send(trio_chirp.Message(b"x", address="127.0.0.1", port=b.port))
            else:
                print("READY", flush=True)
                await a.receive()
        except BaseException as exc:
            leaf = exc
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            print(f"CONTEXT {type(leaf.__context__).__name__}", flush=True)
            raise
        finally:
            print("FINALLY app", flush=True)


if __name__ == "__main__":
    try:
        trio.run(main, sys.argv[1])
    finally:
        print("FINALLY run", flush=True)
