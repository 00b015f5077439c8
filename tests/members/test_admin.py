"""Coalition staff run membership in Django admin: every change confirmed, reasoned, audited,
and in force on the member's next request."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.models import AuditEvent
from hashx.keys import b64url, key_id_of, public_jwk, public_pem, raw_public_bytes
from members.models import Organisation, SigningKey

pytestmark = pytest.mark.django_db


def test_the_organisation_list_filters_searches_and_counts_keys(
    staff, publisher, outsider, applicant
):
    publisher.add_key()
    page = staff.get("/admin/members/organisation/?status__exact=active&q=acme")
    assert page.status_code == 200
    orgs = list(page.context["cl"].result_list)
    assert [o.slug for o in orgs] == ["acme-video"]
    assert orgs[0].n_active_keys == 2


def action(staff, name, orgs, **extra):
    data = {"action": name, "_selected_action": [o.pk for o in orgs], **extra}
    return staff.post("/admin/members/organisation/", data)


def test_approving_asks_for_confirmation_and_a_reason_then_records_it(staff, applicant):
    page = action(staff, "approve", [applicant.org])
    assert page.status_code == 200 and b"Yes, I" in page.content and b"newcomer" in page.content
    assert Organisation.objects.get(pk=applicant.org.pk).status == "pending"

    page = action(staff, "approve", [applicant.org], confirm="yes", reason="")
    assert page.status_code == 200 and b"This field is required" in page.content

    done = action(staff, "approve", [applicant.org], confirm="yes", reason="signed the charter")
    assert done.status_code == 302
    assert Organisation.objects.get(pk=applicant.org.pk).status == "active"
    event = AuditEvent.objects.get(action="members.organisation.approved")
    assert event.details["reason"] == "signed the charter" and event.actor_user_id == staff.user.pk
    assert applicant.api.get("/api/v1/whoami").status_code == 200


def test_suspending_in_admin_refuses_the_next_request(staff, publisher):
    assert publisher.api.get("/api/v1/whoami").status_code == 200
    action(staff, "suspend", [publisher.org], confirm="yes", reason="leaked a set")
    assert publisher.api.get("/api/v1/whoami").json()["type"].endswith("/organisation-suspended")
    action(staff, "reactivate", [publisher.org], confirm="yes", reason="resolved")
    assert publisher.api.get("/api/v1/whoami").status_code == 200


def test_a_transition_that_does_not_apply_changes_nothing(staff, publisher):
    action(staff, "approve", [publisher.org], confirm="yes", reason="twice")
    assert not AuditEvent.objects.filter(action="members.organisation.approved").exists()


def test_revoking_a_key_in_admin_refuses_its_next_request(staff, publisher):
    data = {
        "action": "revoke",
        "_selected_action": [publisher.key.pk],
        "confirm": "yes",
        "reason": "compromised",
    }
    assert staff.post("/admin/members/signingkey/", data).status_code == 302
    assert publisher.api.get("/api/v1/whoami").json()["type"].endswith("/key-revoked")
    assert SigningKey.objects.get(pk=publisher.key.pk).revoked_reason == "compromised"


def change_form(org, public_key_text, label="from admin"):
    """The organisation change form with one new key pasted into the add-keys inline."""
    return {
        "slug": org.slug, "name": org.name, "kind": org.kind,
        "contact_email": "", "contact_name": "",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0",
        "keys-2-TOTAL_FORMS": "1", "keys-2-INITIAL_FORMS": "0",
        "keys-2-0-public_key_text": public_key_text, "keys-2-0-label": label,
    }  # fmt: skip


def test_an_organisations_slug_is_fixed_once_it_exists(staff, publisher):
    form = {**change_form(publisher.org, ""), "slug": "renamed", "keys-2-TOTAL_FORMS": "0"}
    response = staff.post(f"/admin/members/organisation/{publisher.org.pk}/change/", form)
    assert response.status_code == 302
    publisher.org.refresh_from_db()
    assert publisher.org.slug == "acme-video"


@pytest.mark.parametrize("form", ["pem", "base64", "jwk"])
def test_staff_add_a_key_by_pasting_it(staff, publisher, form):
    new_key = Ed25519PrivateKey.generate()
    raw = raw_public_bytes(new_key.public_key())
    text = {"pem": public_pem(raw), "base64": b64url(raw), "jwk": json.dumps(public_jwk(raw))}[form]
    response = staff.post(
        f"/admin/members/organisation/{publisher.org.pk}/change/", change_form(publisher.org, text)
    )
    assert response.status_code == 302, response.context["errors"] if response.context else response
    key = SigningKey.objects.get(key_id=key_id_of(new_key))
    assert key.organisation == publisher.org and key.label == "from admin"
    assert AuditEvent.objects.filter(action="members.key.added", actor_user=staff.user).exists()


def test_a_pasted_private_key_or_garbage_is_refused_with_a_reason(staff, publisher):
    url = f"/admin/members/organisation/{publisher.org.pk}/change/"
    response = staff.post(
        url,
        change_form(publisher.org, "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----"),
    )
    assert response.status_code == 200
    assert b"this is a private key" in response.content
    response = staff.post(url, change_form(publisher.org, "hello"))
    assert b"not PEM, JWK or base64" in response.content
    response = staff.post(url, change_form(publisher.org, "aGVsbG8"))
    assert b"an Ed25519 public key is 32 bytes; this one is 5" in response.content
    assert SigningKey.objects.filter(organisation=publisher.org).count() == 1


def test_the_change_page_shows_keys_with_state_and_last_use(staff, publisher):
    publisher.api.get("/api/v1/whoami")
    page = staff.get(f"/admin/members/organisation/{publisher.org.pk}/change/")
    assert page.status_code == 200
    assert publisher.key.key_id.encode() in page.content
