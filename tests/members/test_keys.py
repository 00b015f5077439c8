"""Members manage their own keys: list, add with proof of possession, retire, revoke."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from audit.models import AuditEvent
from hashx.keys import (
    b64url,
    key_id_of,
    possession_statement,
    public_jwk,
    public_pem,
    raw_public_bytes,
)
from members.api.serializers import WhoamiSerializer, whoami_document
from members.models import SigningKey
from tests.conftest import SignedClient

pytestmark = pytest.mark.django_db


def challenge(member):
    response = member.api.post("/api/v1/keys/challenge")
    assert response.status_code == 201
    return response.json()["challenge"]


def add_key_body(member, new_key, *, challenge_value=None, slug=None, public=None):
    challenge_value = challenge_value or challenge(member)
    statement = possession_statement(challenge_value, slug or member.org.slug, key_id_of(new_key))
    return {
        "public_key": public or public_jwk(raw_public_bytes(new_key.public_key())),
        "label": "rotation 2026",
        "challenge": challenge_value,
        "proof": b64url(new_key.sign(statement)),
    }


def test_a_member_lists_its_own_keys_only(publisher, subscriber):
    second = publisher.add_key(read_only=True)
    keys = publisher.api.get("/api/v1/keys").json()["results"]
    assert {k["key_id"] for k in keys} == {publisher.key.key_id, second.key.key_id}
    assert all(k["public_key"]["kty"] == "OKP" for k in keys)


def test_keys_need_a_signature(api):
    assert api.get("/api/v1/keys").status_code == 401
    assert api.post("/api/v1/keys/challenge").status_code == 401


def test_a_key_that_proves_possession_is_added_and_works(publisher):
    new_key = Ed25519PrivateKey.generate()
    response = publisher.api.post("/api/v1/keys", add_key_body(publisher, new_key))
    assert response.status_code == 201, response.content
    assert response.json()["key_id"] == key_id_of(new_key)
    assert (
        SignedClient(new_key).get("/api/v1/whoami").json()["organisation"]["slug"]
        == publisher.org.slug
    )
    event = AuditEvent.objects.get(
        action="members.key.added",
        object_id=str(SigningKey.objects.get(key_id=key_id_of(new_key)).pk),
    )
    assert event.actor_org_id == publisher.org.pk and event.actor_key_id == publisher.key.key_id


@pytest.mark.parametrize("form", ["pem", "base64"])
def test_a_key_may_be_given_as_pem_or_base64(publisher, form):
    new_key = Ed25519PrivateKey.generate()
    raw = raw_public_bytes(new_key.public_key())
    public = public_pem(raw) if form == "pem" else b64url(raw)
    assert (
        publisher.api.post(
            "/api/v1/keys", add_key_body(publisher, new_key, public=public)
        ).status_code
        == 201
    )


def test_a_key_that_cannot_prove_possession_is_refused(publisher):
    new_key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = add_key_body(publisher, other)
    body["public_key"] = public_jwk(raw_public_bytes(new_key.public_key()))
    response = publisher.api.post("/api/v1/keys", body)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/proof-of-possession-failed")
    assert not SigningKey.objects.filter(key_id=key_id_of(new_key)).exists()


def test_a_challenge_is_good_once(publisher):
    value = challenge(publisher)
    assert (
        publisher.api.post(
            "/api/v1/keys",
            add_key_body(publisher, Ed25519PrivateKey.generate(), challenge_value=value),
        ).status_code
        == 201
    )
    response = publisher.api.post(
        "/api/v1/keys", add_key_body(publisher, Ed25519PrivateKey.generate(), challenge_value=value)
    )
    assert response.status_code == 400


def test_another_organisations_challenge_does_not_work(publisher, outsider):
    value = challenge(outsider)
    body = add_key_body(publisher, Ed25519PrivateKey.generate(), challenge_value=value)
    assert publisher.api.post("/api/v1/keys", body).status_code == 400


def test_a_bad_public_key_is_a_validation_problem(publisher):
    body = add_key_body(publisher, Ed25519PrivateKey.generate(), public="bm90IGEga2V5")
    response = publisher.api.post("/api/v1/keys", body)
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "field": "public_key",
        "message": "an Ed25519 public key is 32 bytes; this one is 9",
    }


def test_missing_fields_are_listed(publisher):
    response = publisher.api.post("/api/v1/keys", {"label": "x"})
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {"public_key", "challenge", "proof"}


def test_a_key_already_registered_is_a_conflict(publisher, subscriber):
    body = add_key_body(subscriber, subscriber.private_key)
    response = subscriber.api.post("/api/v1/keys", body)
    assert response.status_code == 409


def test_revoking_my_key_takes_effect_on_the_next_request(publisher):
    spare = publisher.add_key()
    response = publisher.api.post(
        f"/api/v1/keys/{publisher.key.key_id}/revoke", {"reason": "rotated out"}
    )
    assert response.status_code == 200
    assert response.json()["state"] == "revoked"
    assert publisher.api.get("/api/v1/whoami").json()["type"].endswith("/key-revoked")
    assert spare.api.get("/api/v1/whoami").status_code == 200
    assert AuditEvent.objects.filter(
        action="members.key.revoked", details__reason="rotated out"
    ).exists()


def test_another_organisations_key_is_not_found(publisher, outsider):
    response = outsider.api.post(
        f"/api/v1/keys/{publisher.key.key_id}/revoke", {"reason": "mischief"}
    )
    assert response.status_code == 404
    assert SigningKey.objects.get(pk=publisher.key.pk).state == "active"


def test_revoke_needs_a_reason(publisher):
    response = publisher.api.post(f"/api/v1/keys/{publisher.key.key_id}/revoke", {})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "reason"


def test_retiring_overlaps_with_the_replacement(publisher):
    publisher.add_key()
    not_after = (timezone.now() + timezone.timedelta(days=7)).isoformat()
    response = publisher.api.post(
        f"/api/v1/keys/{publisher.key.key_id}/retire", {"not_after": not_after}
    )
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "retiring"
    assert publisher.api.get("/api/v1/whoami").status_code == 200


def test_the_last_active_key_cannot_be_retired(publisher):
    not_after = (timezone.now() + timezone.timedelta(days=7)).isoformat()
    response = publisher.api.post(
        f"/api/v1/keys/{publisher.key.key_id}/retire", {"not_after": not_after}
    )
    assert response.status_code == 409


@pytest.mark.parametrize("days", [-1, 91])
def test_not_after_must_be_soon_and_in_the_future(publisher, days):
    publisher.add_key()
    not_after = (timezone.now() + timezone.timedelta(days=days)).isoformat()
    response = publisher.api.post(
        f"/api/v1/keys/{publisher.key.key_id}/retire", {"not_after": not_after}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "not_after"


def test_whoami_answers_what_its_serializers_say_for_keys_in_every_state(publisher):
    """whoami builds its answer without DRF's serializers (for speed); the serializers stay the
    schema, so the two must not drift apart: compared here, field by field, for an active, a
    read-only, a retiring (not_after) and a used key, and for the answer over HTTP."""
    read_only = publisher.add_key(read_only=True)
    retiring = publisher.add_key()
    SigningKey.objects.filter(pk=retiring.key.pk).update(
        state=SigningKey.State.RETIRING,
        not_after=timezone.now() + timezone.timedelta(hours=3),
        last_used_at=timezone.now().replace(microsecond=123456),
        label="old laptop",
    )
    for member in (publisher, read_only, retiring):
        key = SigningKey.objects.get(pk=member.key.pk)
        expected = WhoamiSerializer(
            {
                "organisation": member.org,
                "key": key,
                "permissions": ["read"] if key.read_only else ["read", "write"],
            }
        ).data
        assert whoami_document(member.org, key) == expected
        answer = member.api.get("/api/v1/whoami")
        assert answer.status_code == 200
        assert answer.json()["key"]["key_id"] == key.key_id
        assert answer.json().keys() == expected.keys()
        assert answer.json()["key"].keys() == expected["key"].keys()
    revoked = SigningKey.objects.get(pk=read_only.key.pk)
    SigningKey.objects.filter(pk=revoked.pk).update(
        state=SigningKey.State.REVOKED, revoked_at=timezone.now(), revoked_reason="lost laptop"
    )
    revoked.refresh_from_db()
    expected = WhoamiSerializer(
        {"organisation": publisher.org, "key": revoked, "permissions": ["read"]}
    ).data
    assert whoami_document(publisher.org, revoked) == expected
