"""The merge: a worker moves a staged batch into signals, entries and contributions.

Set-based SQL, one chunk of staged lines per transaction: a crash rolls back the chunk being
merged and the next worker resumes at ``batch.merged``, so every line is merged exactly once.
Merges into one set are serialised by a transaction-scoped advisory lock on the set (entry
counters are read-modify-write); sets merge in parallel.
"""

from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from signals.actions.neardup import do_link_near_duplicates
from signals.actions.positions import NEW_POSITION
from signals.actions.webhooks import wake
from signals.matching.index import View, shared_index
from signals.models import Batch

CHUNK = 100_000
# pg_advisory_xact_lock(SET_LOCK, set id): one writer of a set's entries at a time.
SET_LOCK = 0x6878_5E7


def lock_set(cursor: Any, set_id: int) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SET_LOCK, set_id])


_SQL_SIGNALS = """
INSERT INTO signals_signal (type, value)
SELECT type, value FROM signals_stagedsignal
WHERE batch_id = %(batch)s AND line >= %(lo)s AND line < %(hi)s
ORDER BY type, value
ON CONFLICT (type, value) DO NOTHING
"""

# One row per distinct signal of the chunk (the first line wins), then the set's entry and this
# organisation's contribution as they are now. Two steps, each analysed: the planner knows
# nothing of freshly staged rows, and a one-row guess turns the entry join into a scan per row.
_SQL_PLAN = """
DROP TABLE IF EXISTS merge_chunk, merge_plan;
CREATE TEMP TABLE merge_chunk ON COMMIT DROP AS
SELECT DISTINCT ON (g.id) g.id AS signal_id, s.labels, s.quality, s.expires_at
FROM signals_stagedsignal s JOIN signals_signal g ON g.type = s.type AND g.value = s.value
WHERE s.batch_id = %(batch)s AND s.line >= %(lo)s AND s.line < %(hi)s
ORDER BY g.id, s.line;
ANALYZE merge_chunk;
CREATE TEMP TABLE merge_plan ON COMMIT DROP AS
SELECT c.signal_id, c.labels, c.quality, c.expires_at,
       e.id AS entry_id, e.state AS entry_state,
       k.id AS contribution_id, k.labels AS old_labels, k.retracted_at AS old_retracted,
       k.last_seen AS old_last_seen
FROM merge_chunk c
LEFT JOIN signals_setentry e ON e.hash_set_id = %(set)s AND e.signal_id = c.signal_id
LEFT JOIN signals_contribution k ON k.entry_id = e.id AND k.organisation_id = %(org)s;
ANALYZE merge_plan;
"""

_SQL_NEW_ENTRIES = """
WITH inserted AS (
    INSERT INTO signals_setentry (hash_set_id, signal_id, state, labels, quality, contributor_count,
        contributor_names, positive_count, negative_count, investigation_count, first_seen,
        updated_at, expires_at)
    SELECT %(set)s, signal_id, 'active', labels, quality, 1, ARRAY[%(org_slug)s::varchar], 0, 0, 0,
        %(now)s, %(now)s, expires_at
    FROM merge_plan WHERE entry_id IS NULL ORDER BY signal_id
    RETURNING id, signal_id
)
UPDATE merge_plan p SET entry_id = inserted.id, entry_state = 'new'
FROM inserted WHERE p.signal_id = inserted.signal_id
"""

_SQL_CHANGED_ENTRIES = f"""
UPDATE signals_setentry e SET
    contributor_count = e.contributor_count + p.added,
    contributor_names = CASE WHEN p.added = 1 THEN ARRAY(
        SELECT DISTINCT x FROM unnest(array_append(e.contributor_names, %(org_slug)s::varchar)) x
        ORDER BY x) ELSE e.contributor_names END,
    labels = ARRAY(SELECT DISTINCT x FROM unnest(e.labels || p.labels) x ORDER BY x),
    state = 'active',
    expires_at = CASE WHEN p.expires_at IS NULL OR e.expires_at IS NULL THEN NULL
                      ELSE greatest(e.expires_at, p.expires_at) END,
    updated_at = %(now)s,
    {NEW_POSITION}
FROM (
    SELECT entry_id, labels, expires_at,
           CASE WHEN contribution_id IS NULL OR old_retracted IS NOT NULL THEN 1 ELSE 0 END AS added
    FROM merge_plan WHERE entry_state <> 'new' ORDER BY entry_id
) p
WHERE e.id = p.entry_id AND (
    p.added = 1 OR e.state <> 'active' OR NOT e.labels @> p.labels
    OR e.expires_at IS DISTINCT FROM (
        CASE WHEN p.expires_at IS NULL OR e.expires_at IS NULL THEN NULL
             ELSE greatest(e.expires_at, p.expires_at) END
    )
)
"""  # noqa: S608 - only constants are interpolated

