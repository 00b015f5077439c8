"""Thin Celery wrappers around the signals actions."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from exchange.enqueue import clear_once, enqueue, enqueue_once
from signals.actions.expiry import do_expire_entries, do_purge_tombstones
from signals.actions.merge import do_fail_batch, do_merge_batch, stalled_merges
from signals.actions.neardup import do_link_batch, stalled_links
from signals.actions.statistics import do_analyze_stale_tables
from signals.actions.webhooks import dispatch_in_parts, do_purge_deliveries, do_send_many
from signals.feed.wakeups import DISPATCH, DISPATCH_AFTER_SENDS, clear_wake
from signals.matching.index import shared_index

MERGE = "signals.ingest.merge_batch"
LINK = "signals.match.link_near_duplicates"
ANALYZE = "signals.analyze_tables"
# A batch queued again is not queued a third time while this copy may still wait in the queue.
REQUEUE_TTL = 120
logger = logging.getLogger(__name__)


@shared_task(name=MERGE, ignore_result=True, acks_late=True)
def merge_batch(batch_id: str) -> None:
    clear_once(MERGE, batch_id)
    try:
        batch = do_merge_batch(batch_id)
    except OperationalError:
        raise  # the database went away, a deadlock, …: beat's resume_batches tries again
    except Exception:
        # It would fail the same way on every retry: say so instead of looping.
        logger.exception("merging batch %s failed", batch_id)
        do_fail_batch(
            batch_id, "the merge failed on the exchange's side; its staff can see why in the log"
        )
        raise
    if batch is not None and batch.link_ranges:
        enqueue_once(LINK, batch_id, ttl=REQUEUE_TTL)
    if batch is not None and (batch.new or batch.updated):  # a relabel rewrites contributions
        enqueue_once(ANALYZE, ttl=REQUEUE_TTL)


# On the default queue: ANALYZE is not the next batch's merge's business.
@shared_task(name=ANALYZE, ignore_result=True)
def analyze_tables() -> None:
    clear_once(ANALYZE)
    analyzed = do_analyze_stale_tables()
    if analyzed:
        logger.info("analyzed %s after a bulk merge", ", ".join(analyzed))


# Not on the ingest queue: a long search must not hold up the next batch's merge.
@shared_task(name=LINK, ignore_result=True, acks_late=True)
def link_near_duplicates(batch_id: str) -> None:
    clear_once(LINK, batch_id)
    do_link_batch(batch_id)


# On the default queue (CELERY_TASK_ROUTES), not behind the merges it may have to resume.
@shared_task(name="signals.ingest.resume_batches", ignore_result=True)
def resume_batches() -> None:
    """Beat, every few seconds: queue again the batches whose worker died, whose task failed on
    a lost connection or was lost, and the links left to make, each once while its copy waits
    (a second task on a batch that is still being worked on steps aside)."""
    for batch_id in stalled_merges():
        enqueue_once(MERGE, batch_id, ttl=REQUEUE_TTL)
    for batch_id in stalled_links():
        enqueue_once(LINK, batch_id, ttl=REQUEUE_TTL)


@shared_task(name="signals.purge_tombstones", ignore_result=True)
def purge_tombstones() -> None:
    do_purge_tombstones()


@shared_task(name="signals.expire_entries", ignore_result=True)
def expire_entries() -> None:
    do_expire_entries()


@shared_task(name=DISPATCH, ignore_result=True)
def dispatch_webhooks() -> None:
    """Woken after commits that move positions (on the ``fanout`` queue), and on beat: cut
    pages, claim, send."""
    clear_wake()
    _dispatch()


@shared_task(name=DISPATCH_AFTER_SENDS, ignore_result=True)
def dispatch_after_sends() -> None:
    """Woken by deliveries, behind the sends queued before it (``signals.feed.wakeups``)."""
    clear_wake(DISPATCH_AFTER_SENDS)
    _dispatch()


def _dispatch() -> None:
    """``HASHX_WEBHOOK_SEND_BATCH`` deliveries per send task, sent at once: few messages, and
    still spread over the worker's processes; each part's as soon as it is claimed."""
    chunk = settings.HASHX_WEBHOOK_SEND_BATCH
    for claimed in dispatch_in_parts():
        for start in range(0, len(claimed), chunk):
            enqueue("signals.webhooks.send", claimed=claimed[start : start + chunk])


@shared_task(name="signals.webhooks.send", ignore_result=True)
def send_webhooks(claimed: list[tuple[str, str]]) -> None:
    # A failure here (the database gone) leaves the deliveries to be claimed again when their
    # leases run out; a receiver's misbehaviour is an outcome, not an exception.
    do_send_many(claimed)


@shared_task(name="signals.webhooks.purge_deliveries", ignore_result=True)
def purge_deliveries() -> None:
    do_purge_deliveries()


@shared_task(name="signals.match.compact_index", ignore_result=True)
def compact_index(at_least: int = 0) -> None:
    """Beat (any delta), or a process whose delta outgrew ``COMPACT_AT`` (``at_least``: unless
    the delta is still that big, a compaction since the request already folded it in): fold the
    changes since the PDQ index's generation into a new one."""
    shared_index().compact(at_least=at_least)
