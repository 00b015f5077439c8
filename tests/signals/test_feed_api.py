"""GET /api/v1/changes: every change after a cursor, once, in order; only readable sets."""

import base64
import json
import secrets
from urllib.parse import urlencode

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from signals.actions.sets import do_create_set, do_update_set
from signals.models import SetEntry
from tests.helpers import eventually
from tests.signals.conftest import PDQ, merged, pdq, publish

# Transactional: the feed serves only committed changes (positions below the oldest running
# transaction), and a plain test runs inside one transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def pull(member, **params):
    query = urlencode({k: v for k, v in params.items() if v != ""})
    return member.api.get("/api/v1/changes" + (f"?{query}" if query else ""))


def pull_all(member, limit, **params):
    cursor, seen, pages = "", [], 0
    while True:
        body = pull(member, limit=limit, cursor=cursor, **params).json()
        seen += body["changes"]
        cursor, pages = body["cursor"], pages + 1
        if not body["more"]:
            return seen, cursor, pages


def test_a_subscriber_pages_through_every_entry_once_in_order(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(n, labels=["csam"]) for n in range(25)]))
    seen, cursor, pages = pull_all(subscriber, 10, sets="acme-csam")
    # One merge statement positions its new entries in signal order; each entry comes once.
    assert sorted(c["value"] for c in seen) == sorted(PDQ[:25])
    assert pages == 3
    first = seen[0]
    assert (first["set"], first["type"], first["state"], first["labels"]) == (
        "acme-csam",
        "pdq",
        "active",
        ["csam"],
    )
    assert first["contributor_names"] == ["acme-video"] and first["contributors"] == 1
    assert pull(subscriber, cursor=cursor).json() == {
        "changes": [],
        "cursor": cursor,
        "more": False,
    }


def test_a_retraction_comes_after_the_cursor_as_a_tombstone(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    _, cursor, _ = pull_all(subscriber, 100)
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(1)]})
    body = pull(subscriber, cursor=cursor).json()
    assert [(c["value"], c["state"]) for c in body["changes"]] == [(PDQ[1], "tombstone")]


def test_anonymous_sets_count_contributors_without_naming_them(publisher, subscriber, shared_set):
    do_update_set(shared_set, {"attribution": "anonymous"})
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    change = pull(subscriber).json()["changes"][0]
    assert change["contributors"] == 1 and "contributor_names" not in change


def test_only_readable_sets_are_served_and_others_are_404(publisher, outsider, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    do_create_set(outsider.org, {"slug": "initech-own", "name": "Own"})
    assert pull(outsider).json()["changes"] == []
    assert pull(outsider, sets="acme-csam").status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "garbage!"}, "cursor"),
        # Well-formed but beyond xid8 / bigint: refused before the database sees it.
        ({"cursor": base64.urlsafe_b64encode(b"99999999999999999999999.1").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"1.99999999999999999999").decode()}, "cursor"),
        # Read by int() but never issued: a sign, a leading zero, space, non-ASCII digits.
        ({"cursor": base64.urlsafe_b64encode(b"-0.1").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"01.1").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b" 1.1").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode("\u0661.1".encode()).decode()}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),
    ],
)
def test_bad_parameters_are_400_with_the_field(subscriber, shared_set, params, field):
    response = pull(subscriber, **params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_a_pull_is_audited_per_set_and_the_owner_sees_it(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3)]))
    pull(subscriber)
    event = AuditEvent.objects.get(action="feed.pulled")
    assert (event.actor_org_id, event.owner_org_id, event.details["count"]) == (
        subscriber.org.pk,
        publisher.org.pk,
        3,
    )
    pull(subscriber, cursor=pull(subscriber).json()["cursor"])
    assert (
        AuditEvent.objects.filter(action="feed.pulled").count() == 2
    )  # the idle poll is not recorded
    seen = [
        e["action"]
        for e in publisher.api.get("/api/v1/audit/events?action=feed.").json()["results"]
    ]
    assert seen == ["feed.pulled", "feed.pulled"]


def test_a_page_costs_the_same_queries_for_ten_or_a_thousand(
    publisher, subscriber, shared_set, django_assert_max_num_queries
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(1000)]))
    # auth (2), readable sets, horizon, page, contributor names, audit event
    with django_assert_max_num_queries(7):
        assert len(pull(subscriber, limit=1000).json()["changes"]) == 1000


def test_unsigned_is_401(api):
    assert api.get("/api/v1/changes").status_code == 401


