#!/usr/bin/env python3
"""Where a synchronous round trip's time goes: each side's turnaround, and the system calls.

    .venv/bin/python bench/turnaround.py                 # trio_chirp sync 1 KiB and the raw ping-pong
    .venv/bin/python bench/turnaround.py --n 20000
    .venv/bin/python bench/turnaround.py --package /path/to/other/checkout   # another version

Two processes on loopback, as ``trio-chirp bench sync-1k`` and ``raw-pingpong-1k`` run them,
with one task per side. A round trip is the sender's turnaround (from the read that brings
the ACK to the system call that writes the next message), the receiver's turnaround (from
the read that brings the message to the write of its ACK), and twice the way between the
processes. The script timestamps both sides around their reads and writes
(``time.perf_counter_ns``, a few hundred ns each) and prints medians of every segment:

* ``turnaround``: the Python work of a side, its write's system call included;
* ``write``: that system call alone. On loopback the kernel delivers the bytes in the
  writer's call, and when the reading process is asleep in ``epoll_wait`` it wakes it
  there too: on a virtual machine that wake-up is the costliest thing in a round trip,
  and whether it is paid depends on whether the peer has gone to sleep since its own
  write, that is on how quickly each side turns around.

Each side's turnaround is also split where trio_chirp's code changes hands: on the sender
the ACK settled, ``send()`` returned, the next ``send()`` called, queued, written; on the
receiver the message in the inbox, ``receive()`` returned, ``release()`` writing the ACK.
Wall-clock segments, so run it on an otherwise idle machine and compare runs of one sitting.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEAD = 27  # a chirp frame's fixed part


class Marks:
    """Named timestamps in order; ``segments`` pairs each mark with the one before it."""

    def __init__(self) -> None:
        self.seq: list[tuple[str, int]] = []
        self.clock = time.perf_counter_ns

    def mark(self, name: str) -> None:
        self.seq.append((name, self.clock()))

    def segments(self, order: list[str]) -> dict[str, list[int]]:
        """Durations of ``order[i] -> order[i+1]`` for every run of marks that follows ``order``."""
        found: dict[str, list[int]] = {f"{a} -> {b}": [] for a, b in itertools.pairwise(order)}
        names = [name for name, _ in self.seq]
        width = len(order)
        i = 0
        while i + width <= len(names):
            if names[i : i + width] == order:
                for j in range(width - 1):
                    found[f"{order[j]} -> {order[j + 1]}"].append(self.seq[i + j + 1][1] - self.seq[i + j][1])
                i += width
            else:
                i += 1
        return found


def _median_us(values: list[int]) -> float:
    values = values[len(values) // 5 :]  # without the warm-up
    return statistics.median(values) / 1000 if values else float("nan")


def _instrument_chirp(marks: Marks, *, sender: bool) -> None:
    """Wrap the default transport's read and write, and the steps in between (before the
    node is made: the node binds some of these methods when it starts)."""
    from trio_chirp import _connection, _reading, _remote, _tcp
    from trio_chirp._node import _delivery

    read, write = _tcp.TCPStream.receive_some, _tcp.TCPStream.send_nowait
    write_now = _connection.Connection.write_now

    async def receive_some(self: Any, max_bytes: int | None = None) -> bytes:
        data = await read(self, max_bytes)
        marks.mark("read")
        return data

    def send_nowait(self: Any, data: bytes) -> int:
        marks.mark("write call")
        sent = write(self, data)
        marks.mark("written")
        return sent

    def write_now_(self: Any) -> None:
        marks.mark("write_now")
        write_now(self)

    _tcp.TCPStream.receive_some = receive_some  # type: ignore[method-assign]
    _tcp.TCPStream.send_nowait = send_nowait  # type: ignore[method-assign]
    _connection.Connection.write_now = write_now_  # type: ignore[method-assign]
    if not sender:
        deliver = _delivery.Delivery.deliver

        def deliver_(self: Any, source: Any, message: Any) -> None:
            deliver(self, source, message)
            marks.mark("in the inbox")

        _delivery.Delivery.deliver = deliver_  # type: ignore[method-assign]
        return
    settled, enqueue = _reading.FrameReader.await_settled, _remote.Remote.enqueue

    async def await_settled(self: Any, out: Any) -> None:
        await settled(self, out)
        marks.mark("ACK settled")

    def enqueue_(self: Any, out: Any) -> None:
        marks.mark("send() queues")
        enqueue(self, out)

    _reading.FrameReader.await_settled = await_settled  # type: ignore[method-assign]
    _remote.Remote.enqueue = enqueue_  # type: ignore[method-assign]


def chirp_receiver(package: str, n: int, ports: Any, results: Any) -> None:
    sys.path.insert(0, package)
    import trio

    import trio_chirp

    marks = Marks()
    _instrument_chirp(marks, sender=False)

    async def main() -> None:
        async with trio_chirp.open_chirp(trio_chirp.Config(port=0, bind_v6=None)) as chirp:
            ports.put(chirp.port)
            for _ in range(n):
                msg = await chirp.receive()
                marks.mark("receive() returned")
                msg.release()
            await trio.sleep(0.2)  # the last ACK's way

    trio.run(main)
    order = ["read", "in the inbox", "receive() returned", "write_now", "write call", "written"]
    results.put(("receiver", marks.segments(order)))
    results.put(("receiver marks", _times(marks, "read", "write call")))


def _times(marks: Marks, *names: str) -> dict[str, list[int]]:
    """The absolute times of some marks (``perf_counter_ns``, CLOCK_MONOTONIC: one clock for all
    processes of the machine, so two processes' marks can be paired)."""
    return {name: [t for n, t in marks.seq if n == name] for name in names}


def chirp_sender(package: str, n: int, port: int, results: Any) -> None:
    sys.path.insert(0, package)
    import trio

    import trio_chirp

    marks = Marks()
    _instrument_chirp(marks, sender=True)

    async def main() -> None:
        async with trio_chirp.open_chirp(trio_chirp.Config(port=0, bind_v6=None)) as chirp:
            data, send, Message = b"s" * 1024, chirp.send, trio_chirp.Message
            start = time.perf_counter()
            for _ in range(n):
                msg = Message(data, address="127.0.0.1", port=port)
                marks.mark("send() called")
                await send(msg)
                marks.mark("send() returned")
            results.put(("rate", n / (time.perf_counter() - start)))

    trio.run(main)
    order = [
        "read",
        "ACK settled",
        "send() returned",
        "send() called",
        "send() queues",
        "write_now",
        "write call",
        "written",
    ]
    results.put(("sender", marks.segments(order)))
    results.put(("sender marks", _times(marks, "read", "write call")))


def raw_receiver(n: int, ports: Any, results: Any) -> None:
    import trio

    marks = Marks()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        ports.put(listeners[0].socket.getsockname()[1])
        stream = await listeners[0].accept()
        frame, reply, have = HEAD + 1024, b"a" * HEAD, 0
        for _ in range(n):
            while have < frame:
                have += len(await stream.receive_some(65536))
            marks.mark("read")
            have -= frame
            marks.mark("write call")
            await stream.send_all(reply)
            marks.mark("written")

    trio.run(main)
    results.put(("receiver", marks.segments(["read", "write call", "written"])))
    results.put(("receiver marks", _times(marks, "read", "write call")))


def raw_sender(n: int, port: int, results: Any) -> None:
    import trio

    marks = Marks()

    async def main() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        frame = b"f" * (HEAD + 1024)
        start = time.perf_counter()
        for _ in range(n):
            marks.mark("write call")
            await stream.send_all(frame)
            marks.mark("written")
            have = 0
            while have < HEAD:
                have += len(await stream.receive_some(65536))
            marks.mark("read")
        results.put(("rate", n / (time.perf_counter() - start)))

    trio.run(main)
    results.put(("sender", marks.segments(["read", "write call", "written"])))
    results.put(("sender marks", _times(marks, "read", "write call")))


def run(kind: str, n: int, package: str) -> dict[str, Any]:
    ports: Any = mp.Queue()
    results: Any = mp.Queue()
    if kind == "chirp":
        receiver = mp.Process(target=chirp_receiver, args=(package, n, ports, results))
    else:
        receiver = mp.Process(target=raw_receiver, args=(n, ports, results))
    receiver.start()
    port = ports.get(timeout=30)
    if kind == "chirp":
        sender = mp.Process(target=chirp_sender, args=(package, n, port, results))
    else:
        sender = mp.Process(target=raw_sender, args=(n, port, results))
    sender.start()
    out = dict(results.get(timeout=600) for _ in range(5))
    sender.join()
    receiver.join()
    return out


def _way(written: list[int], read: list[int]) -> list[int]:
    """For each write call, the time until the peer's next read returned: one way, the kernel's
    delivery and the peer's wake-up included (the peer may read before the writer's call returns)."""
    ways, j = [], 0
    for t in written:
        while j < len(read) and read[j] < t:
            j += 1
        if j < len(read):
            ways.append(read[j] - t)
    return ways


def report(kind: str, out: dict[str, Any]) -> None:
    rate = out["rate"]
    print(f"{kind}: {rate:,.0f} round trips/s, {1e6 / rate:.0f} us each")
    sender, receiver = out["sender marks"], out["receiver marks"]
    there = _median_us(_way(sender["write call"], receiver["read"]))
    back = _median_us(_way(receiver["write call"], sender["read"]))
    print(f"  one way, sender's write call -> receiver's read: {there:.1f} us")
    print(f"  one way, receiver's write call -> sender's read: {back:.1f} us")
    for side in ("sender", "receiver"):
        segments = out[side]
        turn = [sum(parts) for parts in zip(*segments.values(), strict=False)]
        print(f"  {side} turnaround (read -> written): {_median_us(turn):.1f} us")
        for name, values in segments.items():
            print(f"    {name:<36} {_median_us(values):6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10000, help="round trips per run (default 10000)")
    parser.add_argument("--package", default=str(ROOT), help="the checkout whose trio_chirp runs")
    args = parser.parse_args()
    for kind in ("chirp", "raw"):
        report(
            "trio_chirp sync 1 KiB" if kind == "chirp" else "raw ping-pong 1 KiB",
            run(kind, args.n, args.package),
        )


if __name__ == "__main__":
    main()
