"""Fan-out to many subscriptions at once: one page stored for all, sent in one batch over kept
connections, each organisation served only the sets it may read."""

import json

import pytest

from audit.models import AuditEvent
from exchange import outbound
from exchange.actions.identity import published_jwks
from exchange.kv import redis_client
from hashx.webhooks import verify
from signals.actions.sets import do_create_set, do_grant
from signals.actions.subscriptions import do_create_subscription
from signals.actions.webhooks import (
    dispatch_in_parts,
    do_cut_pages,
    do_dispatch,
    do_purge_deliveries,
    do_send_many,
)
from signals.feed.positions import Position
from signals.feed.wakeups import DISPATCH, DISPATCH_AFTER_SENDS
from signals.models import Delivery, DeliveryPage, Subscription
from tests.conftest import make_member
from tests.receiver import Receiver
from tests.signals.conftest import PDQ, merged, pdq, publish
from tests.signals.test_webhooks import beat_until, changes_of
from tests.signals.test_webhooks import webhook_worker as webhook_worker  # the fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

START = Position(0, 0).cursor()


def subscribe_all(members, url, sets):
    return [
        str(
            do_create_subscription(
                m.org, url=f"{url}/{n}", sets=sets, signal_types=[], labels=[], cursor=START
            ).pk
        )
        for n, m in enumerate(members)
    ]


def test_a_fan_out_delivers_each_subscription_its_own_signed_page_stored_once(
    publisher, webhook_worker
):
    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    members = [make_member(f"member-{n}") for n in range(12)]
    with Receiver(keep_alive=True) as receiver:
        ids = subscribe_all(members, receiver.url, [coalition])
        webhook_worker()
        publish(publisher, "acme-csam", [pdq(0), pdq(1)])
        beat_until(lambda: Delivery.objects.filter(state="delivered").count() == 12)
        requests = list(receiver.received)
    keys = published_jwks()["keys"]
    assert len(requests) == 12
    by_subscription = {r.payload["data"]["subscription"]: r for r in requests}
    assert sorted(by_subscription) == sorted(ids)
    for n, sid in enumerate(ids):
        request = by_subscription[sid]
        assert request.path == f"/hook/{n}"
        assert verify(request.body, request.headers, keys) == request.headers["webhook-id"]
        assert {c["value"] for c in changes_of([request])} == set(PDQ[:2])
    assert len({r.headers["webhook-id"] for r in requests}) == 12
    assert DeliveryPage.objects.count() == 1  # the changes, stored once for the twelve
    pushed = AuditEvent.objects.filter(action="feed.pushed")
    assert sorted(e.actor_org_id for e in pushed) == sorted(m.org.pk for m in members)
    assert all(s.last_delivered_at for s in Subscription.objects.all())


def test_subscribers_at_one_cursor_are_served_only_the_sets_each_may_read(
    publisher, subscriber, outsider
):
    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    granted = do_create_set(
        publisher.org, {"slug": "acme-private", "name": "Private", "distribution": "granted"}
    )
    do_grant(granted, subscriber.org, can_read=True, can_publish=False)
    do_grant(granted, outsider.org, can_read=True, can_publish=False)
    allowed, revoked = subscribe_all(
        [subscriber, outsider], "http://127.0.0.1:9/hook", [coalition, granted]
    )
    do_grant(granted, outsider.org, can_read=False, can_publish=False)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    merged(publish(publisher, "acme-private", [pdq(1)]))
    deliveries = {str(d.subscription_id): d for d in do_cut_pages([allowed, revoked])}
    seen = {
        sid: {c["value"] for c in json.loads(d.payload)["data"]["changes"]}
        for sid, d in deliveries.items()
    }
    assert seen == {allowed: {PDQ[0], PDQ[1]}, revoked: {PDQ[0]}}
    assert deliveries[revoked].set_counts == {"acme-csam": 1}
    assert DeliveryPage.objects.count() == 2  # one page per reader's rights, never shared


def queued_tasks(queues):
    kv = redis_client()
    return {q: [json.loads(m)["headers"]["task"] for m in kv.lrange(q, 0, -1)] for q in queues}