def test_a_full_sync_streams_every_change_then_the_cursor(
    publisher, subscriber, shared_set, monkeypatch
):
    from signals.actions import pulls

    monkeypatch.setattr(pulls, "STREAM_PAGE", 7)  # several pages in one stream
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(20)]))
    response = subscriber.api.get("/api/v1/changes", HTTP_ACCEPT="application/x-ndjson")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    *lines, end = lines
    changes = [line for line in lines if "entry" in line]
    checkpoints = [line for line in lines if "entry" not in line]
    assert sorted(c["value"] for c in changes) == sorted(PDQ[:20])
    assert end["end"] is True
    # After each full page of 7, a cursor to resume from: it continues with the next change.
    assert len(checkpoints) == 2 and lines[7] == checkpoints[0]
    after_first = pull(subscriber, cursor=checkpoints[0]["cursor"]).json()["changes"]
    assert [c["entry"] for c in after_first] == [c["entry"] for c in changes[7:]]
    assert pull(subscriber, cursor=end["cursor"]).json()["changes"] == []
    first_pull = AuditEvent.objects.filter(action="feed.pulled").order_by("id").first()
    assert first_pull.details["count"] == 20


def stream(member, **params):
    query = urlencode(params)
    response = member.api.get(
        "/api/v1/changes" + (f"?{query}" if query else ""), HTTP_ACCEPT="application/x-ndjson"
    )
    assert response.status_code == 200
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_a_full_sync_reads_the_feed_once_and_audits_what_it_served_per_set(
    publisher, subscriber, shared_set, django_assert_num_queries
):
    other = do_create_set(
        publisher.org, {"slug": "acme-other", "name": "Other", "distribution": "coalition"}
    )
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(3)]))
    merged(publish(publisher, "acme-other", [pdq(n) for n in range(3, 8)]))
    # auth (2), readable sets, horizon, one audit event per set. The rows come by COPY (on the
    # raw connection: not counted), the end cursor and the counts from the rows as they pass:
    # no second read of the range (it took 5 more: BEGIN, SET TRANSACTION, last, counts, COMMIT).
    with django_assert_num_queries(6):
        *lines, end = stream(subscriber)
    counts = {
        e.details["set"]: e.details["count"]
        for e in AuditEvent.objects.filter(action="feed.pulled")
    }
    assert counts == {"acme-csam": 3, "acme-other": 5}
    other_pull = AuditEvent.objects.get(action="feed.pulled", object_id=str(other.pk))
    assert other_pull.details["to"] == end["cursor"]
    # The same changes in the same order as paging, and the cursor paging ends with.
    paged, cursor, _ = pull_all(subscriber, 3)
    assert [line["entry"] for line in lines] == [c["entry"] for c in paged]
    assert end == {"cursor": cursor, "end": True}


def test_a_full_sync_places_checkpoints_and_counts_across_the_chunks_the_rows_come_in(
    publisher, subscriber, shared_set, monkeypatch
):
    from signals.actions import pulls
    from signals.feed import reads

    # Chunks of 4 rows, a checkpoint after every 7 changes: checkpoints fall inside chunks and
    # on their edges, and the counts per set are tallied chunk by chunk.
    monkeypatch.setattr(reads, "_CHUNK_ROWS", 4)
    monkeypatch.setattr(pulls, "STREAM_PAGE", 7)
    do_create_set(
        publisher.org, {"slug": "acme-other", "name": "Other", "distribution": "coalition"}
    )
    for start in (0, 6, 12):
        merged(publish(publisher, "acme-csam", [pdq(n) for n in range(start, start + 4)]))
        merged(publish(publisher, "acme-other", [pdq(n) for n in range(start + 4, start + 6)]))
    *lines, end = stream(subscriber)
    counts = {
        e.details["set"]: e.details["count"]
        for e in AuditEvent.objects.filter(action="feed.pulled")
    }
    assert counts == {"acme-csam": 12, "acme-other": 6}
    changes = [line for line in lines if "entry" in line]
    assert len(changes) == 18
    assert [n for n, line in enumerate(lines) if "entry" not in line] == [7, 15]
    for checkpoint, served in ((lines[7], 7), (lines[15], 14)):
        after = pull(subscriber, limit=100, cursor=checkpoint["cursor"]).json()["changes"]
        assert [c["entry"] for c in after] == [c["entry"] for c in changes[served:]]
    paged, cursor, _ = pull_all(subscriber, 5)
    assert [c["entry"] for c in changes] == [c["entry"] for c in paged]
    assert end == {"cursor": cursor, "end": True}
    # One set alone (read by equality, counted without a per-row tally).
    *lines, end = stream(subscriber, sets="acme-other")
    assert [line["set"] for line in lines if "entry" in line] == ["acme-other"] * 6
    assert AuditEvent.objects.filter(action="feed.pulled").latest("id").details["count"] == 6


