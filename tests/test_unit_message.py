"""``Message``'s private state as its helpers show it, its context manager, and ``SendOptions``."""

from __future__ import annotations

import pytest

from trio_chirp import Message
from trio_chirp._message import SendOptions, cost_of, in_use, received_message, set_in_use


def _received(releases: list[bool], **kw: object) -> Message:
    return received_message(
        bytes(16), 1, b"", b"x", "10.0.0.1", 2998, b"\0" * 16, True,
        lambda m, ack: releases.append(ack), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_new_message_is_free_and_costs_nothing() -> None:
    msg = Message(b"x")
    assert not in_use(msg)
    assert cost_of(msg) == 0
    assert not msg.has_slot
    set_in_use(msg, True)
    assert in_use(msg)
    set_in_use(msg, False)
    assert not in_use(msg)


def test_a_received_message_is_free_and_costs_what_it_was_given() -> None:
    releases: list[bool] = []
    msg = _received(releases)
    assert not in_use(msg)
    assert cost_of(msg) == 0
    assert msg.has_slot
    msg.release()
    costly = _received(releases, cost=42)
    assert cost_of(costly) == 42
    costly.release(ack=False)
    assert releases == [True, False]


def test_the_context_manager_acks_on_a_normal_exit_only() -> None:
    releases: list[bool] = []
    msg = _received(releases)
    with msg as entered:
        assert entered is msg
        assert msg.has_slot
    assert releases == [True]
    assert not msg.has_slot
    failing = _received(releases)
    with pytest.raises(KeyError), failing:
        raise KeyError("handler bug")
    assert releases == [True, False]


def test_send_options_defaults() -> None:
    options = SendOptions()
    assert options.meta is None
    assert options.wait_until_written is False
    assert options.deadline_travels is True
    assert options.travel_at is None
