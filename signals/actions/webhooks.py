"""Webhook fan-out: cut the next feed page of each subscription, claim due deliveries, send them
signed (DESIGN.md "Push").

The flow: actions that move positions call ``wake()`` (``signals.feed.wakeups``); after their
commit a dispatch runs (``do_dispatch``, also on beat as a backstop and for retries). It cuts a
page for every active subscription that has no pending delivery and has news after its cursor
in a set its organisation may read now, then claims due deliveries with ``FOR UPDATE SKIP
LOCKED`` and hands each to a send task. A claim is a lease: it pushes ``next_attempt_at`` out,
so a worker that dies mid-send leaves the delivery to be claimed again once the lease runs out.
``do_send`` posts the page; on 2xx the cursor advances (only from the page's own starting
point) and the next page is cut at once; otherwise the delivery is retried with exponential
backoff and jitter, ``Retry-After`` honoured, and an endpoint failing for
``HASHX_WEBHOOK_DISABLE_AFTER_HOURS`` (or answering 410) is disabled.
"""

import asyncio
import functools
import json
import logging
import operator
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, F, Func, OuterRef, Q
from django.utils import timezone

from audit.actions import record, record_many
from exchange import metrics, outbound
from exchange.actions.identity import get_signing_key
from hashx.webhooks import sign
from members.models import Organisation
from signals.access import peer_exchange_of, readable_by, visible_sets_of
from signals.feed.positions import Position, visible_horizon
from signals.feed.reads import SQL_HAS_NEWS, Rendered, purge_horizon, rendered_after
from signals.feed.wakeups import wake, wake_after_sends
from signals.models import Delivery, DeliveryPage, HashSet, Subscription

logger = logging.getLogger(__name__)

# Pages a dispatch may skip for one subscription when its filters leave them empty.
_MAX_EMPTY_PAGES = 20


class _AnyOf(Func):
    """``value = ANY(array)``: whether the value is one of the array's elements."""

    arity = 2
    template = "%(expressions)s)"
    arg_joiner = " = ANY("
    output_field = BooleanField()


def _waiting() -> list[Any]:
    """Active subscriptions of active organisations with no pending delivery and news after
    their cursor in the sets their organisation may read now: a set it can no longer read
    (grant removed, set made private) makes no news, so such a subscription costs nothing until
    it can read again."""
    readable = ArraySubquery(
        HashSet.objects.filter(
            readable_by(OuterRef("organisation_id"), OuterRef("organisation__kind")),
            _AnyOf(F("pk"), OuterRef("set_ids")),
        ).values("pk")
    )
    candidates = (
        Subscription.objects.filter(
            state=Subscription.State.ACTIVE, organisation__status=Organisation.Status.ACTIVE
        )
        .exclude(
            Exists(
                Delivery.objects.filter(subscription=OuterRef("pk"), state=Delivery.State.PENDING)
            )
        )
        .annotate(readable=readable)
        .values("id", "cursor_xid", "cursor_seq", "readable")
    )
    sql, params = candidates.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(SQL_HAS_NEWS.format(candidates=sql), [*params, str(visible_horizon())])
        return [row[0] for row in cursor.fetchall()]


_SQL_CLAIM = """
UPDATE signals_delivery SET claim = %(claim)s, next_attempt_at = %(lease)s
WHERE id IN (
    SELECT d.id FROM signals_delivery d
    JOIN signals_subscription s ON s.id = d.subscription_id AND s.state = 'active'
    JOIN members_organisation o ON o.id = s.organisation_id AND o.status = 'active'
    WHERE d.state = 'pending' AND d.next_attempt_at <= %(now)s
    ORDER BY d.next_attempt_at LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED)
RETURNING id
"""


def do_dispatch(limit: int = 1000) -> list[tuple[str, str]]:
    """Cut pages where there is news, then claim up to ``limit`` due deliveries; returns the
    claimed ``(delivery id, claim)`` pairs for the caller to send."""
    return [pair for claimed in dispatch_in_parts(limit) for pair in claimed]


