"""record() writes in the caller's transaction and captures who, from where, what."""

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from audit.actions import record
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_an_event_is_written_with_the_change(publisher):
    with transaction.atomic():
        publisher.org.name = "Acme Video Inc."
        publisher.org.save()
        record(
            "members.organisation.renamed", obj=publisher.org, details={"name": publisher.org.name}
        )
    event = AuditEvent.objects.get(action="members.organisation.renamed")
    assert (event.action, event.object_type, event.object_id) == (
        "members.organisation.renamed",
        "members.organisation",
        str(publisher.org.pk),
    )
    assert event.owner_org_id == publisher.org.pk
    assert event.details == {"name": "Acme Video Inc."}


def test_an_event_vanishes_with_a_rolled_back_change(publisher):
    class Refused(Exception):
        pass

    before = AuditEvent.objects.count()
    with pytest.raises(Refused), transaction.atomic():
        record("members.organisation.suspended", obj=publisher.org)
        raise Refused
    assert AuditEvent.objects.count() == before


def test_oversized_details_are_replaced_by_a_bounded_marker(publisher, settings):
    settings.HASHX_AUDIT_MAX_DETAILS_BYTES = 300
    event = record(
        "signals.published", actor_org=publisher.org, details={"values": ["f" * 64] * 50}
    )
    assert event.details["truncated"] is True
    assert event.details["size"] > 300
    assert len(event.details["preview"]) <= 150


def test_a_request_id_is_echoed_or_made(api):
    assert api.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    made = api.get("/healthz", HTTP_X_REQUEST_ID="not a token!")["X-Request-ID"]
    assert made != "not a token!" and len(made) == 32


def test_an_admin_change_is_recorded_with_staff_user_ip_and_request_id(staff):
    target = User.objects.create_user("someone", password="pw-long-enough-2")
    response = staff.post(
        f"/admin/auth/user/{target.pk}/change/",
        {"username": "someone-renamed", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
         "is_active": "on"},
        HTTP_X_REQUEST_ID="req-42",
        REMOTE_ADDR="192.0.2.7",
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.auth.user.changed")
    assert event.actor_user_id == staff.user.pk and event.actor_username == "staff"
    assert (event.ip, event.request_id, event.object_id) == ("192.0.2.7", "req-42", str(target.pk))
    assert "Username" in str(event.details["change"])


def test_an_admin_deletion_is_recorded(staff):
    target = User.objects.create_user("leaving")
    response = staff.post(f"/admin/auth/user/{target.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(
        action="admin.auth.user.deleted", object_id=str(target.pk)
    ).exists()


def test_the_event_record_returns_is_the_row_it_wrote(publisher):
    """record() writes one plain INSERT: what it hands back is the stored row, field by field
    (the transaction id and the bounded details too)."""
    with transaction.atomic():
        event = record(
            "signals.published",
            obj=publisher.org,
            actor_key=publisher.key,
            actor_org=publisher.org,
            details={"set": "acme-csam", "accepted": 5, "names": ["ü", None, 1.5]},
        )
    stored = AuditEvent.objects.get(pk=event.pk)
    fields = [f.attname for f in AuditEvent._meta.concrete_fields]
    assert [getattr(event, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert stored.xid > 0 and stored.actor_key_id == publisher.key.key_id
    assert not event._state.adding
