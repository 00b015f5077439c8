"""The sealer: gives each finished event its place in the hash chain."""

import hashlib
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from audit.actions.record import canonical_json, event_document
from audit.models import AuditEvent, AuditSeal, AuditSealerState

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key: one sealer at a time across all workers (single flight).
SEAL_LOCK = 0x6878_A0D1
BATCH = 2000


def chain_hash(prev_hash: str, seq: int, event: AuditEvent) -> str:
    """``sha256(prev_hash || canonical JSON of {seq, event})``, hex."""
    body = canonical_json({"seq": seq, "event": event_document(event)})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


# The seals of a batch in one statement, numbered from ``first`` in the events' order
# (bulk_create spent longer preparing a model per seal than Postgres took to insert them).
_SQL_SEAL = f"""
INSERT INTO {AuditSeal._meta.db_table} (seq, event_id, hash, sealed_at)
SELECT %(first)s + s.n - 1, s.event_id, s.hash, %(now)s
FROM unnest(%(events)s::bigint[], %(hashes)s::text[]) WITH ORDINALITY AS s(event_id, hash, n)
"""  # noqa: S608 - the table name is the model's


@dataclass
class SealResult:
    sealed: int
    head_seq: int
    head_hash: str
    busy: bool = False


def chain_head() -> tuple[int, str]:
    last = AuditSeal.objects.order_by("-seq").values_list("seq", "hash").first()
    return last if last is not None else (0, GENESIS_HASH)


def do_seal_pending(batch: int = BATCH, *, wait: bool = False) -> SealResult:
    """Seal every event whose transaction has finished, in id order, one batch per
    transaction, until none is left.

    Locks: ``pg_try_advisory_xact_lock(SEAL_LOCK)``; when another sealer holds it this returns
    at once with ``busy`` (that sealer, or the next beat, seals what is pending). With
    ``wait`` it queues for the lock instead (commands, checkpoints, tests). Only events
    whose inserting transaction is older than the snapshot's xmin are sealed, so an event that
    commits later can never be needed between two already sealed ones: no gap, no fork. A
    crash rolls back the current batch; the next run resumes from the chain head.
    """
    total = 0
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                if wait:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s), true", [SEAL_LOCK])
                else:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
                if not cursor.fetchone()[-1]:
                    seq, head = chain_head()
                    return SealResult(total, seq, head, busy=True)
                # Every transaction older than this has committed or rolled back.
                cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                horizon = int(cursor.fetchone()[0])
            state, _ = AuditSealerState.objects.select_for_update().get_or_create(id=1)
            events = list(
                AuditEvent.objects.filter(
                    xid__gte=state.xid_floor, xid__lt=horizon, seal__isnull=True
                ).order_by("id")[:batch]
            )
            seq, head = chain_head()
            first, hashes = seq + 1, []
            for event in events:
                seq += 1
                head = chain_hash(head, seq, event)
                hashes.append(head)
            if events:
                with connection.cursor() as cursor:
                    cursor.execute(
                        _SQL_SEAL,
                        {
                            "first": first,
                            "events": [event.pk for event in events],
                            "hashes": hashes,
                            "now": timezone.now(),
                        },
                    )
            if len(events) < batch:
                # Everything below the horizon is sealed now; later runs can start there.
                AuditSealerState.objects.filter(id=1).update(xid_floor=horizon)
        total += len(events)
        if len(events) < batch:
            return SealResult(total, seq, head)
