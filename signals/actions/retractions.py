"""Retractions: a member withdraws its contributions to entries of a set; an entry whose last
contribution goes, or that the set's owner removes, becomes a tombstone with a new position
(under the set's lock, like the merge)."""

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from members.models import Organisation
from signals.access import resolve_entries
from signals.feed.locks import lock_set
from signals.feed.positions import NEW_POSITION
from signals.feed.wakeups import wake
from signals.models import WRITE_CONTRIBUTOR, HashSet, SetEntry

# What is retracted is a row: an implied contribution is written as one first.
_SQL_WRITE_CONTRIBUTORS = WRITE_CONTRIBUTOR.format(entries="unnest(%(ids)s::bigint[]) x(entry_id)")

_SQL_RETRACT_CONTRIBUTIONS = """
UPDATE signals_contribution SET retracted_at = %(now)s
WHERE entry_id = ANY(%(ids)s) AND retracted_at IS NULL
  AND (%(owner)s OR organisation_id = %(org)s)
RETURNING entry_id
"""

_LIVE = (
    "SELECT {what} FROM signals_contribution k WHERE k.entry_id = e.id AND k.retracted_at IS NULL"
)
_LIVE_NAMES = (
    "SELECT o.slug FROM signals_contribution k JOIN members_organisation o"
    " ON o.id = k.organisation_id WHERE k.entry_id = e.id AND k.retracted_at IS NULL"
    " ORDER BY o.slug"
)
_SQL_RETRACT_ENTRIES = f"""
UPDATE signals_setentry e SET
    updated_at = %(now)s,
    {NEW_POSITION},
    contributor_count = ({_LIVE.format(what="count(*)")}),
    contributor_names = ARRAY({_LIVE_NAMES}),
    state = CASE WHEN %(owner)s OR NOT EXISTS ({_LIVE.format(what="1")}) THEN 'tombstone'
                 ELSE e.state END
WHERE e.id = ANY(%(ids)s) AND e.state = 'active'
"""  # noqa: S608 - only constants are interpolated


def do_retract(
    hash_set: HashSet, org: Organisation, items: list[Any], *, request: Any = None
) -> dict[str, Any]:
    """Retract ``org``'s contributions to the given entries. An entry whose last contribution
    goes becomes a tombstone; the set owner's retraction tombstones the entry outright."""
    resolved = resolve_entries(hash_set, items)
    entry_ids = sorted(set(resolved.entries.values()))
    now = timezone.now()
    owner = hash_set.owner_id == org.pk
    with transaction.atomic(), connection.cursor() as cursor:
        lock_set(cursor, hash_set.pk)
        params: dict[str, Any] = {"now": now, "ids": entry_ids, "owner": owner, "org": org.pk}
        cursor.execute(_SQL_WRITE_CONTRIBUTORS, params)
        cursor.execute(_SQL_RETRACT_CONTRIBUTIONS, params)
        touched = sorted({row[0] for row in cursor.fetchall()})
        not_contributed = [i for i, e in resolved.entries.items() if e not in touched]
        cursor.execute(_SQL_RETRACT_ENTRIES, {"now": now, "ids": touched, "owner": owner})
        tombstoned = SetEntry.objects.filter(pk__in=touched, state=SetEntry.State.TOMBSTONE).count()
        if touched:
            wake()
        record(
            "signals.retracted",
            obj=hash_set,
            request=request,
            details={"retracted": len(touched), "tombstoned": tombstoned, "by_owner": owner},
        )
    rejections = resolved.rejections + [
        {"index": i, "reason": "your organisation has no active contribution to this entry"}
        for i in not_contributed
    ]
    rejections.sort(key=lambda r: r["index"])
    return {
        "retracted": len(touched),
        "tombstoned": tombstoned,
        "rejected": len(rejections),
        "rejections": rejections,
    }
