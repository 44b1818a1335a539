"""``Chirp.statistics()``: one frozen snapshot gathered from every service of the node."""

from __future__ import annotations

from collections import Counter

from .._address import RemoteKey
from .._requests import Requests
from .._stats import NodeStats, RemoteStats
from ._delivery import Delivery
from ._links import Links
from ._remotes import NodeRemote, RemoteTable
from ._sending import Sender
from ._state import NodeState

__all__ = ["node_statistics"]


def _announced_version(remote: NodeRemote) -> int | None:
    conn = remote.current
    announcement = None if conn is None else conn.peer_announcement
    return None if announcement is None else announcement.version


def node_statistics(
    state: NodeState,
    links: Links,
    remotes: RemoteTable,
    delivery: Delivery,
    requests: Requests,
    sender: Sender,
) -> NodeStats:
    connections = links.connections
    conns_by_remote: Counter[RemoteKey] = Counter()
    slots_by_remote: Counter[RemoteKey] = Counter()
    for conn in connections:
        if conn.remote is not None:
            conns_by_remote[conn.remote.key] += 1
            slots_by_remote[conn.remote.key] += conn.slots.in_use
    remote_stats = tuple(
        RemoteStats(
            address=remote.address,
            port=remote.port,
            connections=conns_by_remote[key],
            connected=remote.current is not None,
            queued=remote.queued,
            in_flight=len(remote.in_flight),
            window=remote.window,
            unwritten_async=remote.unwritten_async,
            reconnect_blocked=remote.blocked,
            slots_in_use=slots_by_remote[key],
            last_error=None if remote.last_error is None else str(remote.last_error),
            last_error_at=remote.last_error_at,
            trio_chirp_version=_announced_version(remote),
        )
        for key, remote in remotes.items()
    )
    table = requests.table
    inbox = delivery.inbox
    budget = delivery.budget
    traffic = links.traffic()
    return NodeStats(
        port=state.port,
        connections=len(connections),
        remotes=remote_stats,
        slots_in_use=sum(c.slots.in_use for c in connections),
        slots_peak=max([links.peak_slots, *(c.slots.peak for c in connections)]),
        queued=sum(r.queued for r in remotes),
        in_flight=sum(len(r.in_flight) for r in remotes),
        undelivered=len(inbox),
        unreleased=budget.count,
        unreleased_bytes=budget.size,
        leftovers=inbox.leftovers,
        leftovers_dropped=delivery.leftovers_dropped,
        connections_refused=links.admission.refused,
        connections_shed=links.admission.shed,
        messages_lost=remotes.lost,
        requests_pending=len(table),
        requests_completed=table.completed,
        requests_failed=table.failed,
        late_responses=table.late_responses,
        acks_before_response=table.acks_before_response,
        error_responses_in=requests.error_responses_in,
        error_responses_out=requests.error_responses_out,
        unmatched_error_responses=requests.unmatched_error_responses,
        header_errors=delivery.header_errors,
        oversized_refused=delivery.oversized_refused,
        errors=dict(links.errors),
        send_errors=dict(sender.send_errors),
        messages_in=traffic.messages_in,
        acks_in=traffic.acks_in,
        noops_in=traffic.noops_in,
        messages_out=traffic.messages_out,
        acks_out=traffic.acks_out,
        noops_out=traffic.noops_out,
        bytes_in=traffic.bytes_in,
        bytes_out=traffic.bytes_out,
    )
