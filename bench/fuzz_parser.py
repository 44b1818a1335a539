#!/usr/bin/env python3
"""Time-boxed differential fuzzing of the frame parser (``trio_chirp._protocol.FrameParser``).

    .venv/bin/python bench/fuzz_parser.py --minutes 10          # the long run
    .venv/bin/python bench/fuzz_parser.py --seconds 20 --seed 3 # a quick one
    .venv/bin/python bench/fuzz_parser.py --inputs 50000 --seed 3  # exactly reproducible

Each input is a byte stream (a handshake and frames, valid ones mutated: flipped bits,
cut, spliced, lengths set to edge values, type bits shuffled, junk inserted) fed to the
parser in random chunks, with the slot pause honoured as the node does. The parser's
events and its error (class and position) must equal those of a plainly written reference
decoder that reads the whole buffer at once; no other exception may escape; and the
parser must never hold more than one frame's announced payload plus one chunk. Prints
inputs per minute; on a mismatch prints the input (hex), the chunking seed and exits 1.
The CI-sized Hypothesis tests of the same properties are in tests/test_protocol_parser.py.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trio_chirp import MessageTooLargeError, ProtocolError  # noqa: E402
from trio_chirp._protocol import (  # noqa: E402
    NEED_DATA,
    DataFrame,
    FrameHead,
    FrameParser,
    Handshake,
    encode_frame,
    encode_handshake,
)

MAX_MSG = 4096
HEAD = struct.Struct(
    ">16sIIHB"
)  # identity, serial, data_len, header_len, type (written here again on purpose)


class Mismatch(Exception):
    pass


def reference(stream: bytes, max_msg: int) -> tuple[list[tuple[object, ...]], str | None]:
    """Events as tuples, and the error class name (or None), reading ``stream`` whole."""
    events: list[tuple[object, ...]] = []
    if len(stream) < 18:
        return events, None
    port, identity = struct.unpack_from(">H16s", stream)
    events.append(("hello", port, identity))
    pos = 18
    while len(stream) - pos >= 27:
        identity, serial, data_len, header_len, type_ = HEAD.unpack_from(stream, pos)
        pos += 27
        control = type_ & 0x06
        size = header_len + data_len
        if size > max_msg:
            return events, "MessageTooLargeError"
        if control and (size or type_ & 0x01):
            return events, "ProtocolError"
        events.append(("head", identity, serial, data_len, header_len, type_))
        if control:
            continue
        if len(stream) - pos < size:
            return events, None
        header, data = stream[pos : pos + header_len], stream[pos + header_len : pos + size]
        pos += size
        events.append(("data", identity, header, data))
    return events, None


def run_parser(
    stream: bytes, max_msg: int, rng: random.Random
) -> tuple[list[tuple[object, ...]], str | None]:
    parser = FrameParser(max_msg)
    events: list[tuple[object, ...]] = []
    pos = 0
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                if pos >= len(stream):
                    return events, None
                n = rng.choice((1, 2, 7, 27, 100, 1000, 65536))
                chunk = stream[pos : pos + n]
                pos += len(chunk)
                parser.receive_data(chunk)
                if parser.buffered > max_msg + 27 + n:
                    raise Mismatch(f"parser buffers {parser.buffered} bytes")
                continue
            if isinstance(event, Handshake):
                events.append(("hello", event.port, event.identity))
            elif isinstance(event, FrameHead):
                events.append(
                    ("head", event.identity, event.serial, event.data_len, event.header_len, event.type)
                )
            elif isinstance(event, DataFrame):
                events.append(("data", event.head.identity, event.header, event.data))
            else:
                raise Mismatch(f"unknown event {event!r}")
    except (MessageTooLargeError, ProtocolError) as exc:
        return events, type(exc).__name__


def seed_stream(rng: random.Random) -> bytes:
    parts = [encode_handshake(rng.randrange(65536), rng.randbytes(16))]
    for _ in range(rng.randrange(6)):
        kind = rng.random()
        identity = rng.randbytes(16)
        serial = rng.randrange(2**32)
        if kind < 0.2:
            parts.append(encode_frame(identity, serial, 0x02))  # ACK
        elif kind < 0.3:
            parts.append(encode_frame(bytes(16), serial, 0x04))  # NOOP
        else:
            header = rng.randbytes(rng.choice((0, 0, 3, 17)))
            data = rng.randbytes(rng.choice((0, 1, 100, 1000, MAX_MSG - len(header))))
            parts.append(encode_frame(identity, serial, rng.choice((0, 1, 8, 0x80)), header, data))
    return b"".join(parts)


EDGE_U32 = (0, 1, 26, 27, MAX_MSG, MAX_MSG + 1, 2**31, 2**32 - 1, 2**32 - 0xFFFF + 10)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.random()
        if not buf:
            buf += rng.randbytes(30)
        pos = rng.randrange(len(buf))
        if choice < 0.3:
            buf[pos] ^= 1 << rng.randrange(8)
        elif choice < 0.45:
            del buf[pos:]
        elif choice < 0.6:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 40))
        elif choice < 0.8 and len(buf) >= pos + 4:
            buf[pos : pos + 4] = rng.choice(EDGE_U32).to_bytes(4, "big")
        elif len(buf) > pos + 1:
            buf[pos] = rng.choice((0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xFF))
    return bytes(buf)


def check(stream: bytes, rng: random.Random) -> None:
    expected = reference(stream, MAX_MSG)
    got = run_parser(stream, MAX_MSG, rng)
    if got != expected:
        raise Mismatch(f"parser {got!r}\n reference {expected!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box = ap.add_mutually_exclusive_group()
    box.add_argument("--minutes", type=float)
    box.add_argument("--seconds", type=float)
    box.add_argument("--inputs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seconds = 60.0 if args.minutes is None and args.seconds is None else (args.seconds or args.minutes * 60)
    rng = random.Random(args.seed)
    start = last = time.monotonic()
    count = 0
    while True:
        if args.inputs is not None:
            if count >= args.inputs:
                break
        elif time.monotonic() - start >= seconds:
            break
        stream = seed_stream(rng)
        if rng.random() < 0.8:
            stream = mutate(rng, stream)
        chunk_seed = rng.randrange(2**32)
        try:
            check(stream, random.Random(chunk_seed))
        except Exception as exc:  # a mismatch, or anything else escaping the parser
            print(f"FAILED on input {count}: {type(exc).__name__}: {exc}")
            print(f"input hex: {stream.hex()}")
            print(f"chunking seed: {chunk_seed}")
            return 1
        count += 1
        now = time.monotonic()
        if now - last >= 60:
            print(f"{count} inputs, {count / ((now - start) / 60):,.0f} inputs/minute", flush=True)
            last = now
    elapsed = time.monotonic() - start
    print(
        f"done: {count} inputs in {elapsed:.1f} s ({count / (elapsed / 60):,.0f} inputs/minute), no failure"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
