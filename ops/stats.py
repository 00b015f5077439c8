"""The figures behind the staff dashboard, the member page and ``GET /api/v1/stats``: each a
few aggregate queries, over the whole exchange (staff) or scoped to one organisation (members
see only their own: ``member_stats``)."""

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.utils import timezone

from audit.models import AuditEvent
from exchange.ratelimit import Quota, charge
from members.models import FeedToken, Organisation, SigningKey
from members.quotas import match_quota, requests_quota, signals_quota
from signals.models import Batch, HashSet, SetEntry, Subscription

DAYS = 14
EXPIRING_WITHIN = timedelta(days=14)


def last_days(today: date, days: int = DAYS) -> list[date]:
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def published_per_day(
    since: date, organisation: Organisation | None = None
) -> dict[str, dict[date, int]]:
    """Signals accepted per day per publishing organisation (by slug), from ``since``."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    batches = Batch.objects.filter(created_at__gte=start)
    if organisation is not None:
        batches = batches.filter(organisation=organisation)
    rows = (
        batches.annotate(day=TruncDate("created_at"))
        .values("organisation__slug", "day")
        .annotate(signals=Sum("accepted"))
        .order_by("organisation__slug", "day")
    )
    out: dict[str, dict[date, int]] = {}
    for row in rows:
        out.setdefault(row["organisation__slug"], {})[row["day"]] = row["signals"] or 0
    return out


def failed_per_day(since: date) -> dict[date, int]:
    """Batches that failed, per day they were published, from ``since``."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    rows = (
        Batch.objects.filter(state=Batch.State.FAILED, created_at__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("pk"))
    )
    return {row["day"]: row["n"] for row in rows}


@dataclass(frozen=True)
class SetFigures:
    slug: str
    owner: str
    active: int
    tombstones: int
    positive: int
    negative: int
    disputed: int


def set_figures(sets: QuerySet[HashSet]) -> list[SetFigures]:
    """Active entries and tombstones of each set, and its entries' opinions: positive only,
    negative only, or disputed (both). One grouped query."""
    active = Q(state=SetEntry.State.ACTIVE)
    rows = (
        SetEntry.objects.filter(hash_set__in=sets)
        .values("hash_set__slug", "hash_set__owner__slug")
        .annotate(
            active=Count("pk", filter=active),
            tombstones=Count("pk", filter=~active),
            positive=Count("pk", filter=active & Q(positive_count__gt=0, negative_count=0)),
            negative=Count("pk", filter=active & Q(negative_count__gt=0, positive_count=0)),
            disputed=Count("pk", filter=active & Q(positive_count__gt=0, negative_count__gt=0)),
        )
        .order_by("hash_set__slug")
    )
    counted = {
        row["hash_set__slug"]: SetFigures(
            row["hash_set__slug"], row["hash_set__owner__slug"], row["active"],
            row["tombstones"], row["positive"], row["negative"], row["disputed"],
        )
        for row in rows
    }  # fmt: skip
    # Sets with no entries yet are figures too (all zero).
    for slug, owner in sets.values_list("slug", "owner__slug"):
        counted.setdefault(slug, SetFigures(slug, owner, 0, 0, 0, 0, 0))
    return sorted(counted.values(), key=lambda figures: figures.slug)


@dataclass(frozen=True)
class WebhookHealth:
    id: str
    organisation: str
    url: str
    state: str
    failing_since: datetime | None
    last_delivered_at: datetime | None
    last_error: str
    delivered_24h: int
    pending: int


def webhook_health(subscriptions: QuerySet[Subscription], now: datetime) -> list[WebhookHealth]:
    day_ago = now - timedelta(days=1)
    rows = subscriptions.select_related("organisation").annotate(
        delivered_24h=Count(
            "deliveries",
            filter=Q(deliveries__state="delivered", deliveries__delivered_at__gte=day_ago),
        ),
        pending=Count("deliveries", filter=Q(deliveries__state="pending")),
    )
    return [
        WebhookHealth(
            str(s.pk), s.organisation.slug, s.url, s.state, s.failing_since,
            s.last_delivered_at, s.last_error, s.delivered_24h, s.pending,
        )
        for s in rows
    ]  # fmt: skip


def failed_batches(batches: QuerySet[Batch], since: date) -> list[dict[str, Any]]:
    start = datetime.combine(since, time.min, tzinfo=UTC)
    rows = batches.filter(state=Batch.State.FAILED, created_at__gte=start).select_related(
        "hash_set", "organisation"
    )
    return [
        {
            "id": str(b.pk),
            "set": b.hash_set.slug,
            "organisation": b.organisation.slug,
            "created_at": b.created_at,
            "error": b.error[:200],
        }
        for b in rows.order_by("-created_at")[:50]
    ]


