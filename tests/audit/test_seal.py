"""The sealer chains finished events in one order: no gap, no fork, even under concurrency."""

import os
import subprocess
import sys
import threading

import psycopg2
import pytest
from django.db import connection

from audit.actions import record
from audit.actions.seal import GENESIS_HASH, chain_hash, do_seal_pending
from audit.actions.verify import verify_audit_log
from audit.models import AuditEvent, AuditSeal
from tests.conftest import REPO_ROOT, db_url_for_subprocesses
from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def assert_one_unbroken_chain():
    seals = list(AuditSeal.objects.select_related("event").order_by("seq"))
    assert [s.seq for s in seals] == list(range(1, len(seals) + 1))
    prev = GENESIS_HASH
    for seal in seals:
        assert chain_hash(prev, seal.seq, seal.event) == seal.hash
        prev = seal.hash
    return seals


def test_it_seals_in_insertion_order_and_is_idempotent(publisher):
    do_seal_pending(wait=True)
    before = AuditSeal.objects.count()
    events = [record("test.event", actor_org=publisher.org, details={"n": n}) for n in range(5)]
    # A worker may seal some of them first: only the chain it leaves matters.
    result = do_seal_pending(wait=True)
    assert result.head_seq == before + 5
    seals = assert_one_unbroken_chain()
    assert [s.event_id for s in seals[before:]] == [e.pk for e in events]
    assert do_seal_pending(wait=True).sealed == 0
    assert result.head_hash == seals[-1].hash


def test_an_event_still_in_flight_is_sealed_after_it_commits_not_before(publisher):
    before = do_seal_pending(wait=True).head_seq
    other = psycopg2.connect(db_url_for_subprocesses())
    try:
        with other.cursor() as cursor:
            # Begins a transaction that inserts an event and stays open.
            cursor.execute(
                "INSERT INTO audit_auditevent (occurred_at, action, actor_key_id, actor_username,"
                " request_id, object_type, object_id, details)"
                " VALUES (now(), 'test.slow', '', '', '', '', '', '{}') RETURNING id"
            )
            slow_id = cursor.fetchone()[0]
        fast = record("test.fast")
        # The open transaction holds the horizon back: nothing after it may be sealed yet.
        assert do_seal_pending(wait=True).head_seq == before
        assert not AuditSeal.objects.filter(event=fast).exists()
        other.commit()
    finally:
        other.close()
    do_seal_pending(wait=True)
    seals = assert_one_unbroken_chain()
    assert {s.event_id for s in seals[before:]} == {slow_id, fast.pk}


def test_the_chain_has_no_gap_or_fork_with_two_writers_and_sealers_racing():
    env = {**os.environ, "DATABASE_URL": db_url_for_subprocesses()}
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit.writer", name, "150"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    stop = threading.Event()
    sealed_concurrently = []

    def seal_continuously():
        try:
            while not stop.is_set():
                sealed_concurrently.append(do_seal_pending(batch=7).sealed)
        finally:
            connection.close()

    sealers = [threading.Thread(target=seal_continuously) for _ in range(2)]
    for thread in sealers:
        thread.start()
    try:
        committed = sum(int(w.communicate(timeout=120)[0]) for w in writers)
    finally:
        stop.set()
        for thread in sealers:
            thread.join()
    assert all(w.returncode == 0 for w in writers)
    assert sum(sealed_concurrently) > 0, "the sealers should have sealed while the writers wrote"

    do_seal_pending(wait=True)
    seals = assert_one_unbroken_chain()
    assert len(seals) == committed == AuditEvent.objects.count()
    assert verify_audit_log().ok


@pytest.mark.worker
def test_a_worker_seals_events_after_they_commit(celery_worker, publisher):
    event = record("test.committed", actor_org=publisher.org)
    eventually(lambda: AuditSeal.objects.filter(event=event).exists(), what="the worker's seal")
    assert_one_unbroken_chain()


def test_a_sealer_killed_mid_batch_leaves_no_trace_and_the_next_one_finishes(publisher):
    do_seal_pending(wait=True)
    before = AuditSeal.objects.count()
    # No worker runs beside this test (tests/conftest.py celery_worker), so only the crashing
    # sealer and this test seal.
    events = [record("test.event", actor_org=publisher.org, details={"n": n}) for n in range(7)]
    env = {**os.environ, "DATABASE_URL": db_url_for_subprocesses()}
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.audit.crashing_sealer", "5"],
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    assert crashed.returncode == 17
    # The first batch of three committed; the second died half-way and rolled back whole.
    assert AuditSeal.objects.count() == before + 3
    do_seal_pending(wait=True)
    seals = assert_one_unbroken_chain()
    assert [s.event_id for s in seals[before:]] == [e.pk for e in events]
