"""Sets: who sees them (404 for everyone else), who owns and grants them."""

import pytest

from members.models import Organisation
from signals.actions.sets import do_create_set, do_grant
from signals.api.views import GRANTS_SHOWN
from tests.helpers import every_page

pytestmark = pytest.mark.django_db


def slugs(response):
    return {s["slug"] for s in response.json()["results"]}


def test_a_member_creates_a_set_it_owns(publisher):
    body = {
        "slug": "acme-terror",
        "name": "Acme terrorist content",
        "signal_types": ["pdq", "md5"],
        "tlp": "red",
    }
    response = publisher.api.post("/api/v1/sets", body)
    assert response.status_code == 201, response.content
    assert response.json()["owner"] == "acme-video"
    assert response.json()["signal_types"] == ["pdq", "md5"]


def test_set_creation_refuses_bad_input_and_taken_slugs(publisher, csam_set):
    response = publisher.api.post(
        "/api/v1/sets", {"slug": "x y", "name": "", "signal_types": ["nope"], "pdq_threshold": 40}
    )
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {
        "slug",
        "name",
        "signal_types.0",
        "pdq_threshold",
    }
    assert (
        publisher.api.post("/api/v1/sets", {"slug": "acme-csam", "name": "again"}).status_code
        == 409
    )


def test_only_visible_sets_are_listed(publisher, subscriber, outsider, shared_set):
    do_create_set(
        publisher.org, {"slug": "acme-private", "name": "Private", "distribution": "owner"}
    )
    do_create_set(
        outsider.org, {"slug": "coalition-wide", "name": "Everyone", "distribution": "coalition"}
    )
    assert slugs(publisher.api.get("/api/v1/sets")) == {
        "acme-csam",
        "acme-private",
        "coalition-wide",
    }
    assert slugs(subscriber.api.get("/api/v1/sets")) == {"acme-csam", "coalition-wide"}
    assert slugs(outsider.api.get("/api/v1/sets")) == {"coalition-wide"}


def test_a_set_the_caller_may_not_see_is_404_not_403(outsider, csam_set):
    response = outsider.api.get("/api/v1/sets/acme-csam")
    assert response.status_code == 404
    assert (
        outsider.api.get("/api/v1/sets/no-such-set")
        .json()["detail"]
        .replace("no-such-set", "acme-csam")
        == (response.json()["detail"])
    )
    assert outsider.api.post("/api/v1/sets/acme-csam/signals", {"signals": []}).status_code == 404


def test_peers_see_federated_sets_but_not_coalition_ones(publisher, peer):
    do_create_set(
        publisher.org,
        {"slug": "fed", "name": "Federated", "distribution": "federated", "tlp": "green"},
    )
    do_create_set(publisher.org, {"slug": "coal", "name": "Coalition", "distribution": "coalition"})
    assert slugs(peer.api.get("/api/v1/sets")) == {"fed"}


def test_the_owner_changes_the_set_and_sees_its_grants(publisher, subscriber, shared_set):
    response = publisher.api.request(
        "PATCH", "/api/v1/sets/acme-csam", {"tlp": "amber+strict", "pdq_threshold": 20}
    )
    assert response.status_code == 200
    assert (response.json()["tlp"], response.json()["pdq_threshold"]) == ("amber+strict", 20)
    detail = publisher.api.get("/api/v1/sets/acme-csam").json()
    assert detail["grants"] == [
        {"organisation": "globex-social", "can_read": True, "can_publish": True}
    ]
    assert detail["grants_complete"] is True
    assert "grants" not in subscriber.api.get("/api/v1/sets/acme-csam").json()


def test_the_set_shows_its_first_grants_and_pages_them_all_at_grants_url(
    publisher, subscriber, outsider, csam_set, django_assert_max_num_queries
):
    others = [
        Organisation.objects.create(slug=f"member-{n:03}", name=f"Member {n}", status="active")
        for n in range(GRANTS_SHOWN + 1)
    ]
    for org in others:
        do_grant(csam_set, org, can_read=True, can_publish=False)

    detail = publisher.api.get("/api/v1/sets/acme-csam").json()
    assert [g["organisation"] for g in detail["grants"]] == [o.slug for o in others[:GRANTS_SHOWN]]
    assert (detail["grants_complete"], detail["grants_url"]) == (
        False, "/api/v1/sets/acme-csam/grants")  # fmt: skip

    with django_assert_max_num_queries(3):  # key, last-used stamp, the page with its orgs
        assert len(publisher.api.get(detail["grants_url"]).json()["results"]) == 50
    listed, pages = every_page(publisher, detail["grants_url"], 40)
    assert [g["organisation"] for g in listed] == [o.slug for o in others] and pages == 3
    assert publisher.api.get("/api/v1/sets/acme-csam/grants?limit=0").status_code == 400
    assert outsider.api.get("/api/v1/sets/acme-csam/grants").status_code == 404


def test_only_the_owner_lists_grants(publisher, subscriber, shared_set):
    assert publisher.api.get("/api/v1/sets/acme-csam/grants").json()["results"] == [
        {"organisation": "globex-social", "can_read": True, "can_publish": True}
    ]
    assert subscriber.api.get("/api/v1/sets/acme-csam/grants").status_code == 403
    assert publisher.api.get("/api/v1/sets/nope/grants").status_code == 404


def test_a_reader_may_not_change_the_set(subscriber, shared_set):
    response = subscriber.api.request("PATCH", "/api/v1/sets/acme-csam", {"name": "mine now"})
    assert response.status_code == 403


def test_grants_are_put_and_deleted_by_the_owner_only(publisher, subscriber, outsider, csam_set):
    url = "/api/v1/sets/acme-csam/grants/initech-forums"
    assert outsider.api.request("PUT", url, {"can_read": True}).status_code == 404
    assert (
        publisher.api.request("PUT", url, {"can_read": True, "can_publish": False}).status_code
        == 200
    )
    assert "acme-csam" in slugs(outsider.api.get("/api/v1/sets"))
    assert outsider.api.request("DELETE", url).status_code == 403
    assert publisher.api.request("DELETE", url).status_code == 204
    assert outsider.api.get("/api/v1/sets/acme-csam").status_code == 404
    assert publisher.api.request("DELETE", url).status_code == 404
    assert (
        publisher.api.request("PUT", "/api/v1/sets/acme-csam/grants/nobody", {}).status_code == 404
    )


def test_sets_need_a_signature(api, csam_set):
    assert api.get("/api/v1/sets").status_code == 401
    assert api.get("/api/v1/sets/acme-csam").status_code == 401
