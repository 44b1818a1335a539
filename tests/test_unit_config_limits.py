"""``Config``'s limits at their edges (connections, handshakes, the budget, ``verify_peer``)
and the values derived from them (``effective_max_connections`` from the process's file
descriptor limit, ``worst_case_unreleased_bytes``)."""

from __future__ import annotations

import resource
import sys

import pytest

from trio_chirp import Config
from trio_chirp._config import FD_MARGIN, MAX_CONNECTIONS_DEFAULT

EDGES = [
    ("max_connections", 0, 2**20),
    ("max_handshakes", 1, 2**20),
    ("max_unreleased", 0, 2**31 - 1),
    ("max_unreleased_bytes", 0, 2**63 - 1),
]


@pytest.mark.parametrize(("name", "low", "high"), EDGES)
def test_integer_limits_at_their_edges(name: str, low: int, high: int) -> None:
    for good in (low, high):
        assert getattr(Config(**{name: good}), name) == good
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf"Config\.{name}={bad} is out of range"):
            Config(**{name: bad})
    with pytest.raises(TypeError, match=rf"Config\.{name} must be an int"):
        Config(**{name: float(low)})


def test_verify_peer_must_be_callable_or_none() -> None:
    assert Config(verify_peer=None).verify_peer is None
    assert Config(verify_peer=bool).verify_peer is bool
    with pytest.raises(TypeError, match="verify_peer must be callable or None, got int"):
        Config(verify_peer=1)  # type: ignore[arg-type]


def test_the_defaults_derived_from_file_descriptors() -> None:
    assert (MAX_CONNECTIONS_DEFAULT, FD_MARGIN) == (1024, 64)


@pytest.mark.parametrize(
    ("soft", "expected"),
    [
        (resource.RLIM_INFINITY, 1024),
        (100_000, 1024),
        (1024 + 64, 1024),
        (500, 500 - 64),
        (80, 16),  # never below 16
        (16 + 64, 16),
    ],
)
def test_effective_max_connections_follows_the_soft_limit(
    monkeypatch: pytest.MonkeyPatch, soft: int, expected: int
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert Config().effective_max_connections == expected
    assert Config(max_connections=7).effective_max_connections == 7


def test_without_the_resource_module_the_default_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource raises ImportError
    assert Config().effective_max_connections == MAX_CONNECTIONS_DEFAULT


def test_worst_case_unreleased_bytes() -> None:
    config = Config(max_unreleased_bytes=1000, max_connections=3, max_msg_size=100)
    assert config.worst_case_unreleased_bytes == 1000 + 3 * 100
