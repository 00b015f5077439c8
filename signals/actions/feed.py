"""Reading entries in change order: the core of the change feed (DESIGN.md "Change feed")."""

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from exchange.problems import Problem
from signals.actions.positions import Position, visible_horizon
from signals.models import FeedHorizon


@dataclass
class Change:
    entry_id: int
    set_id: int
    type: str
    value: str
    state: str
    labels: list[str]
    contributor_count: int
    positive_count: int
    negative_count: int
    investigation_count: int
    first_seen: Any
    updated_at: Any
    expires_at: Any
    near_duplicate_of: int | None
    position: Position


# The columns every reader of entries selects, in Change's field order (position last).
_CHANGE_COLUMNS = (
    "e.id, e.hash_set_id, g.type, g.value, e.state, e.labels, e.contributor_count,"
    " e.positive_count, e.negative_count, e.investigation_count, e.first_seen, e.updated_at,"
    " e.expires_at, e.near_duplicate_of_id, e.position_xid::text, e.position_seq"
)
_FIELDS = [f.name for f in fields(Change) if f.name != "position"]


def _from_row(row: tuple[Any, ...]) -> Change:
    return Change(
        **dict(zip(_FIELDS, row[:14], strict=True)), position=Position(int(row[14]), row[15])
    )


_SQL_CHANGES = f"""
SELECT {_CHANGE_COLUMNS}
FROM signals_setentry e JOIN signals_signal g ON g.id = e.signal_id
WHERE e.hash_set_id = ANY(%(sets)s) AND e.position_xid < %(horizon)s::text::xid8
  AND (e.position_xid, e.position_seq) > (%(xid)s::text::xid8, %(seq)s)
ORDER BY e.position_xid, e.position_seq LIMIT %(limit)s
"""  # noqa: S608 - only constants are interpolated


def changes_after(
    after: Position, set_ids: list[int], limit: int = 1000
) -> tuple[list[Change], Position]:
    """The latest state of entries of ``set_ids`` changed after ``after``, in position order,
    and the position to continue from. Only rows of finished transactions are served."""
    horizon = visible_horizon()
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_CHANGES,
            {
                "sets": set_ids,
                "horizon": str(horizon),
                "xid": str(after.xid),
                "seq": after.seq,
                "limit": limit,
            },
        )
        changes = [_from_row(row) for row in cursor.fetchall()]
    return changes, (changes[-1].position if changes else after)


def contributor_names(entry_ids: list[int]) -> dict[int, list[str]]:
    """Slugs of the organisations with a live contribution to each entry (one query)."""
    names: dict[int, list[str]] = {}
    if not entry_ids:
        return names
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT k.entry_id, o.slug FROM signals_contribution k"
            " JOIN members_organisation o ON o.id = k.organisation_id"
            " WHERE k.entry_id = ANY(%s) AND k.retracted_at IS NULL ORDER BY k.entry_id, o.slug",
            [entry_ids],
        )
        for entry_id, slug in cursor.fetchall():
            names.setdefault(entry_id, []).append(slug)
    return names


def do_record_pull(
    sets: dict[int, Any], counts: dict[int, int], after: Position, until: Position, *, request: Any
) -> None:
    """Audit a pull from ``counts`` (changes served per set id): one event per set, so each
    set's owner sees who
    pulled what. A poll that finds nothing new is not recorded (idle polls would drown the log)."""
    for set_id, count in counts.items():
        record(
            "feed.pulled",
            obj=sets[set_id],
            request=request,
            details={
                "set": sets[set_id].slug,
                "from": after.cursor(),
                "to": until.cursor(),
                "count": count,
            },
        )


def tally(changes: list[Change], counts: dict[int, int]) -> dict[int, int]:
    """Add the changes served per set to ``counts`` (for do_record_pull)."""
    for change in changes:
        counts[change.set_id] = counts.get(change.set_id, 0) + 1
    return counts


def snapshot_pages(hash_set: Any, page: int = 5000) -> Iterator[list[Change] | Position]:
    """Every active entry of a set as of one consistent database snapshot, in pages, then the
    cursor the feed continues from. Everything the snapshot could not see was written by a
    transaction at or above its xmin, so it sorts after ``(xmin, 0)``: an entry can be both in
    the snapshot and after the cursor, never in neither.

    Opens its own REPEATABLE READ transaction: call it outside any other.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            horizon = Position(int(cursor.fetchone()[0]), 0)
        with connection.chunked_cursor() as rows:
            rows.execute(_SQL_SNAPSHOT, {"set": hash_set.pk})
            while batch := rows.fetchmany(page):
                yield [_from_row(row) for row in batch]
    yield horizon


_SQL_SNAPSHOT = f"""
SELECT {_CHANGE_COLUMNS}
FROM signals_setentry e JOIN signals_signal g ON g.id = e.signal_id
WHERE e.hash_set_id = %(set)s AND e.state = 'active'
ORDER BY e.id
"""  # noqa: S608 - only constants are interpolated


_SQL_PURGE = """
WITH gone AS (
    DELETE FROM signals_setentry
    WHERE id IN (
        SELECT id FROM signals_setentry
        WHERE state = 'tombstone' AND updated_at < %(cutoff)s
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


def do_purge_tombstones(now: datetime | None = None, limit: int = 10_000) -> int:
    """Delete tombstones older than the retention period (with their contributions and
    opinions) and move the feed horizon past them; returns how many. The ``state`` check in
    the DELETE re-reads each row after its lock, so an entry revived meanwhile stays."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.HASHX_TOMBSTONE_RETENTION_DAYS)
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_SQL_PURGE, {"cutoff": cutoff, "limit": limit})
            count, xid, seq = cursor.fetchone()
            if count:
                horizon, _ = FeedHorizon.objects.select_for_update().get_or_create(id=1)
                if Position(int(xid), seq) > Position(horizon.purged_xid, horizon.purged_seq):
                    FeedHorizon.objects.filter(id=1).update(purged_xid=int(xid), purged_seq=seq)
        total += count
        if count < limit:
            return total


def check_cursor(after: Position) -> None:
    """410 when tombstones the holder of ``after`` may not have seen were purged."""
    horizon = FeedHorizon.objects.filter(id=1).first()
    if horizon is not None and after < Position(horizon.purged_xid, horizon.purged_seq):
        raise Problem(
            "cursor-expired",
            f"Tombstones older than {settings.HASHX_TOMBSTONE_RETENTION_DAYS} days were purged"
            " after this cursor: start again from GET /api/v1/sets/{slug}/snapshot.",
        )