def dispatch_in_parts(limit: int = 1000) -> Iterator[list[tuple[str, str]]]:
    """``do_dispatch`` a part at a time, for the caller to send each part's claims as it comes:
    the first ``HASHX_WEBHOOK_SEND_BATCH`` subscriptions waiting, then twice as many each time,
    each part's pages cut and committed, then claimed (with any retry due), so that a fan-out's
    first sends start while the later pages are still cut. The parts share their reads of the
    feed and the pages they store, as one cut would."""
    waiting = _waiting()
    shared = _Shared()
    part, start = settings.HASHX_WEBHOOK_SEND_BATCH, 0
    while start < len(waiting):
        do_cut_pages(waiting[start : start + part], shared)
        start, part = start + part, part * 2
        yield _claim(limit)
    if not waiting:
        yield _claim(limit)


def _claim(limit: int) -> list[tuple[str, str]]:
    now = timezone.now()
    claim = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _SQL_CLAIM,
            {
                "claim": claim,
                "lease": now + timedelta(seconds=settings.HASHX_WEBHOOK_LEASE_SECONDS),
                "now": now,
                "limit": limit,
            },
        )
        return [(str(row[0]), str(claim)) for row in cursor.fetchall()]


@dataclass
class _Page:
    """One read of the feed, shared by the subscriptions at the same cursor over the same sets."""

    changes: list[Rendered]
    until: Position

    @cached_property
    def facets(self) -> list[tuple[str, set[str]]]:
        """Each change's type and labels, parsed once however many subscriptions filter it."""
        records = [json.loads(change.json) for change in self.changes]
        return [(record["type"], set(record["labels"])) for record in records]

    def wanted_by(self, subscription: Subscription) -> list[Rendered]:
        """The changes that pass the subscription's filters on types and labels."""
        types, labels = set(subscription.signal_types), set(subscription.labels)
        if not (types or labels):
            return self.changes
        return [
            change
            for change, (kind, tags) in zip(self.changes, self.facets, strict=True)
            if (not types or kind in types) and (not labels or labels & tags)
        ]


@dataclass
class _Shared:
    """What the parts of one dispatch share: each read of the feed (by sets, cursor and peer),
    and each page stored (by the same and the filters), with the changes of each set in it."""

    reads: dict[tuple[tuple[int, ...], Position, str], _Page] = field(default_factory=dict)
    stored: dict[tuple[Any, ...], tuple[DeliveryPage, dict[str, int]]] = field(default_factory=dict)


def do_cut_pages(subscription_ids: list[Any], shared: _Shared | None = None) -> list[Delivery]:
    """Make the next page after each subscription's cursor its pending delivery (body fixed
    now: every retry sends the same bytes). Pages its filters leave empty only move the
    cursor. Only sets the organisation may still read are served. Subscriptions at the same
    cursor over the same sets (the usual fan-out) share one read of the feed.

    Locks the subscription rows (``SKIP LOCKED``: one being changed or delivered is left for
    the dispatch its change wakes); none gets a second pending delivery."""
    with transaction.atomic():
        subscriptions = list(
            Subscription.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("organisation")
            .filter(pk__in=subscription_ids, state=Subscription.State.ACTIVE)
            .order_by("pk")
        )
        busy = set(
            Delivery.objects.filter(
                subscription__in=subscriptions, state=Delivery.State.PENDING
            ).values_list("subscription_id", flat=True)
        )
        purged = purge_horizon()
        readable_by_org = visible_sets_of(
            list({s.organisation_id: s.organisation for s in subscriptions}.values()),
            Q(pk__in={i for s in subscriptions for i in s.set_ids}),
        )
        shared = shared or _Shared()
        pages, stored = shared.reads, shared.stored
        created = []
        for subscription in subscriptions:
            if subscription.pk in busy:
                continue
            start = Position(subscription.cursor_xid, subscription.cursor_seq)
            if start < purged:
                _disable(subscription, "its cursor is older than tombstone retention: rewind it")
                continue
            org = subscription.organisation
            readable = readable_by_org[org.pk]
            sets = tuple(sorted(i for i in subscription.set_ids if i in readable))
            after, cut = start, False
            peer = peer_exchange_of(org)
            for _ in range(_MAX_EMPTY_PAGES):
                if (sets, after, peer) not in pages:
                    # On the primary: the news that woke this cut was read there, and a page a
                    # lagging replica found empty would end the cut with the news unsent.
                    # A page cut short by its bytes is delivered as it is: the next one
                    # follows from its end.
                    changes, until, _ = rendered_after(
                        after,
                        list(sets),
                        limit=settings.HASHX_WEBHOOK_PAGE_SIZE,
                        peer=peer,
                        replica=False,
                    )
                    pages[sets, after, peer] = _Page(changes, until)
                page = pages[sets, after, peer]
                wanted = page.wanted_by(subscription)
                if wanted:
                    # Stored once for every subscription that takes the same changes from it.
                    filters = (frozenset(subscription.signal_types), frozenset(subscription.labels))
                    if (sets, after, peer, filters) not in stored:
                        stored[sets, after, peer, filters] = _stored(wanted, readable)
                    # It spans the pages skipped before it (from ``start``): the cursor moves
                    # when it is delivered, not now.
                    created.append(
                        _new_delivery(
                            subscription, stored[sets, after, peer, filters], start, page.until
                        )
                    )
                    cut = True
                    break
                if not page.changes:
                    break
                after = page.until
            if not cut and after != start:  # only filtered-out pages: skip past them
                subscription.cursor_xid, subscription.cursor_seq = after.xid, after.seq
                subscription.save(update_fields=["cursor_xid", "cursor_seq", "updated_at"])
        # Only the pages this part stored first (an earlier part's are committed already).
        DeliveryPage.objects.bulk_create([page for page, _ in stored.values() if page.pk is None])
        _insert(created)
        return created


