"""Long videos (vPDQ): up to an hour of frames at one a second (``MAX_VPDQ_FRAMES``), a value
far past what a b-tree row holds, published, deduplicated, served back unchanged through the
feed and matched by their frames; one frame more is refused, naming the bound, and the rest of
the batch is kept."""

import json

import pytest

from signals.feed import reads
from signals.models import SetEntry
from signals.types import MAX_VPDQ_FRAMES
from tests.helpers import assert_problem, long_video
from tests.signals.conftest import merged, publish
from tests.signals.test_feed_api import stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_index")]

TEN_MINUTES = long_video(600, seed=1)
AN_HOUR = long_video(MAX_VPDQ_FRAMES, seed=2)
BOUND = f"expected 1 to {MAX_VPDQ_FRAMES} frames (an hour at one frame a second)"


def videos(*values: str) -> list[dict[str, str]]:
    return [{"type": "vpdq", "value": value} for value in values]


def match(member, values):
    answer = member.api.post("/api/v1/match", {"signals": videos(*values)})
    assert answer.status_code == 200, answer.content
    return [r["matches"] for r in answer.json()["results"]]


def test_a_ten_minute_and_an_hour_long_video_are_served_back_unchanged_and_matched(
    publisher, subscriber, shared_set
):
    assert len(AN_HOUR) > 100 * 2704  # a hundred times the most a b-tree row holds
    answer = publish(publisher, "acme-csam", videos(TEN_MINUTES, AN_HOUR))
    assert answer.status_code == 202, answer.content
    assert merged(answer).new == 2

    feed = subscriber.api.get("/api/v1/changes?sets=acme-csam")
    assert feed.status_code == 200, feed.content
    assert [c["value"] for c in feed.json()["changes"]] == [TEN_MINUTES, AN_HOUR]
    snapshot = b"".join(subscriber.api.get("/api/v1/sets/acme-csam/snapshot").streaming_content)
    assert [json.loads(line).get("value") for line in snapshot.splitlines()[:-1]] == [
        TEN_MINUTES,
        AN_HOUR,
    ]

    ten, hour = match(subscriber, [TEN_MINUTES, AN_HOUR])
    assert [(m["value"], m["query_match_percent"], m["compared_match_percent"]) for m in ten] == [
        (TEN_MINUTES, 100.0, 100.0)
    ]
    assert [(m["value"], m["compared_match_percent"]) for m in hour] == [(AN_HOUR, 100.0)]
    # Its first ten minutes are a sixth of the hour's frames.
    [excerpt] = match(subscriber, [json.dumps(json.loads(AN_HOUR)[:600])])
    assert [
        (m["value"], m["query_match_percent"], m["compared_match_percent"]) for m in excerpt
    ] == [(AN_HOUR, 100.0, 16.67)]


def test_the_same_long_video_published_twice_is_one_entry(publisher, subscriber, shared_set):
    merged(publish(publisher, "acme-csam", videos(AN_HOUR)))
    # Another spelling (uppercase hex, timestamps to 6 places), and the same video again.
    respelled = json.dumps(
        [
            f"{h.upper()},{q},{float(t):.6f}"
            for h, q, t in (f.split(",") for f in json.loads(AN_HOUR))
        ]
    )
    assert respelled != AN_HOUR
    batch = merged(publish(subscriber, "acme-csam", videos(respelled, AN_HOUR)))
    assert (batch.new, batch.duplicate, batch.updated) == (0, 1, 1)
    entry = SetEntry.objects.get(hash_set=shared_set)
    assert entry.value == AN_HOUR and entry.contributor_count == 2
    assert SetEntry.objects.filter(type="vpdq").count() == 1


def test_a_video_over_an_hour_is_refused_naming_the_bound_and_the_rest_is_kept(
    publisher, subscriber, shared_set
):
    too_long = long_video(MAX_VPDQ_FRAMES + 1, seed=3)
    answer = publish(publisher, "acme-csam", videos(too_long, TEN_MINUTES))
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["rejections"] == [
        {"index": 0, "reason": f"vpdq: {BOUND}, got {MAX_VPDQ_FRAMES + 1}"}
    ]
    assert merged(answer).new == 1
    assert SetEntry.objects.get(hash_set=shared_set).value == TEN_MINUTES
    # All or nothing: a 400 problem naming the bound, nothing staged.
    refused = publish(publisher, "acme-csam", videos(TEN_MINUTES, too_long), atomic=True)
    problem = assert_problem(refused, 400, "validation")
    assert problem["errors"] == [
        {"field": "signals.1", "message": f"vpdq: {BOUND}, got {MAX_VPDQ_FRAMES + 1}"}
    ]
    # Nor is it a query.
    query = subscriber.api.post("/api/v1/match", {"signals": videos(too_long)})
    assert BOUND in assert_problem(query, 400, "validation")["errors"][0]["message"]


def test_a_stream_of_long_videos_is_checkpointed_by_bytes_as_well_as_by_changes(
    publisher, subscriber, shared_set, monkeypatch
):
    # What a reader holds between two checkpoints (a federation pull: a page in memory) stays
    # bounded in bytes, however few changes that is. Scaled down here: chunks of 128 KiB (3 of
    # these videos), a checkpoint past 512 KiB (some 11; 8 MiB and 1 MiB in production).
    monkeypatch.setattr(reads, "_CHUNK_BYTES", 128 << 10)
    monkeypatch.setattr(reads, "CHECKPOINT_BYTES", 512 << 10)
    values = [long_video(600, seed=100 + n) for n in range(24)]
    assert merged(publish(publisher, "acme-csam", videos(*values))).new == 24

    lines = stream(subscriber, sets="acme-csam")
    cursors = [n for n, line in enumerate(lines) if "cursor" in line]
    # A checkpoint at the end of the chunk that passes the budget, then the end line.
    assert cursors[-1] == len(lines) - 1 and lines[-1].get("end") is True
    assert len(cursors) >= 3, cursors
    assert max(b - a for a, b in zip([-1, *cursors], cursors, strict=False)) <= 13
    served = [line["value"] for line in lines if "value" in line]
    assert sorted(served) == sorted(values)
    # Resuming from a checkpoint in the middle serves exactly the rest.
    middle = lines[cursors[0]]["cursor"]
    rest = [line["value"] for line in stream(subscriber, sets="acme-csam", cursor=middle)
            if "value" in line]  # fmt: skip
    assert rest == served[cursors[0] :]


def test_a_page_of_long_videos_ends_at_its_byte_budget_and_says_there_is_more(
    publisher, subscriber, shared_set, monkeypatch
):
    # A page of 1,000 hour-long videos would be 295 MB; scaled down: 512 KiB, some 11 of these.
    monkeypatch.setattr(reads, "PAGE_BYTES", 512 << 10)
    values = [long_video(600, seed=200 + n) for n in range(24)]
    assert merged(publish(publisher, "acme-csam", videos(*values))).new == 24

    served, cursor, pages = [], None, []
    while True:
        query = "?sets=acme-csam" + (f"&cursor={cursor}" if cursor else "")
        page = subscriber.api.get("/api/v1/changes" + query).json()
        served += [change["value"] for change in page["changes"]]
        pages.append((len(page["changes"]), page["more"]))
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert sorted(served) == sorted(values)  # each once
    assert all(0 < count <= 11 and more for count, more in pages[:-1]), pages
    assert len(pages) == 3, pages
