"""/api/v1/subscriptions: create, read, change, delete, deliveries, redeliver; outbound safety."""

import pytest

from audit.models import AuditEvent
from signals.actions.webhooks import do_dispatch
from signals.feed.positions import Position
from signals.models import Delivery, Subscription
from tests.signals.conftest import cut, merged, pdq, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

HOOK = "http://127.0.0.1:9/hook"


def subscribe(member, **fields):
    return member.api.post("/api/v1/subscriptions", {"url": HOOK, "sets": ["acme-csam"], **fields})


def patch(member, subscription_id, body):
    return member.api.request("PATCH", f"/api/v1/subscriptions/{subscription_id}", body)


def test_a_subscriber_subscribes_to_a_set_it_reads(subscriber, shared_set):
    answer = subscribe(subscriber, signal_types=["pdq"], labels=["csam"], description="prod")
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["url"], body["sets"], body["signal_types"], body["labels"]) == (
        HOOK,
        ["acme-csam"],
        ["pdq"],
        ["csam"],
    )
    assert (body["state"], body["active"], body["description"]) == ("active", True, "prod")
    assert subscriber.api.get("/api/v1/subscriptions").json()["results"] == [body]
    assert subscriber.api.get(f"/api/v1/subscriptions/{body['id']}").json() == body
    event = AuditEvent.objects.get(action="signals.subscription.created")
    assert event.actor_org_id == subscriber.org.pk and event.details["url"] == HOOK


def test_a_new_subscription_starts_now_unless_given_a_cursor(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    now = subscribe(subscriber).json()
    assert cut(now["id"]) is None  # the earlier entry is before "now"
    from_start = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()
    delivery = cut(from_start["id"])
    assert delivery is not None and delivery.count == 1


def test_it_answers_unsigned_requests_401(subscriber, shared_set):
    assert subscriber.api.get("/api/v1/subscriptions", sign=False).status_code == 401
    assert subscribe(subscriber).status_code == 201
    sid = Subscription.objects.get().pk
    assert subscriber.api.get(f"/api/v1/subscriptions/{sid}", sign=False).status_code == 401


def test_an_outsider_gets_404_for_sets_and_subscriptions_it_may_not_see(
    subscriber, outsider, shared_set
):
    answer = subscribe(outsider)
    assert answer.status_code == 404 and "acme-csam" in answer.json()["detail"]
    sid = subscribe(subscriber).json()["id"]
    for path in ("", "/deliveries"):
        assert outsider.api.get(f"/api/v1/subscriptions/{sid}{path}").status_code == 404
    assert patch(outsider, sid, {"active": False}).status_code == 404
    assert outsider.api.request("DELETE", f"/api/v1/subscriptions/{sid}").status_code == 404
    assert outsider.api.post(f"/api/v1/subscriptions/{sid}/redeliver", {}).status_code == 404
    assert outsider.api.get("/api/v1/subscriptions/not-a-uuid").status_code == 404
    assert outsider.api.get("/api/v1/subscriptions").json()["results"] == []


def test_the_list_shows_the_organisations_own_subscriptions_in_a_fixed_number_of_queries(
    subscriber, outsider, shared_set, django_assert_num_queries
):
    from signals.actions.sets import do_create_set

    do_create_set(outsider.org, {"slug": "other", "name": "Other"})
    subscribe(outsider, sets=["other"])
    mine = [subscribe(subscriber, description=str(n)).json()["id"] for n in range(3)]
    with django_assert_num_queries(2):  # the subscriptions, their sets' slugs (the key: cached)
        listed = subscriber.api.get("/api/v1/subscriptions").json()["results"]
    assert [s["id"] for s in listed] == mine


def test_views_reach_subscriptions_and_deliveries_only_through_access_helpers():
    """STYLE.md "access through one door": no view queries them itself, so none can forget
    whose they are."""
    import ast
    import inspect

    from signals.api import views

    direct = [
        f"{node.value.id}.objects on line {node.lineno}"
        for node in ast.walk(ast.parse(inspect.getsource(views)))
        if isinstance(node, ast.Attribute)
        and node.attr == "objects"
        and isinstance(node.value, ast.Name)
        and node.value.id in {"Subscription", "Delivery"}
    ]
    assert direct == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": None}, "url"),
        ({"sets": []}, "sets"),
        ({"sets": "acme-csam"}, "sets"),
        ({"signal_types": ["jpeg"]}, "signal_types"),
        ({"labels": [""]}, "labels"),
        ({"cursor": "!!"}, "cursor"),
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
        ({"url": "https://no-such-host.invalid/x"}, "url"),
        ({"url": "https://[::1/x"}, "url"),
        ({"url": "https://hooks.example/ö"}, "url"),
        ({"url": "https://hooks.example/a b"}, "url"),
    ],
)
def test_it_refuses_bad_input_with_the_field_named(subscriber, shared_set, fields, field):
    answer = subscribe(subscriber, **fields)
    assert answer.status_code == 400
    assert field in {e["field"].split(".")[0] for e in answer.json()["errors"]}, answer.json()
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://169.254.10.10/hook", "link-local"),
        ("https://100.64.0.1/hook", "CGNAT"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        # IPv6 addresses that carry an IPv4 one: NAT64, 6to4, IPv4-compatible.
        ("https://[64:ff9b::a00:1]/hook", "private"),
        ("https://[64:ff9b:1::7f00:1]/hook", "loopback"),
        ("https://[2002:7f00:1::1]/hook", "loopback"),
        ("https://[::a9fe:a9fe]/hook", "metadata"),
        ("https://localhost/hook", "loopback"),
    ],
)
def test_it_refuses_non_public_addresses_unless_allow_listed(
    subscriber, shared_set, settings, url, reason
):
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = []
    answer = subscribe(subscriber, url=url)
    assert answer.status_code == 400
    assert reason in answer.json()["detail"]


