"""The MISP feed of a set as a MISP instance reads it: PyMISP loads every event, the manifest
matches the events, hashes.csv the active attributes; a retraction leaves the feed."""

import hashlib
import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from pymisp import MISPEvent
from rest_framework.test import APIClient

from audit.models import AuditEvent
from signals.actions.sets import do_create_set
from tests.signals.conftest import PDQ

pytestmark = pytest.mark.django_db(transaction=True)


class Feed:
    """What MISP does with a feed URL and a custom Authorization header."""

    def __init__(self, secret, slug="acme-csam"):
        self.client = APIClient()
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.base = f"/feeds/misp/{slug}"

    def get(self, name):
        return self.client.get(f"{self.base}/{name}", headers=self.headers)

    def manifest(self):
        answer = self.get("manifest.json")
        assert answer.status_code == 200, answer.content
        return answer.json()

    def events(self):
        events = {}
        for uuid in self.manifest():
            answer = self.get(f"{uuid}.json")
            assert answer.status_code == 200, answer.content
            event = MISPEvent()
            event.load(answer.content)
            events[uuid] = (answer.json()["Event"], event)
        return events

    def hashes(self):
        answer = self.get("hashes.csv")
        assert answer.status_code == 200 and answer["Content-Type"] == "text/csv"
        return sorted(b"".join(answer.streaming_content).decode().splitlines())


@pytest.fixture
def feed(subscriber, shared, token_of):
    return Feed(token_of(subscriber, ["acme-csam"]))


def test_pymisp_loads_every_event_and_the_manifest_and_hashes_match(feed):
    manifest = feed.manifest()
    events = feed.events()
    assert len(events) == 1
    for uuid, (raw, event) in events.items():
        assert str(event.uuid) == uuid and event.info == manifest[uuid]["info"]
        assert raw["timestamp"] == manifest[uuid]["timestamp"]
        assert manifest[uuid]["Tag"] == [
            {"name": "tlp:green", "colour": "#339900", "exportable": True}
        ]
        assert len(event.attributes) == 25
    ((raw, event),) = events.values()
    types = {a.type for a in event.attributes}
    assert types == {"hex", "md5", "sha1", "sha256", "url", "domain"}
    pdq = next(a for a in event.attributes if a.value == PDQ[0])
    assert pdq.type == "hex" and not pdq.to_ids
    assert {t.name for t in pdq.tags} == {'hashx:signal-type="pdq"', 'hashx:label="csam"'}
    expected = sorted(
        f"{hashlib.md5(a.value.encode()).hexdigest()},{event.uuid}"  # noqa: S324
        for a in event.attributes
    )
    assert feed.hashes() == expected


def test_a_retraction_leaves_the_feed_and_moves_the_manifest(feed, publisher):
    ((uuid, before),) = feed.manifest().items()
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        answer = publisher.api.post(
            "/api/v1/sets/acme-csam/retractions", {"signals": [{"type": "pdq", "value": PDQ[0]}]}
        )
        assert answer.status_code == 200
    after = feed.manifest()[uuid]
    assert int(after["timestamp"]) > int(before["timestamp"])
    ((_, event),) = feed.events().values()
    gone = next(a for a in event.attributes if a.value == PDQ[0])
    assert gone.deleted is True and gone.to_ids is False
    assert len(feed.hashes()) == 24
    assert hashlib.md5(PDQ[0].encode()).hexdigest() not in "".join(feed.hashes())  # noqa: S324


def test_the_feed_of_a_set_outside_the_token_or_the_member_is_404(
    subscriber, outsider, shared, token_of
):
    do_create_set(subscriber.org, {"slug": "globex-own", "name": "Own"})
    secret = token_of(subscriber, ["acme-csam"])
    assert Feed(secret, "globex-own").get("manifest.json").status_code == 404
    outsiders = outsider.api.get("/feeds/misp/acme-csam/manifest.json")
    assert outsiders.status_code == 404
    assert outsiders["Content-Type"] == "application/problem+json"
    signed = subscriber.api.get("/feeds/misp/acme-csam/manifest.json")
    assert signed.status_code == 200 and len(signed.json()) == 1
    feed = Feed(secret)
    assert feed.get("00000000-0000-0000-0000-000000000000.json").status_code == 404
    assert feed.get("nonsense.json").status_code == 404
    csv = feed.client.get(
        "/feeds/misp/acme-csam/hashes.csv", headers={**feed.headers, "Accept": "text/csv"}
    )
    assert csv.status_code == 200 and len(b"".join(csv.streaming_content).splitlines()) == 25
    assert AuditEvent.objects.filter(action="feed.pulled", details__count=25).exists()
    unsigned = APIClient().get("/feeds/misp/acme-csam/hashes.csv")
    assert unsigned.status_code == 401
    assert json.loads(unsigned.content)["type"].endswith("/signature-missing")


def test_a_peer_exchange_is_served_no_collection_and_no_misp_set(publisher, peer):
    # A federated GREEN set: the peer reads it through the change feed, under the hops and path
    # rules; TAXII and the MISP feed, which do not apply them, serve it nothing.
    do_create_set(
        publisher.org,
        {"slug": "acme-fed", "name": "Federated", "distribution": "federated", "tlp": "green"},
    )
    assert peer.api.get("/api/v1/sets/acme-fed").status_code == 200
    assert peer.api.get("/feeds/misp/acme-fed/manifest.json").status_code == 404
    collections = peer.api.get(
        "/taxii2/hashx/collections/", HTTP_ACCEPT="application/taxii+json;version=2.1"
    )
    assert collections.status_code == 200 and collections.json().get("collections", []) == []
