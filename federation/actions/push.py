"""Push-assist: a webhook from a peer wakes a pull of it at once, instead of at the next beat.

This exchange holds a subscription at each peer (the peer's ordinary webhook machinery) for the
sets it mirrors, pointed at its own ``/federation/push/<the peer's id>``; a delivery there
is verified (Standard Webhooks, ``v1a``: Ed25519) against the peer's pinned key and queues a
pull. The delivery's body is not applied: the pull reads the feed, signed, as always."""

from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.utils import timezone

from exchange.enqueue import enqueue_once
from exchange.problems import Problem
from federation.models import Peer
from hashx.webhooks import WebhookVerificationError, verify

PULL = "federation.pull_peer"


def push_url(peer: Peer) -> str:
    """Where ``peer`` sends its webhooks here: named by the peer, whose key must sign them."""
    return f"{settings.HASHX_PUBLIC_URL}/federation/push/{peer.exchange_id}"


def do_ensure_push(
    peer: Peer,
    slugs: list[str],
    own_exchange: str,
    send: Callable[[str, str, dict[str, Any]], Any],
) -> str:
    """Hold a subscription at the peer for ``slugs`` (create it, or change its sets); returns
    what went wrong ("" when nothing did). A peer that refuses it (say, it may not call this
    exchange's URL) is still pulled on schedule: this never fails the pull.
    ``send(method, path, body)`` makes a signed request to the peer."""
    slugs = sorted(slugs)
    if not settings.HASHX_FEDERATION_PUSH or not slugs:
        return ""
    error = ""
    if peer.push_subscription and slugs != sorted(peer.push_sets):
        answer = send("PATCH", f"/api/v1/subscriptions/{peer.push_subscription}", {"sets": slugs})
        if answer.status_code == 404:
            peer.push_subscription = ""  # removed at the peer: make a new one
        elif answer.status_code != 200:
            error = f"PATCH subscription answered {answer.status_code}: {answer.text[:200]}"
    if not peer.push_subscription:
        body = {"url": push_url(peer), "sets": slugs,
                "description": f"push-assist for {own_exchange}"}  # fmt: skip
        answer = send("POST", "/api/v1/subscriptions", body)
        if answer.status_code == 201:
            peer.push_subscription = str(answer.json()["id"])
        else:
            error = f"POST /api/v1/subscriptions answered {answer.status_code}: {answer.text[:200]}"
    Peer.objects.filter(pk=peer.pk).update(
        push_subscription=peer.push_subscription,
        push_sets=slugs if not error else peer.push_sets,
        push_error=error,
    )
    return error


def do_request_pull(exchange_id: str, body: bytes, headers: Mapping[str, str]) -> Peer:
    """A peer's webhook: 404 for an exchange that is not a peer, 401 unless it is signed by the
    peer's pinned key; then its next pull is due now and queued (once)."""
    peer = Peer.objects.filter(exchange_id=exchange_id).first()
    if peer is None:
        raise Problem("not-found", "No such peer")
    try:
        verify(body, headers, [Ed25519PublicKey.from_public_bytes(bytes(peer.public_key))])
    except WebhookVerificationError as exc:
        raise Problem("signature-invalid", f"Not signed by the peer's pinned key: {exc}") from None
    if peer.state == Peer.State.ACTIVE:
        Peer.objects.filter(pk=peer.pk).update(next_attempt_at=timezone.now())
        enqueue_once(PULL, str(peer.pk), ttl=600)
    return peer
