"""The merge: one entry per signal per set, one contribution per member, exactly once."""

import hashlib
import os
import random
import string
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from signals.actions import merge
from signals.actions.merge import STAGING_LOST, do_merge_batch
from signals.actions.publish import do_publish
from signals.api.uploads import json_items
from signals.feed.positions import START
from signals.feed.reads import rendered_after
from signals.models import Batch, Contribution, SetEntry, StagedBatch, StagedSignal
from tests.conftest import REPO_ROOT, db_url_for_subprocesses
from tests.helpers import eventually
from tests.signals.conftest import PDQ, REWIND_ENTRY_IDS, entry, merged, pdq, publish

pytestmark = pytest.mark.django_db


def merged_by_a_worker(batch_id):
    """Wait until a worker has merged the batch."""

    def done():
        state = Batch.objects.get(pk=batch_id).state
        assert state == "done", f"batch {batch_id} is {state}"
        return True

    eventually(done, what="a worker's merge")


def test_the_same_hash_from_two_members_is_one_entry_with_two_contributions(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["csam"]), pdq(1)]))
    batch = merged(publish(subscriber, "acme-csam", [pdq(0, labels=["sextortion"]), pdq(2)]))
    assert (batch.new, batch.updated, batch.duplicate) == (1, 1, 0)
    first = entry(0)
    assert first.contributor_count == 2
    assert first.labels == ["csam", "sextortion"]
    assert Contribution.objects.filter(entry=first).count() == 2
    assert SetEntry.objects.count() == 3


def test_an_only_contributor_is_written_on_the_entry_and_as_a_row_once_another_comes(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["csam"])]))
    assert entry(0).contributor_id == publisher.org.pk and not Contribution.objects.exists()
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["csam"])]))  # no change
    assert entry(0).contributor_id == publisher.org.pk and not Contribution.objects.exists()
    first_seen = entry(0).first_seen

    merged(publish(subscriber, "acme-csam", [pdq(0, labels=["sextortion"])]))
    assert entry(0).contributor_id is None
    assert Contribution.objects.count() == 2
    first = Contribution.objects.get(organisation=publisher.org)
    assert (first.labels, first.first_seen, first.last_seen) == (["csam"], first_seen, first_seen)
    assert Contribution.objects.get(organisation=subscriber.org).labels == ["sextortion"]
    assert (entry(0).contributor_count, entry(0).labels) == (2, ["csam", "sextortion"])


def test_an_only_contributors_changed_contribution_is_written_as_a_row(publisher, csam_set):
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["csam"]), pdq(1)]))
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["grooming"])]))
    (row,) = Contribution.objects.all()
    assert (row.entry_id, row.organisation_id, row.labels) == (
        entry(0).pk, publisher.org.pk, ["csam", "grooming"]
    )  # fmt: skip
    assert entry(0).contributor_id is None and entry(1).contributor_id == publisher.org.pk
    # Re-published a day later: last seen then (the same list daily does not rewrite rows
    # more than once a day).
    later = timezone.now() + timedelta(days=2)
    with time_machine.travel(later):
        batch = merged(publish(publisher, "acme-csam", [pdq(1)]))
    assert batch.duplicate == 1
    row = Contribution.objects.get(entry=entry(1))
    assert row.first_seen == entry(1).first_seen and row.last_seen >= later
    assert entry(1).contributor_id is None


def test_values_longer_than_a_b_tree_row_holds_are_stored_once_and_matched(
    publisher, subscriber, shared_set
):
    rng = random.Random(5)
    url = "https://example.com/" + "".join(rng.choices(string.ascii_letters, k=8000))
    text = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(2700))  # 8,100 bytes
    # A value up to 256 bytes is its own key in the unique index, a longer one its MD5 padded
    # past 256 bytes: a short value spelling a long one's MD5 takes nothing from it.
    items = [{"type": "url", "value": url}, {"type": "raw_text", "value": text}]
    items += [{"type": "raw_text", "value": "x" * 256}, {"type": "raw_text", "value": "x" * 257}]
    items += [
        {"type": "raw_text", "value": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}
    ]
    assert merged(publish(publisher, "acme-csam", items)).new == 5
    assert merged(publish(subscriber, "acme-csam", items)).updated == 5
    assert SetEntry.objects.count() == 5
    assert set(SetEntry.objects.values_list("contributor_count", flat=True)) == {2}
    answer = subscriber.api.post("/api/v1/match", {"signals": items})
    found = [[m["value"] for m in r["matches"]] for r in answer.json()["results"]]
    assert found == [[item["value"]] for item in items]


