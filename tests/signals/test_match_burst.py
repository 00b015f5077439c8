"""The match index and a burst of ingest: read once, by the compaction, and handed to every
process as a generation; a small delta scanned by the numba kernel; a burst read in one
statement however many pages it spans."""

import base64
import json

import numpy as np
import pytest
import redis
from django.conf import settings

from signals.matching import index as index_module
from signals.matching.index import Index, shared_index
from signals.matching.mih import brute_force, scan, to_hex
from tests.signals.conftest import merged, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_index")]


def random_hashes(seed, count):
    return np.random.default_rng(seed).integers(0, 2**64, size=(count, 4), dtype=np.uint64)


def publish_hashes(publisher, hashes):
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": v} for v in to_hex(hashes)]))


def near(hashes, bits):
    """Each hash with its first ``bits`` bits flipped."""
    out = hashes.copy()
    for bit in range(bits):
        out[:, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def compaction_requests(queue):
    return [
        json.loads(base64.b64decode(json.loads(m)["body"]))[1]
        for m in queue.lrange("default", 0, -1)
        if json.loads(m)["headers"]["task"] == "signals.match.compact_index"
    ]


def test_a_burst_is_left_to_the_compaction_and_every_process_opens_its_generation(
    monkeypatch, publisher, shared_set, match_index_dir
):
    monkeypatch.setattr(index_module, "BURST", 40)
    queue = redis.Redis.from_url(settings.REDIS_URL)
    queue.delete("default")
    web = Index(match_index_dir)  # a web worker's follower
    before = web.view()
    hashes = random_hashes(1, 60)
    publish_hashes(publisher, hashes)

    # A query's refresh reads none of it: the view it had answers, and a compaction is asked.
    deferred = web.view()
    assert deferred is before and deferred.search(hashes) == []
    assert compaction_requests(queue) == [{"at_least": 40}]
    assert web.view() is before and len(compaction_requests(queue)) == 1  # asked once

    # The worker (another process's follower) reads the burst once and writes a generation.
    written = Index(match_index_dir).compact(at_least=40)
    assert written is not None and len(written.entries) == len(before.generation.entries) + 60

    # The web process opens it: the burst is in the generation, none of it in a delta.
    view = web.view()
    assert view.generation.name == written.name
    assert len(view.added_entries) == 0 and not view.dead
    found = sorted((h.query, h.distance) for h in view.search(near(hashes, 9)))
    assert found == [(n, 9) for n in range(60)]


def test_a_burst_no_compaction_takes_is_read_by_the_process_after_the_wait(
    monkeypatch, publisher, shared_set, match_index_dir
):
    monkeypatch.setattr(index_module, "BURST", 40)
    web = Index(match_index_dir)
    web.view()
    monkeypatch.setattr(index_module, "BURST_WAIT_SECONDS", 3600.0)
    hashes = random_hashes(2, 60)
    publish_hashes(publisher, hashes)
    assert web.view().search(hashes) == []  # waiting for a generation
    web._burst_until = 0.0  # the wait is over (no worker compacted)
    view = web.view()
    assert sorted(h.query for h in view.search(hashes)) == list(range(60))
    assert len(view.added_entries) == 60


def test_linking_and_compaction_never_wait_for_a_burst(monkeypatch, publisher, shared_set):
    monkeypatch.setattr(index_module, "BURST", 40)
    web = shared_index()
    web.view()
    hashes = random_hashes(3, 60)
    publish_hashes(publisher, hashes)
    view = web.view(max_age=0)  # how linking asks: the batch's entries must be in it
    assert sorted(h.query for h in view.search(hashes)) == list(range(60))


def test_a_burst_over_many_pages_is_followed_exactly(monkeypatch, publisher, shared_set):
    """Pages of 7 rows: the follower gathers them all, replacements and tombstones included,
    and its view finds exactly what brute force finds over the active entries."""
    monkeypatch.setattr(index_module, "FEED_PAGE", 7)
    web = shared_index()
    first = random_hashes(4, 30)
    publish_hashes(publisher, first)
    web.view()  # these in the generation
    second = random_hashes(5, 45)
    publish_hashes(publisher, second)
    gone = [*to_hex(first[:5]), *to_hex(second[:4])]
    answer = publisher.api.post(
        "/api/v1/sets/acme-csam/retractions",
        {"signals": [{"type": "pdq", "value": v} for v in gone]},
    )
    assert answer.status_code < 300, answer.content
    view = web.view()
    assert len(view.dead) == 5 and len(view.added_entries) == 41
    active = np.concatenate([first[5:], second[4:]])
    queries = near(np.concatenate([first, second]), 12)
    found = sorted((h.query, h.distance) for h in view.search(queries))
    q, _, d = brute_force(active, queries, 31)
    assert found == sorted(zip(q.tolist(), d.tolist(), strict=True))
    assert len(found) == 66


@pytest.mark.parametrize("queries", [3, 300])  # one thread; split across cores
def test_the_delta_scan_finds_exactly_what_brute_force_finds(queries):
    hashes = random_hashes(6, 2000)
    asked = np.concatenate([near(hashes[: queries // 3], 31), near(hashes[: queries // 3], 32)])
    asked = np.concatenate([asked, random_hashes(7, queries - len(asked))])
    for radius in (0, 16, 31):
        got = scan(hashes, asked, radius)
        want = brute_force(hashes, asked, radius)
        assert sorted(zip(*(a.tolist() for a in got), strict=True)) == sorted(
            zip(*(a.tolist() for a in want), strict=True)
        )
    assert len(scan(hashes, asked, 31)[0]) >= queries // 3  # the distance-31 ones at least
    with pytest.raises(ValueError):
        scan(hashes, asked, 32)


def test_a_new_generation_without_the_burst_keeps_the_view_and_its_delta_until_the_wait_ends(
    monkeypatch, publisher, shared_set, match_index_dir
):
    monkeypatch.setattr(index_module, "BURST", 40)
    web = Index(match_index_dir)
    web.view()
    small = random_hashes(8, 5)
    publish_hashes(publisher, small)
    had = web.view()
    assert len(had.added_entries) == 5
    # Another process compacts before the burst: a generation that lacks it.
    Index(match_index_dir).compact()
    burst = random_hashes(9, 60)
    publish_hashes(publisher, burst)
    deferred = web.view()  # opens the new generation, finds the burst after it: keeps its view
    assert deferred is had
    assert sorted(h.query for h in deferred.search(small)) == list(range(5))
    assert web.view() is had  # the same wait, not a new one per refresh
    web._burst_until = 0.0  # the wait is over: read here, from the new generation
    view = web.view()
    assert view.generation.name != had.generation.name
    assert len(view.added_entries) == 60
    both = np.concatenate([small, burst])
    assert sorted(h.query for h in view.search(both)) == list(range(65))
