"""TAXII 2.1 as a partner reads it: the real taxii2-client against a live exchange, every
object parsed by stix2 and checked by stix2-validator."""

from datetime import UTC, datetime

import pytest
import requests
import stix2
from rest_framework.test import APIClient
from stix2validator import ValidationOptions, validate_instance
from taxii2client.v21 import Server, as_pages

from hashx.auth import HashxAuth
from signals.actions.merge import do_merge_batch
from signals.actions.neardup import do_link_batch
from signals.actions.sets import do_create_set
from signals.models import SetEntry
from taxii.stix import TLP_MARKINGS
from tests.signals.conftest import PDQ, merged, publish
from tests.signals.test_match import near
from tests.signals.writer import start_writers

pytestmark = pytest.mark.django_db(transaction=True)

TAXII = "application/taxii+json;version=2.1"


def the_collection(server, slug="acme-csam"):
    (root,) = server.api_roots
    return next(c for c in root.collections if c.alias == slug)


def every_object(collection, **filters):
    objects = []
    for envelope in as_pages(collection.get_objects, per_request=10, **filters):
        objects += envelope.get("objects", [])
    return objects


def assert_valid_stix(objects):
    for obj in objects:
        stix2.parse(obj, allow_custom=True)
        result = validate_instance(obj, ValidationOptions(version="2.1"))
        assert result.errors == [], (obj, [str(e) for e in result.errors])


def signed(member, url):
    return Server(f"{url}/taxii2/", auth=HashxAuth(member.private_key))


def test_a_signed_member_pages_every_indicator_with_the_taxii_client(
    exchange_url, subscriber, shared
):
    server = signed(subscriber, exchange_url)
    assert server.api_roots[0].url == f"{exchange_url}/taxii2/hashx/"
    collection = the_collection(server)
    assert (collection.can_read, collection.can_write) == (True, False)
    objects = every_object(collection, added_after="2000-01-01T00:00:00.000Z")
    assert len(objects) == 25 and len({o["id"] for o in objects}) == 25
    assert_valid_stix(objects)
    patterns = {o["x_hashx_signal_type"]: o["pattern"] for o in objects}
    assert patterns["pdq"].startswith("[file:hashes.x_pdq = '")
    assert patterns["sha1"].startswith("[file:hashes.'SHA-1' = '")
    assert patterns["url"].endswith("/it\\'s']")
    assert patterns["domain"].startswith("[domain-name:value = 'host")
    first = objects[0]
    assert first["object_marking_refs"] == [TLP_MARKINGS["green"]]
    assert first["labels"] == ["csam"] and "revoked" not in first
    assert first["x_hashx_opinions"] == {"positive": 0, "negative": 0, "investigation_seed": 0}


def test_a_feed_token_pages_the_same_indicators(exchange_url, subscriber, shared, token_of):
    secret = token_of(subscriber, ["acme-csam"])
    since = "2000-01-01T00:00:00.000Z"
    by_token = every_object(
        the_collection(Server(f"{exchange_url}/taxii2/", user="feed", password=secret)),
        added_after=since,
    )
    signed_ones = every_object(the_collection(signed(subscriber, exchange_url)), added_after=since)
    assert by_token == signed_ones and len(by_token) == 25
    assert_valid_stix(by_token)


def test_a_retraction_is_a_revoked_version_on_the_next_poll(
    exchange_url, publisher, subscriber, shared
):
    collection = the_collection(signed(subscriber, exchange_url))
    before = requests.get(
        collection.objects_url, auth=HashxAuth(subscriber.private_key), headers={"Accept": TAXII}
    )
    last = before.headers["X-TAXII-Date-Added-Last"]
    old = next(o for o in before.json()["objects"] if o["x_hashx_value"] == PDQ[0])
    retracted = publisher.api.post(
        "/api/v1/sets/acme-csam/retractions", {"signals": [{"type": "pdq", "value": PDQ[0]}]}
    )
    assert retracted.status_code == 200, retracted.content
    news = every_object(collection, added_after=last)
    assert [(o["id"], o.get("revoked")) for o in news] == [(old["id"], True)]
    assert news[0]["modified"] > old["modified"]
    assert_valid_stix(news)
    one = collection.get_object(old["id"])["objects"]
    assert one == news
    assert collection.object_versions(old["id"])["versions"] == [news[0]["modified"]]
    manifest = collection.get_manifest(added_after=last)["objects"]
    assert [(m["id"], m["version"]) for m in manifest] == [(old["id"], news[0]["modified"])]


