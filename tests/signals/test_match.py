"""POST /api/v1/match and the index that follows the change feed."""

import base64
import json
import threading
import time

import numpy as np
import pytest
from django.db import connection

from audit.models import AuditEvent
from signals.actions.sets import do_create_set, do_update_set
from signals.matching.index import Index, shared_index
from signals.matching.mih import parse_hex, to_hex
from tests.helpers import eventually
from tests.signals.conftest import far_apart, merged, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_index")]

MD5 = "5f4dcc3b5aa765d61d8327deb882cf99"


FAR = far_apart()


def pdq(n, **extra):
    return {"type": "pdq", "value": FAR[n], **extra}


def near(value, bits):
    """``value`` with its first ``bits`` bits flipped (distance exactly ``bits``)."""
    row = parse_hex([value])[0]
    for bit in range(bits):
        row[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return to_hex(row[None, :])[0]


def match(member, signals):
    return member.api.post("/api/v1/match", {"signals": signals})


def matches_of(answer, number=0):
    assert answer.status_code == 200, answer.content
    return [
        (m["set"], m["value"], m["distance"]) for m in answer.json()["results"][number]["matches"]
    ]


def test_a_subscriber_finds_near_and_exact_matches_with_their_metadata(
    publisher, subscriber, shared_set
):
    merged(
        publish(publisher, "acme-csam", [pdq(0, labels=["csam"]), {"type": "md5", "value": MD5}])
    )
    answer = match(subscriber, [{"type": "pdq", "value": near(FAR[0], 7)},
                                {"type": "md5", "value": MD5.upper()},
                                {"type": "pdq", "value": near(FAR[0], 40)}])  # fmt: skip
    assert matches_of(answer, 0) == [("acme-csam", FAR[0], 7)]
    assert matches_of(answer, 1) == [("acme-csam", MD5, 0)]
    assert matches_of(answer, 2) == []
    first = answer.json()["results"][0]["matches"][0]
    assert first["labels"] == ["csam"] and first["contributors"] == 1
    assert first["opinions"] == {"positive": 0, "negative": 0, "investigation_seed": 0}
    assert answer.json()["position"]


def test_an_outsider_never_sees_entries_of_sets_it_may_not_read(publisher, outsider, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0), {"type": "md5", "value": MD5}]))
    answer = match(outsider, [{"type": "pdq", "value": FAR[0]}, {"type": "md5", "value": MD5}])
    assert matches_of(answer, 0) == [] and matches_of(answer, 1) == []
    named = match(outsider, [{"type": "pdq", "value": FAR[0], "sets": ["acme-csam"]}])
    assert named.status_code == 404


def test_a_set_threshold_and_a_query_limit_narrow_the_radius(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    query = {"type": "pdq", "value": near(FAR[0], 20)}
    assert matches_of(match(subscriber, [query])) == [("acme-csam", FAR[0], 20)]
    assert matches_of(match(subscriber, [{**query, "max_distance": 19}])) == []
    do_update_set(shared_set, {"pdq_threshold": 12})
    assert matches_of(match(subscriber, [query])) == []
    assert matches_of(match(subscriber, [{**query, "value": near(FAR[0], 12)}])) != []


def test_only_the_named_sets_are_searched(publisher, subscriber, shared_set):
    other = do_create_set(publisher.org, {"slug": "acme-other", "name": "Other",
                                          "distribution": "coalition"})  # fmt: skip
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    merged(publish(publisher, "acme-other", [pdq(0)]))
    both = match(subscriber, [{"type": "pdq", "value": FAR[0]}])
    assert {m[0] for m in matches_of(both)} == {"acme-csam", "acme-other"}
    one = match(subscriber, [{"type": "pdq", "value": FAR[0], "sets": [other.slug]}])
    assert matches_of(one) == [("acme-other", FAR[0], 0)]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"type": "pdq", "value": "xyz"}, "signals.0"),
        ({"type": "nope", "value": "00"}, "signals.0"),
        ({"type": "pdq", "value": FAR[0], "max_distance": 32}, "signals.0"),
        ({"type": "md5", "value": MD5, "max_distance": 3}, "signals.0"),
        ({"type": "pdq", "value": FAR[0], "sets": "acme-csam"}, "signals.0"),
    ],
)
def test_bad_queries_are_400_naming_each(subscriber, shared_set, item, field):
    answer = match(subscriber, [item])
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == field


