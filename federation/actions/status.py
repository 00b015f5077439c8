"""How far behind each peer is, as staff see it (admin, the ops dashboard) and Prometheus
scrapes it (``ops.metrics``): one definition of a peer's lag, read in two queries."""

from dataclasses import dataclass
from datetime import datetime

from federation.models import MirroredSet, Peer


@dataclass(frozen=True)
class MirrorStatus:
    """One remote set's mirror: its position in the peer's feed and what it applied."""

    remote_set: str
    local_set: str
    cursor: str
    applied: int
    refused: int
    resyncs: int
    last_pulled_at: datetime | None


@dataclass(frozen=True)
class PeerStatus:
    name: str
    state: str
    lag_seconds: float
    last_success_at: datetime | None
    last_applied: int
    failures: int
    last_error: str
    next_attempt_at: datetime
    mirrors: list[MirrorStatus]


def lag_seconds(peer: Peer, now: datetime) -> float:
    """Seconds since the last complete pull of ``peer`` began: what the peer published since may
    not be here yet. A peer never pulled has been behind since the link was made."""
    since = peer.last_success_at or peer.created_at
    return max(0.0, (now - since).total_seconds())


def peer_statuses(now: datetime) -> list[PeerStatus]:
    """Every peer with its lag, the last pull's outcome and its mirrors' positions, by name."""
    mirrors: dict[int, list[MirrorStatus]] = {}
    for mirror in MirroredSet.objects.select_related("hash_set").order_by("remote_slug"):
        mirrors.setdefault(mirror.peer_id, []).append(
            MirrorStatus(
                remote_set=mirror.remote_slug,
                local_set=mirror.hash_set.slug,
                cursor=mirror.cursor,
                applied=mirror.applied,
                refused=mirror.refused,
                resyncs=mirror.resyncs,
                last_pulled_at=mirror.last_pulled_at,
            )
        )
    return [
        PeerStatus(
            name=peer.name,
            state=peer.state,
            lag_seconds=lag_seconds(peer, now),
            last_success_at=peer.last_success_at,
            last_applied=peer.last_applied,
            failures=peer.failures,
            last_error=peer.last_error,
            next_attempt_at=peer.next_attempt_at,
            mirrors=mirrors.get(peer.pk, []),
        )
        for peer in Peer.objects.order_by("name")
    ]