# One set-based INSERT of a fan-out's deliveries (bulk_create spent longer preparing its
# parameters in Python than Postgres spent inserting them).
_SQL_INSERT = """
INSERT INTO signals_delivery (id, subscription_id, state, from_xid, from_seq, to_xid, to_seq,
    count, set_counts, body, page_id, attempts, next_attempt_at, last_error, response_excerpt,
    created_at)
SELECT d.id, d.subscription_id, 'pending', d.from_xid, d.from_seq, d.to_xid, d.to_seq, d.count,
    d.set_counts, d.body, d.page_id, 0, %(now)s, '', '', %(now)s
FROM unnest(%(ids)s::uuid[], %(subscriptions)s::uuid[], %(from_xids)s::text[]::xid8[],
    %(from_seqs)s::bigint[], %(to_xids)s::text[]::xid8[], %(to_seqs)s::bigint[],
    %(counts)s::int[], %(set_counts)s::jsonb[], %(bodies)s::text[], %(pages)s::bigint[])
    AS d(id, subscription_id, from_xid, from_seq, to_xid, to_seq, count, set_counts, body,
         page_id)
"""


def _insert(deliveries: list[Delivery]) -> None:
    if not deliveries:
        return
    now = timezone.now()
    for delivery in deliveries:
        delivery.page_id = delivery.page.pk if delivery.page else None
        delivery.next_attempt_at = delivery.created_at = now
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_INSERT,
            {
                "now": now,
                "ids": [str(d.pk) for d in deliveries],
                "subscriptions": [str(d.subscription_id) for d in deliveries],
                "from_xids": [str(d.from_xid) for d in deliveries],
                "from_seqs": [d.from_seq for d in deliveries],
                "to_xids": [str(d.to_xid) for d in deliveries],
                "to_seqs": [d.to_seq for d in deliveries],
                "counts": [d.count for d in deliveries],
                "set_counts": [json.dumps(d.set_counts) for d in deliveries],
                "bodies": [d.body for d in deliveries],
                "pages": [d.page_id for d in deliveries],
            },
        )
    for delivery in deliveries:
        delivery._state.adding = False


def _stored(
    changes: list[Rendered], readable: dict[int, HashSet]
) -> tuple[DeliveryPage, dict[str, int]]:
    """The changes as a page to store, and how many of them each set holds (for the audit)."""
    per_set: dict[str, int] = {}
    for change in changes:
        slug = readable[change.set_id].slug
        per_set[slug] = per_set.get(slug, 0) + 1
    # The records are JSON already (rendered by Postgres): joined, not re-encoded.
    return DeliveryPage(changes=",".join(c.json for c in changes)), per_set


def _new_delivery(
    subscription: Subscription,
    stored: tuple[DeliveryPage, dict[str, int]],
    start: Position,
    until: Position,
) -> Delivery:
    page, per_set = stored
    envelope = json.dumps(
        {
            "type": "hashx.changes",
            "timestamp": timezone.now().isoformat(),
            "data": {
                "subscription": str(subscription.pk),
                "from": start.cursor(),
                "cursor": until.cursor(),
                "changes": [],
            },
        },
        separators=(",", ":"),
    )
    return Delivery(
        subscription=subscription,
        from_xid=start.xid,
        from_seq=start.seq,
        to_xid=until.xid,
        to_seq=until.seq,
        count=sum(per_set.values()),
        set_counts=per_set,
        body=envelope,
        page=page,
    )


