"""How a writer turns a batch of frame parts into writes: small parts joined, large ones kept.

One copy of a few small parts is cheaper than another system call and scheduler round; a
large payload is written as it is, or gathered by a stream that can (``send_parts``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DIRECT_WRITE", "GATHER_MIN", "join_small"]


DIRECT_WRITE: Final = 1024 * 1024
"""Payload parts at least this large are written as they are instead of being joined
(below it, one copy is cheaper than another system call and scheduler round)."""

GATHER_MIN: Final = 16 * 1024
"""With a stream that can gather (``send_parts``), parts this large are not joined."""


def join_small(parts: list[bytes] | list[memoryview], large: int) -> list[bytes | memoryview]:
    """Runs of parts below ``large`` bytes joined into one; large parts kept as they are."""
    groups: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    for part in parts:
        if len(part) >= large:
            if pending:
                groups.append(b"".join(pending))
                pending.clear()
            groups.append(part)
        else:
            pending.append(part)
    if pending:
        groups.append(b"".join(pending) if len(pending) > 1 else pending[0])
    return groups
