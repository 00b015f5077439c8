"""The merge: a worker moves a staged batch into entries and contributions.

Set-based SQL, one chunk of staged lines per transaction: a crash rolls back the chunk being
merged and the next worker resumes where the batch says it stopped, so every line is merged
exactly once. Staging is UNLOGGED (``signals.models.StagedSignal``): a batch whose staged lines
a PostgreSQL crash took is failed as such, and its Idempotency-Key freed for the client to send
it again.

A batch is merged in ``len(batch.parts_merged)`` parts (``HASHX_MERGE_PARTS`` when it was
published), each a slice of the value space (by the first byte of the value's MD5), merged in
parallel on its own connection and keeping its own progress. Parts never share a value, so
they never share an entry or a contribution. A part holds the (set, slot) locks of
its values (``signals.feed.locks``) while it writes the set's entries.
"""

import contextvars
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.actions import record
from exchange import metrics
from exchange.enqueue import enqueue_on_commit
from signals.feed.locks import advisory_key, held_keys, in_part, lock_slots, part_slots
from signals.feed.positions import NEW_POSITION
from signals.feed.wakeups import wake
from signals.models import ENTRY_CONFLICT, WRITE_CONTRIBUTOR, Batch, entry_lookup

CHUNK = 100_000


# Hash and merge joins would read a whole table (every entry) for a chunk of 100,000 rows;
# every join of the merge is "a chunk row probes an index", so nested loops are forced. The
# chunk is sorted by (type, value) for DISTINCT ON and in memory. Nor may a join materialize a
# set's entries: for a set the statistics still think empty (its first large batch), the
# planner read them all into memory and filtered them once per chunk row (a chunk of 100,000
# into a set of 100,000 ran for ten minutes); the entry is probed by (type, key) and its set
# compared (``entry_lookup``: on the set alone the planner took the (set, position) index). For
# every writer that joins a chunk of rows to a set's entries (the mirror of a peer's set too:
# federation.actions.apply), for the rest of its transaction.
PROBE_ONLY = """
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_mergejoin = off;
SET LOCAL enable_material = off;
"""
_SQL_SETUP = PROBE_ONLY + "SET LOCAL work_mem = '128MB';"

# The chunk: one row per distinct signal (the first line wins), with what exists of it (this
# set's entry, this organisation's contribution) probed in one pass (one probe of the entries'
# unique index per line), and ids drawn for new entries, so the inserts below need neither
# RETURNING nor a join. The organisation's contribution is the entry's implied one
# (``SetEntry.contributor``, no row to probe for) or its row; ``contributed`` says it has
# either.
_SQL_CHUNK = f"""
DROP TABLE IF EXISTS merge_chunk;
CREATE TEMP TABLE merge_chunk ON COMMIT DROP AS
SELECT s.type, s.value, s.labels, s.quality, s.expires_at,
       e.id IS NULL AS new_entry,
       CASE WHEN e.id IS NULL THEN nextval(%(entry_seq)s::regclass) ELSE e.id END AS entry_id,
       e.state AS entry_state, e.labels AS entry_labels, e.expires_at AS entry_expires_at,
       e.contributor_id AS implied,
       k.id IS NOT NULL OR e.contributor_id IS NOT DISTINCT FROM %(org)s AS contributed,
       CASE WHEN k.id IS NULL THEN e.labels ELSE k.labels END AS old_labels,
       k.retracted_at AS old_retracted,
       CASE WHEN k.id IS NULL THEN e.first_seen ELSE k.last_seen END AS old_last_seen
FROM (
    SELECT DISTINCT ON (type, value) type, value, labels, quality, expires_at
    FROM signals_stagedsignal
    WHERE batch_id = %(batch)s AND line >= %(lo)s AND line < %(hi)s AND {{part}}
    ORDER BY type, value, line
) s
LEFT JOIN signals_setentry e ON {entry_lookup("e", "s.type", "s.value", "= %(set)s")}
-- No probe (a NULL key) where the contribution is the entry's implied one.
LEFT JOIN signals_contribution k ON k.organisation_id = %(org)s
    AND k.entry_id = CASE WHEN e.contributor_id = %(org)s THEN NULL ELSE e.id END
ORDER BY s.type, s.value
"""  # noqa: S608 - only constants are interpolated

