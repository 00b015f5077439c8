"""PDQ near-duplicates found at ingest: counted in the batch, linked to the nearest older
entry by a task that runs after the merge."""

import psycopg2
import pytest

from signals.actions.merge import do_merge_batch
from signals.actions.neardup import do_link_batch, link_key
from signals.actions.sets import do_create_set, do_update_set
from signals.matching.index import shared_index
from signals.models import Batch, SetEntry
from tests.conftest import db_url_for_subprocesses
from tests.helpers import eventually
from tests.signals.conftest import merged, publish
from tests.signals.test_match import FAR, near

pytestmark = pytest.mark.django_db(transaction=True)


def signals(*values):
    return [{"type": "pdq", "value": v} for v in values]


def entry_of(value):
    return SetEntry.objects.get(type="pdq", value=value)


def test_a_new_hash_near_an_existing_entry_is_counted_and_linked_to_the_nearest(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 12))))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 9), FAR[1])))
    assert (batch.new, batch.near_duplicates) == (2, 1)
    variant = entry_of(near(FAR[0], 9))
    # 9 bits from the original, but only 3 from the 12-bit variant: the nearest wins.
    assert variant.near_duplicate_of_id == entry_of(near(FAR[0], 12)).pk
    assert variant.near_duplicate_distance == 3
    assert entry_of(FAR[1]).near_duplicate_of_id is None
    answer = subscriber.api.get("/api/v1/changes?sets=acme-csam").json()
    links = {c["value"]: c["near_duplicate_of"] for c in answer["changes"]}
    assert links[near(FAR[0], 9)] == entry_of(near(FAR[0], 12)).pk
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert report["near_duplicates"] == 1


def test_the_set_threshold_bounds_what_counts_as_a_near_duplicate(publisher, shared_set):
    do_update_set(shared_set, {"pdq_threshold": 8})
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": FAR[0]}]))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 9), near(FAR[0], 200))))
    assert batch.near_duplicates == 0


def test_entries_of_other_sets_are_not_near_duplicates(publisher, shared_set):
    from signals.actions.sets import do_create_set

    do_create_set(publisher.org, {"slug": "acme-other", "name": "Other"})
    merged(publish(publisher, "acme-other", [{"type": "pdq", "value": FAR[0]}]))
    batch = merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": near(FAR[0], 2)}]))
    assert batch.near_duplicates == 0


def test_near_duplicates_at_ingest_can_be_switched_off(settings, publisher, shared_set):
    settings.HASHX_MATCH_NEAR_DUPLICATES = False
    merged(publish(publisher, "acme-csam", signals(FAR[0])))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 3))))
    assert batch.near_duplicates == 0
    assert entry_of(near(FAR[0], 3)).near_duplicate_of_id is None


def test_variants_in_one_batch_link_to_the_older_one_once_the_set_has_pdq(publisher, shared_set):
    merged(publish(publisher, "acme-csam", signals(FAR[1])))
    batch = merged(publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 5), FAR[2])))
    assert (batch.new, batch.near_duplicates) == (3, 1)
    # Within a batch "older" is by entry id: the later one links to the earlier, never both ways.
    older, variant = sorted([entry_of(FAR[0]), entry_of(near(FAR[0], 5))], key=lambda e: e.pk)
    assert (variant.near_duplicate_of_id, variant.near_duplicate_distance) == (older.pk, 5)
    assert older.near_duplicate_of_id is None


def test_a_batch_that_brings_a_set_its_first_pdq_hashes_is_not_searched(publisher, shared_set):
    batch = merged(publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 5))))
    assert (batch.new, batch.near_duplicates, batch.link_ranges) == (2, 0, [])
    assert entry_of(near(FAR[0], 5)).near_duplicate_of_id is None