def test_an_ipv6_address_carrying_a_public_ipv4_one_is_allowed(subscriber, shared_set, settings):
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = []
    assert subscribe(subscriber, url="https://[64:ff9b::808:808]/hook").status_code == 201


def test_it_refuses_metadata_addresses_even_when_allow_listed(subscriber, shared_set, settings):
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = ["0.0.0.0/0", "::/0"]
    for url in ("http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/"):
        answer = subscribe(subscriber, url=url)
        assert answer.status_code == 400 and "metadata" in answer.json()["detail"]
    assert subscribe(subscriber, url="http://10.0.0.1/hook").status_code == 201


def test_http_needs_the_setting(subscriber, shared_set, settings):
    settings.HASHX_WEBHOOK_ALLOW_HTTP = False
    answer = subscribe(subscriber)
    assert answer.status_code == 400 and "https" in answer.json()["detail"]


def test_a_subscriber_pauses_changes_and_resumes(publisher, subscriber, shared_set):
    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    assert cut(sid) is not None
    paused = patch(subscriber, sid, {"active": False})
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    changed = patch(subscriber, sid, {"labels": ["terror"], "active": True})
    assert changed.json()["labels"] == ["terror"] and changed.json()["state"] == "active"
    # New filters cancel the page cut under the old ones; nothing is labelled "terror".
    assert list(Delivery.objects.values_list("state", flat=True)) == ["cancelled"]
    assert cut(sid) is None
    assert patch(subscriber, sid, {"url": "https://169.254.169.254/"}).status_code == 400
    assert patch(subscriber, sid, {"sets": ["nope"]}).status_code == 404


def test_deleting_removes_the_subscription_and_its_deliveries(publisher, subscriber, shared_set):
    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    cut(sid)
    assert subscriber.api.request("DELETE", f"/api/v1/subscriptions/{sid}").status_code == 204
    assert not Subscription.objects.exists() and not Delivery.objects.exists()
    assert subscriber.api.get(f"/api/v1/subscriptions/{sid}").status_code == 404
    assert AuditEvent.objects.filter(action="signals.subscription.deleted").count() == 1


