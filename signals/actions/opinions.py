"""Opinions: a member's verdict on entries of a set it reads (positive, negative,
investigation_seed, with tags), one per organisation per entry; the entry's opinion counts are
recomputed and it gets a new position when they change (under the set's lock)."""

import json
from typing import Any

from django.db import connection, transaction

from audit.actions import record
from members.models import Organisation
from signals.access import resolve_entries
from signals.feed.locks import lock_set
from signals.feed.positions import NEW_POSITION
from signals.feed.wakeups import wake
from signals.models import HashSet, Opinion
from signals.types import storable

MAX_TAGS = 20

_SQL_OPINIONS = f"""
INSERT INTO signals_opinion (entry_id, organisation_id, category, tags, created_at, updated_at)
SELECT u.entry_id, %(org)s, u.category, ARRAY(SELECT json_array_elements_text(u.tags::json)),
       now(), now()
FROM unnest(%(ids)s::bigint[], %(cats)s::text[], %(tags)s::text[]) AS u(entry_id, category, tags)
ON CONFLICT (entry_id, organisation_id)
DO UPDATE SET category = EXCLUDED.category, tags = EXCLUDED.tags, updated_at = now(),
    {NEW_POSITION}
"""  # noqa: S608 - only constants are interpolated

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
        elif (
            not isinstance(tags, list)
            or len(tags) > MAX_TAGS
            or not all(isinstance(t, str) and 0 < len(t) <= 100 and storable(t) for t in tags)
        ):
            rejections.append(
                {
                    "index": index,
                    "reason": f"tags must be a list of at most {MAX_TAGS} strings of 1 to 100"
                    " characters, without NUL or lone surrogates",
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