def test_a_full_sync_with_nothing_new_ends_at_its_own_cursor_and_records_nothing(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    cursor = pull(subscriber).json()["cursor"]
    pulls = AuditEvent.objects.filter(action="feed.pulled").count()
    assert stream(subscriber, cursor=cursor) == [{"cursor": cursor, "end": True}]
    assert AuditEvent.objects.filter(action="feed.pulled").count() == pulls


def snapshot(member, slug):
    response = member.api.get(f"/api/v1/sets/{slug}/snapshot")
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_a_snapshot_holds_the_active_entries_and_the_feed_continues_after_it(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(10)]))
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(9)]})
    *entries, end = snapshot(subscriber, "acme-csam")
    assert sorted(e["value"] for e in entries) == sorted(PDQ[:9])
    assert all(e["state"] == "active" and e["contributor_names"] == ["acme-video"] for e in entries)

    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    merged(publish(publisher, "acme-csam", [pdq(10)]))
    after = {
        (c["value"], c["state"]) for c in pull(subscriber, cursor=end["cursor"]).json()["changes"]
    }
    assert {(PDQ[0], "tombstone"), (PDQ[10], "active")} <= after
    assert AuditEvent.objects.filter(action="feed.pulled", details__count=9).exists()


def test_a_stream_left_midway_has_its_copy_cancelled_and_keeps_its_connection(
    publisher, subscriber, shared_set, caplog
):
    # More rows than the hand-over and the database socket hold: the COPY still runs when its
    # reader leaves, and is cancelled (from a connection of its own: signals/feed/reads.py).
    for _ in range(2):
        signals = [{"type": "pdq", "value": secrets.token_hex(32)} for _ in range(10_000)]
        merged(publish(publisher, "acme-csam", signals))
    backend = connection.cursor().connection.get_backend_pid()
    response = subscriber.api.get(
        "/api/v1/sets/acme-csam/snapshot", HTTP_ACCEPT="application/x-ndjson"
    )
    assert next(iter(response.streaming_content))
    response.close()
    (event,) = AuditEvent.objects.filter(action="feed.pulled")
    assert event.details["complete"] is False and 0 < event.details["count"] < 20_000
    # The same connection serves on: it was neither cut nor left in its COPY.
    assert connection.cursor().connection.get_backend_pid() == backend
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%'")
        assert cursor.fetchone() == (0,)
    assert not [r for r in caplog.records if r.name == "signals.feed.reads"], caplog.text


@pytest.mark.parametrize("path", ["/api/v1/changes", "/api/v1/sets/acme-csam/snapshot"])
def test_a_stream_left_before_its_end_is_audited_with_what_was_read(
    publisher, subscriber, shared_set, path
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(5)]))
    response = subscriber.api.get(path, HTTP_ACCEPT="application/x-ndjson")
    first = next(iter(response.streaming_content))
    assert first.count(b"\n") == 5  # every entry, not yet the end line
    response.close()  # the client hangs up
    (event,) = AuditEvent.objects.filter(action="feed.pulled")
    assert (event.actor_org_id, event.details["count"]) == (subscriber.org.pk, 5)
    assert event.details["complete"] is False
    whole = subscriber.api.get(path, HTTP_ACCEPT="application/x-ndjson")
    b"".join(whole.streaming_content)
    assert AuditEvent.objects.filter(action="feed.pulled").latest("id").details["complete"]


def test_a_snapshot_of_a_set_you_may_not_read_is_404(outsider, shared_set, api):
    assert outsider.api.get("/api/v1/sets/acme-csam/snapshot").status_code == 404
    assert api.get("/api/v1/sets/acme-csam/snapshot").status_code == 401