@dataclass(frozen=True)
class QuotaUse:
    name: str
    limit: int
    window: int
    remaining: int


def quota_use(organisation: Organisation) -> list[QuotaUse]:
    """Each quota the organisation has and what is left of it now (reading a bucket refills it
    to now and takes nothing)."""
    quotas: list[Quota | None] = [
        requests_quota(organisation),
        signals_quota(organisation),
        match_quota(organisation),
    ]
    out = []
    for quota in quotas:
        if quota is not None:
            decision = charge(quota, organisation.pk, 0)
            out.append(QuotaUse(quota.name, quota.limit, quota.window, decision.remaining))
    return out


def member_figures(organisation: Organisation, now: datetime) -> dict[str, Any]:
    """What the member page and the member's own stats show: last publish, last pull, keys
    that stop working soon, live feed tokens (when each was last used), quotas."""
    last_publish = Batch.objects.filter(organisation=organisation).aggregate(at=Max("created_at"))
    last_pull = AuditEvent.objects.filter(
        actor_org_id=organisation.pk, action="feed.pulled"
    ).aggregate(at=Max("occurred_at"))
    expiring = SigningKey.objects.filter(
        organisation=organisation,
        state=SigningKey.State.RETIRING,
        not_after__lte=now + EXPIRING_WITHIN,
    ).order_by("not_after")
    return {
        "last_publish_at": last_publish["at"],
        "last_pull_at": last_pull["at"],
        "keys_expiring": [
            {"key_id": key.key_id, "label": key.label, "not_after": key.not_after}
            for key in expiring
        ],
        "active_keys": SigningKey.objects.filter(
            organisation=organisation, state=SigningKey.State.ACTIVE
        ).count(),
        "feed_tokens": [
            {
                "id": str(token.pk),
                "name": token.name,
                "hint": token.hint,
                "expires_at": token.expires_at,
                "last_used_at": token.last_used_at,
            }
            for token in FeedToken.objects.filter(
                organisation=organisation, revoked_at=None, expires_at__gt=now
            ).order_by("expires_at")
        ],
        "quotas": [asdict(use) for use in quota_use(organisation)],
    }


def member_stats(organisation: Organisation, now: datetime | None = None) -> dict[str, Any]:
    """An organisation's own figures (``GET /api/v1/stats``): nothing about other members
    beyond the sets it owns."""
    now = now or timezone.now()
    days = last_days(now.date())
    published = published_per_day(days[0], organisation).get(organisation.slug, {})
    owned = HashSet.objects.filter(owner=organisation)
    return {
        "organisation": organisation.slug,
        "published_per_day": [{"day": day, "signals": published.get(day, 0)} for day in days],
        "sets": [asdict(figures) for figures in set_figures(owned)],
        "webhooks": [
            asdict(health)
            for health in webhook_health(
                Subscription.objects.filter(organisation=organisation), now
            )
        ],
        "failed_batches": failed_batches(Batch.objects.filter(organisation=organisation), days[0]),
        **member_figures(organisation, now),
    }


@dataclass(frozen=True)
class ExchangeFigures:
    published: dict[str, dict[date, int]]
    sets: list[SetFigures]
    webhooks: list[WebhookHealth]
    failed_batches: list[dict[str, Any]]
    failed_per_day: dict[date, int]
    organisations: list[Organisation]


def exchange_figures(now: datetime, since: date) -> ExchangeFigures:
    """Everything the staff dashboard draws, over every member."""
    return ExchangeFigures(
        published_per_day(since),
        set_figures(HashSet.objects.all()),
        webhook_health(Subscription.objects.all(), now),
        failed_batches(Batch.objects.all(), since),
        failed_per_day(since),
        list(Organisation.objects.annotate(last_publish=Max("batches__created_at"))),
    )


def organisation_or_404(slug: str) -> Organisation:
    return get_object_or_404(Organisation, slug=slug)


@dataclass(frozen=True)
class MemberPage:
    published: dict[date, int]
    figures: dict[str, Any]
    sets: list[SetFigures]
    webhooks: list[WebhookHealth]


def member_page(organisation: Organisation, now: datetime, since: date) -> MemberPage:
    return MemberPage(
        published_per_day(since, organisation).get(organisation.slug, {}),
        member_figures(organisation, now),
        set_figures(HashSet.objects.filter(owner=organisation)),
        webhook_health(Subscription.objects.filter(organisation=organisation), now),
    )