def test_republishing_is_a_duplicate_and_does_not_move_the_entry(publisher, csam_set):
    merged(publish(publisher, "acme-csam", [pdq(0), pdq(1)]))
    before = {e.pk: (e.position_xid, e.position_seq) for e in SetEntry.objects.all()}
    batch = merged(publish(publisher, "acme-csam", [pdq(0), pdq(1), pdq(1)]))
    assert (batch.new, batch.updated, batch.duplicate) == (0, 0, 3)
    assert {e.pk: (e.position_xid, e.position_seq) for e in SetEntry.objects.all()} == before


def test_a_new_label_updates_the_entry_and_moves_it(publisher, csam_set):
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    old = entry(0)
    batch = merged(publish(publisher, "acme-csam", [pdq(0, labels=["grooming"])]))
    assert batch.updated == 1
    new = entry(0)
    assert new.labels == ["grooming"] and new.contributor_count == 1
    assert (new.position_xid, new.position_seq) > (old.position_xid, old.position_seq)


def test_a_later_expiry_or_none_is_a_change_of_its_own(publisher, csam_set):
    soon, later = (timezone.now() + timedelta(hours=h) for h in (1, 2))
    merged(publish(publisher, "acme-csam", [pdq(0, expires_at=soon.isoformat())]))
    batch = merged(publish(publisher, "acme-csam", [pdq(0, expires_at=later.isoformat())]))
    assert (batch.updated, entry(0).expires_at) == (1, later)
    batch = merged(publish(publisher, "acme-csam", [pdq(0, expires_at=soon.isoformat())]))
    assert (batch.updated, batch.duplicate, entry(0).expires_at) == (0, 1, later)
    batch = merged(publish(publisher, "acme-csam", [pdq(0)]))  # published to stay
    assert (batch.updated, entry(0).expires_at) == (1, None)


def test_a_batch_merges_in_chunks_with_progress(publisher, csam_set):
    answer = publish(publisher, "acme-csam", [pdq(n) for n in range(25)]).json()
    assert StagedBatch.objects.filter(batch_id=answer["batch"]).exists()
    batch = do_merge_batch(answer["batch"], chunk=10)
    assert (batch.state, batch.merged, batch.new) == ("done", 25, 25)
    assert not StagedBatch.objects.exists() and not StagedSignal.objects.exists()


def test_staging_is_unlogged(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relpersistence FROM pg_class"
            " WHERE relname IN ('signals_stagedsignal', 'signals_stagedbatch')"
        )
        assert dict(cursor.fetchall()) == {"signals_stagedsignal": "u", "signals_stagedbatch": "u"}


def test_a_batch_whose_staged_lines_a_crash_took_fails_and_frees_its_idempotency_key(
    publisher, csam_set
):
    signals = [pdq(n) for n in range(5)]
    key = {"Idempotency-Key": "daily-list"}
    first = publisher.api.post("/api/v1/sets/acme-csam/signals", {"signals": signals}, headers=key)
    # What crash recovery does to UNLOGGED tables: it empties them.
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE signals_stagedsignal, signals_stagedbatch")
    batch = do_merge_batch(first.json()["batch"])
    assert (batch.state, batch.error, batch.new, batch.idempotency_key) == (
        "failed", STAGING_LOST, 0, ""
    )  # fmt: skip
    assert not SetEntry.objects.exists()
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert (report["state"], report["error"], report["resend"]) == ("failed", STAGING_LOST, True)

    again = publisher.api.post("/api/v1/sets/acme-csam/signals", {"signals": signals}, headers=key)
    assert again.status_code == 202 and again.json()["batch"] != str(batch.pk)
    assert "Idempotent-Replayed" not in again
    assert merged(again).new == 5