_SQL_NEW_CONTRIBUTIONS = """
INSERT INTO signals_contribution
    (entry_id, organisation_id, labels, first_seen, last_seen, retracted_at)
SELECT entry_id, %(org)s, labels, %(now)s, %(now)s, NULL
FROM merge_plan WHERE contribution_id IS NULL ORDER BY entry_id
"""

# Revived, relabelled, or last seen more than a day ago (re-publishing the same list daily
# refreshes last_seen without rewriting a million rows on every retry).
_SQL_CHANGED_CONTRIBUTIONS = """
UPDATE signals_contribution k SET
    labels = ARRAY(SELECT DISTINCT x FROM unnest(k.labels || p.labels) x ORDER BY x),
    retracted_at = NULL,
    last_seen = %(now)s
FROM merge_plan p
WHERE k.id = p.contribution_id AND (
    p.old_retracted IS NOT NULL OR NOT p.old_labels @> p.labels
    OR p.old_last_seen < %(now)s - interval '1 day'
)
"""

_SQL_DONE = """
DELETE FROM signals_stagedsignal WHERE batch_id = %(batch)s AND line >= %(lo)s AND line < %(hi)s
"""


def _fresh_view() -> View:
    """The match index followed to the end of the feed (everything committed before)."""
    return shared_index().view(max_age=0)


def _merge_chunk(
    cursor: Any, batch: Batch, lo: int, hi: int, near_duplicates: bool
) -> tuple[int, int, int]:
    """Merge staged lines [lo, hi); returns (new entries, updated entries, near-duplicates)."""
    params = {"batch": str(batch.pk), "lo": lo, "hi": hi, "set": batch.hash_set_id,
              "org": batch.organisation_id, "org_slug": batch.organisation.slug,
              "now": timezone.now()}  # fmt: skip
    cursor.execute(_SQL_SIGNALS, params)
    cursor.execute(_SQL_PLAN, params)
    cursor.execute(_SQL_NEW_ENTRIES, params)
    new = cursor.rowcount
    near = 0
    if near_duplicates and new:
        threshold = batch.hash_set.pdq_threshold
        near = do_link_near_duplicates(cursor, _fresh_view, batch.hash_set_id, threshold)
    cursor.execute(_SQL_CHANGED_ENTRIES, params)
    updated = cursor.rowcount
    cursor.execute(_SQL_NEW_CONTRIBUTIONS, params)
    cursor.execute(_SQL_CHANGED_CONTRIBUTIONS, params)
    cursor.execute(_SQL_DONE, params)
    return new, updated, near


def do_merge_batch(batch_id: str, chunk: int = CHUNK) -> Batch | None:
    """Merge a staged batch to the end, chunk by chunk; idempotent, resumable, exactly once.

    Locks per chunk: the batch row (``FOR UPDATE SKIP LOCKED``: a second worker on the same
    batch steps aside) and the set's advisory lock. New entries are positioned by their INSERT,
    changed ones by the UPDATE; duplicates keep their position (a re-publish is no change).
    Emits a webhook dispatch wake-up when a chunk changed entries.
    New PDQ entries are linked to their nearest existing neighbour (signals.actions.neardup),
    found in the match index, followed to the feed's end when a chunk has new PDQ entries
    (unless ``HASHX_MATCH_NEAR_DUPLICATES`` is off).
    """
    while True:
        with transaction.atomic():
            batch = (
                Batch.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("hash_set", "organisation")
                .filter(pk=batch_id, state__in=[Batch.State.QUEUED, Batch.State.MERGING])
                .first()
            )
            if batch is None:
                return Batch.objects.filter(pk=batch_id).first()
            with connection.cursor() as cursor:
                lock_set(cursor, batch.hash_set_id)
                lo, hi = batch.merged, min(batch.merged + chunk, batch.accepted)
                new, updated, near = _merge_chunk(
                    cursor, batch, lo, hi, settings.HASHX_MATCH_NEAR_DUPLICATES
                )
            if new or updated:
                wake()
            batch.merged = hi
            batch.new += new
            batch.updated += updated
            batch.near_duplicates += near
            batch.duplicate += (hi - lo) - new - updated
            batch.state = Batch.State.DONE if hi >= batch.accepted else Batch.State.MERGING
            if batch.state == Batch.State.DONE:
                batch.finished_at = timezone.now()
                record(
                    "signals.batch.merged",
                    obj=batch,
                    actor_org=batch.organisation_id,
                    owner_org=batch.hash_set.owner_id,
                    details={"set": batch.hash_set.slug, "new": batch.new, "updated": batch.updated,
                             "duplicate": batch.duplicate},
                )  # fmt: skip
            batch.save(
                update_fields=[
                    "merged",
                    "new",
                    "updated",
                    "duplicate",
                    "near_duplicates",
                    "state",
                    "finished_at",
                ]
            )
        if batch.state == Batch.State.DONE:
            return batch
