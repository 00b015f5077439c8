"""Every admin page staff can reach renders, with real rows in it."""

import pytest
from django.contrib import admin
from django.urls import reverse

from audit.actions import record
from audit.models import AuditEvent
from signals.actions.sets import do_create_set
from signals.actions.subscriptions import do_create_subscription
from signals.feed.positions import START
from signals.models import Subscription
from tests.signals.conftest import PDQ, cut, merged, pdq, publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def content(publisher):
    hash_set = do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM"})
    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    record("test.event", actor_org=publisher.org)
    subscription = do_create_subscription(
        publisher.org, url="https://hooks.example/x", sets=[hash_set], signal_types=[], labels=[]
    )
    cut(subscription.pk)


def test_every_changelist_and_change_page_renders(staff, content):
    for model, _ in admin.site._registry.items():
        opts = model._meta
        listing = staff.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert listing.status_code == 200, opts.label
        first = model.objects.first()
        if first is not None:
            page = staff.get(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first.pk])
            )
            assert page.status_code == 200, opts.label


@pytest.mark.django_db(transaction=True)
def test_a_subscriptions_lag_counts_the_changes_after_its_cursor(staff, publisher):
    hash_set = do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM"})
    do_create_subscription(
        publisher.org, url="https://hooks.example/x", sets=[hash_set], signal_types=[], labels=[],
        cursor=START.cursor(),
    )  # fmt: skip
    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1), pdq(2)]))
    page = staff.get(reverse("admin:signals_subscription_changelist"))
    assert [s.behind for s in page.context["cl"].result_list] == [3]


def test_a_nul_in_a_list_filter_or_search_is_a_400_not_a_500(staff, content):
    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        for query in ("q=%00", "state__exact=%00", "%00=1"):
            response = staff.get(f"{url}?{query}")
            assert response.status_code == 400, (opts.label, query)
            assert b"NUL characters are not allowed" in response.content


def test_a_time_in_any_offset_filters_the_admin_lists_and_the_audit_export(staff, content):
    """Python reads offsets up to ±23:59, Postgres only ±15:59: every time goes in UTC."""
    late = "2026-01-01T00:00:00+18:10"
    for name in ("signals_batch", "audit_auditevent", "members_signingkey"):
        field = "occurred_at" if name == "audit_auditevent" else "created_at"
        listing = staff.get(reverse(f"admin:{name}_changelist"), {f"{field}__gte": late})
        assert listing.status_code == 200, name
    export = staff.get(reverse("admin:audit_auditevent_export"), {"since": late, "until": ""})
    assert any(
        '"test.event"' in line for line in b"".join(export.streaming_content).decode().splitlines()
    )


def test_staff_find_which_sets_hold_a_hash_in_any_spelling(staff, content):
    page = staff.get(reverse("admin:signals_setentry_changelist"), {"q": PDQ[0].upper()})
    assert page.status_code == 200
    assert [e.value for e in page.context["cl"].result_list] == [PDQ[0]]


def test_the_audit_export_page_streams_ndjson(staff, content):
    url = reverse("admin:audit_auditevent_export")
    assert staff.get(url).status_code == 200
    response = staff.get(url, {"since": "2000-01-01 00:00", "until": ""})
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert any('"test.event"' in line for line in lines)


def test_signing_a_checkpoint_asks_first(staff, content):
    url = reverse("admin:audit_auditcheckpoint_sign")
    assert b"Yes, sign a checkpoint" in staff.get(url).content
    assert staff.post(url).status_code == 302


def test_staff_redeliver_a_subscription_after_confirming_with_a_reason(staff, content):
    subscription = Subscription.objects.get()
    Subscription.objects.filter(pk=subscription.pk).update(state="disabled")
    url = reverse("admin:signals_subscription_changelist")
    form = {"action": "redeliver", "_selected_action": [str(subscription.pk)]}
    asks = staff.post(url, form)
    assert asks.status_code == 200 and b"reason" in asks.content
    done = staff.post(url, {**form, "confirm": "1", "reason": "endpoint fixed"})
    assert done.status_code == 302
    assert Subscription.objects.get().state == "active"
    event = AuditEvent.objects.get(action="signals.subscription.redelivered")
    assert event.details["reason"] == "endpoint fixed" and event.actor_user_id is not None
