"""Feed tokens: made by a signed request, shown once, read-only, only on the feed endpoints
and only for their sets, revocable, expiring, and audited at every use."""

import base64
import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from members.actions.organisations import do_change_status
from members.models import FeedToken
from signals.actions.sets import do_create_set, do_revoke_grant
from tests.cli import hashx
from tests.signals.conftest import PDQ, merged, publish

# Transactional: the feed serves only committed changes.
pytestmark = pytest.mark.django_db(transaction=True)


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def basic(secret):
    return {"Authorization": "Basic " + base64.b64encode(f"misp:{secret}".encode()).decode()}


def get(path, headers):
    return APIClient().get(path, headers=headers)


def kind(answer):
    assert answer["Content-Type"] == "application/problem+json", answer.content
    return answer.json()["type"].rsplit("/", 1)[-1]


@pytest.fixture
def own_set(subscriber):
    """A set of the subscriber's own, which a token for the shared set must not reach."""
    own = do_create_set(subscriber.org, {"slug": "globex-own", "name": "Own"})
    merged(publish(subscriber, "globex-own", [{"type": "pdq", "value": PDQ[50]}]))
    return own


def test_a_member_makes_a_token_whose_secret_is_shown_once(subscriber, shared):
    answer = subscriber.api.post("/api/v1/feed-tokens", {"name": "opencti", "sets": ["acme-csam"]})
    assert answer.status_code == 201, answer.content
    made = answer.json()
    assert made["token"].startswith("hxft_") and made["sets"] == ["acme-csam"]
    assert made["hint"] == made["token"][:9]
    lifetime = timezone.datetime.fromisoformat(made["expires_at"]) - timezone.now()
    assert timedelta(days=89) < lifetime <= timedelta(days=90)
    stored = FeedToken.objects.get()
    assert made["token"].encode() not in bytes(stored.digest) and len(bytes(stored.digest)) == 32
    listed = subscriber.api.get("/api/v1/feed-tokens").json()["results"]
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert AuditEvent.objects.filter(action="members.feed_token.created").count() == 1


