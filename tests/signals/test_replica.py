"""Feed reads from a streaming replica (README "Past one machine"): a real hot standby of the
test database's cluster, made here with ``pg_basebackup -R`` and run on a free loopback port.
Pages, NDJSON streams, snapshots, TAXII and MISP pages come from it once it has replayed past
what the reader needs (its replay paused shows which), else from the primary; a reader's
cursor never goes backwards; a dead replica leaves every read to the primary, without an error.
"""

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import DEFAULT_DB_ALIAS, connections

from exchange.metrics import REPLICA_READS
from signals.feed import reads
from signals.feed.positions import Position, visible_horizon
from signals.feed.reads import REPLICA
from signals.models import SetEntry
from tests.helpers import eventually
from tests.signals.conftest import PDQ, merged, pdq, publish
from tests.standby import Standby, conninfo_of, standby_of

# The replica alias is one more database of these tests (the standby fixture configures it).
pytestmark = pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPLICA])

NDJSON = {"Accept": "application/x-ndjson"}
TAXII = {"Accept": "application/taxii+json;version=2.1"}
OUTCOMES = ("served", "behind", "down")


@pytest.fixture(scope="module")
def standby(django_db_setup: None) -> Iterator[Standby]:
    """A streaming replica of the test database's cluster, for the module's tests, configured
    as the exchange's read replica (as DATABASE_REPLICA_URL does: the test database on it; a
    mirror of the primary's for the test machinery, which then never flushes it)."""
    primary = conninfo_of(connections[DEFAULT_DB_ALIAS].settings_dict)
    with standby_of(primary, f"hashx_test_replica_{os.getpid()}") as standby:
        connections.settings[REPLICA] = {
            **connections[DEFAULT_DB_ALIAS].settings_dict,
            "HOST": "127.0.0.1",
            "PORT": str(standby.port),
            "OPTIONS": {"connect_timeout": "5"},
            "TEST": {
                **connections[DEFAULT_DB_ALIAS].settings_dict["TEST"],
                "MIRROR": DEFAULT_DB_ALIAS,
            },
        }
        try:
            yield standby
        finally:
            connections[REPLICA].close()
            del connections[REPLICA]
            del connections.settings[REPLICA]


@pytest.fixture
def replica(standby: Standby, settings: Any) -> Iterator[Standby]:
    """The read replica, replaying and caught up with the primary."""
    settings.HASHX_REPLICA_RETRY_SECONDS = 0  # a restarted replica is tried on the next read
    reads._replica_down_until = 0.0
    try:
        caught_up()
        yield standby
    finally:
        standby.resume()
        connections[REPLICA].close()
        reads._replica_down_until = 0.0


def caught_up() -> None:
    """Wait until the replica serves reads that name no cursor: its horizon reached the
    primary's."""
    eventually(
        lambda: visible_horizon(REPLICA) >= visible_horizon(), what="the replica to catch up"
    )


def counts() -> dict[str, float]:
    return {outcome: REPLICA_READS.labels(outcome=outcome)._value.get() for outcome in OUTCOMES}


class Reads:
    """Which database served the reads made inside ``with Reads() as r``: ``r.outcomes``."""

    def __enter__(self) -> "Reads":
        self.before = counts()
        return self

    def __exit__(self, *exc: object) -> None:
        after = counts()
        self.outcomes = {
            o: int(after[o] - self.before[o]) for o in OUTCOMES if after[o] > self.before[o]
        }


def page(member: Any, cursor: str | None = None) -> dict[str, Any]:
    query = f"&cursor={cursor}" if cursor else ""
    answer = member.api.get(f"/api/v1/changes?sets=acme-csam{query}")
    assert answer.status_code == 200, answer.content
    return answer.json()


def stream(member: Any, path: str) -> list[dict[str, Any]]:
    answer = member.api.get(path, headers=NDJSON)
    assert answer.status_code == 200, answer.content
    return [json.loads(line) for line in b"".join(answer.streaming_content).splitlines()]


def values(changes: list[dict[str, Any]]) -> set[str]:
    return {c["value"] for c in changes if "value" in c and c["state"] == "active"}


def test_pages_and_streams_come_from_the_replica_once_it_has_replayed_past_the_cursor(
    replica, publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3)]))
    caught_up()
    with Reads() as first:
        one = page(subscriber)
    assert first.outcomes == {"served": 1}
    assert values(one["changes"]) == set(PDQ[:3])

    replica.pause()
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3, 5)]))
    # The replica has replayed past the reader's cursor: it serves, and it lacks the new
    # changes, which only the primary holds (proof that the replica answered).
    with Reads() as stale:
        same = page(subscriber, one["cursor"])
        streamed = stream(subscriber, f"/api/v1/changes?sets=acme-csam&cursor={one['cursor']}")
    assert stale.outcomes == {"served": 2}
    assert same == {"changes": [], "cursor": one["cursor"], "more": False}
    assert streamed == [{"cursor": one["cursor"], "end": True}]
    # A reader that names no cursor needs what the primary holds now: the primary serves.
    with Reads() as fresh:
        everything = page(subscriber)
    assert fresh.outcomes == {"behind": 1}
    assert values(everything["changes"]) == set(PDQ[:5])
    # Past the replica's horizon: the primary, never a cursor handed back below the one sent.
    with Reads() as ahead:
        after = page(subscriber, everything["cursor"])
        streamed = stream(
            subscriber, f"/api/v1/changes?sets=acme-csam&cursor={everything['cursor']}"
        )
    assert ahead.outcomes == {"behind": 2}
    assert after == {"changes": [], "cursor": everything["cursor"], "more": False}
    assert streamed == [{"cursor": everything["cursor"], "end": True}]

    replica.resume()
    caught_up()
    with Reads() as resumed:
        rest = page(subscriber, one["cursor"])
        streamed = stream(subscriber, "/api/v1/changes?sets=acme-csam")
    assert resumed.outcomes == {"served": 2}
    assert values(rest["changes"]) == set(PDQ[3:5]) and rest["cursor"] == everything["cursor"]
    assert values(streamed[:-1]) == set(PDQ[:5])
    assert streamed[-1] == {"cursor": everything["cursor"], "end": True}