def test_merging_a_done_batch_again_changes_nothing(publisher, csam_set):
    answer = publish(publisher, "acme-csam", [pdq(0)]).json()
    do_merge_batch(answer["batch"])
    again = do_merge_batch(answer["batch"])
    assert (again.new, again.duplicate) == (1, 0)
    assert SetEntry.objects.get().contributor_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_is_finished_by_the_next_exactly_once(publisher, csam_set):
    # Staged without queueing: the test's own worker must not merge it first.
    batch, _ = do_publish(
        csam_set, publisher.org, json_items([pdq(n) for n in range(30)]), queue=False
    )
    answer = {"batch": str(batch.pk)}
    env = {**os.environ, "DATABASE_URL": db_url_for_subprocesses()}
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.signals.crashing_merger", answer["batch"], "10"],
        cwd=REPO_ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert crashed.returncode == 17
    batch = Batch.objects.get(pk=answer["batch"])
    assert batch.state == "merging" and len(batch.parts_merged) == 2
    # The parts merge in parallel: whatever committed before the crash is merged (its staged
    # lines gone), and nothing else is.
    merged_before = SetEntry.objects.count()
    assert merged_before == 30 - StagedSignal.objects.count() < 30
    assert merged_before == batch.new
    batch = do_merge_batch(answer["batch"], chunk=10)
    assert (batch.state, batch.merged, batch.new, batch.duplicate) == ("done", 30, 30, 0)
    assert SetEntry.objects.count() == 30
    assert all(e.contributor_count == 1 for e in SetEntry.objects.all())
    assert not StagedSignal.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_merges_after_commit(celery_worker, publisher, csam_set):
    answer = publish(publisher, "acme-csam", [pdq(n) for n in range(5)]).json()
    merged_by_a_worker(answer["batch"])
    changes, _, _ = rendered_after(START, [csam_set.pk])
    assert len(changes) == 5


