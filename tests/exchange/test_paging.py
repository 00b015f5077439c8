"""Every list the API answers is paged by an opaque cursor, ``limit`` at a time, in an order rows
never leave (GET /api/v1/sets answered 5.6 MB in one page); the OpenAPI document says so of
every list, and the hashx client and CLI follow every page."""

import base64
import json
from urllib.parse import quote

import pytest
from drf_spectacular.generators import SchemaGenerator

from hashx.client import Client
from signals.actions.sets import do_create_set
from signals.actions.subscriptions import do_create_subscription
from tests.cli import hashx
from tests.helpers import every_page

pytestmark = pytest.mark.django_db


def make_sets(owner, count, *, start=0, description=""):
    return [
        do_create_set(
            owner, {"slug": f"set-{n:04d}", "name": f"Set {n}", "description": description}
        )
        for n in range(start, start + count)
    ]


def make_subscriptions(org, hash_set, count):
    return [
        do_create_subscription(
            org, url=f"https://hooks.example/{n}", sets=[hash_set], signal_types=[], labels=[]
        )
        for n in range(count)
    ]


def test_sets_keys_and_subscriptions_are_paged_in_a_stable_order(publisher, subscriber):
    sets = make_sets(publisher.org, 7)
    keys = [publisher.key] + [publisher.add_key().key for _ in range(6)]
    subscriptions = make_subscriptions(publisher.org, sets[0], 7)
    make_sets(subscriber.org, 2, start=100)  # another organisation's, not visible
    for path, field, expected in (
        ("/api/v1/sets", "slug", [s.slug for s in sets]),
        ("/api/v1/keys", "key_id", [k.key_id for k in keys]),
        ("/api/v1/subscriptions", "id", [str(s.pk) for s in subscriptions]),
    ):
        items, pages = every_page(publisher, path, 3)
        assert [item[field] for item in items] == expected, path
        assert pages == 3, path


def test_the_set_list_answers_a_bounded_page_however_many_sets_there_are(publisher):
    make_sets(publisher.org, 150, description="d" * 2000)
    response = publisher.api.get("/api/v1/sets")
    page = response.json()
    assert len(page["results"]) == 100 and page["next"]
    assert len(response.content) < 400_000
    assert len(publisher.api.get("/api/v1/sets?limit=500").json()["results"]) == 150


def test_the_document_describes_every_list_as_paged():
    """No GET under /api/v1/ answers a bare JSON array: each list is a page of ``results``
    with ``next`` (the feed's pages carry their own ``cursor`` and ``more``)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]

    def resolved(node):
        ref = node.get("$ref")
        return components[ref.rsplit("/", 1)[1]] if ref else node

    bare, paged = [], set()
    for path, operations in schema["paths"].items():
        answer = operations.get("get", {}).get("responses", {}).get("200", {})
        for media in answer.get("content", {}).values():
            body = resolved(media["schema"])
            if body.get("type") == "array":
                bare.append(path)
            if "results" in body.get("properties", {}):
                paged.add(path)
                assert "next" in body["properties"], path
    assert bare == []
    assert {"/api/v1/sets", "/api/v1/keys", "/api/v1/subscriptions"} <= paged


@pytest.mark.django_db(transaction=True)
def test_the_client_and_cli_follow_every_page(exchange_url, publisher, tmp_path, monkeypatch):
    sets = make_sets(publisher.org, 7)
    keys = [publisher.key] + [publisher.add_key().key for _ in range(4)]
    subscriptions = make_subscriptions(publisher.org, sets[0], 5)
    monkeypatch.setattr(Client, "PAGE", 2)
    client = Client(exchange_url, publisher.private_key)
    assert [s["slug"] for s in client.sets()] == [s.slug for s in sets]
    every_key = client.keys()  # a list of dicts, not a mapping's keys
    assert [k["key_id"] for k in every_key] == [k.key_id for k in keys]
    assert [s["id"] for s in client.subscriptions()] == [str(s.pk) for s in subscriptions]

    make_sets(
        publisher.org, 501 - len(sets), start=len(sets)
    )  # past the 500 the CLI asks for at a time
    key = publisher.key_file(tmp_path / "acme.pem")
    listed = json.loads(hashx("--json", "sets", "list", url=exchange_url, key=key).stdout)
    assert len(listed) == 501 and len({s["slug"] for s in listed}) == 501
    assert f"set-{500:04d}" in hashx("sets", "list", url=exchange_url, key=key).stdout
    listed = json.loads(hashx("--json", "keys", "list", url=exchange_url, key=key).stdout)
    assert [k["key_id"] for k in listed] == [k.key_id for k in keys]
    text = hashx("subscriptions", "list", url=exchange_url, key=key).stdout
    assert all(str(s.pk) in text for s in subscriptions)


@pytest.mark.parametrize(
    "position", ["foo", "\x00", "2024-02-30T00:00:00Z", "9" * 30, "set-0001' OR '1'='1"]
)
def test_a_forged_cursor_on_a_newly_paged_list_is_never_a_server_error(publisher, position):
    make_sets(publisher.org, 2)
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    for path in ("/api/v1/sets", "/api/v1/keys", "/api/v1/subscriptions"):
        response = publisher.api.get(f"{path}?cursor={quote(cursor)}")
        assert response.status_code in {200, 404}, (path, response.content)
        if response.status_code == 404:
            assert response["Content-Type"] == "application/problem+json"


def test_options_on_a_paged_list_describes_it(publisher):
    for path in ("/api/v1/sets", "/api/v1/keys", "/api/v1/subscriptions"):
        response = publisher.api.request("OPTIONS", path)
        assert response.status_code == 200, (path, response.content)