def test_snapshots_taxii_and_misp_pages_come_from_the_replica_once_it_has_caught_up(
    replica, publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3)]))
    caught_up()
    (collection,) = subscriber.api.get("/taxii2/hashx/collections/", headers=TAXII).json()[
        "collections"
    ]
    objects = f"/taxii2/hashx/collections/{collection['id']}/objects/"
    manifest = "/feeds/misp/acme-csam/manifest.json"

    def read_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        snapshot = stream(subscriber, "/api/v1/sets/acme-csam/snapshot")
        taxii = subscriber.api.get(objects, headers=TAXII)
        misp = subscriber.api.get(manifest)
        assert taxii.status_code == 200 and misp.status_code == 200
        return snapshot, taxii.json()["objects"], misp.json()

    with Reads() as caught:
        snapshot, indicators, events = read_all()
    assert caught.outcomes == {"served": 3}
    assert values(snapshot[:-1]) == set(PDQ[:3]) and len(indicators) == 3 and len(events) == 1

    replica.pause()
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    merged(publish(publisher, "acme-csam", [pdq(3)]))
    with Reads() as behind:
        snapshot, indicators, _ = read_all()
    assert behind.outcomes == {"behind": 3}
    assert values(snapshot[:-1]) == set(PDQ[1:4])
    assert len(indicators) == 4 and sum(1 for i in indicators if i.get("revoked")) == 1

    replica.resume()
    caught_up()
    with Reads() as resumed:
        snapshot, _, _ = read_all()
    assert resumed.outcomes == {"served": 3}
    assert values(snapshot[:-1]) == set(PDQ[1:4])


def test_a_reader_never_sees_its_cursor_go_backwards_while_the_replica_stalls_and_resumes(
    replica, publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(5)]))
    replica.pause()
    retracted = publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    assert retracted.status_code == 200, retracted.content
    # Told its retraction is done, a reader starting over sees it, and the snapshot it takes
    # next hands it a cursor at or past the one it held: the paused replica could give
    # neither (it still holds the entry active, and its horizon is older).
    first = page(subscriber)
    assert {c["value"]: c["state"] for c in first["changes"]}[PDQ[0]] == "tombstone"
    *entries, end = stream(subscriber, "/api/v1/sets/acme-csam/snapshot")
    assert Position.from_cursor(end["cursor"]) >= Position.from_cursor(first["cursor"])
    assert values(entries) == set(PDQ[1:5])
    # Then the feed after the snapshot, while the replica stalls and catches up between writes:
    # every cursor handed back is at or past the one sent, no entry comes back in an older
    # state, and the copy ends equal to the primary.
    copy = {e["entry"]: e for e in entries}
    seen = {e["entry"]: e["updated"] for e in entries}
    cursor, outcomes = end["cursor"], counts()
    for round_ in range(6):
        if round_ % 2:
            replica.resume()
        else:
            replica.pause()
        merged(publish(publisher, "acme-csam", [pdq(5 + round_)]))
        if round_ == 3:
            publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(6)]})
        for _ in range(3):
            answer = page(subscriber, cursor)
            assert Position.from_cursor(answer["cursor"]) >= Position.from_cursor(cursor)
            for change in answer["changes"]:
                assert change["updated"] >= seen.get(change["entry"], ""), change
                seen[change["entry"]] = change["updated"]
                copy[change["entry"]] = change
            cursor = answer["cursor"]
    replica.resume()
    caught_up()
    answer = page(subscriber, cursor)
    for change in answer["changes"]:
        copy[change["entry"]] = change
    served = {o: counts()[o] - outcomes[o] for o in OUTCOMES}
    assert served["served"] and served["behind"], "both databases should have served"
    active = {e["value"] for e in copy.values() if e["state"] == "active"}
    final = set(
        SetEntry.objects.filter(hash_set=shared_set, state="active").values_list("value", flat=True)
    )
    assert active == final == set(PDQ[1:6]) | set(PDQ[7:11])


def test_a_dead_replica_leaves_reads_to_the_primary_without_an_error_until_it_is_back(
    replica, publisher, subscriber, shared_set, settings
):
    settings.HASHX_REPLICA_RETRY_SECONDS = 60
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3)]))
    caught_up()
    page(subscriber)  # the replica's connection is open when it dies
    replica.stop("immediate")
    try:
        with Reads() as dead:
            one = page(subscriber)
            streamed = stream(subscriber, f"/api/v1/changes?sets=acme-csam&cursor={one['cursor']}")
            snapshot = stream(subscriber, "/api/v1/sets/acme-csam/snapshot")
        # The first read finds it gone; the next ones, within the retry time, do not try it.
        assert dead.outcomes == {"down": 3}
        assert values(one["changes"]) == set(PDQ[:3])
        assert streamed == [{"cursor": one["cursor"], "end": True}]
        assert values(snapshot[:-1]) == set(PDQ[:3])
    finally:
        replica.start()
    caught_up()
    with Reads() as waiting:
        page(subscriber)
    assert waiting.outcomes == {"down": 1}
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=61)), Reads() as back:
        page(subscriber)
    assert back.outcomes == {"served": 1}