def test_linking_runs_after_the_merge_chunk_by_chunk_and_moves_the_linked_entry(
    publisher, shared_set
):
    merged(publish(publisher, "acme-csam", signals(FAR[0], FAR[1])))
    answer = publish(publisher, "acme-csam", signals(near(FAR[0], 3), FAR[2], near(FAR[1], 4)))
    batch = do_merge_batch(answer.json()["batch"], chunk=2)
    assert (batch.state, batch.near_duplicates) == ("done", 0)
    assert len(batch.link_ranges) >= 2  # per chunk and part
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert (report["near_duplicates"], report["near_duplicates_pending"]) == (0, True)
    before = entry_of(near(FAR[0], 3))
    assert before.near_duplicate_of_id is None
    batch = do_link_batch(str(batch.pk))
    assert (batch.near_duplicates, batch.link_ranges) == (2, [])
    after = entry_of(near(FAR[0], 3))
    assert after.near_duplicate_of_id == entry_of(FAR[0]).pk
    # A link is a change: the entry moves in the feed.
    assert (after.position_xid, after.position_seq) > (before.position_xid, before.position_seq)
    assert do_link_batch(str(batch.pk)).near_duplicates == 2  # done: a second run links nothing
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert (report["near_duplicates"], report["near_duplicates_pending"]) == (2, False)


def test_linking_waits_while_a_transaction_older_than_the_batch_is_still_open(
    publisher, shared_set
):
    merged(publish(publisher, "acme-csam", signals(FAR[1])))
    shared_index().view(max_age=0)  # built now: later changes come from following the feed
    # Began before the batch merged: the match index view stops below it, so the batch's own
    # entries are not in it yet.
    other = psycopg2.connect(db_url_for_subprocesses())
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")
        answer = publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 5)))
        batch = do_merge_batch(answer.json()["batch"])
        assert batch.state == "done" and batch.link_ranges
        batch = do_link_batch(str(batch.pk))
        assert (batch.near_duplicates, bool(batch.link_ranges)) == (0, True)
        other.commit()
    finally:
        other.close()
    batch = do_link_batch(str(batch.pk))
    assert (batch.near_duplicates, batch.link_ranges) == (1, [])
    older, variant = sorted([entry_of(FAR[0]), entry_of(near(FAR[0], 5))], key=lambda e: e.pk)
    assert variant.near_duplicate_of_id == older.pk


def test_a_transaction_begun_after_the_batch_merged_does_not_hold_its_linking_back(
    publisher, shared_set
):
    """Ingest elsewhere keeps transactions open all the time: only those older than the batch's
    entries may make it wait, or it would wait for ever."""
    merged(publish(publisher, "acme-csam", signals(FAR[1])))
    shared_index().view(max_age=0)  # built now: later changes come from following the feed
    answer = publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 5)))
    batch = do_merge_batch(answer.json()["batch"])
    other = psycopg2.connect(db_url_for_subprocesses())
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")  # newer than every entry of the batch
        # And a later transaction that has ended: the open one is now below the newest ended.
        do_create_set(publisher.org, {"slug": "acme-later", "name": "Later"})
        batch = do_link_batch(str(batch.pk))
        assert (batch.near_duplicates, batch.link_ranges) == (1, [])
    finally:
        other.close()


def test_a_second_linker_of_the_same_batch_steps_aside_at_once(publisher, shared_set):
    merged(publish(publisher, "acme-csam", signals(FAR[0])))
    answer = publish(publisher, "acme-csam", signals(near(FAR[0], 3)))
    batch = do_merge_batch(answer.json()["batch"])
    assert batch.link_ranges
    other = psycopg2.connect(db_url_for_subprocesses())  # as a first worker still linking
    try:
        other.autocommit = True
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [link_key(str(batch.pk))])
        batch = do_link_batch(str(batch.pk))
        assert (batch.near_duplicates, bool(batch.link_ranges)) == (0, True)
        with other.cursor() as cursor:  # at once: closing lets the server release it later
            cursor.execute("SELECT pg_advisory_unlock(%s)", [link_key(str(batch.pk))])
    finally:
        other.close()
    batch = do_link_batch(str(batch.pk))
    assert (batch.near_duplicates, batch.link_ranges) == (1, [])


@pytest.mark.worker
def test_a_real_worker_links_after_merging(celery_worker, publisher, shared_set):
    merged(publish(publisher, "acme-csam", signals(FAR[0])))
    answer = publish(publisher, "acme-csam", signals(near(FAR[0], 7))).json()

    def merged_and_linked():
        batch = Batch.objects.get(pk=answer["batch"])
        assert (batch.state, batch.link_ranges) == ("done", [])
        return batch

    batch = eventually(merged_and_linked, timeout=60, what="the worker's merge and linking")
    assert batch.near_duplicates == 1
    assert entry_of(near(FAR[0], 7)).near_duplicate_of_id == entry_of(FAR[0]).pk