# The set is locked and its entries were probed under the lock: none of these exists, unless two
# long values of the chunk, or one and an entry's, share an MD5 (only a forged pair does):
# then _SQL_NEW_ENTRIES_COLLIDED. The organisation's contribution is implied (``contributor``),
# not a row.
_SQL_NEW_ENTRIES = """
INSERT INTO signals_setentry (id, hash_set_id, type, value, state, labels, quality,
    contributor_count, contributor_names, contributor_id, positive_count, negative_count,
    investigation_count, first_seen, updated_at, expires_at)
SELECT entry_id, %(set)s, type, value, 'active', labels, quality, 1,
    ARRAY[%(org_slug)s::varchar], %(org)s, 0, 0, 0, %(now)s, %(now)s, expires_at
FROM merge_chunk WHERE new_entry ORDER BY entry_id
"""

# A value whose key (its MD5) another value of its type in the set already holds is dropped
# from the chunk (counted a duplicate), never taken for that other value.
_SQL_NEW_ENTRIES_COLLIDED = f"""
{_SQL_NEW_ENTRIES} ON CONFLICT {ENTRY_CONFLICT} DO NOTHING;
DELETE FROM merge_chunk c
WHERE c.new_entry AND NOT EXISTS (SELECT 1 FROM signals_setentry e WHERE e.id = c.entry_id);
"""  # noqa: S608 - only constants are interpolated

# When the organisation's contribution changes: revived, relabelled, or last seen more than a
# day ago (re-publishing the same list daily refreshes last_seen without rewriting a million rows
# on every retry).
_CONTRIBUTION_CHANGES = """(
    old_retracted IS NOT NULL OR NOT old_labels @> labels
    OR old_last_seen < %(now)s - interval '1 day'
)"""

# An implied contribution becomes a row before another organisation contributes to its entry
# or before it changes itself.
_CONTRIBUTORS_TO_WRITE = f"""(
    SELECT entry_id FROM merge_chunk
    WHERE implied IS NOT NULL AND (implied <> %(org)s OR {_CONTRIBUTION_CHANGES})
) x"""  # noqa: S608 - only constants are interpolated
_SQL_WRITE_CONTRIBUTORS = WRITE_CONTRIBUTOR.format(entries=_CONTRIBUTORS_TO_WRITE)

# What the statements below have to write, read in one pass over the chunk so that those with
# nothing to write are not run (a chunk of duplicates scanned it once per statement for
# nothing): new entries (and the id range of the new PDQ ones), and whether any
# existing entry may change: a superset of the rows of _SQL_WRITE_CONTRIBUTORS,
# _SQL_CHANGED_ENTRIES, _SQL_NEW_CONTRIBUTIONS and _SQL_CHANGED_CONTRIBUTIONS (an entry that
# expires at all may get a later expiry).
_SQL_SUMMARY = f"""
SELECT bool_or(new_entry),
    min(entry_id) FILTER (WHERE new_entry AND type IN ('pdq', 'vpdq')),
    max(entry_id) FILTER (WHERE new_entry AND type IN ('pdq', 'vpdq')),
    coalesce(bool_or(NOT new_entry AND (
        NOT contributed OR implied <> %(org)s OR {_CONTRIBUTION_CHANGES}
        OR entry_state <> 'active' OR NOT entry_labels @> labels OR entry_expires_at IS NOT NULL
    )), false)
FROM merge_chunk
"""  # noqa: S608 - only constants are interpolated

# Only entries that change: a new contributor (or one back from a retraction), a revival, new
# labels or a later expiry. The set is locked, so the entry is as the chunk probed it.
_SQL_CHANGED_ENTRIES = f"""
UPDATE signals_setentry e SET
    contributor_count = e.contributor_count + p.added,
    contributor_names = CASE WHEN p.added = 1 THEN ARRAY(
        SELECT DISTINCT x FROM unnest(array_append(e.contributor_names, %(org_slug)s::varchar)) x
        ORDER BY x) ELSE e.contributor_names END,
    labels = ARRAY(SELECT DISTINCT x FROM unnest(e.labels || p.labels) x ORDER BY x),
    state = 'active',
    expires_at = p.expires_at,
    updated_at = %(now)s,
    {NEW_POSITION}
FROM (
    SELECT entry_id, labels, added, expires_at
    FROM (
        SELECT entry_id, labels, entry_state, entry_labels, entry_expires_at,
               CASE WHEN NOT contributed OR old_retracted IS NOT NULL THEN 1 ELSE 0
               END AS added,
               CASE WHEN expires_at IS NULL OR entry_expires_at IS NULL THEN NULL
                    ELSE greatest(expires_at, entry_expires_at) END AS expires_at
        FROM merge_chunk WHERE NOT new_entry
    ) c
    WHERE added = 1 OR entry_state <> 'active' OR NOT entry_labels @> labels
        OR entry_expires_at IS DISTINCT FROM expires_at
    ORDER BY entry_id
) p
WHERE e.id = p.entry_id
"""  # noqa: S608 - only constants are interpolated

