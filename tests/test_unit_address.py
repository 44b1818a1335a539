"""Address helpers (``_address``): one spelling per peer, remote keys, ``addr:port`` text,
which address to dial from, and whether a bound node listens on an address."""

from __future__ import annotations

import pytest

from trio_chirp._address import (
    _ADDRESS_CACHE_SIZE,
    LOCAL_ADDRESSES,
    _address_cache,
    bind_for,
    destination_of,
    format_peer,
    listens_on,
    normalize_address,
)


def test_normalize_address_spells_each_peer_one_way_and_caches_it() -> None:
    assert normalize_address("::0001") == "::1"
    assert normalize_address("::0001") == "::1"  # from the cache
    assert _address_cache["::0001"] == "::1"
    assert normalize_address("10.0.0.1") == "10.0.0.1"
    assert normalize_address("2001:DB8::1") == "2001:db8::1"


@pytest.mark.parametrize("bad", [None, 1, b"10.0.0.1", "localhost", "10.0.0.256"])
def test_normalize_address_refuses_what_is_not_an_ip_literal(bad: object) -> None:
    with pytest.raises(ValueError, match="must be an IP address literal"):
        normalize_address(bad)


def test_an_empty_address_is_one_not_set() -> None:
    with pytest.raises(ValueError, match="message address is not set"):
        normalize_address("")
    with pytest.raises(ValueError, match="message address is not set"):
        destination_of("", 0)  # the address is checked first


def test_the_cache_is_bounded() -> None:
    _address_cache.clear()
    for i in range(_ADDRESS_CACHE_SIZE):
        normalize_address(f"10.{i // 256 % 256}.{i % 256}.1")
    assert len(_address_cache) == _ADDRESS_CACHE_SIZE
    assert normalize_address("192.168.0.1") == "192.168.0.1"
    assert len(_address_cache) == 1  # full: cleared, then this one
    assert _ADDRESS_CACHE_SIZE == 4096


@pytest.mark.parametrize("port", [1, 2998, 65535])
def test_destination_of_takes_ports_in_1_to_65535(port: int) -> None:
    assert destination_of("::0001", port) == ("::1", port)


@pytest.mark.parametrize("port", [0, 65536, -1, True, False, 2998.0, "2998", None])
def test_destination_of_refuses_other_ports(port: object) -> None:
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
        destination_of("10.0.0.1", port)


def test_format_peer() -> None:
    assert format_peer("10.0.0.1", 2998) == "10.0.0.1:2998"
    assert format_peer("::1", 2998) == "[::1]:2998"
    assert format_peer(None, 2998) == "?:2998"
    assert format_peer("10.0.0.1", None) == "10.0.0.1:?"
    assert format_peer(None, None) == "?:?"


def test_the_plaintext_literals() -> None:
    assert frozenset({"127.0.0.1", "::1"}) == LOCAL_ADDRESSES


@pytest.mark.parametrize(
    ("destination", "bind_v4", "bind_v6", "expected"),
    [
        ("127.0.0.1", "127.0.0.2", None, None),  # the literals dial from themselves
        ("::1", None, "::1", None),
        ("10.0.0.2", "10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.2", None, "fe80::1", None),  # no v4 bind
        ("10.0.0.2", "0.0.0.0", None, None),  # a wildcard
        ("2001:db8::2", "10.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("2001:db8::2", "10.0.0.1", "::", None),
        ("10.0.0.2", "127.0.0.2", None, None),  # a loopback bind cannot reach it
        ("127.0.0.3", "127.0.0.2", None, "127.0.0.2"),  # but can reach the loopback range
    ],
)
def test_bind_for(destination: str, bind_v4: str | None, bind_v6: str | None, expected: str | None) -> None:
    assert bind_for(destination, bind_v4, bind_v6) == expected


@pytest.mark.parametrize(
    ("address", "local", "bind_v4", "bind_v6", "expected"),
    [
        ("10.0.0.1", None, None, "::", False),  # no v4 listener
        ("::1", None, "0.0.0.0", None, False),  # no v6 listener
        ("10.0.0.1", None, "10.0.0.1", None, True),
        ("10.0.0.2", None, "10.0.0.1", None, False),
        ("2001:db8::1", None, None, "2001:db8::1", True),
        ("127.0.0.5", None, "0.0.0.0", None, True),  # a wildcard listens on all of loopback
        ("10.0.0.7", None, "0.0.0.0", None, False),  # not known to be ours
        ("10.0.0.7", "10.0.0.7", "0.0.0.0", None, True),  # the connection arrived there
        ("10.0.0.7", "10.0.0.8", "0.0.0.0", None, False),
    ],
)
def test_listens_on(
    address: str, local: str | None, bind_v4: str | None, bind_v6: str | None, expected: bool
) -> None:
    assert listens_on(address, local, bind_v4, bind_v6) is expected