@pytest.mark.django_db(transaction=True)
def test_a_value_whose_key_another_entry_takes_first_is_not_inserted_twice(publisher, csam_set):
    """The chunk probes the set's entries, then inserts the ones it did not find. Should an
    entry of the same key be committed in between (every writer of a set holds its lock, so
    only two long values of one MD5, a forged pair, can do that; here a writer that skips the
    lock), that insert fails; the chunk then leaves that value to the entry that holds its key,
    and the batch's other new values are still inserted."""
    import threading

    import psycopg2

    from tests.conftest import db_url_for_subprocesses

    batch, _ = do_publish(csam_set, publisher.org, json_items([pdq(0), pdq(1)]), queue=False)
    rival = psycopg2.connect(db_url_for_subprocesses())
    with rival.cursor() as cursor:  # uncommitted: the merge's probe does not see it
        cursor.execute(
            "INSERT INTO signals_setentry (hash_set_id, type, value, state, labels,"
            " contributor_count, contributor_names, positive_count, negative_count,"
            " investigation_count, first_seen, updated_at)"
            " VALUES (%s, 'pdq', %s, 'active', '{}', 0, '{}', 0, 0, 0, now(), now())",
            [csam_set.pk, PDQ[1]],
        )
    waited = []

    def waiting_for_the_rival(cursor):  # the merge's insert (in one of its parts' connections)
        cursor.execute(
            "SELECT count(*) FROM pg_locks"
            " WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        )
        return cursor.fetchone()[0]

    def commit_once_the_merge_waits():  # the merge's insert waits for it, then fails
        try:
            with rival.cursor() as cursor:
                waited.append(
                    eventually(lambda: waiting_for_the_rival(cursor), what="the merge's insert")
                )
        finally:
            rival.commit()

    committer = threading.Thread(target=commit_once_the_merge_waits)
    committer.start()
    try:
        batch = do_merge_batch(str(batch.pk))
    finally:
        committer.join()
        rival.close()
    assert waited, "the merge's insert never waited for the rival's"
    assert (batch.new, batch.duplicate) == (1, 1)
    assert SetEntry.objects.filter(value=PDQ[1]).count() == 1
    assert entry(1).contributor_count == 0  # the rival's
    assert entry(0).contributor_id == publisher.org.pk


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_beat_queues_again_a_batch_whose_task_was_lost(celery_worker, publisher, csam_set):
    import time_machine

    from signals.tasks import resume_batches

    # Staged, but its task never sent (as if the broker lost it).
    batch, _ = do_publish(csam_set, publisher.org, json_items([pdq(0), pdq(1)]), queue=False)
    resume_batches()  # too young: its own task may still be on the way
    # The worker merges the ingest queue in order: had the lost batch been queued again, it would
    # be merged before a batch published after it.
    merged_by_a_worker(publish(publisher, "acme-csam", [pdq(2)]).json()["batch"])
    assert Batch.objects.get(pk=batch.pk).state == "queued"
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=True):
        resume_batches()
    merged_by_a_worker(batch.pk)
    assert Batch.objects.get(pk=batch.pk).new == 2


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_batch_that_cannot_merge_fails_visibly_and_staff_can_merge_it_again(
    celery_worker, staff, publisher, csam_set
):
    from django.db import IntegrityError, connection
    from django.urls import reverse

    from audit.models import AuditEvent
    from signals.tasks import merge_batch

    first, _ = do_publish(csam_set, publisher.org, json_items([pdq(0)]), queue=False)
    do_merge_batch(str(first.pk))
    batch, _ = do_publish(csam_set, publisher.org, json_items([pdq(1), pdq(2)]), queue=False)
    # A database restored with its entry ids' sequence behind the table: every retry of the
    # merge would draw an id that is taken.
    with connection.cursor() as cursor:
        cursor.execute(REWIND_ENTRY_IDS)
    with pytest.raises(IntegrityError):
        merge_batch(str(batch.pk))
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert report["state"] == "failed" and "failed on the exchange's side" in report["error"]
    assert SetEntry.objects.count() == 1  # the chunk rolled back whole
    assert AuditEvent.objects.filter(action="signals.batch.failed").count() == 1

    with connection.cursor() as cursor:  # staff repair the sequence
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('signals_setentry', 'id'),"
            " (SELECT max(id) FROM signals_setentry))"
        )
    url = reverse("admin:signals_batch_changelist")
    form = {"action": "merge_again", "_selected_action": [str(batch.pk)]}
    assert b"reason" in staff.post(url, form).content  # asks first
    assert staff.post(url, {**form, "confirm": "1", "reason": "staging fixed"}).status_code == 302
    merged_by_a_worker(batch.pk)
    assert (Batch.objects.get(pk=batch.pk).new, SetEntry.objects.count()) == (2, 3)
    event = AuditEvent.objects.get(action="signals.batch.retried")
    assert event.details["reason"] == "staging fixed"


@pytest.mark.django_db(transaction=True)
def test_a_batch_merges_in_parallel_parts_that_share_no_value(publisher, csam_set):
    from signals.feed.locks import in_part

    # 150 lines, 60 values: each value comes back in later chunks with another label.
    items = [pdq(n % 60, labels=[f"l{n // 60}"]) for n in range(150)]
    batch, _ = do_publish(csam_set, publisher.org, json_items(items), queue=False)
    assert batch.parts_merged == [0, 0]
    batch = do_merge_batch(str(batch.pk), chunk=25)
    assert (batch.state, batch.parts_merged, batch.merged) == ("done", [150, 150], 150)
    assert (batch.new, batch.updated, batch.duplicate) == (60, 90, 0)
    assert SetEntry.objects.count() == Contribution.objects.count() == 60
    for n in range(60):
        assert entry(n).labels == (["l0", "l1", "l2"] if n < 30 else ["l0", "l1"])
    positions = set(SetEntry.objects.values_list("position_xid", "position_seq"))
    assert len(positions) == 60
    assert {part for _, _, part in batch.link_ranges} == {0, 1}  # both parts merged some
    assert not StagedSignal.objects.exists()
    # The split is by MD5, the same on every server and version.
    with connection.cursor() as cursor:
        for value in PDQ[:20]:
            cursor.execute(f"SELECT {in_part('%s', 2, 1)}", [value])
            md5 = hashlib.md5(value.encode(), usedforsecurity=False)
            assert cursor.fetchone()[0] == (md5.digest()[0] % 2 == 1)