# A contribution to an existing entry (a new entry's is implied).
_SQL_NEW_CONTRIBUTIONS = """
INSERT INTO signals_contribution
    (entry_id, organisation_id, labels, first_seen, last_seen, retracted_at)
SELECT entry_id, %(org)s, labels, %(now)s, %(now)s, NULL
FROM merge_chunk WHERE NOT new_entry AND NOT contributed ORDER BY entry_id
"""

# By then a row, written by _SQL_WRITE_CONTRIBUTORS if it was implied.
_SQL_CHANGED_CONTRIBUTIONS = f"""
UPDATE signals_contribution k SET
    labels = ARRAY(SELECT DISTINCT x FROM unnest(k.labels || p.labels) x ORDER BY x),
    retracted_at = NULL,
    last_seen = %(now)s
FROM (SELECT entry_id, labels FROM merge_chunk
      WHERE contributed AND NOT new_entry AND {_CONTRIBUTION_CHANGES}) p
WHERE k.entry_id = p.entry_id AND k.organisation_id = %(org)s
"""  # noqa: S608 - only constants are interpolated

# Still staged: a crash of PostgreSQL empties the UNLOGGED staging tables (signals.models).
_SQL_STAGED = "SELECT 1 FROM signals_stagedbatch WHERE batch_id = %s"

STAGING_LOST = (
    "its staged signals were lost when PostgreSQL restarted after a crash, before they were"
    " merged: publish them again (the batch's Idempotency-Key is free for that)"
)

_SQL_DONE = """
DELETE FROM signals_stagedsignal
WHERE batch_id = %(batch)s AND line >= %(lo)s AND line < %(hi)s AND {part}
"""


_SEQUENCES: dict[str, str] | None = None


def _sequences(cursor: Any) -> dict[str, str]:
    """The id sequence the chunk draws from (looked up once per process)."""
    global _SEQUENCES
    sequences = _SEQUENCES
    if sequences is None:
        cursor.execute("SELECT pg_get_serial_sequence('signals_setentry', 'id')")
        # Built whole, then published in one assignment: part threads look it up at the same
        # time, and one must never see it half filled.
        sequences = _SEQUENCES = {"entry_seq": cursor.fetchone()[0]}
    return sequences


def _insert_new_entries(cursor: Any, params: dict[str, Any]) -> int:
    """Insert the chunk's new entries; returns how many."""
    cursor.execute("SAVEPOINT merge_entries")
    try:
        cursor.execute(_SQL_NEW_ENTRIES, params)
        new = cursor.rowcount
    except IntegrityError:
        cursor.execute("ROLLBACK TO SAVEPOINT merge_entries")
        cursor.execute(_SQL_NEW_ENTRIES_COLLIDED, params)
        cursor.execute("SELECT count(*) FROM merge_chunk WHERE new_entry")
        new = cursor.fetchone()[0]
    cursor.execute("RELEASE SAVEPOINT merge_entries")
    return new


def _merge_chunk(
    cursor: Any, batch: Batch, part: int, lo: int, hi: int
) -> tuple[int, int, int, list[int] | None]:
    """Merge the staged lines [lo, hi) of ``part``; returns (lines, new entries, updated
    entries, the id range of the new PDQ entries or None)."""
    params = {"batch": str(batch.pk), "lo": lo, "hi": hi, "set": batch.hash_set_id,
              "org": batch.organisation_id, "org_slug": batch.organisation.slug,
              "now": timezone.now(), **_sequences(cursor)}  # fmt: skip
    where = in_part("value", len(batch.parts_merged), part)
    cursor.execute(_SQL_SETUP)
    cursor.execute(_SQL_CHUNK.format(part=where), params)
    cursor.execute(_SQL_SUMMARY, params)
    new_entries, first, last, changes = cursor.fetchone()
    new = updated = 0
    if new_entries:
        new = _insert_new_entries(cursor, params)
    if changes:
        cursor.execute(_SQL_WRITE_CONTRIBUTORS, params)
        cursor.execute(_SQL_CHANGED_ENTRIES, params)
        updated = cursor.rowcount
        cursor.execute(_SQL_NEW_CONTRIBUTIONS, params)
        cursor.execute(_SQL_CHANGED_CONTRIBUTIONS, params)
    cursor.execute(_SQL_DONE.format(part=where), params)
    lines = cursor.rowcount
    return lines, new, updated, None if first is None else [first, last]