def test_next_pages_never_repeat_or_skip_while_a_writer_adds(
    exchange_url, publisher, subscriber, shared
):
    collection = the_collection(signed(subscriber, exchange_url))
    first = collection.get_objects(limit=10)
    assert first["more"] is True
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": v} for v in PDQ[100:110]]))
    seen = first["objects"]
    envelope = first
    while envelope["more"]:
        envelope = collection.get_objects(limit=10, next=envelope["next"])
        seen += envelope.get("objects", [])
    assert len(seen) == 35 and len({o["id"] for o in seen}) == 35


def test_a_member_never_sees_a_collection_it_may_not_read(
    exchange_url, outsider, subscriber, shared
):
    do_create_set(outsider.org, {"slug": "initech-own", "name": "Own"})
    (root,) = signed(outsider, exchange_url).api_roots
    assert [c.alias for c in root.collections] == ["initech-own"]
    hidden = the_collection(signed(subscriber, exchange_url))
    answer = requests.get(
        hidden.objects_url, auth=HashxAuth(outsider.private_key), headers={"Accept": TAXII}
    )
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == TAXII
    body = answer.json()
    assert (body["http_status"], body["error_code"]) == ("404", "not-found") and body["title"]


def test_taxii_refuses_the_unsigned_another_version_and_bad_input(exchange_url, subscriber, shared):
    unsigned = requests.get(f"{exchange_url}/taxii2/", headers={"Accept": TAXII})
    assert unsigned.status_code == 401 and unsigned.json()["http_status"] == "401"
    auth = HashxAuth(subscriber.private_key)
    old = requests.get(
        f"{exchange_url}/taxii2/",
        auth=auth,
        headers={"Accept": "application/taxii+json;version=2.0"},
    )
    assert old.status_code == 406 and old.headers["Content-Type"] == TAXII
    xml = requests.get(f"{exchange_url}/taxii2/", auth=auth, headers={"Accept": "text/xml"})
    assert xml.status_code == 406 and xml.json()["error_code"] == "not-acceptable"
    url = the_collection(signed(subscriber, exchange_url)).objects_url
    for query in ("limit=0", "added_after=yesterday", "next=forged"):
        bad = requests.get(f"{url}?{query}", auth=auth, headers={"Accept": TAXII})
        assert bad.status_code == 400, query
        assert bad.json()["http_status"] == "400"
    nothing = requests.get(f"{exchange_url}/taxii2/nowhere/", auth=auth, headers={"Accept": TAXII})
    assert nothing.status_code == 404 and nothing.headers["Content-Type"] == TAXII


def test_match_filters_select_by_type_and_id(exchange_url, subscriber, shared):
    collection = the_collection(signed(subscriber, exchange_url))
    objects = every_object(collection)
    assert every_object(collection, type="malware") == []
    wanted = [objects[3]["id"], objects[7]["id"]]
    picked = collection.get_objects(id=wanted)["objects"]
    assert sorted(o["id"] for o in picked) == sorted(wanted)
    assert (
        collection.get_objects(id=objects[3]["id"], version="all")["objects"][0]["id"] == wanted[0]
    )
    stamp = datetime.now(UTC).isoformat()
    assert collection.get_objects(added_after=stamp).get("objects", []) == []


