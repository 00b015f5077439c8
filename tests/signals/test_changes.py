"""Retractions, opinions and expiry change entries, and every change moves the entry."""

import pytest
import time_machine
from django.utils import timezone

from signals.actions.expiry import do_expire_entries
from signals.models import Contribution, Opinion
from tests.signals.conftest import entry, merged, pdq, publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def both_published(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    merged(publish(subscriber, "acme-csam", [pdq(0)]))
    return shared_set


def retract(member, items):
    return member.api.post("/api/v1/sets/acme-csam/retractions", {"signals": items})


def test_a_contributor_retracts_its_own_and_the_entry_stays_while_others_vouch(
    subscriber, both_published
):
    before = entry(0)
    answer = retract(subscriber, [pdq(0)]).json()
    assert (answer["retracted"], answer["tombstoned"]) == (1, 0)
    after = entry(0)
    assert (after.state, after.contributor_count) == ("active", 1)
    assert (after.position_xid, after.position_seq) > (before.position_xid, before.position_seq)


def test_the_last_contribution_retracted_makes_a_tombstone(publisher, subscriber, both_published):
    retract(subscriber, [pdq(0)])
    answer = retract(publisher, [pdq(0)]).json()
    assert answer["tombstoned"] == 1
    assert entry(0).state == "tombstone"


def test_an_only_contributor_retracting_makes_a_tombstone(publisher, both_published):
    assert entry(1).contributor_id == publisher.org.pk  # implied: no row yet
    answer = retract(publisher, [pdq(1)]).json()
    assert (answer["retracted"], answer["tombstoned"]) == (1, 1)
    assert (entry(1).state, entry(1).contributor_count, entry(1).contributor_id) == (
        "tombstone", 0, None
    )  # fmt: skip
    (row,) = Contribution.objects.filter(entry=entry(1))
    assert row.organisation_id == publisher.org.pk and row.retracted_at is not None


def test_the_owner_removes_an_entry_outright(publisher, both_published):
    answer = retract(publisher, [{"entry": entry(0).pk}]).json()
    assert answer["tombstoned"] == 1
    assert (entry(0).state, entry(0).contributor_count) == ("tombstone", 0)


def test_retracting_what_you_did_not_contribute_is_answered_per_item(subscriber, both_published):
    answer = retract(
        subscriber, [pdq(1), pdq(5), {"type": "pdq", "value": "zz"}, {"entry": 10**9}]
    ).json()
    assert answer["retracted"] == 0
    assert [r["index"] for r in answer["rejections"]] == [0, 1, 2, 3]
    assert entry(1).state == "active"


def test_republishing_revives_a_tombstone(publisher, both_published):
    retract(publisher, [pdq(1)])
    assert entry(1).state == "tombstone"
    batch = merged(publish(publisher, "acme-csam", [pdq(1)]))
    assert batch.updated == 1
    assert (entry(1).state, entry(1).contributor_count) == ("active", 1)


def test_an_outsider_cannot_retract_or_opine(outsider, both_published):
    assert retract(outsider, [pdq(0)]).status_code == 404
    assert outsider.api.post("/api/v1/sets/acme-csam/opinions", {"signals": []}).status_code == 404


def opine(member, items):
    return member.api.post("/api/v1/sets/acme-csam/opinions", {"signals": items})


def test_opinions_are_one_per_organisation_and_aggregate(publisher, subscriber, both_published):
    assert (
        opine(subscriber, [{**pdq(0), "category": "negative", "tags": ["meme"]}]).json()["accepted"]
        == 1
    )
    assert opine(publisher, [{**pdq(0), "category": "positive"}]).json()["accepted"] == 1
    e = entry(0)
    assert (e.positive_count, e.negative_count) == (1, 1)  # disputed
    opine(subscriber, [{**pdq(0), "category": "positive"}])
    e = entry(0)
    assert (e.positive_count, e.negative_count) == (2, 0)
    assert Opinion.objects.get(organisation=subscriber.org).tags == []


def test_bad_opinions_are_answered_per_item(subscriber, both_published):
    answer = opine(
        subscriber,
        [
            {**pdq(0), "category": "maybe"},
            {**pdq(9), "category": "positive"},
            {**pdq(1), "category": "investigation_seed", "tags": ["x"]},
        ],
    ).json()
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejections"]] == [0, 1]
    assert entry(1).investigation_count == 1


def test_expired_entries_become_tombstones(publisher, csam_set):
    soon = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    merged(publish(publisher, "acme-csam", [pdq(0, expires_at=soon), pdq(1)]))
    assert do_expire_entries() == 0
    with time_machine.travel(timezone.now() + timezone.timedelta(hours=2)):
        assert do_expire_entries() == 1
    assert (entry(0).state, entry(1).state) == ("tombstone", "active")


def test_an_expiry_in_the_past_is_rejected(publisher, csam_set):
    answer = publish(publisher, "acme-csam", [pdq(0, expires_at="2020-01-01T00:00:00Z")]).json()
    assert answer["rejections"][0]["reason"] == "expires_at is in the past"


def test_an_absurd_entry_id_is_just_not_in_the_set(subscriber, both_published):
    answer = retract(subscriber, [{"entry": 10**30}, {"entry": -1}, {"entry": True}]).json()
    assert [r["reason"] for r in answer["rejections"]] == [
        "not in this set",
        "not in this set",
        "give entry, or type and value",
    ]


def test_an_opinion_with_a_category_of_the_wrong_type_is_refused_per_item(
    subscriber, both_published
):
    answer = opine(
        subscriber, [{**pdq(0), "category": ["positive"]}, {**pdq(0), "category": {"a": 1}}]
    ).json()
    assert (answer["accepted"], [r["index"] for r in answer["rejections"]]) == (0, [0, 1])


def test_a_tag_with_a_nul_byte_is_refused_per_item(subscriber, both_published):
    answer = subscriber.api.post(
        "/api/v1/sets/acme-csam/opinions",
        {"signals": [{**pdq(0), "category": "negative", "tags": ["a\x00b"]}]},
    ).json()
    assert answer["rejected"] == 1 and "NUL" in answer["rejections"][0]["reason"]


def test_a_tag_that_is_not_valid_unicode_is_refused_per_item(subscriber, both_published):
    # Written by hand: a lone surrogate cannot be encoded by json.dumps into valid UTF-8.
    item = f'{{"type": "pdq", "value": "{pdq(0)["value"]}", "category": "negative"'
    raw = (f'{{"signals": [{item}, "tags": ["a\\ud800"]}}]}}').encode()
    path = "/api/v1/sets/acme-csam/opinions"
    answer = subscriber.api.client.generic(
        "POST", path, data=raw, content_type="application/json",
        headers=subscriber.api.signed_headers("POST", path, raw),
    )  # fmt: skip
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["rejected"] == 1 and "surrogate" in body["rejections"][0]["reason"]
