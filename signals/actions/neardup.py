"""PDQ near-duplicates at ingest: a new entry within its set's threshold of an older entry of
the set is linked to the nearest one, and its batch counts it (DESIGN.md "Publishing": dedup,
exact and PDQ near-duplicates annotated).

It runs after the merge, as its own task, so that searching the match index is not on the
merge's path: the merge keeps the id ranges of each chunk's new PDQ entries in
``batch.link_ranges``, and ``do_link_batch`` works through them, a range per transaction. A
linked entry gets a new position (its ``near_duplicate_of`` is a change like any other). "Older"
is by entry id: an entry is linked to entries merged before it, in earlier batches or earlier in
its own. A batch that brings a set its first PDQ hashes (a bulk load) is not searched.

Videos (``vpdq``) too: a new video is linked to the older video of its set that it matches as
a query would (``signals.actions.match.video_matches``, the set's thresholds), the one with the
most of its frames matched (then of the other's, then the nearest frame, then the oldest), so a
re-encoded copy is linked to its original.
"""

from collections.abc import Callable

from django.db import connection, transaction

from signals.actions.match import Query, video_frames, video_matches
from signals.feed.locks import advisory_key, held_keys, in_part, lock_set
from signals.feed.positions import NEW_POSITION
from signals.matching.index import View, shared_index
from signals.matching.mih import parse_hex
from signals.models import Batch, HashSet

# Queries per index search: bounds the memory of one search.
SEARCH_SLICE = 20_000

# A chunk's new entries: the set's part is locked while a chunk merges, so the set's entries of
# that part with ids in the chunk's range are the chunk's.
_SQL_RANGE = """
SELECT e.id, e.value, e.type
FROM signals_setentry e
WHERE e.id BETWEEN %s AND %s AND e.hash_set_id = %s AND e.type IN ('pdq', 'vpdq') AND {part}
ORDER BY e.id
"""

_SQL_HAD_PDQ = """
SELECT 1 FROM signals_setentry e
WHERE e.hash_set_id = %s AND e.id < %s AND e.type IN ('pdq', 'vpdq')
LIMIT 1
"""

# The newest transaction that wrote one of the batch's entries (or moved one since).
_SQL_NEWEST = """
SELECT max(position_xid)::text FROM signals_setentry
WHERE hash_set_id = %s AND id BETWEEN %s AND %s
"""

_SQL_LINK = f"""
UPDATE signals_setentry e SET near_duplicate_of_id = u.nearest,
    near_duplicate_distance = u.distance, updated_at = now(), {NEW_POSITION}
FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS u(entry_id, nearest, distance)
WHERE e.id = u.entry_id
"""  # noqa: S608 - only constants are interpolated


def nearest_older(
    view: View, set_id: int, threshold: int, new: list[tuple[int, str]]
) -> dict[int, tuple[int, int]]:
    """For each (entry id, PDQ value) with an older entry of set ``set_id`` in ``view`` within
    ``threshold``: (nearest entry id, distance); ties go to the older entry."""
    best: dict[int, tuple[int, int]] = {}
    for start in range(0, len(new), SEARCH_SLICE):
        part = new[start : start + SEARCH_SLICE]
        for hit in view.search(parse_hex([value for _, value in part]), threshold):
            entry_id = part[hit.query][0]
            if hit.set_id != set_id or hit.entry_id >= entry_id:
                continue
            if entry_id not in best or (hit.distance, hit.entry_id) < best[entry_id][::-1]:
                best[entry_id] = (hit.entry_id, hit.distance)
    return best