_OPEN = [Batch.State.QUEUED, Batch.State.MERGING]


def do_merge_batch(batch_id: str, chunk: int = CHUNK) -> Batch | None:
    """Merge a staged batch to the end, every part chunk by chunk; idempotent, resumable,
    exactly once. Parts run on threads of their own (one connection each), unless called inside
    a transaction, where they run one after the other on its connection.

    A queued batch is marked ``merging`` first: a worker is on it from then on, and
    ``stalled_merges`` knows it by its part locks. Per chunk, a part holds a transaction-scoped
    try-lock on (batch, part) (a second worker on the same part steps aside) and the (set, slot)
    locks of its values. New entries are positioned by their INSERT, changed ones by the UPDATE;
    duplicates keep their position (a re-publish is no change). Emits a webhook dispatch
    wake-up when a chunk changed entries. The id ranges of new PDQ entries are kept in
    ``batch.link_ranges`` (unless ``HASHX_MATCH_NEAR_DUPLICATES`` is off) for
    ``signals.actions.neardup.do_link_batch``, which runs after the merge: searching the match
    index is not on the merge's path.
    """
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.state not in _OPEN:
        return batch
    Batch.objects.filter(pk=batch_id, state=Batch.State.QUEUED).update(state=Batch.State.MERGING)
    parts = range(len(batch.parts_merged))
    if len(parts) == 1 or connection.in_atomic_block:
        for part in parts:
            _merge_part(batch_id, part, chunk)
    else:
        errors: list[BaseException] = []
        # Each part's thread in a copy of this context: its logs and audit events carry the
        # request id of the publish that queued the merge (exchange/logs.py).
        threads = [
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(_merge_part_thread, batch_id, part, chunk, errors),
            )
            for part in parts[1:]
        ]
        for thread in threads:
            thread.start()
        try:
            _merge_part(batch_id, 0, chunk)
        finally:
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]
    return Batch.objects.filter(pk=batch_id).first()


def _merge_part_thread(batch_id: str, part: int, chunk: int, errors: list[BaseException]) -> None:
    try:
        _merge_part(batch_id, part, chunk)
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()  # this thread's own


def _part_key(batch_id: str, part: int) -> int:
    """The advisory lock key for merging (batch, part)."""
    return advisory_key(f"merge:{batch_id}:{part}")


def _merge_part(batch_id: str, part: int, chunk: int) -> None:
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_part_key(batch_id, part)])
                if not cursor.fetchone()[0]:
                    return  # another worker is merging this part
                batch = (
                    Batch.objects.select_related("hash_set", "organisation")
                    .filter(pk=batch_id, state__in=_OPEN)
                    .first()
                )
                if batch is None or batch.parts_merged[part] >= batch.accepted:
                    return
                cursor.execute(_SQL_STAGED, [batch_id])
                if cursor.fetchone() is None:
                    break
                lo = batch.parts_merged[part]
                hi = min(lo + chunk, batch.accepted)
                parts = len(batch.parts_merged)
                lock_slots(cursor, batch.hash_set_id, part_slots(parts, part))
                lines, new, updated, pdq_range = _merge_chunk(cursor, batch, part, lo, hi)
            if new or updated:
                wake()
            _record_chunk(batch_id, part, hi, lines, new, updated, pdq_range)
    do_fail_batch(batch_id, STAGING_LOST, release_idempotency_key=True)


def _record_chunk(
    batch_id: str, part: int, hi: int, lines: int, new: int, updated: int,
    pdq_range: list[int] | None,
) -> None:  # fmt: skip
    """The chunk's counts and the part's progress, in the chunk's transaction. The batch row is
    locked only now, so parts wait for each other here alone, and briefly."""
    batch = (
        Batch.objects.select_for_update(of=("self",)).select_related("hash_set").get(pk=batch_id)
    )
    batch.parts_merged[part] = hi
    batch.new += new
    batch.updated += updated
    batch.duplicate += lines - new - updated
    if pdq_range is not None and settings.HASHX_MATCH_NEAR_DUPLICATES:
        batch.link_ranges.append([*pdq_range, part])
    if batch.state in _OPEN:  # not if another part failed meanwhile
        batch.state = Batch.State.DONE if batch.merged >= batch.accepted else Batch.State.MERGING
    if batch.state == Batch.State.DONE:
        batch.finished_at = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM signals_stagedbatch WHERE batch_id = %s", [batch_id])
        _count_finished(batch)
        record(
            "signals.batch.merged",
            obj=batch,
            actor_org=batch.organisation_id,
            owner_org=batch.hash_set.owner_id,
            details={"set": batch.hash_set.slug, "new": batch.new, "updated": batch.updated,
                     "duplicate": batch.duplicate},
        )  # fmt: skip
    batch.save(update_fields=["parts_merged", "new", "updated", "duplicate",
                              "link_ranges", "state", "finished_at"])  # fmt: skip