def test_a_batch_costs_the_same_queries_for_ten_or_a_thousand_signals(
    publisher, subscriber, shared_set
):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(20)] +
                   [{"type": "md5", "value": f"{n:032x}"} for n in range(20)]))  # fmt: skip
    match(subscriber, [{"type": "pdq", "value": FAR[0]}])  # the index is loaded once

    def cost(n):
        signals = [{"type": "pdq", "value": near(FAR[k % 40], 5)} for k in range(n)]
        signals += [{"type": "md5", "value": f"{k % 40:032x}"} for k in range(n)]
        with CaptureQueriesContext(db) as queries:
            assert match(subscriber, signals).status_code == 200
        return len(queries)

    assert cost(10) == cost(1000)


def test_the_readable_sets_are_read_once_even_when_a_query_names_some(
    publisher, subscriber, shared_set, django_assert_num_queries
):
    merged(publish(publisher, "acme-csam", [{"type": "md5", "value": MD5}]))
    match(subscriber, [{"type": "md5", "value": MD5}])  # the key's last use is stamped
    named = [{"type": "md5", "value": MD5, "sets": ["acme-csam"]}]
    # md5, the entries, the audit event (one INSERT, no transaction of its own: 3 with one
    # before): the key and the readable sets (which also answer for the named ones) are in
    # memory since the first match. The named sets were read a second time before (8 then,
    # with the key and the readable sets).
    with django_assert_num_queries(3):
        assert matches_of(match(subscriber, named)) == [("acme-csam", MD5, 0)]


def test_unsigned_is_401(api):
    assert api.post("/api/v1/match", {"signals": []}, format="json").status_code == 401


def test_more_than_ten_thousand_queries_are_refused(subscriber):
    answer = match(subscriber, [{"type": "md5", "value": MD5}] * 10_001)
    assert answer.status_code == 413


def test_every_match_request_is_audited_without_the_hashes(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    match(subscriber, [{"type": "pdq", "value": FAR[0]}, {"type": "pdq", "value": FAR[1]}])
    event = AuditEvent.objects.get(action="signals.matched")
    assert event.actor_org_id == subscriber.org.pk
    assert event.details == {"queries": 2, "hits": 1}
    assert FAR[0] not in str(event.details)


def test_a_new_entry_starts_matching_and_a_tombstone_stops_within_seconds(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    index = shared_index()
    query = parse_hex([near(FAR[1], 3)])
    assert index.view().search(query) == []  # loaded, FAR[1] not yet published
    loaded = index.view().generation
    merged(publish(publisher, "acme-csam", [pdq(1)]))
    hits = index.view().search(query)
    assert [(h.distance, h.set_id) for h in hits] == [(3, shared_set.pk)]
    assert index.view().generation is loaded  # followed incrementally, no rebuild
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(1)]})
    assert index.view().search(query) == []
    # Retracting an entry of the generation itself hides it too.
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    assert index.view().search(parse_hex([FAR[0]])) == []
    assert matches_of(match(subscriber, [{"type": "pdq", "value": FAR[0]}])) == []


def test_compaction_writes_a_generation_that_another_process_opens_with_no_delta(
    publisher, match_index_dir, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(50)]))
    index = shared_index()
    index.compact()
    assert len(index.view().generation.entries) == 50
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(50, 80)]))
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(3)]})
    before = index.view()
    assert len(before.added_entries) == 30 and len(before.dead) == 1
    generation = index.compact()
    assert generation is not None and len(generation.entries) == 79
    other = Index(match_index_dir).view()  # as a second web worker would
    assert other.generation.name == generation.name
    assert len(other.added_entries) == 0 and not other.dead and other.size == 79
    queries = parse_hex(FAR[:80])
    assert sorted((h.query, h.entry_id) for h in other.search(queries)) == sorted(
        (h.query, h.entry_id) for h in before.search(queries)
    )


def test_a_compaction_asked_for_a_bigger_delta_than_is_left_writes_no_generation(
    publisher, shared_set
):
    from signals.tasks import compact_index

    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(5)]))
    index = shared_index()
    index.compact()
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(5, 9)]))
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    before = index.view(max_age=0).generation
    # As if another process's request compacted meanwhile: 5 changes are left, 6 were asked for.
    compact_index(at_least=6)
    assert index.view(max_age=0).generation.name == before.name
    compact_index(at_least=5)
    after = index.view(max_age=0).generation
    assert after.name != before.name and len(after.entries) == 8
    compact_index()  # beat's: nothing left to fold in
    assert index.view(max_age=0).generation.name == after.name