def test_an_idle_poll_asked_again_is_304(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    cursor = pull(subscriber).json()["cursor"]
    idle = pull(subscriber, cursor=cursor)
    again = subscriber.api.get(
        f"/api/v1/changes?cursor={cursor}", headers={"If-None-Match": idle["ETag"]}
    )
    assert again.status_code == 304
    merged(publish(publisher, "acme-csam", [pdq(1)]))
    fresh = subscriber.api.get(
        f"/api/v1/changes?cursor={cursor}", headers={"If-None-Match": idle["ETag"]}
    )
    assert fresh.status_code == 200 and [c["value"] for c in fresh.json()["changes"]] == [PDQ[1]]


def test_a_cursor_older_than_purged_tombstones_is_410(publisher, subscriber, shared_set):
    from signals.actions.expiry import do_purge_tombstones
    from signals.models import Contribution, SetEntry

    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    old_cursor = pull(subscriber).json()["cursor"]
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    assert do_purge_tombstones() == 0  # not old enough yet
    with time_machine.travel(timezone.now() + timezone.timedelta(days=91)):
        assert do_purge_tombstones() == 1
    assert list(SetEntry.objects.values_list("value", flat=True)) == [PDQ[1]]
    # pdq(0)'s contribution (written as a row to be retracted) went with it; pdq(1)'s is its
    # entry's implied one.
    assert not Contribution.objects.exists()
    expired = pull(subscriber, cursor=old_cursor)
    assert expired.status_code == 410
    assert expired.json()["type"].endswith("/problems/cursor-expired")
    assert "snapshot" in expired.json()["detail"]
    assert pull(subscriber).status_code == 200  # starting afresh is fine


def test_purging_tombstones_waits_for_the_set_lock_a_merge_holds(publisher, shared_set):
    import threading

    import psycopg2
    from django.db import connection

    from signals.actions.expiry import do_purge_tombstones
    from signals.feed.locks import MAX_PARTS, SET_LOCK
    from tests.conftest import db_url_for_subprocesses

    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    # As a merge chunk between probing the tombstone and reviving it: one slot of the set held.
    merge = psycopg2.connect(db_url_for_subprocesses())
    purged = []

    def purge():
        try:
            purged.append(do_purge_tombstones(now=timezone.now() + timezone.timedelta(days=91)))
        finally:
            connection.close()  # this thread's own

    try:
        with merge.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [SET_LOCK + MAX_PARTS - 1, shared_set.pk]
            )
        purger = threading.Thread(target=purge)
        purger.start()

        def purge_waits():
            if not purger.is_alive():
                pytest.fail("the purge ended without waiting for the slot")
            with merge.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid = %s",
                    [shared_set.pk],
                )
                return cursor.fetchone()[0]

        eventually(purge_waits, timeout=10, interval=0.01, what="the purge waiting for the slot")
        assert SetEntry.objects.filter(value=PDQ[0]).exists()
        merge.commit()
        purger.join(timeout=10)
    finally:
        merge.close()
    assert purged == [1]
    assert list(SetEntry.objects.values_list("value", flat=True)) == [PDQ[1]]


def test_the_stream_carries_backslashes_quotes_and_unicode_intact(
    publisher, subscriber, shared_set
):
    values = ['C:\\share\\"quoted"', "tab\there", "naïve ünïcode ✓", "ends with \\"]
    answer = publish(publisher, "acme-csam", [{"type": "raw_text", "value": v} for v in values])
    assert answer.status_code == 202, answer.json()
    merged(answer)
    response = subscriber.api.get("/api/v1/changes", HTTP_ACCEPT="application/x-ndjson")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    served = {line["value"] for line in lines if "entry" in line}
    assert served == {c["value"] for c in pull(subscriber, limit=100).json()["changes"]}
    assert len(served) == 4 and "naïve ünïcode ✓" in served


def test_a_client_leaving_mid_stream_cancels_the_query_and_leaves_the_connection_usable(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(400)]))
    response = subscriber.api.get("/api/v1/changes", HTTP_ACCEPT="application/x-ndjson")
    first = next(iter(response.streaming_content))
    assert first.startswith(b'{"entry":') and len(first) < 400 * 300  # only part of it
    response.close()
    assert SetEntry.objects.filter(hash_set=shared_set).count() == 400
    body = b"".join(
        subscriber.api.get("/api/v1/changes", HTTP_ACCEPT="application/x-ndjson").streaming_content
    )
    assert len([line for line in body.splitlines() if line.startswith(b'{"entry"')]) == 400


def test_a_set_name_that_cannot_be_a_slug_is_just_not_found(subscriber, shared_set):
    answer = pull(subscriber, sets="acme-csam,bad\x00slug")
    assert answer.status_code == 404 and "bad" in answer.json()["detail"]
