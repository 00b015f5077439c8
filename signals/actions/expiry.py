"""Entries leaving the feed with time: expiry tombstones entries past their ``expires_at``, and
the purge deletes tombstones older than the retention period (a cursor older than that then
answers 410). Both run on beat."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from signals.feed.locks import lock_set
from signals.feed.positions import NEW_POSITION, Position
from signals.feed.wakeups import wake
from signals.models import FeedHorizon, HashSet, SetEntry

_SQL_EXPIRE = f"""
UPDATE signals_setentry SET state = 'tombstone', updated_at = %(now)s, {NEW_POSITION}
WHERE id IN (
    SELECT id FROM signals_setentry
    WHERE hash_set_id = %(set)s AND state = 'active' AND expires_at <= %(now)s
    ORDER BY id LIMIT %(limit)s
)
"""  # noqa: S608 - only constants are interpolated


def do_expire_entries(now: datetime | None = None, limit: int = 10_000) -> int:
    """Tombstone active entries past their expiry (beat, every minute), at most ``limit`` per
    set lock; returns how many."""
    now = now or timezone.now()
    total = 0
    set_ids = (
        SetEntry.objects.filter(state=SetEntry.State.ACTIVE, expires_at__lte=now)
        .values_list("hash_set_id", flat=True)
        .distinct()
    )
    for set_id in list(set_ids):
        with transaction.atomic(), connection.cursor() as cursor:
            lock_set(cursor, set_id)
            cursor.execute(_SQL_EXPIRE, {"now": now, "set": set_id, "limit": limit})
            if cursor.rowcount:
                total += cursor.rowcount
                wake()
                record(
                    "signals.expired",
                    obj=HashSet.objects.get(pk=set_id),
                    details={"entries": cursor.rowcount},
                )
    return total


_SQL_PURGE = """
WITH gone AS (
    DELETE FROM signals_setentry
    WHERE id IN (
        SELECT id FROM signals_setentry
        WHERE hash_set_id = %(set)s AND state = 'tombstone' AND updated_at < %(cutoff)s
        ORDER BY position_xid, position_seq LIMIT %(limit)s
    ) AND state = 'tombstone' AND updated_at < %(cutoff)s
    RETURNING id, position_xid, position_seq
), contributions AS (
    DELETE FROM signals_contribution WHERE entry_id IN (SELECT id FROM gone)
), opinions AS (
    DELETE FROM signals_opinion WHERE entry_id IN (SELECT id FROM gone)
), newest AS (
    SELECT position_xid, position_seq FROM gone
    ORDER BY position_xid DESC, position_seq DESC LIMIT 1
)
SELECT (SELECT count(*) FROM gone), (SELECT position_xid::text FROM newest),
       (SELECT position_seq FROM newest)
"""


_SQL_PURGE_SETS = """
SELECT DISTINCT hash_set_id FROM signals_setentry
WHERE state = 'tombstone' AND updated_at < %(cutoff)s
ORDER BY hash_set_id
"""


def do_purge_tombstones(now: datetime | None = None, limit: int = 10_000) -> int:
    """Delete tombstones older than the retention period (with their contributions and
    opinions) and move the feed horizon past them; returns how many. The ``state`` check in
    the DELETE re-reads each row after its lock, so an entry revived meanwhile stays.

    Locks: set by set, each transaction of deletions holds every slot of the set
    (``lock_set``), then the feed horizon row. A merge chunk probes an entry (a tombstone) and
    revives it later in its transaction under its slot locks: deleted in between, the revival
    would update nothing and the value would be lost from the set."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.HASHX_TOMBSTONE_RETENTION_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(_SQL_PURGE_SETS, {"cutoff": cutoff})
        set_ids = [row[0] for row in cursor.fetchall()]
    total = 0
    for set_id in set_ids:
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                lock_set(cursor, set_id)
                cursor.execute(_SQL_PURGE, {"cutoff": cutoff, "limit": limit, "set": set_id})
                count, xid, seq = cursor.fetchone()
                if count:
                    _move_purge_horizon(Position(int(xid), seq))
            total += count
            if count < limit:
                break
    return total


def _move_purge_horizon(purged: Position) -> None:
    """Past ``purged``, never back (in the caller's transaction)."""
    horizon, _ = FeedHorizon.objects.select_for_update().get_or_create(id=1)
    if purged > Position(horizon.purged_xid, horizon.purged_seq):
        FeedHorizon.objects.filter(id=1).update(purged_xid=purged.xid, purged_seq=purged.seq)