# A batch still queued this long after it was published lost its task (the broker lost the
# message): no worker started it, so nothing but its age tells.
RESUME_AFTER = timedelta(minutes=2)


def stalled_merges(limit: int = 100) -> list[str]:
    """The open batches to queue again: those still ``queued`` ``RESUME_AFTER`` after they were
    published, and at once those a worker started (``merging``) with an unfinished part whose
    try-lock no live session holds: its worker died (the lock went with its connection) or its
    task failed on a lost connection. A live part between two chunks may look stalled for an
    instant: the task queued for it then steps aside, or takes over at the next chunk; no line
    is ever merged twice."""
    lost = Batch.objects.filter(
        state=Batch.State.QUEUED, created_at__lt=timezone.now() - RESUME_AFTER
    )
    started = Batch.objects.filter(state=Batch.State.MERGING).values_list(
        "pk", "parts_merged", "accepted"
    )
    parts = {
        _part_key(str(pk), part): str(pk)
        for pk, parts_merged, accepted in started[:limit]
        for part, merged in enumerate(parts_merged)
        if merged < accepted
    }
    with connection.cursor() as cursor:
        held = held_keys(cursor, list(parts))
    stalled = {pk for key, pk in parts.items() if key not in held}
    return [str(pk) for pk in lost.values_list("pk", flat=True)[:limit]] + sorted(stalled)


def _count_finished(batch: Batch) -> None:
    """Metrics of a batch that reached ``done`` or ``failed``, once its transaction commits."""
    assert batch.finished_at is not None
    outcome, seconds = str(batch.state), (batch.finished_at - batch.created_at).total_seconds()

    def count() -> None:
        metrics.BATCHES.labels(outcome).inc()
        if outcome == Batch.State.DONE:
            metrics.BATCH_SECONDS.observe(seconds)

    transaction.on_commit(count)


def do_fail_batch(batch_id: str, error: str, *, release_idempotency_key: bool = False) -> bool:
    """Give up on a batch whose merge raised an error that retrying will not cure: it is
    reported failed (its staged lines are kept, so staff can merge it again once the cause is
    fixed). Chunks merged before stay merged. Returns whether the batch was still open.

    ``release_idempotency_key``: the batch gives up its Idempotency-Key (kept in the audit
    event), so that the same request sent again is published anew rather than answered with
    this batch: for a batch whose staged lines are lost, which nobody can merge again."""
    with transaction.atomic():
        batch = (
            Batch.objects.select_for_update(of=("self",))
            .select_related("hash_set")
            .filter(pk=batch_id, state__in=[Batch.State.QUEUED, Batch.State.MERGING])
            .first()
        )
        if batch is None:
            return False
        details = {"set": batch.hash_set.slug, "merged": batch.merged, "error": error}
        batch.state, batch.error, batch.finished_at = Batch.State.FAILED, error, timezone.now()
        if release_idempotency_key and batch.idempotency_key:
            details["released_idempotency_key"] = batch.idempotency_key
            batch.idempotency_key = ""
        batch.save(update_fields=["state", "error", "finished_at", "idempotency_key"])
        _count_finished(batch)
        record(
            "signals.batch.failed",
            obj=batch,
            actor_org=batch.organisation_id,
            owner_org=batch.hash_set.owner_id,
            details=details,
        )
    return True


def do_retry_batch(batch: Batch, *, actor_user: Any, reason: str) -> bool:
    """Staff: merge a failed batch again from where it stopped (audited, with the reason)."""
    with transaction.atomic():
        changed = Batch.objects.filter(pk=batch.pk, state=Batch.State.FAILED).update(
            state=Batch.State.MERGING, error="", finished_at=None
        )
        if not changed:
            return False
        record(
            "signals.batch.retried",
            obj=batch,
            actor_user=actor_user,
            owner_org=batch.hash_set.owner_id,
            details={"set": batch.hash_set.slug, "merged": batch.merged, "reason": reason},
        )
        enqueue_on_commit("signals.ingest.merge_batch", str(batch.pk))
    return True
