"""Members read the events where they are the actor or own the object, and nothing else."""

from urllib.parse import urlsplit

import pytest

from audit.actions import record

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(acme, globex):
    return {
        "acme_acted": record("signals.published", actor_org=acme, details={"count": 10}),
        "globex_pulled_acme": record(
            "feed.pulled", actor_org=globex, owner_org=acme, details={"set": "acme-csam"}
        ),
        "globex_only": record("signals.published", actor_org=globex),
        "staff_on_acme": record("members.organisation.suspended", obj=acme),
    }


SETUP = {"members.organisation.created", "members.key.added"}


def ids(response):
    """Event ids on the page, leaving out the events of setting the cast up."""
    return [e["id"] for e in response.json()["results"] if e["action"] not in SETUP]


def test_a_member_sees_its_own_events_newest_first(acme_api, events):
    response = acme_api.get("/api/v1/audit/events")
    assert response.status_code == 200
    expected = [events[k].pk for k in ("staff_on_acme", "globex_pulled_acme", "acme_acted")]
    assert ids(response) == expected
    pulled = response.json()["results"][1]
    assert (pulled["actor_org"], pulled["owner_org"], pulled["action"]) == (
        "globex",
        "acme",
        "feed.pulled",
    )


def test_another_member_sees_only_its_own(globex_member, events):
    response = globex_member.api.get("/api/v1/audit/events")
    assert set(ids(response)) == {events["globex_pulled_acme"].pk, events["globex_only"].pk}


def test_events_page_by_cursor(acme_api, acme, django_assert_max_num_queries):
    for n in range(7):
        record("test.event", actor_org=acme, details={"n": n})
    seen = []
    url = "/api/v1/audit/events?limit=3&action=test.event"
    while url:
        # key lookup, last-used stamp, the page, organisation slugs
        with django_assert_max_num_queries(4):
            body = acme_api.get(url).json()
        seen += [e["details"]["n"] for e in body["results"]]
        url = body["next"] and urlsplit(body["next"])._replace(scheme="", netloc="").geturl()
    assert seen == [6, 5, 4, 3, 2, 1, 0]


def test_events_filter_by_action_prefix_and_time(acme_api, events):
    assert ids(acme_api.get("/api/v1/audit/events?action=feed.")) == [
        events["globex_pulled_acme"].pk
    ]
    assert ids(acme_api.get("/api/v1/audit/events?action=feed.pulled")) == [
        events["globex_pulled_acme"].pk
    ]
    assert ids(acme_api.get("/api/v1/audit/events?since=2999-01-01T00:00:00Z")) == []
    # Offsets past Postgres' ±15:59 are read as Python reads them, in UTC.
    assert ids(acme_api.get("/api/v1/audit/events?since=4101-01-26T09:22:57%2B18:10")) == []


@pytest.mark.parametrize("action", ["feed%00", "Feed.Pulled", "x" * 101])
def test_an_action_filter_that_cannot_name_an_action_is_a_problem_400(acme_api, events, action):
    response = acme_api.get(f"/api/v1/audit/events?action={action}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "action"


@pytest.mark.parametrize(
    "since",
    ["yesterday", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", "0001-01-01T00:00:00%2B01:00"],
)
def test_a_bad_time_filter_is_a_problem_400(acme_api, events, since):
    response = acme_api.get(f"/api/v1/audit/events?since={since}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "since"


def test_an_unsigned_request_is_refused(api, events):
    response = api.get("/api/v1/audit/events")
    assert response.status_code == 401
    assert response.json()["type"].endswith("/problems/signature-missing")
