"""The Celery app. The beat schedule lives here and nowhere else (STYLE.md)."""

import os
import socket
from typing import Any

from celery import Celery, bootsteps
from celery.signals import task_postrun, task_prerun, worker_init
from django.conf import settings
from django.db import close_old_connections

# `logs` connects the handlers that keep Django's logging in the worker and run each task under
# the request id of the request that queued it.
from exchange import logs, pgwatch  # noqa: F401
from exchange.health import (
    beat_worker_heartbeat,
    clear_worker_heartbeat,
    worker_heartbeat_interval,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

app = Celery("exchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def watch_database(**kwargs: Any) -> None:
    """A task's call to a frozen PostgreSQL fails after a while, as on a lost connection, instead
    of holding its worker for ever. Turned on before the pool forks its processes."""
    pgwatch.enable(settings.HASHX_TASK_DATABASE_TIMEOUT_SECONDS)


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(**kwargs: Any) -> None:
    """Around each task, what Django does around each request: a connection past
    ``CONN_MAX_AGE``, or unusable after an error, is closed; any other is kept for the next task
    (``CELERY_DB_REUSE_MAX`` stops Celery from closing them all)."""
    close_old_connections()


@app.on_after_configure.connect
def beat_schedule(sender: Celery, **kwargs: Any) -> None:
    """The whole beat schedule (read after configuration, so settings are loaded)."""
    # Sealing is also triggered after every commit; this catches what a Redis hiccup dropped.
    sender.add_periodic_task(10.0, sender.signature("audit.seal"), name="audit-seal")
    sender.add_periodic_task(
        float(settings.HASHX_AUDIT_CHECKPOINT_SECONDS),
        sender.signature("audit.checkpoint"),
        name="audit-checkpoint",
    )
    # Finds a merge whose worker died by its free part locks, so it may look often (cheaply).
    sender.add_periodic_task(
        5.0, sender.signature("signals.ingest.resume_batches"), name="ingest-resume"
    )
    sender.add_periodic_task(
        60.0, sender.signature("signals.expire_entries"), name="expire-entries"
    )
    # Backstop for lost wake-ups, and what makes retries happen when they fall due.
    sender.add_periodic_task(
        2.0, sender.signature("signals.webhooks.dispatch"), name="webhooks-dispatch"
    )
    sender.add_periodic_task(
        3600.0, sender.signature("signals.purge_tombstones"), name="purge-tombstones"
    )
    sender.add_periodic_task(
        3600.0, sender.signature("signals.webhooks.purge_deliveries"), name="purge-deliveries"
    )
    sender.add_periodic_task(
        float(settings.HASHX_MATCH_COMPACT_SECONDS),
        sender.signature("signals.match.compact_index"),
        name="match-compact-index",
    )
    sender.add_periodic_task(
        float(settings.HASHX_FEDERATION_PULL_SECONDS),
        sender.signature("federation.pull_due"),
        name="federation-pull",
    )


class Heartbeat(bootsteps.StartStopStep):
    """Writes ``hashx:worker-heartbeat:<hostname>`` to Redis every few seconds; /readyz reads it.

    A consumer step: it starts once the worker is connected to the broker and consuming, and
    stops while that connection is lost. The key expires after three missed beats, so a killed
    worker drops out on its own; a worker that stops cleanly deletes it at once.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        name = worker.hostname or socket.gethostname()
        beat_worker_heartbeat(name)
        self.tref = worker.timer.call_repeatedly(
            worker_heartbeat_interval(), beat_worker_heartbeat, (name,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        clear_worker_heartbeat(worker.hostname or socket.gethostname())


app.steps["consumer"].add(Heartbeat)
