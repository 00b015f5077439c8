"""PDQ near-duplicates at ingest: a new entry within its set's threshold of an entry that
already existed is linked to the nearest one, and the batch counts it (DESIGN.md
"Publishing": dedup, exact and PDQ near-duplicates annotated)."""

from collections.abc import Callable
from typing import Any

from signals.matching.index import View
from signals.matching.mih import parse_hex

_SQL_NEW_PDQ = """
SELECT p.entry_id, g.value
FROM merge_plan p JOIN signals_signal g ON g.id = p.signal_id
WHERE p.entry_state = 'new' AND g.type = 'pdq'
"""

# Any PDQ entry of the set from before this chunk. Merges of a set are serialised and entry
# ids come from one sequence, so every earlier entry of the set has a smaller id than this
# chunk's new ones.
_SQL_HAD_PDQ = """
SELECT 1 FROM signals_setentry e JOIN signals_signal g ON g.id = e.signal_id
WHERE e.hash_set_id = %s AND e.id < %s AND g.type = 'pdq'
LIMIT 1
"""

_SQL_LINK = """
UPDATE signals_setentry e SET near_duplicate_of_id = u.nearest, near_duplicate_distance = u.distance
FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS u(entry_id, nearest, distance)
WHERE e.id = u.entry_id
"""


def nearest_existing(
    view: View, set_id: int, threshold: int, new: list[tuple[int, str]]
) -> dict[int, tuple[int, int]]:
    """For each new (entry id, PDQ value) with an entry of set ``set_id`` in ``view`` within
    ``threshold``: (nearest entry id, distance); ties go to the older entry."""
    best: dict[int, tuple[int, int]] = {}
    if not new:
        return best
    for hit in view.search(parse_hex([value for _, value in new]), threshold):
        entry_id = new[hit.query][0]
        if hit.set_id != set_id or hit.entry_id == entry_id:
            continue
        if entry_id not in best or (hit.distance, hit.entry_id) < best[entry_id][::-1]:
            best[entry_id] = (hit.entry_id, hit.distance)
    return best


def do_link_near_duplicates(
    cursor: Any, view_of: Callable[[], View], set_id: int, threshold: int
) -> int:
    """Link the new PDQ entries of the chunk being merged (``merge_plan``) to their nearest
    existing neighbour in the index ``view_of()`` returns (asked only when there are new PDQ
    entries); returns how many were near-duplicates. Runs inside the
    merge's transaction, which positioned these rows already. Entries of the same chunk are not
    in ``view`` (not committed), so variants within one chunk are not linked to each other."""
    cursor.execute(_SQL_NEW_PDQ)
    new = cursor.fetchall()
    if not new:  # no new PDQ: the index need not even be followed
        return 0
    cursor.execute(_SQL_HAD_PDQ, [set_id, min(entry_id for entry_id, _ in new)])
    if cursor.fetchone() is None:  # the set's first PDQ hashes (a bulk load): nothing to link to
        return 0
    nearest = nearest_existing(view_of(), set_id, threshold, new)
    if nearest:
        ids = list(nearest)
        cursor.execute(_SQL_LINK, [ids, [nearest[i][0] for i in ids], [nearest[i][1] for i in ids]])
    return len(nearest)
