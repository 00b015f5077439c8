"""Members read the events where they are the actor or own the object, and nothing else."""

from urllib.parse import urlsplit

import pytest

from audit.actions import record

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(publisher, subscriber):
    return {
        "publisher_acted": record(
            "signals.published", actor_org=publisher.org, details={"count": 10}
        ),
        "subscriber_pulled": record(
            "feed.pulled",
            actor_org=subscriber.org,
            owner_org=publisher.org,
            details={"set": "acme-csam"},
        ),
        "subscriber_only": record("signals.published", actor_org=subscriber.org),
        "staff_on_publisher": record("members.organisation.suspended", obj=publisher.org),
    }


SETUP = {"members.organisation.created", "members.key.added"}


def ids(response):
    """Event ids on the page, leaving out the events of setting the cast up."""
    return [e["id"] for e in response.json()["results"] if e["action"] not in SETUP]


def test_a_member_sees_its_own_events_newest_first(publisher, events):
    response = publisher.api.get("/api/v1/audit/events")
    assert response.status_code == 200
    expected = [
        events[k].pk for k in ("staff_on_publisher", "subscriber_pulled", "publisher_acted")
    ]
    assert ids(response) == expected
    pulled = response.json()["results"][1]
    assert (pulled["actor_org"], pulled["owner_org"], pulled["action"]) == (
        "globex-social",
        "acme-video",
        "feed.pulled",
    )


def test_another_member_sees_only_its_own(subscriber, events):
    response = subscriber.api.get("/api/v1/audit/events")
    assert set(ids(response)) == {events["subscriber_pulled"].pk, events["subscriber_only"].pk}


def test_events_page_by_cursor(publisher, django_assert_max_num_queries):
    for n in range(7):
        record("test.event", actor_org=publisher.org, details={"n": n})
    seen = []
    url = "/api/v1/audit/events?limit=3&action=test.event"
    while url:
        # key lookup, last-used stamp, the page, organisation slugs
        with django_assert_max_num_queries(4):
            body = publisher.api.get(url).json()
        seen += [e["details"]["n"] for e in body["results"]]
        url = body["next"] and urlsplit(body["next"])._replace(scheme="", netloc="").geturl()
    assert seen == [6, 5, 4, 3, 2, 1, 0]


def test_events_filter_by_action_prefix_and_time(publisher, events):
    assert ids(publisher.api.get("/api/v1/audit/events?action=feed.")) == [
        events["subscriber_pulled"].pk
    ]
    assert ids(publisher.api.get("/api/v1/audit/events?action=feed.pulled")) == [
        events["subscriber_pulled"].pk
    ]
    assert ids(publisher.api.get("/api/v1/audit/events?since=2999-01-01T00:00:00Z")) == []
    # Offsets past Postgres' ±15:59 are read as Python reads them, in UTC.
    assert ids(publisher.api.get("/api/v1/audit/events?since=4101-01-26T09:22:57%2B18:10")) == []


@pytest.mark.parametrize("action", ["feed%00", "Feed.Pulled", "x" * 101])
def test_an_action_filter_that_cannot_name_an_action_is_a_problem_400(publisher, events, action):
    response = publisher.api.get(f"/api/v1/audit/events?action={action}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "action"


@pytest.mark.parametrize(
    "since",
    ["yesterday", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", "0001-01-01T00:00:00%2B01:00"],
)
def test_a_bad_time_filter_is_a_problem_400(publisher, events, since):
    response = publisher.api.get(f"/api/v1/audit/events?since={since}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "since"


def test_an_unsigned_request_is_refused(api, events):
    response = api.get("/api/v1/audit/events")
    assert response.status_code == 401
    assert response.json()["type"].endswith("/problems/signature-missing")
