"""Message: payloads stored as immutable copies, random identities, the release contract, and
the ResourceWarning for a received message that is garbage-collected unreleased."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
import weakref
from typing import Any

import pytest

from trio_chirp import Message, _message

Calls = list[tuple[Message, bool]]


def with_slot(message: Message, calls: Calls) -> Message:
    """Make ``message`` look received: the node installs such a hook on every delivered message."""
    message._release_hook = lambda msg, ack: calls.append((msg, ack))
    return message


# --- payloads ------------------------------------------------------------------------------


def test_defaults() -> None:
    msg = Message()
    assert (msg.data, msg.header) == (b"", b"")
    assert (msg.address, msg.port) == ("", 0)  # typed str and int; "" and 0 mean not set (issue 15)
    assert (msg.serial, msg.remote_identity, msg.ack_requested) == (None, None, False)
    assert not msg.has_slot


def test_constructor_arguments() -> None:
    msg = Message(b"data", header=b"hdr", address="::1", port=2998)
    assert (msg.data, msg.header, msg.address, msg.port) == (b"data", b"hdr", "::1", 2998)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_buffers_are_copied_at_construction(kind: type[Any]) -> None:
    data, header = bytearray(b"data"), bytearray(b"head")
    msg = Message(kind(data), header=kind(header))
    data[:] = b"XXXX"
    header[:] = b"YYYY"
    assert msg.data == b"data"
    assert msg.header == b"head"
    assert type(msg.data) is bytes
    assert type(msg.header) is bytes


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_buffers_are_copied_on_assignment(kind: type[Any]) -> None:
    msg = Message()
    data, header = bytearray(b"reply"), bytearray(b"h")
    msg.data = kind(data)
    msg.header = kind(header)
    data[0] = ord("X")
    header[0] = ord("Y")
    assert (msg.data, msg.header) == (b"reply", b"h")
    assert type(msg.data) is bytes


def test_bytes_are_kept_without_a_copy() -> None:
    payload = b"x" * 100_000
    msg = Message(payload)
    assert msg.data is payload


@pytest.mark.parametrize("value", ["text", 42, None, [1, 2]])
def test_non_bytes_payloads_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match=rf"Message\.data must be bytes-like, got {type(value).__name__}"):
        Message(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Message\.header must be bytes-like"):
        Message(header=value)  # type: ignore[arg-type]
    msg = Message(b"ok")
    with pytest.raises(TypeError, match=r"Message\.data must be bytes-like"):
        msg.data = value  # type: ignore[assignment]
    assert msg.data == b"ok"


def test_reply_pattern_keeps_identity_and_destination() -> None:
    """Replying = replace data on the received message and send it back (PROTOCOL.md 10)."""
    msg = Message(b"ping", address="127.0.0.1", port=35011)
    identity = msg.identity
    msg.data = b"pong"
    assert (msg.identity, msg.address, msg.port, msg.data) == (identity, "127.0.0.1", 35011, b"pong")


# --- identity ------------------------------------------------------------------------------


def test_identity_is_16_random_bytes() -> None:
    identities = {Message().identity for _ in range(1000)}
    assert len(identities) == 1000  # 128 random bits: a collision means no randomness
    assert all(type(i) is bytes and len(i) == 16 for i in identities)
    assert bytes(16) not in identities
    # every byte position varies (catches e.g. a counter or a truncated random source)
    for position in range(16):
        assert len({i[position] for i in identities}) > 100


def test_identities_stay_unique_across_many_batches() -> None:
    count = 10 * _message.IDENTITY_BATCH + 7  # crosses refills, not on a batch boundary
    identities = [Message().identity for _ in range(count)]
    assert len(set(identities)) == count
    assert all(type(i) is bytes and len(i) == 16 for i in identities)


def test_identities_come_from_os_urandom_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(_message.os, "urandom", counting)
    _message._identities.clear()  # start from an empty pool
    for _ in range(2 * _message.IDENTITY_BATCH + 1):
        Message()
    assert calls == [16 * _message.IDENTITY_BATCH] * 3


_FORK_CHILD = """
import os, sys
from trio_chirp import Message

Message()  # the parent has a pool of identities drawn, as any running node has
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, b"".join(Message().identity for _ in range(50)))
    os._exit(0)
os.close(write)
child = b""
while chunk := os.read(read, 4096):
    child += chunk
