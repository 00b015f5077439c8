"""Every member endpoint refuses an unsigned request with a 401 problem document, and the
list endpoints cost a fixed number of queries however many rows they return."""

import base64
import re
import uuid

import pytest
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator

from signals.actions.sets import do_create_set
from tests.signals.conftest import merged, pdq, publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def csam_set(publisher):
    return do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM hashes"})


MEMBER_ENDPOINTS = [
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("POST", "/api/v1/keys/challenge"),
    ("POST", "/api/v1/keys/some-key/revoke"),
    ("POST", "/api/v1/keys/some-key/retire"),
    ("GET", "/api/v1/sets"),
    ("POST", "/api/v1/sets"),
    ("GET", "/api/v1/sets/acme-csam"),
    ("PATCH", "/api/v1/sets/acme-csam"),
    ("GET", "/api/v1/sets/acme-csam/grants"),
    ("PUT", "/api/v1/sets/acme-csam/grants/globex-social"),
    ("DELETE", "/api/v1/sets/acme-csam/grants/globex-social"),
    ("POST", "/api/v1/sets/acme-csam/signals"),
    ("POST", "/api/v1/sets/acme-csam/retractions"),
    ("POST", "/api/v1/sets/acme-csam/opinions"),
    ("GET", "/api/v1/batches"),
    ("GET", f"/api/v1/batches/{uuid.uuid4()}"),
    ("GET", "/api/v1/changes"),
    ("GET", "/api/v1/sets/acme-csam/snapshot"),
    ("POST", "/api/v1/match"),
    ("GET", "/api/v1/audit/events"),
    ("GET", "/api/v1/audit/checkpoint"),
    ("GET", "/api/v1/subscriptions"),
    ("POST", "/api/v1/subscriptions"),
    ("GET", f"/api/v1/subscriptions/{uuid.uuid4()}"),
    ("PATCH", f"/api/v1/subscriptions/{uuid.uuid4()}"),
    ("DELETE", f"/api/v1/subscriptions/{uuid.uuid4()}"),
    ("GET", f"/api/v1/subscriptions/{uuid.uuid4()}/deliveries"),
    ("POST", f"/api/v1/subscriptions/{uuid.uuid4()}/redeliver"),
    ("GET", "/api/v1/feed-tokens"),
    ("POST", "/api/v1/feed-tokens"),
    ("DELETE", f"/api/v1/feed-tokens/{uuid.uuid4()}"),
    ("GET", "/api/v1/stats"),
]


def test_the_list_holds_every_member_operation_of_the_openapi_document():
    """A new endpoint cannot miss the unsigned check: every operation the document describes
    under /api/v1/ (but the document itself) is in MEMBER_ENDPOINTS."""
    schema = SchemaGenerator().get_schema(request=None, public=True)

    def route(path: str) -> str:
        return resolve(re.sub(r"\{[^}]+\}", "x1", path)).route

    described = {
        (method.upper(), route(path))
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/") and path not in {"/api/v1/schema", "/api/v1/docs"}
        for method in operations
    }
    listed = {(method, route(path)) for method, path in MEMBER_ENDPOINTS}
    assert described - listed == set()


@pytest.mark.parametrize(("method", "path"), MEMBER_ENDPOINTS)
def test_an_unsigned_request_is_a_401_problem(api, csam_set, method, path):
    response = api.generic(method, path, data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/problems/signature-missing")


def test_the_set_list_costs_the_same_for_one_set_or_twenty(
    publisher, django_assert_max_num_queries
):
    for n in range(20):
        do_create_set(publisher.org, {"slug": f"set-{n}", "name": f"Set {n}"})
    # key lookup, last-used stamp, the sets with their owners
    with django_assert_max_num_queries(3):
        assert len(publisher.api.get("/api/v1/sets").json()["results"]) == 20


def test_the_key_list_costs_the_same_for_one_key_or_ten(publisher, django_assert_max_num_queries):
    for _ in range(9):
        publisher.add_key()
    with django_assert_max_num_queries(3):
        assert len(publisher.api.get("/api/v1/keys").json()["results"]) == 10


def test_a_batch_report_is_one_query_after_authentication(
    publisher, csam_set, django_assert_max_num_queries
):
    batch = merged(publish(publisher, "acme-csam", [pdq(n) for n in range(50)]))
    with django_assert_max_num_queries(3):
        assert publisher.api.get(f"/api/v1/batches/{batch.pk}").json()["new"] == 50


def test_the_subscription_list_costs_the_same_for_one_or_ten(
    publisher, csam_set, django_assert_max_num_queries
):
    from signals.actions.subscriptions import do_create_subscription

    for n in range(10):
        do_create_subscription(
            publisher.org,
            url=f"https://hooks.example/{n}",
            sets=[csam_set],
            signal_types=[],
            labels=[],
        )
    # key lookup, last-used stamp, the subscriptions, their sets' slugs
    with django_assert_max_num_queries(4):
        assert len(publisher.api.get("/api/v1/subscriptions").json()["results"]) == 10


@pytest.mark.parametrize("position", ["foo", "2024-02-30T00:00:00Z", "99999999999999999999999"])
def test_a_forged_page_cursor_is_a_404_problem_on_every_paged_list(publisher, csam_set, position):
    from signals.actions.subscriptions import do_create_subscription

    subscription = do_create_subscription(
        publisher.org, url="https://hooks.example/x", sets=[csam_set], signal_types=[], labels=[]
    )
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    for path in (
        "/api/v1/batches",
        "/api/v1/audit/events",
        f"/api/v1/subscriptions/{subscription.pk}/deliveries",
    ):
        response = publisher.api.get(f"{path}?cursor={cursor}")
        assert response.status_code == 404, (path, response.content)
        assert response["Content-Type"] == "application/problem+json"
