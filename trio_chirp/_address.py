"""Peer addresses: one spelling per peer, the plaintext literals, binding, and ``addr:port`` text.

A remote is keyed by ``(address, port)``, so the same peer must always be spelled the
same way (``normalize_address``). libchirp decides plaintext by comparing the address
text with two literals (``LOCAL_ADDRESSES``, docs/protocol.md, section 2.2), which makes the
address a connection is dialled *from* matter too (``bind_for``). Every message that
names a peer prints it with ``format_peer``, which brackets IPv6 (``[::1]:2998``) so the
port is never mistaken for part of the address.

Plain functions over strings and ``Config`` values: no trio, no node.
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = [
    "LOCAL_ADDRESSES",
    "RemoteKey",
    "bind_for",
    "destination_of",
    "format_peer",
    "listens_on",
    "normalize_address",
]

RemoteKey = tuple[str, int]
"""A peer node: its normalised IP literal and the port it listens on (announced in its handshake)."""

LOCAL_ADDRESSES: Final = frozenset({"127.0.0.1", "::1"})
"""libchirp's "local" test is a string compare on these two literals (docs/protocol.md, section 2.2)."""

_ADDRESS_CACHE_SIZE: Final = 4096
_address_cache: dict[str, str] = {}


def normalize_address(address: object) -> str:
    """The canonical text of an IP literal, so one peer is one remote however it is spelled.

    Cached: parsing with ``ipaddress`` costs more than the rest of an asynchronous send.
    """
    if not isinstance(address, str):
        raise ValueError(f"message address must be an IP address literal, got {address!r}")
    if not address:
        raise ValueError("message address is not set: the peer's IP address literal is needed")
    cached = _address_cache.get(address)
    if cached is not None:
        return cached
    try:
        normal = str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"message address must be an IP address literal, got {address!r}") from None
    if len(_address_cache) >= _ADDRESS_CACHE_SIZE:
        _address_cache.clear()
    _address_cache[address] = normal
    return normal


def destination_of(address: object, port: object) -> RemoteKey:
    """The remote key a message to ``address``/``port`` goes to (``ValueError`` naming what is wrong).

    Runs for every send: a cached ``str`` address and a plain ``int`` port are taken
    without a further call; anything else goes the whole way.
    """
    normal = _address_cache.get(address) if type(address) is str else None
    if normal is None:
        normal = normalize_address(address)
    if type(port) is int and 1 <= port <= 65535:
        return normal, port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"message port must be in 1..65535, got {port!r}")
    return normal, port


def format_peer(address: str | None, port: int | None) -> str:
    """``address:port`` for logs and errors; IPv6 in brackets; ``?`` for what is not known (or set)."""
    host = "?" if not address else f"[{address}]" if ":" in address else address
    return f"{host}:{port or '?'}"


def bind_for(destination: str, bind_v4: str | None, bind_v6: str | None) -> str | None:
    """The address to dial ``destination`` from, so the peer sees the address we listen on.

    Then both ends reach the same encryption decision (docs/protocol.md, section 2.2). Not bound:
    wildcards; 127.0.0.1 and ::1 (dialled from themselves, so plaintext); and a loopback
    ``bind`` for a destination that is not loopback (it could not reach it).
    """
    if destination in LOCAL_ADDRESSES:
        return None
    bind = bind_v6 if ":" in destination else bind_v4
    if bind is None or ipaddress.ip_address(bind).is_unspecified:
        return None
    if ipaddress.ip_address(bind).is_loopback and not ipaddress.ip_address(destination).is_loopback:
        return None
    return bind


def listens_on(address: str, local_address: str | None, bind_v4: str | None, bind_v6: str | None) -> bool:
    """Whether a node bound to ``bind_v4``/``bind_v6`` listens on ``address``.

    ``local_address`` is our end of the connection the question comes from: a wildcard
    listener listens on every address of this host, the whole loopback range included,
    and on whatever address that connection arrived at.
    """
    ip = ipaddress.ip_address(address)
    bind = bind_v4 if ip.version == 4 else bind_v6
    if bind is None:
        return False
    if not ipaddress.ip_address(bind).is_unspecified:
        return ipaddress.ip_address(bind) == ip
    return ip.is_loopback or (local_address is not None and ipaddress.ip_address(local_address) == ip)
