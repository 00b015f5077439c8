"""Every field a member sends is bounded, and a value past its bound is a 400 naming the field in
an answer of bounded size (a 5,000,000-character description and 100,000 signal types were
stored as given); lists too long to be a mistake are 413."""

import pytest

from signals.actions.sets import do_create_set
from signals.actions.subscriptions import do_create_subscription
from signals.models import HashSet, Subscription
from tests.helpers import assert_problem
from tests.signals.conftest import PDQ, pdq

pytestmark = pytest.mark.django_db

SMALL_ANSWER = 4000  # bytes: an error answer names the field, it does not echo the input


@pytest.fixture
def csam_set(publisher):
    return do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM hashes"})


def refused(response, field, status=400):
    problem = assert_problem(response, status, "validation")
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert len(response.content) < SMALL_ANSWER, len(response.content)
    return problem


def new_set(**fields):
    return {"slug": "big", "name": "Big", **fields}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"description": "d" * 5_000_000}, "description"),
        ({"description": "d" * 2001}, "description"),
        ({"signal_types": ["pdq"] * 100_000}, "signal_types"),
        ({"signal_types": ["nope"] * 100_000}, "signal_types"),
        ({"name": "n" * 201}, "name"),
        ({"slug": "s" * 65}, "slug"),
    ],
)
def test_a_set_field_past_its_bound_is_a_400_naming_it(publisher, fields, field):
    refused(publisher.api.post("/api/v1/sets", new_set(**fields)), field)
    assert not HashSet.objects.exists()


def test_a_set_at_its_bounds_is_created_and_changed(publisher, csam_set):
    types = ["pdq", "md5", "sha1", "sha256"]
    body = new_set(description="d" * 2000, signal_types=types, name="n" * 200)
    assert publisher.api.post("/api/v1/sets", body).status_code == 201
    patch = publisher.api.request("PATCH", "/api/v1/sets/acme-csam", {"description": "d" * 2001})
    refused(patch, "description")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"signal_types": ["pdq"] * 100_000}, "signal_types"),
        ({"labels": ["csam"] * 101}, "labels"),
        ({"labels": ["l" * 101]}, "labels.0"),
        ({"sets": ["acme-csam"] * 101}, "sets"),
        ({"url": "https://hooks.example/" + "p" * 2000}, "url"),
        ({"description": "d" * 201}, "description"),
        ({"cursor": "c" * 201}, "cursor"),
    ],
)
def test_a_subscription_field_past_its_bound_is_a_400_naming_it(publisher, csam_set, fields, field):
    body = {"url": "https://hooks.example/x", "sets": ["acme-csam"], **fields}
    refused(publisher.api.post("/api/v1/subscriptions", body), field)
    subscription = do_create_subscription(
        publisher.org, url="https://hooks.example/x", sets=[csam_set], signal_types=[], labels=[]
    )
    if field != "cursor":  # set on create only (PATCH reads it as nothing)
        path = f"/api/v1/subscriptions/{subscription.pk}"
        refused(publisher.api.request("PATCH", path, fields), field)
    assert Subscription.objects.count() == 1


def test_too_many_items_in_one_json_request(publisher, csam_set):
    too_many = [pdq(0)] * 10_001
    for path in ("/api/v1/sets/acme-csam/signals", "/api/v1/match"):
        response = publisher.api.post(path, {"signals": too_many})
        problem = assert_problem(response, 413, "payload-too-large")
        assert "10,000" in problem["detail"]
    for path in ("/api/v1/sets/acme-csam/retractions", "/api/v1/sets/acme-csam/opinions"):
        refused(publisher.api.post(path, {"signals": too_many}), "signals")


def test_a_match_query_or_a_pull_naming_too_many_sets_is_a_400(publisher, csam_set):
    query = {"type": "pdq", "value": PDQ[0], "sets": ["acme-csam"] * 101}
    refused(publisher.api.post("/api/v1/match", {"signals": [query]}), "signals.0")
    many = ",".join(f"set-{n}" for n in range(101))
    refused(publisher.api.get(f"/api/v1/changes?sets={many}"), "sets")


def test_an_opinion_with_too_many_tags_is_a_rejected_item(publisher, csam_set):
    item = {"type": "pdq", "value": PDQ[0], "category": "negative", "tags": ["t"] * 21}
    answer = publisher.api.post("/api/v1/sets/acme-csam/opinions", {"signals": [item]}).json()
    assert "at most 20" in answer["rejections"][0]["reason"]


def test_a_label_past_its_bound_is_named_not_echoed(publisher, csam_set):
    item = pdq(0, labels=["x" * 60_000])
    answer = publisher.api.post("/api/v1/sets/acme-csam/signals", {"signals": [item]})
    assert answer.status_code == 202 and len(answer.content) < SMALL_ANSWER


@pytest.mark.parametrize(
    "public_key", ["A" * 1001, {"kty": "OKP", "crv": "Ed25519", "x": "A" * 2000}]
)
def test_a_public_key_past_its_bound_is_a_400(publisher, public_key):
    body = {"public_key": public_key, "challenge": "c" * 32, "proof": "p" * 86}
    refused(publisher.api.post("/api/v1/keys", body), "public_key")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sets",
        "/api/v1/keys",
        "/api/v1/subscriptions",
        "/api/v1/batches",
        "/api/v1/audit/events",
        "/api/v1/changes",
    ],
)
@pytest.mark.parametrize("limit", ["abc", "0", "-1", "100001", "9" * 5000, "1.5"])
def test_a_limit_that_is_not_a_page_size_is_a_400_on_every_list(publisher, path, limit):
    refused(publisher.api.get(f"{path}?limit={limit}"), "limit")


@pytest.mark.parametrize(
    "query",
    [
        "cursor=" + "A" * 100_000,
        "since=" + "2026-01-01T00:00:00" + "0" * 100_000 + "Z",
        "until=" + "9" * 100_000,
    ],
)
def test_a_query_parameter_past_any_sensible_length_is_a_400(publisher, query):
    path = "/api/v1/changes" if query.startswith("cursor") else "/api/v1/audit/events"
    refused(publisher.api.get(f"{path}?{query}"), query.split("=")[0])