def signed_headers(
    delivery: Delivery, signing_key: tuple[str, Any], payload: bytes
) -> dict[str, str]:
    """Standard Webhooks headers for one attempt of ``payload``: a fresh timestamp, the same
    ``webhook-id``."""
    timestamp = int(time.time())
    kid, key = signing_key
    return {
        "content-type": "application/json",
        "user-agent": "hash-exchange-webhooks/1",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, delivery.webhook_id, timestamp, payload),
        "hashx-key-id": kid,
    }


def send_deadline() -> float:
    """How long one send may take in all: half the lease, so that a send cut off at its
    deadline (a failed attempt, retried like any other) has recorded its outcome long before
    the lease runs out and another worker could claim the delivery: one in flight at a time."""
    return settings.HASHX_WEBHOOK_LEASE_SECONDS / 2


def do_send(delivery_id: str, claim: str) -> str:
    """Send one claimed delivery (``do_send_many``) and return its outcome."""
    (outcome,) = do_send_many([(delivery_id, claim)])
    return outcome


def do_send_many(claimed: list[tuple[str, str]]) -> list[str]:
    """Send claimed deliveries, all at once (on one event loop), and record the outcomes; returns
    each one's, in order ("delivered", "retry", "disabled", "cancelled" when its organisation
    can no longer read a set in it, or "stale" when the claim was lost), and counts them in the
    metrics. The database work is done here, for all of them together: renewing the leases,
    checking what each organisation may read, and recording the deliveries; the requests run
    together between them."""
    batch = settings.HASHX_WEBHOOK_SEND_BATCH
    outcomes = [
        o for at in range(0, len(claimed), batch) for o in _send_many(claimed[at : at + batch])
    ]
    for outcome in outcomes:
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
    return outcomes


# Renews the lease of each delivery still pending under its claim (the others are "stale"): one
# statement, where a filter of as many (id, claim) pairs took the ORM longer to build than
# Postgres to run.
_SQL_RENEW = """
UPDATE signals_delivery d SET next_attempt_at = %(lease)s
FROM unnest(%(ids)s::uuid[], %(claims)s::uuid[]) AS c(id, claim)
WHERE d.id = c.id AND d.claim = c.claim AND d.state = 'pending'
RETURNING d.id
"""


def _send_many(claimed: list[tuple[str, str]]) -> list[str]:
    """``do_send_many``'s work.

    Renews the leases first (a conditional update on each claim): the sends may start long after
    the claim, behind other tasks, and each must end, deadline included, inside its lease, or a
    dispatch could claim the delivery again while it is in flight. All of them start together
    after the renewal, so each ends within its deadline of it."""
    outcomes = {pk: "stale" for pk, _ in claimed}  # unless found under its claim below
    lease = timedelta(seconds=settings.HASHX_WEBHOOK_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_RENEW,
            {
                "lease": timezone.now() + lease,
                "ids": [pk for pk, _ in claimed],
                "claims": [claim for _, claim in claimed],
            },
        )
        renewed = [row[0] for row in cursor.fetchall()]
    if not renewed:
        return list(outcomes.values())
    deliveries = list(
        Delivery.objects.filter(pk__in=renewed).select_related("subscription__organisation")
    )
    pages = DeliveryPage.objects.in_bulk({d.page_id for d in deliveries} - {None})
    for delivery in deliveries:  # one read of each page, however many deliveries share it
        delivery.page = pages.get(delivery.page_id)
    organisations = {
        d.subscription.organisation_id: d.subscription.organisation for d in deliveries
    }
    readable = visible_sets_of(
        list(organisations.values()), Q(slug__in={s for d in deliveries for s in d.set_counts})
    )
    sending: list[Delivery] = []
    cancelled: list[Delivery] = []
    for delivery in deliveries:
        slugs = {s.slug for s in readable[delivery.subscription.organisation_id].values()}
        (sending if set(delivery.set_counts) <= slugs else cancelled).append(delivery)
    if cancelled:
        # Cut while its organisation could read every set in it, and no longer can: never sent.
        # The next page is cut afresh from the cursor, over the sets it reads now.
        Delivery.objects.filter(
            functools.reduce(operator.or_, (Q(pk=d.pk, claim=d.claim) for d in cancelled)),
            state=Delivery.State.PENDING,
        ).update(state=Delivery.State.CANCELLED, claim=None)
        outcomes.update({str(d.pk): "cancelled" for d in cancelled})
        wake()
    signing_key = get_signing_key()
    results = outbound.run(_attempts(sending, signing_key))
    now = timezone.now()
    claims = dict(claimed)
    delivered = []
    for delivery, (answer, error) in zip(sending, results, strict=True):
        claim = claims[str(delivery.pk)]
        if answer is not None and 200 <= answer.status < 300:
            delivered.append((delivery, claim, answer))
            continue
        if answer is not None:
            error = f"HTTP {answer.status}"
        outcomes[str(delivery.pk)] = _failed(delivery, claim, answer, error, now)
    outcomes.update(_delivered(delivered, now))
    return list(outcomes.values())