def test_a_token_reads_the_feed_of_its_sets_and_nothing_else(subscriber, shared, own_set, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    changes = get("/api/v1/changes", bearer(secret)).json()["changes"]
    assert {c["set"] for c in changes} == {"acme-csam"} and len(changes) == 25
    assert get("/api/v1/changes?sets=acme-csam", basic(secret)).status_code == 200
    assert get("/api/v1/changes?sets=globex-own", bearer(secret)).status_code == 404
    snapshot = get("/api/v1/sets/acme-csam/snapshot", basic(secret))
    assert snapshot.status_code == 200
    lines = b"".join(snapshot.streaming_content).decode().splitlines()
    assert len(lines) == 26 and json.loads(lines[-1])["end"] is True
    assert get("/api/v1/sets/globex-own/snapshot", bearer(secret)).status_code == 404
    # The organisation reads its own set with a signature, all the same.
    assert subscriber.api.get("/api/v1/changes?sets=globex-own").status_code == 200


def test_a_token_never_reaches_a_write_or_any_other_endpoint(subscriber, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    client = APIClient()
    write = client.post(
        "/api/v1/sets/acme-csam/signals",
        {"signals": [{"type": "pdq", "value": PDQ[60]}]},
        format="json",
        headers=bearer(secret),
    )
    assert (write.status_code, kind(write)) == (403, "token-not-accepted")
    for path in ("/api/v1/sets", "/api/v1/whoami", "/api/v1/feed-tokens", "/api/v1/audit/events"):
        answer = get(path, bearer(secret))
        assert (answer.status_code, kind(answer)) == (403, "token-not-accepted"), path
    made = client.post(
        "/api/v1/feed-tokens", {"name": "x", "sets": ["acme-csam"]}, format="json",
        headers=basic(secret),
    )  # fmt: skip
    assert (made.status_code, kind(made)) == (403, "token-not-accepted")


def test_a_revoked_expired_or_unknown_token_is_refused(subscriber, outsider, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    token = FeedToken.objects.get()
    assert outsider.api.request("DELETE", f"/api/v1/feed-tokens/{token.pk}").status_code == 404
    with time_machine.travel(timezone.now() + timedelta(days=91)):
        expired = get("/api/v1/changes", bearer(secret))
        assert (expired.status_code, kind(expired)) == (401, "token-expired")
    revoked = subscriber.api.request("DELETE", f"/api/v1/feed-tokens/{token.pk}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = get("/api/v1/changes", bearer(secret))
    assert (refused.status_code, kind(refused)) == (401, "token-revoked")
    unknown = get("/api/v1/changes", bearer("hxft_" + "x" * 43))
    assert (unknown.status_code, kind(unknown)) == (401, "token-unknown")


def test_a_token_loses_a_set_its_organisation_may_no_longer_read(
    publisher, subscriber, shared, token_of
):
    secret = token_of(subscriber, ["acme-csam"])
    assert get("/api/v1/changes?sets=acme-csam", bearer(secret)).status_code == 200
    do_revoke_grant(shared, subscriber.org)
    assert get("/api/v1/changes?sets=acme-csam", bearer(secret)).status_code == 404
    assert get("/api/v1/changes", bearer(secret)).json()["changes"] == []


def test_a_token_is_made_only_for_sets_the_member_reads_and_a_sane_expiry(
    subscriber, outsider, shared, api
):
    assert (
        outsider.api.post("/api/v1/feed-tokens", {"name": "x", "sets": ["acme-csam"]}).status_code
        == 404
    )
    for bad in (
        {"name": "x", "sets": []},
        {"name": "x", "sets": ["acme-csam"], "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "x", "sets": ["acme-csam"], "expires_at": "2999-01-01T00:00:00Z"},
        {"name": "x", "sets": ["acme-csam", "acme-csam"]},
    ):
        answer = subscriber.api.post("/api/v1/feed-tokens", bad)
        assert (answer.status_code, kind(answer)) == (400, "validation"), bad
    unsigned = api.post("/api/v1/feed-tokens", {"name": "x", "sets": ["acme-csam"]}, format="json")
    assert unsigned.status_code == 401
    # A list past its bound is one error, counted before any item is checked.
    answer = subscriber.api.post("/api/v1/feed-tokens", {"name": "x", "sets": ["!"] * 100_000})
    assert (answer.status_code, kind(answer)) == (400, "validation")
    assert [e["field"] for e in answer.json()["errors"]] == ["sets"]


def test_every_use_of_a_token_is_audited_with_the_token_as_actor(subscriber, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    for _ in range(3):
        get("/api/v1/changes", bearer(secret))
    token = FeedToken.objects.get()
    used = AuditEvent.objects.filter(action="members.feed_token.used", object_id=str(token.pk))
    assert used.count() == 3
    pulls = AuditEvent.objects.filter(action="feed.pulled", actor_key_id=f"feed-token:{token.pk}")
    assert [e.details["count"] for e in pulls] == [25, 25, 25]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_staff_see_and_revoke_a_token_in_admin_with_a_reason(staff, subscriber, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    token = FeedToken.objects.get()
    listing = staff.get("/admin/members/feedtoken/?q=globex")
    assert [t.pk for t in listing.context["cl"].result_list] == [token.pk]
    data = {"action": "revoke", "_selected_action": [token.pk], "confirm": "yes", "reason": "leak"}
    assert staff.post("/admin/members/feedtoken/", data).status_code == 302
    assert kind(get("/api/v1/changes", bearer(secret))) == "token-revoked"
    event = AuditEvent.objects.get(action="members.feed_token.revoked")
    assert event.details["reason"] == "leak" and event.actor_user_id == staff.user.pk


def test_the_cli_makes_lists_and_revokes_tokens(exchange_url, subscriber, shared, tmp_path):
    key = subscriber.key_file(tmp_path / "key.pem")
    made = hashx("--json", "token", "create", "opencti", "--sets", "acme-csam", url=exchange_url,
                 key=key)  # fmt: skip
    secret = json.loads(made.stdout)["token"]
    assert get("/api/v1/changes", bearer(secret)).status_code == 200
    listed = hashx("token", "list", url=exchange_url, key=key).stdout
    assert "opencti" in listed and "active" in listed and secret not in listed
    token_id = json.loads(made.stdout)["id"]
    assert "revoked" in hashx("token", "revoke", token_id, url=exchange_url, key=key).stdout
    assert kind(get("/api/v1/changes", bearer(secret))) == "token-revoked"
    refused = hashx("token", "create", "x", "--sets", "nope", url=exchange_url, key=key,
                    check=False)  # fmt: skip
    assert refused.returncode == 1 and "No set 'nope'" in refused.stderr


def test_the_token_list_costs_the_same_for_one_token_or_ten(
    subscriber, shared, token_of, django_assert_max_num_queries
):
    for _ in range(10):
        token_of(subscriber, ["acme-csam"])
    # key lookup, last-used stamp, the tokens, their sets' slugs
    with django_assert_max_num_queries(4):
        assert len(subscriber.api.get("/api/v1/feed-tokens").json()["results"]) == 10


def test_a_suspended_organisations_tokens_are_refused(subscriber, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    do_change_status(subscriber.org, "suspend", "unpaid dues")
    refused = get("/api/v1/changes", bearer(secret))
    assert (refused.status_code, kind(refused)) == (401, "organisation-suspended")