def test_deliveries_are_listed_newest_first_in_pages(
    publisher, subscriber, shared_set, django_assert_max_num_queries
):
    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    for n in range(3):
        merged(publish(publisher, "acme-csam", [pdq(n)]))
        delivery = cut(sid)
        Delivery.objects.filter(pk=delivery.pk).update(state="delivered")
        Subscription.objects.filter(pk=sid).update(
            cursor_xid=delivery.to_xid, cursor_seq=delivery.to_seq
        )
    with django_assert_max_num_queries(8):
        page = subscriber.api.get(f"/api/v1/subscriptions/{sid}/deliveries?limit=2").json()
    assert len(page["results"]) == 2 and page["next"]
    assert page["results"][0]["id"].startswith("msg_")
    assert page["results"][0]["from_cursor"] == page["results"][1]["cursor"]
    rest = subscriber.api.get(page["next"].split("testserver", 1)[1]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None


def test_redeliver_rewinds_to_a_cursor_or_a_past_delivery(publisher, subscriber, shared_set):
    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    first = cut(sid)
    Delivery.objects.filter(pk=first.pk).update(state="delivered")
    Subscription.objects.filter(pk=sid).update(cursor_xid=first.to_xid, cursor_seq=first.to_seq)
    url = f"/api/v1/subscriptions/{sid}/redeliver"
    answer = subscriber.api.post(url, {"delivery": first.webhook_id})
    assert answer.status_code == 200
    assert answer.json()["cursor"] == Position(first.from_xid, first.from_seq).cursor()
    again = cut(sid)
    assert again.body != "" and again.count == 1 and again.pk != first.pk
    assert subscriber.api.post(url, {"cursor": "!!"}).status_code == 400
    assert subscriber.api.post(url, {"delivery": "msg_00"}).status_code == 404
    rewound = subscriber.api.post(url, {"cursor": Position(0, 0).cursor()})
    assert rewound.status_code == 200
    assert Delivery.objects.get(pk=again.pk).state == "cancelled"


def test_a_set_no_longer_readable_is_not_delivered(publisher, subscriber, shared_set):
    from signals.actions.sets import do_revoke_grant

    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    do_revoke_grant(shared_set, subscriber.org)
    assert cut(sid) is None
    assert not Delivery.objects.exists()


def test_a_page_cut_before_the_set_became_unreadable_is_cancelled_not_sent(
    publisher, subscriber, shared_set
):
    from signals.actions.sets import do_grant, do_revoke_grant
    from signals.actions.webhooks import do_send

    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()  # HOOK is a closed port: had it been sent, it would be "retry"
    do_revoke_grant(shared_set, subscriber.org)
    assert do_send(*claimed) == "cancelled"
    assert Delivery.objects.get().state == "cancelled"
    assert do_dispatch() == []
    do_grant(shared_set, subscriber.org, can_read=True, can_publish=False)
    (claimed,) = do_dispatch()
    again = Delivery.objects.get(pk=claimed[0])
    assert (str(again.subscription_id), again.count) == (sid, 1)


def test_news_only_in_sets_it_can_no_longer_read_costs_a_dispatch_nothing(
    publisher, subscriber, shared_set, django_assert_num_queries
):
    """A grant removed or a set made private: its changes are no news for the subscription, so
    a dispatch neither cuts nor reads a page for it until it can read the set again; then it
    gets what it missed."""
    from signals.actions.sets import do_grant, do_revoke_grant, do_update_set

    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    do_revoke_grant(shared_set, subscriber.org)
    # The horizon, what is new (nothing), and the claim (BEGIN, UPDATE, COMMIT).
    with django_assert_num_queries(5):
        assert do_dispatch() == []
    do_grant(shared_set, subscriber.org, can_read=True, can_publish=False)
    do_update_set(shared_set, {"distribution": "owner"})
    with django_assert_num_queries(5):
        assert do_dispatch() == []
    assert not Delivery.objects.exists()
    do_update_set(shared_set, {"distribution": "granted"})
    (claimed,) = do_dispatch()
    delivery = Delivery.objects.get(pk=claimed[0])
    assert (str(delivery.subscription_id), delivery.count) == (sid, 1)


def test_a_coalition_set_is_news_for_a_member_but_not_for_a_peer(
    publisher, subscriber, peer, shared_set
):
    from signals.actions.sets import do_update_set
    from signals.actions.subscriptions import do_create_subscription

    do_update_set(shared_set, {"distribution": "federated", "tlp": "green"})
    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    do_create_subscription(
        peer.org,
        url=HOOK,
        sets=[shared_set],
        signal_types=[],
        labels=[],
        cursor=Position(0, 0).cursor(),
    )
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    do_update_set(shared_set, {"distribution": "coalition"})  # members only, now
    do_dispatch()
    assert [str(d.subscription_id) for d in Delivery.objects.all()] == [sid]


def test_finished_deliveries_are_forgotten_after_the_history_period(
    publisher, subscriber, shared_set
):
    from django.utils import timezone

    from signals.actions.webhooks import do_purge_deliveries

    sid = subscribe(subscriber, cursor=Position(0, 0).cursor()).json()["id"]
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    old = cut(sid)
    Delivery.objects.filter(pk=old.pk).update(state="delivered")
    merged(publish(publisher, "acme-csam", [pdq(1)]))
    Subscription.objects.filter(pk=sid).update(cursor_xid=old.to_xid, cursor_seq=old.to_seq)
    pending = cut(sid)
    later = timezone.now() + timezone.timedelta(days=15)
    assert do_purge_deliveries(now=timezone.now()) == 0
    assert do_purge_deliveries(now=later) == 1
    assert list(Delivery.objects.values_list("pk", flat=True)) == [pending.pk]
