"""The scrape-time gauges (exchange/metrics.py ``scrape_gauge``): states of the data, read when
/metrics is scraped, each with one or two cheap queries."""

import json
from collections.abc import Iterator

from django.conf import settings
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audit.models import AuditEvent, AuditSeal
from exchange.kv import redis_client
from exchange.metrics import Reading, scrape_gauge
from federation.actions.status import peer_statuses
from signals.feed.positions import visible_horizon
from signals.feed.reads import LAG_CAP, SQL_LAG
from signals.models import Subscription


def queue_depth() -> Iterator[Reading]:
    client = redis_client()
    for queue in settings.CELERY_TASK_QUEUES:
        yield Reading((queue.name,), float(client.llen(queue.name)))


def audit_seal_lag() -> Iterator[Reading]:
    """Seconds since the oldest event not yet sealed into the chain was recorded (0: all are)."""
    last = AuditSeal.objects.order_by("-seq").values_list("event_id", flat=True).first() or 0
    oldest = (
        AuditEvent.objects.filter(pk__gt=last, seal__isnull=True)
        .order_by("pk")
        .values_list("occurred_at", flat=True)
        .first()
    )
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
    yield Reading((), max(0.0, age))


def _current_generation() -> tuple[float, int] | None:
    directory = settings.HASHX_MATCH_DIR
    try:
        name = (directory / "CURRENT").read_text().strip()
        meta_path = directory / name / "meta.json"
        meta = json.loads(meta_path.read_text())
        return meta_path.stat().st_mtime, int(meta["count"])
    except (OSError, ValueError, KeyError):
        return None


def index_age() -> Iterator[Reading]:
    generation = _current_generation()
    if generation is not None:
        yield Reading((), max(0.0, timezone.now().timestamp() - generation[0]))


def index_size() -> Iterator[Reading]:
    generation = _current_generation()
    if generation is not None:
        yield Reading((), float(generation[1]))


def feed_lag() -> Iterator[Reading]:
    """Changes each active subscription is behind the feed (counted up to LAG_CAP)."""
    rows = (
        Subscription.objects.filter(state=Subscription.State.ACTIVE)
        .annotate(behind=RawSQL(SQL_LAG, [str(visible_horizon()), LAG_CAP]))  # noqa: S611
        .values_list("pk", "organisation__slug", "behind")
    )
    for pk, org, behind in rows:
        yield Reading((str(pk), org), float(behind))


def peer_lag() -> Iterator[Reading]:
    """Seconds since each peer's last complete pull began (federation.actions.status)."""
    for peer in peer_statuses(timezone.now()):
        yield Reading((peer.name, peer.state), peer.lag_seconds)


def peer_failures() -> Iterator[Reading]:
    for peer in peer_statuses(timezone.now()):
        yield Reading((peer.name,), float(peer.failures))


def mirror_applied() -> Iterator[Reading]:
    """Each mirror's position in its peer's feed, as the changes applied there in all."""
    for peer in peer_statuses(timezone.now()):
        for mirror in peer.mirrors:
            yield Reading((peer.name, mirror.remote_set), float(mirror.applied))


def register() -> None:
    scrape_gauge(
        "hashx_celery_queue_depth", "Tasks waiting in each Celery queue.", queue_depth, ["queue"]
    )
    scrape_gauge(
        "hashx_audit_seal_lag_seconds",
        "Age of the oldest audit event not yet sealed into the hash chain (0: all sealed).",
        audit_seal_lag,
    )
    scrape_gauge(
        "hashx_match_index_generation_age_seconds",
        "Age of the PDQ index's current generation on this host.",
        index_age,
    )
    scrape_gauge(
        "hashx_match_index_generation_entries",
        "PDQ entries in the index's current generation on this host.",
        index_size,
    )
    scrape_gauge(
        "hashx_feed_lag_changes",
        f"Changes an active webhook subscription is behind the feed (counted up to {LAG_CAP}).",
        feed_lag,
        ["subscription", "organisation"],
    )
    scrape_gauge(
        "hashx_federation_peer_lag_seconds",
        "Seconds since the last complete pull of each peer exchange began (since it was added,"
        " when never pulled); state: active, paused or stopped.",
        peer_lag,
        ["peer", "state"],
    )
    scrape_gauge(
        "hashx_federation_peer_failures",
        "Failed pulls of each peer exchange in a row (0: the last one succeeded).",
        peer_failures,
        ["peer"],
    )
    scrape_gauge(
        "hashx_federation_mirror_changes_applied",
        "Changes of a peer's set applied to its mirror here, in all (its position in the feed).",
        mirror_applied,
        ["peer", "set"],
    )
