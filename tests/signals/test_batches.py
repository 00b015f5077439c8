"""A member lists its own batches, newest first, filtered by set and state, paged by cursor."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from signals.actions.sets import do_create_set
from tests.signals.conftest import merged, pdq, publish

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, tzinfo=UTC)


def published(member, slug, n, minute):
    """A batch of one signal, published ``minute`` minutes after START."""
    with time_machine.travel(START + timedelta(minutes=minute), tick=False):
        response = publish(member, slug, [pdq(n)])
    assert response.status_code == 202, response.content
    return response


def listed(member, query=""):
    response = member.api.get(f"/api/v1/batches{query}")
    assert response.status_code == 200, response.content
    return [b["id"] for b in response.json()["results"]]


def test_a_member_sees_its_own_batches_newest_first_by_set_and_state(
    publisher, subscriber, outsider, shared_set
):
    do_create_set(publisher.org, {"slug": "acme-other", "name": "Other"})
    first = merged(published(publisher, "acme-csam", 0, 1))
    second = published(publisher, "acme-other", 1, 2).json()["batch"]
    third = published(publisher, "acme-csam", 2, 3).json()["batch"]
    published(subscriber, "acme-csam", 3, 4)  # into the same set, by someone else

    assert listed(publisher) == [third, second, str(first.pk)]
    assert listed(publisher, "?set=acme-csam") == [third, str(first.pk)]
    assert listed(publisher, "?state=done") == [str(first.pk)]
    assert listed(publisher, "?state=queued&set=acme-other") == [second]
    assert listed(outsider) == []
    assert listed(publisher, "?set=acme%00csam") == []  # cannot be a slug: names nothing
    report = publisher.api.get("/api/v1/batches").json()["results"][-1]
    assert report == publisher.api.get(f"/api/v1/batches/{first.pk}").json()


def test_batches_are_paged_by_an_opaque_cursor(publisher, csam_set):
    ids = [published(publisher, "acme-csam", n, n).json()["batch"] for n in range(5)]
    seen, url = [], "/api/v1/batches?limit=2"
    while url:
        page = publisher.api.get(url.removeprefix("http://testserver")).json()
        assert len(page["results"]) <= 2
        seen += [b["id"] for b in page["results"]]
        url = page["next"]
    assert seen == ids[::-1]


@pytest.mark.parametrize("query", ["?state=finished", "?state=%00"])
def test_an_unknown_state_is_a_400_naming_the_field(publisher, query):
    response = publisher.api.get(f"/api/v1/batches{query}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "state"


def test_the_list_costs_the_same_for_one_batch_or_twenty(
    publisher, csam_set, django_assert_max_num_queries
):
    for n in range(20):
        published(publisher, "acme-csam", n, n)
    # key lookup, last-used stamp, the page of batches with their sets
    with django_assert_max_num_queries(3):
        assert len(listed(publisher)) == 20