def test_a_token_never_reaches_a_collection_outside_its_scope_or_a_write(
    exchange_url, subscriber, shared, token_of
):
    do_create_set(subscriber.org, {"slug": "globex-own", "name": "Own"})
    secret = token_of(subscriber, ["acme-csam"])
    (root,) = Server(f"{exchange_url}/taxii2/", user="feed", password=secret).api_roots
    assert [c.alias for c in root.collections] == ["acme-csam"]
    own = the_collection(signed(subscriber, exchange_url), "globex-own")
    headers = {"Accept": TAXII, "Authorization": f"Bearer {secret}"}
    outside = requests.get(own.objects_url, headers=headers)
    assert outside.status_code == 404 and outside.json()["error_code"] == "not-found"
    write = requests.post(
        the_collection(root_server := signed(subscriber, exchange_url)).objects_url,
        json={"objects": []},
        headers={**headers, "Content-Type": TAXII},
    )
    assert write.status_code == 403 and write.json()["error_code"] == "token-not-accepted"
    signed_write = requests.post(
        the_collection(root_server).objects_url,
        data=b'{"objects": []}',
        headers={"Accept": TAXII, "Content-Type": "application/json"},
        auth=HashxAuth(subscriber.private_key),
    )
    assert signed_write.status_code == 405 and signed_write.json()["http_status"] == "405"


def test_a_page_of_objects_costs_the_same_queries_for_few_or_many(
    publisher, subscriber, shared, token_of, django_assert_max_num_queries
):
    secret = token_of(subscriber, ["acme-csam"])
    client = APIClient()
    headers = {"Accept": TAXII, "Authorization": f"Bearer {secret}"}
    (collection,) = client.get("/taxii2/hashx/collections/", headers=headers).json()["collections"]
    url = f"/taxii2/hashx/collections/{collection['id']}/objects/"
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": v} for v in PDQ[100:175]]))
    # token, its audit event and last use; identity, collections; horizon, page; the pull's audit
    for limit in (5, 100):
        with django_assert_max_num_queries(9):
            page = client.get(f"{url}?limit={limit}", headers=headers).json()
        assert len(page["objects"]) == limit


def test_a_client_polling_with_next_ends_with_exactly_the_active_set_while_writers_race(
    exchange_url, publisher, subscriber, shared
):
    collection = the_collection(signed(subscriber, exchange_url))
    held: dict[str, dict] = {}
    cursor = ""

    def poll():
        nonlocal cursor
        while True:
            envelope = collection.get_objects(limit=50, next=cursor or None)
            for obj in envelope.get("objects", []):
                held[obj["id"]] = obj
            cursor = envelope["next"]
            if not envelope["more"]:
                return

    writers = start_writers([publisher, publisher], shared, 6)
    while any(w.poll() is None for w in writers):
        poll()
    assert all(w.wait() == 0 for w in writers)
    poll()
    active = {o["x_hashx_value"] for o in held.values() if not o.get("revoked")}
    assert active == set(
        SetEntry.objects.filter(hash_set=shared, state="active").values_list("value", flat=True)
    )


def test_linking_a_near_duplicate_is_a_new_version_seen_after_the_last_poll(
    exchange_url, publisher, subscriber, shared
):
    collection = the_collection(signed(subscriber, exchange_url))
    every_object(collection)
    variant = near(PDQ[0], 5)
    batch = publish(publisher, "acme-csam", [{"type": "pdq", "value": variant}]).json()
    do_merge_batch(batch["batch"])
    (merged_only,) = [o for o in every_object(collection) if o["x_hashx_value"] == variant]
    assert "x_hashx_near_duplicate_of" not in merged_only
    do_link_batch(batch["batch"])
    news = every_object(collection, added_after=merged_only["modified"])
    assert [o["id"] for o in news] == [merged_only["id"]]
    assert news[0]["modified"] > merged_only["modified"]
    assert news[0]["x_hashx_near_duplicate_of"].startswith("indicator--")
