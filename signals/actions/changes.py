"""Changes to entries after publishing: retractions, opinions, expiry. Each changed entry gets
a new position, under the set's lock like the merge."""

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from members.models import Organisation
from signals.actions.merge import lock_set
from signals.actions.positions import NEW_POSITION
from signals.actions.webhooks import wake
from signals.models import HashSet, Opinion, SetEntry
from signals.types import SIGNAL_TYPES, SignalTypeError, storable

MAX_ITEMS = 10_000

_SQL_RESOLVE = """
SELECT g.type, g.value, e.id
FROM signals_setentry e
JOIN signals_signal g ON g.id = e.signal_id
JOIN unnest(%s::text[], %s::text[]) AS q(type, value) ON g.type = q.type AND g.value = q.value
WHERE e.hash_set_id = %s
"""

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

_SQL_OPINIONS = """
INSERT INTO signals_opinion (entry_id, organisation_id, category, tags, created_at, updated_at)
SELECT u.entry_id, %(org)s, u.category, ARRAY(SELECT json_array_elements_text(u.tags::json)),
       now(), now()
FROM unnest(%(ids)s::bigint[], %(cats)s::text[], %(tags)s::text[]) AS u(entry_id, category, tags)
ON CONFLICT (entry_id, organisation_id)
DO UPDATE SET category = EXCLUDED.category, tags = EXCLUDED.tags, updated_at = now()
"""

_SQL_OPINION_COUNTS = f"""
UPDATE signals_setentry e SET
    {NEW_POSITION},
    updated_at = now(),
    positive_count = c.positive,
    negative_count = c.negative,
    investigation_count = c.investigation
FROM (
    SELECT entry_id,
           count(*) FILTER (WHERE category = 'positive') AS positive,
           count(*) FILTER (WHERE category = 'negative') AS negative,
           count(*) FILTER (WHERE category = 'investigation_seed') AS investigation
    FROM signals_opinion WHERE entry_id = ANY(%(ids)s) GROUP BY entry_id
) c
WHERE e.id = c.entry_id
  AND (e.positive_count, e.negative_count, e.investigation_count)
      IS DISTINCT FROM (c.positive, c.negative, c.investigation)
"""  # noqa: S608 - only constants are interpolated

_SQL_EXPIRE = f"""
UPDATE signals_setentry SET state = 'tombstone', updated_at = %(now)s, {NEW_POSITION}
WHERE id IN (
    SELECT id FROM signals_setentry
    WHERE hash_set_id = %(set)s AND state = 'active' AND expires_at <= %(now)s
    ORDER BY id LIMIT %(limit)s
)
"""  # noqa: S608 - only constants are interpolated


@dataclass
class Resolved:
    """Items resolved to entry ids of one set, with a reason for each one that was not."""

    entries: dict[int, int] = field(default_factory=dict)  # item index -> entry id
    rejections: list[dict[str, Any]] = field(default_factory=list)


def resolve_entries(hash_set: HashSet, items: list[Any]) -> Resolved:
    """Items are ``{"entry": id}`` or ``{"type": …, "value": …}``: one query for all of them."""
    resolved = Resolved()
    by_value: dict[tuple[str, str], list[int]] = {}
    by_id: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            resolved.rejections.append({"index": index, "reason": "expected an object"})
        elif isinstance(item.get("entry"), int) and not isinstance(item.get("entry"), bool):
            if not 0 < item["entry"] < 2**63:
                resolved.rejections.append({"index": index, "reason": "not in this set"})
                continue
            by_id.setdefault(item["entry"], []).append(index)
        elif isinstance(item.get("type"), str) and isinstance(item.get("value"), str):
            signal_type = SIGNAL_TYPES.get(item["type"])
            try:
                if signal_type is None:
                    raise SignalTypeError(f"unknown signal type {item['type']!r:.40}")
                # A lookup, not a publish: a value warninglisted since is still found.
                key = (item["type"], signal_type.canonical(item["value"]))
            except SignalTypeError as exc:
                resolved.rejections.append({"index": index, "reason": str(exc)})
                continue
            by_value.setdefault(key, []).append(index)
        else:
            resolved.rejections.append({"index": index, "reason": "give entry, or type and value"})
    found: dict[Any, int] = {}
    if by_id:
        for entry_id in SetEntry.objects.filter(hash_set=hash_set, pk__in=by_id).values_list(
            "pk", flat=True
        ):
            found[entry_id] = entry_id
    if by_value:
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL_RESOLVE, [[k[0] for k in by_value], [k[1] for k in by_value], hash_set.pk]
            )
            for kind, value, entry_id in cursor.fetchall():
                found[(kind, value)] = entry_id
    pending: list[tuple[Any, list[int]]] = [*by_id.items(), *by_value.items()]
    for key, indexes in pending:
        for index in indexes:
            if key in found:
                resolved.entries[index] = found[key]
            else:
                resolved.rejections.append({"index": index, "reason": "not in this set"})
    resolved.rejections.sort(key=lambda r: r["index"])
    return resolved


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


def do_give_opinions(
    hash_set: HashSet, org: Organisation, items: list[Any], *, request: Any = None
) -> dict[str, Any]:
    """One opinion per organisation per entry (the last one given counts); the entry's opinion
    counts are recomputed and it gets a new position when they change."""
    categories = {c.value for c in Opinion.Category}
    valid: list[tuple[int, dict[str, Any]]] = []
    rejections: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        category = item.get("category") if isinstance(item, dict) else None
        tags = item.get("tags", []) if isinstance(item, dict) else []
        if not isinstance(category, str) or category not in categories:
            rejections.append(
                {
                    "index": index,
                    "reason": f"category must be one of {', '.join(sorted(categories))}",
                }
            )
        elif not isinstance(tags, list) or not all(
            isinstance(t, str) and 0 < len(t) <= 100 and storable(t) for t in tags
        ):
            rejections.append(
                {
                    "index": index,
                    "reason": "tags must be a list of strings of 1 to 100 characters, without NUL"
                    " or lone surrogates",
                }
            )
        else:
            valid.append((index, item))
    resolved = resolve_entries(hash_set, [item for _, item in valid])
    rejections += [{**r, "index": valid[r["index"]][0]} for r in resolved.rejections]
    chosen: dict[int, dict[str, Any]] = {}
    for position, entry_id in resolved.entries.items():
        chosen[entry_id] = valid[position][1]
    ids = sorted(chosen)
    with transaction.atomic(), connection.cursor() as cursor:
        lock_set(cursor, hash_set.pk)
        tags = [json.dumps(chosen[i].get("tags", [])) for i in ids]
        cats = [chosen[i]["category"] for i in ids]
        cursor.execute(_SQL_OPINIONS, {"org": org.pk, "ids": ids, "cats": cats, "tags": tags})
        cursor.execute(_SQL_OPINION_COUNTS, {"ids": ids})
        changed = cursor.rowcount
        if changed:
            wake()
        record(
            "signals.opinions.given",
            obj=hash_set,
            request=request,
            details={"opinions": len(ids), "changed_entries": changed},
        )
    rejections.sort(key=lambda r: r["index"])
    return {"accepted": len(ids), "rejected": len(rejections), "rejections": rejections}


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
