"""Subscriptions: the changes members make to them (who may see one is ``signals.access``).

A subscription is a cursor that the exchange advances for its organisation (DESIGN.md "Push");
delivering is ``signals.actions.webhooks``.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from exchange import outbound
from exchange.problems import invalid
from members.models import Organisation
from signals.feed.positions import Position, visible_horizon
from signals.feed.reads import check_cursor, held_cursor
from signals.feed.wakeups import wake
from signals.models import Delivery, HashSet, Subscription


def check_subscription_url(url: str) -> None:
    """400 naming the reason when the exchange may not call ``url``."""
    try:
        outbound.check_destination(url)
    except outbound.Refused as exc:
        raise invalid("url", str(exc)) from None


def _start_position(cursor: str | None) -> Position:
    """Where a new or rewound subscription starts: a feed cursor the member holds (410 when it
    is past tombstone retention), else "now": the first change not yet visible."""
    return held_cursor(cursor) if cursor else Position(visible_horizon(), 0)


def do_create_subscription(
    org: Organisation,
    *,
    url: str,
    sets: list[HashSet],
    signal_types: list[str],
    labels: list[str],
    description: str = "",
    cursor: str | None = None,
    active: bool = True,
    request: Any = None,
) -> Subscription:
    """Create a subscription starting at ``cursor`` (default: now). Emits a dispatch wake-up."""
    start = _start_position(cursor)
    with transaction.atomic():
        subscription = Subscription.objects.create(
            organisation=org,
            url=url,
            set_ids=[s.pk for s in sets],
            signal_types=signal_types,
            labels=labels,
            description=description,
            state=Subscription.State.ACTIVE if active else Subscription.State.PAUSED,
            cursor_xid=start.xid,
            cursor_seq=start.seq,
        )
        record(
            "signals.subscription.created",
            obj=subscription,
            request=request,
            details={
                "url": url,
                "sets": [s.slug for s in sets],
                "types": signal_types,
                "labels": labels,
                "cursor": start.cursor(),
            },
        )
        wake()
    return subscription


def _cancel_pending(subscription: Subscription) -> None:
    """A cut page that no longer applies (new filters, rewound cursor) is cancelled, never sent;
    the next page is cut afresh from the cursor."""
    Delivery.objects.filter(subscription=subscription, state=Delivery.State.PENDING).update(
        state=Delivery.State.CANCELLED, claim=None
    )


def do_update_subscription(
    subscription: Subscription,
    changes: dict[str, Any],
    *,
    request: Any = None,
    actor_user: Any = None,
    reason: str = "",
) -> Subscription:
    """Change url, sets, filters, description or state (``active``: True resumes a paused or
    disabled subscription and clears its failure record; False pauses it).

    Locks the subscription row, so a delivery finishing meanwhile sees the new state."""
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
        details: dict[str, Any] = {}
        if "sets" in changes:
            subscription.set_ids = [s.pk for s in changes["sets"]]
            details["sets"] = [s.slug for s in changes["sets"]]
        for field in ("url", "signal_types", "labels", "description"):
            if field in changes:
                setattr(subscription, field, changes[field])
                details[field] = changes[field]
        if {"sets", "signal_types", "labels"} & changes.keys():
            _cancel_pending(subscription)
        if "active" in changes:
            details["active"] = changes["active"]
            if changes["active"]:
                _resume(subscription)
            else:
                subscription.state = Subscription.State.PAUSED
        subscription.save()
        if reason:
            details["reason"] = reason
        record(
            "signals.subscription.updated",
            obj=subscription,
            request=request,
            actor_user=actor_user,
            details=details,
        )
        wake()
    return subscription


def _resume(subscription: Subscription) -> None:
    subscription.state = Subscription.State.ACTIVE
    subscription.failing_since = None
    subscription.disabled_reason = ""
    # A claimed page is being sent right now (or its worker died and its lease runs out soon):
    # releasing it would let a second worker send it while the first is still in flight.
    Delivery.objects.filter(
        subscription=subscription, state=Delivery.State.PENDING, claim__isnull=True
    ).update(next_attempt_at=timezone.now())


def do_delete_subscription(subscription: Subscription, *, request: Any = None) -> None:
    with transaction.atomic():
        record(
            "signals.subscription.deleted",
            obj=subscription,
            request=request,
            details={"url": subscription.url},
        )
        subscription.delete()


def do_redeliver(
    subscription: Subscription,
    *,
    cursor: str | None = None,
    delivery: Delivery | None = None,
    actor_user: Any = None,
    reason: str = "",
    request: Any = None,
) -> Subscription:
    """Send again. With ``cursor`` (or a past ``delivery``: from where it started), rewind the
    subscription there: the pending page is cancelled and pages are cut afresh. Without, try
    the pending page now (unless a worker is sending it already). Either way a paused or
    disabled subscription becomes active.

    Locks the subscription row (a delivery that succeeds meanwhile cannot move the cursor past
    the rewind: its conditional update no longer matches)."""
    start: Position | None = None
    if delivery is not None:
        start = Position(delivery.from_xid, delivery.from_seq)
        check_cursor(start)
    elif cursor:
        start = _start_position(cursor)
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
        if start is not None:
            _cancel_pending(subscription)
            subscription.cursor_xid, subscription.cursor_seq = start.xid, start.seq
        _resume(subscription)
        subscription.save()
        record(
            "signals.subscription.redelivered",
            obj=subscription,
            request=request,
            actor_user=actor_user,
            details={"cursor": start.cursor() if start else None, "reason": reason},
        )
        wake()
    return subscription