def test_queries_running_while_the_index_updates_never_fail(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(100)]))
    index = shared_index()
    index.view()
    queries = parse_hex(FAR[:200])
    failures, answered, stop = [], [0], threading.Event()

    def query_loop():
        try:
            while not stop.is_set():
                found = {h.query for h in index.view(max_age=0).search(queries)}
                assert set(range(100)) <= found  # never a half-updated view
                answered[0] += 1
        except Exception as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=query_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(100, 200, 20):
        merged(publish(publisher, "acme-csam", [pdq(k) for k in range(n, n + 20)]))
        index.compact()
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == [] and answered[0] > 0
    assert {h.query for h in index.view().search(queries)} == set(range(200))


def test_a_large_delta_gets_its_own_index_and_stays_exact(publisher, shared_set):
    from signals.matching.index import DELTA_SCAN
    from signals.matching.mih import brute_force

    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**64, size=(DELTA_SCAN + 500, 4), dtype=np.uint64)
    index = shared_index()
    index.view()  # an empty generation: everything below lands in the delta
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": v} for v in to_hex(hashes)]))
    view = index.view()
    assert view.added_index is not None and len(view.added_entries) == len(hashes)
    queries = hashes[:300].copy()
    queries[:, 0] ^= np.uint64(0xFFFF)  # 16 bits off
    queries[::2, 1] ^= np.uint64(0xFFFF)  # 32 bits off
    found = sorted((h.query, h.distance) for h in view.search(queries))
    q, _, d = brute_force(hashes, queries, 31)
    assert found == sorted(zip(q.tolist(), d.tolist(), strict=True))
    assert len(found) == 150
    # A write that is no PDQ change moves the view on without rebuilding its delta's index.
    merged(publish(publisher, "acme-csam", [{"type": "md5", "value": "ab" * 16}]))
    later = index.view(max_age=0)
    assert later.position > view.position and later.added_index is view.added_index


@pytest.mark.worker
def test_with_a_real_worker_a_publish_matches_and_a_retraction_stops_within_seconds(
    settings, publisher, subscriber, shared_set, celery_worker
):
    settings.HASHX_MATCH_REFRESH_MS = 1000  # the production default: followed once a second
    query = [{"type": "pdq", "value": near(FAR[7], 4)}]
    assert matches_of(match(subscriber, query)) == []
    assert publish(publisher, "acme-csam", [pdq(7)]).status_code == 202  # the worker merges
    eventually(
        lambda: matches_of(match(subscriber, query)) == [("acme-csam", FAR[7], 4)],
        interval=0.2,
        what="a match of the published hash",
    )
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(7)]})
    eventually(
        lambda: shared_index().view().search(parse_hex([FAR[7]])) == [],
        interval=0.2,
        what="the retracted hash gone from the index",
    )
    assert matches_of(match(subscriber, query)) == []


# The layout before this one kept the low bits in an array of their own beside rows of int32.
@pytest.mark.parametrize("layout", ["mih-16x16", "mih-4x22-8x21-shifted"])
def test_a_generation_of_another_layout_is_rebuilt_from_the_database(
    publisher, match_index_dir, shared_set, layout
):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    old = match_index_dir / "gen-old"
    old.mkdir(parents=True, exist_ok=True)
    meta = {"xid": 1, "seq": 0, "count": 0, "layout": layout}
    (old / "meta.json").write_text(json.dumps(meta))
    (match_index_dir / "CURRENT").write_text("gen-old")
    view = Index(match_index_dir).view()
    assert view.generation.name != "gen-old" and len(view.generation.entries) == 1


def test_a_set_name_with_a_nul_byte_is_a_404_not_a_crash(subscriber, shared_set):
    answer = match(subscriber, [{"type": "pdq", "value": FAR[0], "sets": ["acme\x00csam"]}])
    assert answer.status_code == 404


def test_a_burst_that_outgrows_the_delta_asks_a_worker_to_compact_once(
    monkeypatch, publisher, shared_set
):
    import redis
    from django.conf import settings as django_settings

    from signals.matching import index as index_module

    monkeypatch.setattr(index_module, "COMPACT_AT", 10)
    queue = redis.Redis.from_url(django_settings.REDIS_URL)
    queue.delete("default")
    index = shared_index()
    index.view()
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(8)]))
    index.view(max_age=0)
    assert queue.llen("default") == 0  # a delta of 8: nothing to ask
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(8, 20)]))
    index.view(max_age=0)
    assert queue.llen("default") == 1
    message = json.loads(queue.lindex("default", 0))
    assert message["headers"]["task"] == "signals.match.compact_index"
    assert message["properties"]["body_encoding"] == "base64"
    assert json.loads(base64.b64decode(message["body"]))[1] == {"at_least": 10}
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(20, 25)]))
    index.view(max_age=0)
    assert queue.llen("default") == 1  # asked once, not on every refresh
