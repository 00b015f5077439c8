"""A merge that changes most of the tables a feed page reads has them analyzed at once, not when
autovacuum comes round: planned without statistics, a page read every entry of its set."""

import numpy as np
import pytest
from django.db import connection

from exchange.kv import redis_client
from signals import tasks
from signals.actions.statistics import TABLES, stale_tables
from signals.models import Contribution
from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def random_pdq(count):
    rng = np.random.default_rng(20)
    return [bytes(row).hex() for row in rng.integers(0, 256, (count, 32), dtype=np.uint8)]


def last_analyzed(table):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
            " WHERE relname = %s",
            [table],
        )
        return cursor.fetchone()[0]


def test_a_bulk_merge_queues_the_analysis_and_it_analyzes_what_it_made_stale(publisher, csam_set):
    values = random_pdq(3000)
    # A merge of new entries writes signals and entries; an only contributor is written on the
    # entry, so the same merge again with labels is what writes 3,000 contribution rows.
    for labels in ([], ["csam"]):
        redis_client().delete(f"hashx:queued:{tasks.ANALYZE}")
        signals = [{"type": "pdq", "value": value, "labels": labels} for value in values]
        answer = publisher.api.post(f"/api/v1/sets/{csam_set.slug}/signals", {"signals": signals})
        assert answer.status_code == 202
        tasks.merge_batch(answer.json()["batch"])  # the task's body, as the worker runs it
        # Queued once, on the default queue (the flag its task clears as it starts).
        assert redis_client().get(f"hashx:queued:{tasks.ANALYZE}") == b"1"
    assert Contribution.objects.filter(labels=["csam"]).count() == 3000
    # Backends report their counts within a second or so.
    eventually(lambda: set(TABLES) <= set(stale_tables()), timeout=15, what="the counts")
    tasks.analyze_tables()
    assert stale_tables() == []
    assert all(last_analyzed(table) is not None for table in TABLES)
    assert redis_client().get(f"hashx:queued:{tasks.ANALYZE}") is None


def test_a_small_merge_leaves_the_statistics_to_autovacuum(publisher, csam_set):
    with connection.cursor() as cursor:  # what earlier tests wrote is not this test's
        for table in TABLES:
            cursor.execute(f"ANALYZE {table}")
    signals = [{"type": "pdq", "value": value} for value in random_pdq(20)]
    answer = publisher.api.post(f"/api/v1/sets/{csam_set.slug}/signals", {"signals": signals})
    tasks.merge_batch(answer.json()["batch"])
    assert stale_tables() == []