def nearest_older_videos(
    view: View, hash_set: HashSet, threshold: int, new: list[tuple[int, str]]
) -> dict[int, tuple[int, int]]:
    """For each (entry id, vPDQ value) that matches an older video of ``hash_set`` in
    ``view``: (that entry id, its nearest frame distance), the best match first by the share
    of the new video's frames matched, then of the older one's, then distance, then age."""
    best: dict[int, tuple[int, int]] = {}
    for start in range(0, len(new), SEARCH_SLICE // 100):
        part = new[start : start + SEARCH_SLICE // 100]
        queries = [Query("vpdq", value, frozenset({hash_set.pk}), threshold) for _, value in part]
        found = video_matches(view, queries, {hash_set.pk: hash_set}, video_frames)
        for (entry_id, _), matches in zip(part, found, strict=True):
            older = [m for m in matches if m.entry_id < entry_id]
            if older:
                m = min(older, key=lambda m: (-(m.query_match_percent or 0),
                                              -(m.compared_match_percent or 0),
                                              m.distance, m.entry_id))  # fmt: skip
                best[entry_id] = (m.entry_id, m.distance)
    return best


def _fresh_view() -> View:
    """The match index followed to the end of the feed (the batch's entries included)."""
    return shared_index().view(max_age=0)


def link_key(batch_id: str) -> int:
    """The session advisory lock key held while linking the batch."""
    return advisory_key(f"link:{batch_id}")


def do_link_batch(batch_id: str, view_of: Callable[[], View] = _fresh_view) -> Batch | None:
    """Link the batch's new PDQ entries to their nearest older neighbour (``_link_batch``).

    Locks: a session-level try-lock on the batch (``link_key``) for the whole run: a second
    caller (the batch queued again) returns at once instead of searching the same range, and
    ``stalled_links`` knows a live run by it. Per range, the batch row and every slot of its set
    (``lock_set``) while its links are written."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [link_key(batch_id)])
        if not cursor.fetchone()[0]:
            return Batch.objects.filter(pk=batch_id).first()  # another worker is on it
    try:
        return _link_batch(batch_id, view_of)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [link_key(batch_id)])


def _link_batch(batch_id: str, view_of: Callable[[], View]) -> Batch | None:
    """Link the batch's new PDQ entries (``batch.link_ranges``) to their nearest older
    neighbour; idempotent and resumable: a range is dropped from the batch in the transaction
    that links it. The search runs outside any transaction (an open one would hold back every
    reader's feed horizon), and what it found is applied only if the range is still the batch's
    next one (a second worker on the same batch may have done it). One view of the index serves
    every range: taken after the merge, it holds all of the batch's entries, and following the
    feed again after each range (whose links move entries) would rebuild its delta each time.

    The view holds only what is below the visible horizon: while a transaction older than the
    batch's last merge chunk is still open, the batch's own entries are not in it yet, and
    variants within the batch would go unlinked for good. Then nothing is searched or dropped:
    the ranges wait for beat's ``resume_batches`` to queue the batch again. (The test is against
    the newest of the batch's entries, a fixed mark the horizon passes once the transactions
    older than it end, so continuous ingest elsewhere never keeps a batch waiting.)"""
    view: View | None = None
    while True:
        batch = Batch.objects.select_related("hash_set").filter(pk=batch_id).first()
        if batch is None or batch.state != Batch.State.DONE or not batch.link_ranges:
            return batch
        todo = min(batch.link_ranges)  # the oldest entries first
        first, last, part = todo
        parts = len(batch.parts_merged)
        with connection.cursor() as cursor:
            cursor.execute(_SQL_HAD_PDQ, [batch.hash_set_id, first])
            first_load = cursor.fetchone() is None
            nearest: dict[int, tuple[int, int]] = {}
            if not first_load:
                where = in_part("e.value", parts, part)
                cursor.execute(_SQL_RANGE.format(part=where), [first, last, batch.hash_set_id])
                new = cursor.fetchall()
                threshold = batch.hash_set.pdq_threshold
                if view is None:
                    span = [r for ranges in batch.link_ranges for r in ranges[:2]]
                    cursor.execute(_SQL_NEWEST, [batch.hash_set_id, min(span), max(span)])
                    newest = int(cursor.fetchone()[0] or 0)
                    view = view_of()
                    if view.position.xid <= newest:
                        return batch  # some of the batch's entries are not in the view: later
                images = [(i, value) for i, value, kind in new if kind == "pdq"]
                videos = [(i, value) for i, value, kind in new if kind == "vpdq"]
                nearest = nearest_older(view, batch.hash_set_id, threshold, images)
                if videos:
                    nearest |= nearest_older_videos(view, batch.hash_set, threshold, videos)
        with transaction.atomic():
            locked = Batch.objects.select_for_update(of=("self",)).filter(pk=batch_id).first()
            if locked is None or todo not in locked.link_ranges:
                continue
            if nearest:
                ids = sorted(nearest)
                with connection.cursor() as cursor:
                    lock_set(cursor, batch.hash_set_id)
                    cursor.execute(
                        _SQL_LINK, [ids, [nearest[i][0] for i in ids], [nearest[i][1] for i in ids]]
                    )
            locked.near_duplicates += len(nearest)
            # A batch that brings the set its first PDQ hashes is a bulk load: not searched.
            locked.link_ranges = [] if first_load else [r for r in locked.link_ranges if r != todo]
            locked.save(update_fields=["near_duplicates", "link_ranges"])


def stalled_links(limit: int = 100) -> list[str]:
    """The merged batches with ranges left to link that no live session is linking (no one holds
    their ``link_key``): their task waits in the queue, or their worker died, or the view was
    not yet past their entries. Beat queues each again unless a copy already waits."""
    pending = [
        str(pk)
        for pk in Batch.objects.filter(state=Batch.State.DONE)
        .exclude(link_ranges=[])
        .values_list("pk", flat=True)[:limit]
    ]
    with connection.cursor() as cursor:
        held = held_keys(cursor, [link_key(pk) for pk in pending])
    return [pk for pk in pending if link_key(pk) not in held]