async def _attempts(
    deliveries: list[Delivery], signing_key: tuple[str, Any]
) -> list[tuple[outbound.Answer | None, str]]:
    """One attempt at each delivery, all at once on one event loop."""
    return await asyncio.gather(*(_attempt(d, signing_key) for d in deliveries))


async def _attempt(
    delivery: Delivery, signing_key: tuple[str, Any]
) -> tuple[outbound.Answer | None, str]:
    """One attempt at sending ``delivery``: the answer, or why none."""
    payload = delivery.payload
    try:
        answer = await outbound.send(
            delivery.subscription.url,
            payload,
            signed_headers(delivery, signing_key, payload),
            deadline=send_deadline(),
        )
        return answer, ""
    except (outbound.Refused, outbound.SendFailed) as exc:
        return None, str(exc)
    except Exception:
        # A bug of ours in one send must not strand the others of the batch until their leases
        # run out: this one is a failed attempt, retried with backoff like any other.
        logger.exception("sending delivery %s failed", delivery.pk)
        return None, "the exchange failed to send it; its staff can see why in the log"


_SQL_DELIVERED = """
UPDATE signals_delivery d SET state = 'delivered', delivered_at = %(now)s,
    attempts = d.attempts + 1, last_status = a.status, last_error = '',
    response_excerpt = a.excerpt, claim = NULL
FROM unnest(%(ids)s::uuid[], %(claims)s::uuid[], %(statuses)s::int[], %(excerpts)s::text[])
    AS a(id, claim, status, excerpt)
WHERE d.id = a.id AND d.claim = a.claim AND d.state = 'pending'
RETURNING d.id
"""

# Advance only from where each page started: a rewind meanwhile keeps its cursor.
_SQL_ADVANCE = """
UPDATE signals_subscription s SET cursor_xid = a.to_xid, cursor_seq = a.to_seq,
    failing_since = NULL, last_error = '', last_delivered_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(from_xids)s::text[]::xid8[], %(from_seqs)s::bigint[],
            %(to_xids)s::text[]::xid8[], %(to_seqs)s::bigint[])
    AS a(id, from_xid, from_seq, to_xid, to_seq)
WHERE s.id = a.id AND s.cursor_xid = a.from_xid AND s.cursor_seq = a.from_seq
"""


def _delivered(
    delivered: list[tuple[Delivery, str, outbound.Answer]], now: datetime
) -> dict[str, str]:
    """Record answered deliveries in one transaction: each still under its claim becomes
    delivered, moves its subscription's cursor and is audited; one cancelled by a rewind or a
    filter change while it was sent is "stale"."""
    if not delivered:
        return {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _SQL_DELIVERED,
            {
                "now": now,
                "ids": [str(d.pk) for d, _, _ in delivered],
                "claims": [claim for _, claim, _ in delivered],
                "statuses": [answer.status for _, _, answer in delivered],
                "excerpts": [answer.excerpt for _, _, answer in delivered],
            },
        )
        done = {str(row[0]) for row in cursor.fetchall()}
        ours = [d for d, _, _ in delivered if str(d.pk) in done]
        if ours:
            cursor.execute(
                _SQL_ADVANCE,
                {
                    "now": now,
                    "ids": [str(d.subscription_id) for d in ours],
                    "from_xids": [str(d.from_xid) for d in ours],
                    "from_seqs": [d.from_seq for d in ours],
                    "to_xids": [str(d.to_xid) for d in ours],
                    "to_seqs": [d.to_seq for d in ours],
                },
            )
            _record_pushes(ours)
            wake_after_sends()
    for delivery in ours:
        metrics.WEBHOOK_SECONDS.observe((now - delivery.created_at).total_seconds())
    return {str(d.pk): "delivered" if str(d.pk) in done else "stale" for d, _, _ in delivered}


