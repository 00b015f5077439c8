"""A worker keeps its database connection from one task to the next, as a web process does from
one request to the next (Celery's own fixup closed it after every task)."""

from datetime import datetime

import pytest
from django.db import connection

from exchange.enqueue import enqueue
from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def worked_since(since: datetime) -> tuple[int, datetime] | None:
    """The backend, other than ours, that is connected and idle after a statement it ran after
    ``since``, and when it ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state_change FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'idle' AND state_change > %s",
            [since],
        )
        return cursor.fetchone()


def test_a_worker_runs_its_next_task_on_the_same_database_connection(celery_worker):
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (started,) = cursor.fetchone()
    enqueue("signals.webhooks.dispatch")
    pid, ran_at = eventually(lambda: worked_since(started), what="the first task's connection")
    enqueue("signals.webhooks.dispatch")
    again, _ = eventually(lambda: worked_since(ran_at), what="the second task's connection")
    assert again == pid