def test_news_is_dispatched_from_a_queue_of_its_own_and_a_delivery_behind_the_sends(
    publisher, subscriber
):
    """A worker takes from its queues in turn: the dispatch of a merge's news is not queued
    behind the sends of the fan-out before; the one a delivery wakes is, so that one dispatch
    follows a whole fan-out's deliveries."""
    queues = ["fanout", "webhooks"]
    redis_client().delete(*queues, *(f"hashx:queued:{n}" for n in (DISPATCH, DISPATCH_AFTER_SENDS)))
    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    with Receiver(keep_alive=True) as receiver:
        subscribe_all([subscriber], receiver.url, [coalition])
        merged(publish(publisher, "acme-csam", [pdq(0)]))
        assert queued_tasks(queues) == {"fanout": [DISPATCH], "webhooks": []}
        (claimed,) = do_dispatch()
        assert do_send_many([claimed]) == ["delivered"]
    assert queued_tasks(queues) == {"fanout": [DISPATCH], "webhooks": [DISPATCH_AFTER_SENDS]}
    redis_client().delete(*queues)


def test_a_dispatch_claims_its_first_pages_before_it_cuts_the_rest(publisher, settings):
    """So that the first sends start while the later pages are cut: parts of one send batch,
    then twice as many each time, sharing one stored page."""
    settings.HASHX_WEBHOOK_SEND_BATCH = 2
    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    subscribe_all(
        [make_member(f"member-{n}") for n in range(5)], "http://127.0.0.1/hook", [coalition]
    )
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    cut = []
    for claimed in dispatch_in_parts():
        cut.append((len(claimed), Delivery.objects.count()))
    assert cut == [(2, 2), (3, 5)]
    assert DeliveryPage.objects.count() == 1
    assert do_dispatch() == []  # each is claimed once


def test_a_page_is_purged_with_the_last_delivery_that_carries_it(publisher, subscriber, outsider):
    from django.utils import timezone

    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    ids = subscribe_all([subscriber, outsider], "http://127.0.0.1:9/hook", [coalition])
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    first, second = do_cut_pages(ids)
    assert first.page_id == second.page_id
    later = timezone.now() + timezone.timedelta(days=15)
    Delivery.objects.filter(pk=first.pk).update(state="delivered")
    assert do_purge_deliveries(now=later) == 1
    assert DeliveryPage.objects.count() == 1  # still carried by the pending one
    Delivery.objects.filter(pk=second.pk).update(state="delivered")
    assert do_purge_deliveries(now=later) == 1
    assert DeliveryPage.objects.count() == 0


def test_requests_to_one_address_go_over_one_kept_connection(monkeypatch):
    monkeypatch.setattr(outbound._Kept, "KEEP_SECONDS", 600.0)  # however slow this machine
    with Receiver(keep_alive=True) as receiver:
        for n in range(3):
            answer = outbound.post(f"{receiver.url}/{n}", b"{}", {}, deadline=10)
            assert answer.status == 200
        assert (len(receiver.received), receiver.connections) == (3, 1)
    with Receiver() as closing:  # HTTP/1.0: it closes, so nothing is kept
        for n in range(2):
            assert outbound.post(f"{closing.url}/{n}", b"{}", {}, deadline=10).status == 200
        assert closing.connections == 2


def test_a_send_that_fails_on_our_side_is_retried_and_spares_the_rest_of_its_batch(
    publisher, subscriber, outsider, monkeypatch
):
    coalition = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "CSAM", "distribution": "coalition"}
    )
    with Receiver() as receiver:
        broken, fine = subscribe_all([subscriber, outsider], receiver.url, [coalition])
        merged(publish(publisher, "acme-csam", [pdq(0)]))
        send = outbound.send

        async def bug_for_the_first(url, *args, **kwargs):
            if url.endswith("/0"):
                raise RuntimeError("a bug of ours")
            return await send(url, *args, **kwargs)

        monkeypatch.setattr(outbound, "send", bug_for_the_first)
        claimed = sorted(do_dispatch(), key=lambda c: c[0])
        outcomes = dict(zip([c[0] for c in claimed], do_send_many(claimed), strict=True))
        by_subscription = {str(d.subscription_id): d for d in Delivery.objects.all()}
        assert outcomes[str(by_subscription[broken].pk)] == "retry"
        assert outcomes[str(by_subscription[fine].pk)] == "delivered"
        assert "failed to send it" in Delivery.objects.get(pk=by_subscription[broken].pk).last_error
        assert [r.path for r in receiver.received] == ["/hook/1"]
