"""Opinions flow back: what this exchange's members think of mirrored entries is forwarded to
the exchange the mirror is pulled from, signed by this exchange's key, as the opinion of this
exchange (its organisation there); the origin aggregates it like any other member's."""

from collections.abc import Callable
from typing import Any

from federation.models import MirroredSet, Peer
from signals.models import Opinion

# Opinions forwarded per request (the API takes up to 10,000 items).
BATCH = 1_000


def do_forward_opinions(
    peer: Peer,
    post: Callable[[str, dict[str, Any]], Any],
    failure: Callable[[Any, str], Exception],
) -> int:
    """Forward the opinions given here on ``peer``'s mirrors since the last forwarding (not the
    peer's own: it has them), per remote set, oldest first; the peer's watermark moves after
    each accepted request, so a failure resends from there (an opinion is one per organisation
    and entry, the latest counts: a resent one changes nothing). Returns how many were sent.
    ``post(path, body)`` sends a signed request; ``failure(response, what)`` is raised for an
    error answer."""
    sent, latest = 0, peer.opinions_forwarded_at
    mirrors = MirroredSet.objects.filter(peer=peer).values_list("hash_set_id", "remote_slug")
    for set_id, slug in mirrors:
        opinions = Opinion.objects.filter(entry__hash_set_id=set_id).exclude(
            organisation_id=peer.organisation_id
        )
        if peer.opinions_forwarded_at is not None:
            opinions = opinions.filter(updated_at__gt=peer.opinions_forwarded_at)
        rows = list(
            opinions.order_by("updated_at").values_list(
                "entry__signal__type", "entry__signal__value", "category", "tags", "updated_at"
            )
        )
        path = f"/api/v1/sets/{slug}/opinions"
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            body = {"signals": [{"type": t, "value": v, "category": c, "tags": tags}
                                for t, v, c, tags, _ in chunk]}  # fmt: skip
            response = post(path, body)
            if response.status_code != 200:
                raise failure(response, f"POST {path}")
            sent += len(chunk)
            latest = max(filter(None, [latest, chunk[-1][4]]))
    if latest != peer.opinions_forwarded_at:
        Peer.objects.filter(pk=peer.pk).update(opinions_forwarded_at=latest)
        peer.opinions_forwarded_at = latest
    return sent