os.waitpid(pid, 0)
parent = [Message().identity for _ in range(50)]
child_ids = [child[i : i + 16] for i in range(0, len(child), 16)]
assert len(child_ids) == 50, len(child)
print(len(set(parent) & set(child_ids)))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_identities_of_its_own() -> None:
    # Without the at-fork hook the child would hand out the parent's next identities:
    # two nodes' messages with the same identity would match each other's ACKs.
    result = subprocess.run(
        [sys.executable, "-c", _FORK_CHILD], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "0"


# --- release -----------------------------------------------------------------------------------


def test_release_of_a_local_message_is_a_no_op() -> None:
    msg = Message(b"local")
    msg.release()
    msg.release(ack=False)
    assert not msg.has_slot
    assert msg.data == b"local"


def test_release_calls_the_hook_once_with_ack() -> None:
    calls: Calls = []
    msg = with_slot(Message(b"in"), calls)
    assert msg.has_slot
    msg.release()
    assert calls == [(msg, True)]
    assert not msg.has_slot
    msg.release()
    msg.release(ack=False)
    assert calls == [(msg, True)]  # idempotent


def test_release_without_ack() -> None:
    calls: Calls = []
    msg = with_slot(Message(), calls)
    msg.release(ack=False)
    assert calls == [(msg, False)]


def test_hook_may_release_again_without_recursion() -> None:
    calls: list[bool] = []
    msg = Message()

    def hook(m: Message, ack: bool) -> None:
        calls.append(ack)
        m.release()  # the slot is already gone: a no-op

    msg._release_hook = hook
    msg.release()
    assert calls == [True]


def test_received_message_holds_a_slot_until_released() -> None:
    """How the node builds a delivered message: fields from the frame, no new identity."""
    calls: Calls = []
    msg = Message._received(
        identity=b"I" * 16,
        serial=7,
        header=b"h",
        data=b"ping",
        address="127.0.0.1",
        port=35011,
        remote_identity=b"R" * 16,
        ack_requested=True,
        release_hook=lambda m, ack: calls.append((m, ack)),
    )
    assert (msg.identity, msg.serial, msg.header, msg.data) == (b"I" * 16, 7, b"h", b"ping")
    assert (msg.address, msg.port) == ("127.0.0.1", 35011)
    assert (msg.remote_identity, msg.ack_requested) == (b"R" * 16, True)
    assert msg.has_slot
    msg.release()
    msg.release()
    assert calls == [(msg, True)]
    assert not msg.has_slot


# --- garbage collection of an unreleased message ---------------------------------------------------


def test_unreleased_message_warns_and_frees_its_slot_without_ack() -> None:
    calls: list[tuple[int, bool]] = []
    msg = Message(b"forgotten")
    msg._release_hook = lambda m, ack: calls.append((id(m), ack))
    msg_id = id(msg)
    with pytest.warns(ResourceWarning, match=r"garbage-collected without release\(\)") as record:
        del msg  # the last reference: __del__ runs right here
    assert calls == [(msg_id, False)]
    assert "freed without ACK" in str(record[0].message)


def test_unreleased_message_held_by_a_cycle_warns_when_collected() -> None:
    calls: Calls = []
    msg = with_slot(Message(), calls)
    holder: dict[str, Any] = {"msg": msg}
    holder["self"] = holder
    ref = weakref.ref(msg)
    del msg
    gc.disable()  # only the collect() below may find the cycle
    try:
        del holder
        with pytest.warns(ResourceWarning):
            gc.collect()
    finally:
        gc.enable()
    assert ref() is None
    assert [ack for _, ack in calls] == [False]


def test_released_or_local_messages_do_not_warn() -> None:
    calls: Calls = []
    released = with_slot(Message(), calls)
    released.release()
    local = Message()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        del released, local
        gc.collect()
    assert [ack for _, ack in calls] == [True]


def test_slot_is_freed_even_when_warnings_are_errors() -> None:
    """Under ``-W error`` the warning raises inside __del__; the slot must still be freed, or
    the connection would never read again."""
    calls: list[bool] = []
    unraisable: list[Any] = []
    msg = Message()
    msg._release_hook = lambda m, ack: calls.append(ack)
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            del msg
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert calls == [False]
    assert len(unraisable) == 1
    assert isinstance(unraisable[0].exc_value, ResourceWarning)


# --- odds and ends --------------------------------------------------------------------------------


def test_repr_shows_identity_and_sizes_not_payload() -> None:
    msg = Message(b"secret" * 10, header=b"h", address="10.0.0.1", port=2998)
    text = repr(msg)
    assert msg.identity.hex() in text
    assert "data=60 B" in text
    assert "header=1 B" in text
    assert "address='10.0.0.1'" in text
    assert "port=2998" in text
    assert "secret" not in text


def test_slots_reject_unknown_attributes() -> None:
    msg = Message()
    with pytest.raises(AttributeError):
        msg.payload = b"typo"  # type: ignore[attr-defined]
    assert weakref.ref(msg)() is msg