def _record_pushes(deliveries: list[Delivery]) -> None:
    """Audit what was pushed, one event per set of each delivery, like a pull."""
    sets = HashSet.objects.in_bulk(
        {slug for d in deliveries for slug in d.set_counts}, field_name="slug"
    )
    record_many(
        "feed.pushed",
        [
            {
                "obj": sets[slug],
                "actor_org": delivery.subscription.organisation,
                "details": {
                    "set": slug,
                    "subscription": str(delivery.subscription_id),
                    "delivery": delivery.webhook_id,
                    "count": count,
                },
            }
            for delivery in deliveries
            for slug, count in delivery.set_counts.items()
        ],
    )


def retry_delay(attempts: int, answer: outbound.Answer | None, now: datetime) -> float:
    """Exponential backoff with jitter, or what the receiver asked for on 429/503."""
    ceiling = settings.HASHX_WEBHOOK_RETRY_MAX_SECONDS
    if answer is not None and answer.status in (429, 503) and "retry-after" in answer.headers:
        asked = _retry_after(answer.headers["retry-after"], now)
        if asked is not None:
            return min(max(asked, 1.0), ceiling)
    delay = min(ceiling, settings.HASHX_WEBHOOK_RETRY_BASE_SECONDS * 2 ** min(attempts - 1, 30))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy


def _retry_after(value: str, now: datetime) -> float | None:
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() too
        return float(value)
    try:
        return (parsedate_to_datetime(value) - now).total_seconds()
    except (TypeError, ValueError):
        return None


def _failed(
    delivery: Delivery, claim: str, answer: outbound.Answer | None, error: str, now: datetime
) -> str:
    attempts = delivery.attempts + 1
    with transaction.atomic():
        subscription = (
            Subscription.objects.select_for_update().filter(pk=delivery.subscription_id).first()
        )
        if subscription is None:  # deleted while we sent, and its deliveries with it
            return "stale"
        updated = Delivery.objects.filter(
            pk=delivery.pk, claim=claim, state=Delivery.State.PENDING
        ).update(
            attempts=attempts,
            next_attempt_at=now + timedelta(seconds=retry_delay(attempts, answer, now)),
            last_status=answer.status if answer else None,
            last_error=error[:500],
            response_excerpt=answer.excerpt if answer else "",
            claim=None,
        )
        if not updated:
            return "stale"
        subscription.failing_since = subscription.failing_since or now
        subscription.last_error = error[:500]
        limit = timedelta(hours=settings.HASHX_WEBHOOK_DISABLE_AFTER_HOURS)
        if answer is not None and answer.status == 410:
            _disable(subscription, "the endpoint answered 410 Gone")
            return "disabled"
        if now - subscription.failing_since >= limit:
            _disable(
                subscription,
                f"the endpoint failed for {settings.HASHX_WEBHOOK_DISABLE_AFTER_HOURS} hours"
                f" (last: {error[:200]})",
            )
            return "disabled"
        subscription.save(update_fields=["failing_since", "last_error", "updated_at"])
    return "retry"


def _disable(subscription: Subscription, reason: str) -> None:
    """Stop delivering; the organisation sees why on the subscription and in its audit events,
    staff in admin. PATCH ``active: true`` or a redeliver starts it again."""
    subscription.state = Subscription.State.DISABLED
    subscription.disabled_reason = reason
    subscription.save()
    record(
        "signals.subscription.disabled",
        obj=subscription,
        owner_org=subscription.organisation,
        details={"url": subscription.url, "reason": reason},
    )


def do_purge_deliveries(now: datetime | None = None) -> int:
    """Forget finished deliveries older than ``HASHX_WEBHOOK_HISTORY_DAYS``, and the pages no
    delivery carries any more (a page is stored with its deliveries, in one transaction); the
    pending one of each subscription always stays. Returns how many deliveries."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.HASHX_WEBHOOK_HISTORY_DAYS)
    deleted, _ = Delivery.objects.filter(
        state__in=[Delivery.State.DELIVERED, Delivery.State.CANCELLED], created_at__lt=cutoff
    ).delete()
    DeliveryPage.objects.filter(
        ~Exists(Delivery.objects.filter(page=OuterRef("pk"))), created_at__lt=cutoff
    ).delete()
    return deleted