def test_a_part_locks_every_slot_its_values_fall_in_whatever_the_part_count():
    from signals.feed.locks import MAX_PARTS, PART_COUNTS, part_slots

    for parts in PART_COUNTS:
        slots = [slot for part in range(parts) for slot in part_slots(parts, part)]
        assert sorted(slots) == list(range(MAX_PARTS))  # each slot in exactly one part
        for part in range(parts):
            # A value of this part (first MD5 byte b, b % parts == part) is in slot b % 8.
            assert {b % MAX_PARTS for b in range(256) if b % parts == part} == set(
                part_slots(parts, part)
            )


@pytest.mark.django_db(transaction=True)
def test_batches_merged_in_different_part_counts_share_values_safely(
    settings, publisher, subscriber, shared_set
):
    """A one-part batch (published before HASHX_MERGE_PARTS changed) and a two-part batch of
    the same values, from two members, merged at the same time: one entry per value with both
    contributions, whichever merge got there first."""
    import threading

    from django.db import connection as thread_connection

    items = [pdq(n) for n in range(150)]
    settings.HASHX_MERGE_PARTS = 1
    one, _ = do_publish(shared_set, publisher.org, json_items(items), queue=False)
    settings.HASHX_MERGE_PARTS = 2
    two, _ = do_publish(shared_set, subscriber.org, json_items(items), queue=False)
    assert (one.parts_merged, two.parts_merged) == ([0], [0, 0])
    errors = []

    def merge(batch):
        try:
            do_merge_batch(str(batch.pk), chunk=20)
        except Exception as exc:
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=merge, args=(b,)) for b in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    one, two = Batch.objects.get(pk=one.pk), Batch.objects.get(pk=two.pk)
    assert (one.state, two.state) == ("done", "done")
    assert one.new + two.new == 150 and one.updated + two.updated == 150
    assert SetEntry.objects.count() == 150 and Contribution.objects.count() == 300
    assert set(SetEntry.objects.values_list("contributor_count", flat=True)) == {2}


@pytest.mark.django_db(transaction=True)
def test_the_probe_takes_the_unique_index_when_a_sets_statistics_are_older_than_its_entries(
    publisher, csam_set
):
    """Analyzed while the set was empty, the statistics say it has no entries: on its set id
    alone, the planner probed the (set, position) index for each staged line and read every
    entry of the set (20,000 duplicates: 99 s of CPU, bench/merge_cpu.py)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO signals_setentry (hash_set_id, type, value, state, labels,"
            " contributor_count, contributor_names, positive_count, negative_count,"
            " investigation_count, first_seen, updated_at)"
            " SELECT %s + 1000, 'pdq', md5('x' || i) || md5('y' || i), 'active', '{}', 0, '{}',"
            " 0, 0, 0, now(), now() FROM generate_series(1, 20000) i",
            [csam_set.pk],
        )
        cursor.execute("ANALYZE signals_setentry")
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(20)]))
    batch, _ = do_publish(csam_set, publisher.org, json_items([pdq(0)]), queue=False)
    sql = merge._SQL_CHUNK.format(part="TRUE")
    params = {"batch": str(batch.pk), "lo": 0, "hi": 1, "set": csam_set.pk,
              "org": publisher.org.pk, "entry_seq": "signals_setentry_id_seq"}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(merge._SQL_SETUP)
        cursor.execute("EXPLAIN " + sql[sql.index("SELECT s.type") :], params)
        plan = "\n".join(row for (row,) in cursor.fetchall())
        cursor.execute("ROLLBACK")
    assert "one_entry_per_set_value" in plan and "entry_set_position_idx" not in plan, plan
