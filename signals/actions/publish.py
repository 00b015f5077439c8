"""Publishing: validate every item, stage the valid ones with COPY, hand the batch to a worker.

Items come as a ``Source``: numbered raw items, read from a JSON list or a streamed upload by
the parsers in ``signals.api.uploads``; a line a parser could not read is an ``Unparsable``
(its reason), rejected here like any invalid item.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, NamedTuple

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.actions import record
from exchange import metrics
from exchange.enqueue import enqueue_on_commit
from exchange.problems import Problem
from exchange.times import parse_when
from members.models import Organisation
from signals.feed.locks import advisory_key
from signals.models import Batch, HashSet
from signals.types import SignalTypeError, canonicalise

MAX_LABELS = 20
# Rejections listed in an answer (all are counted); the batch keeps the first ones.
MAX_LISTED_REJECTIONS = 10_000
BATCH_KEEPS_REJECTIONS = 100
# Rows per block handed to COPY: small enough to fit the socket's buffer, so that Postgres
# stores one block while Python checks the next (5,000 took half again as long).
COPY_ROWS = 500
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,99}$")


@dataclass
class Item:
    """One valid, canonical line, ready for staging."""

    type: str
    value: str
    labels: list[str]
    quality: int | None
    expires_at: datetime | None


@dataclass
class Outcome:
    received: int = 0
    accepted: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0

    def reject(self, key: str, where: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append({key: where, "reason": reason})


class Unparsable(str):
    """What a source yields for a line it could not read: the reason."""


def check_item(raw: Any, hash_set: HashSet, now: datetime) -> Item:
    """Validate and canonicalise one item; raises ValueError with the reason."""
    if isinstance(raw, Unparsable):
        raise ValueError(str(raw))
    if not isinstance(raw, dict):
        raise ValueError("expected an object with type and value")
    kind, value = raw.get("type"), raw.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise ValueError("type and value must be strings")
    if hash_set.signal_types and kind not in hash_set.signal_types:
        takes = ", ".join(hash_set.signal_types)
        raise ValueError(f"set {hash_set.slug} does not take {kind!r} (it takes {takes})")
    quality = raw.get("quality")
    if quality is not None and (not isinstance(quality, int) or isinstance(quality, bool)):
        raise ValueError("quality must be an integer from 0 to 100")
    try:
        canonical = canonicalise(kind, value, quality=quality)
    except SignalTypeError as exc:
        raise ValueError(str(exc)) from None
    labels = raw.get("labels") or []
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise ValueError(f"labels must be a list of at most {MAX_LABELS} strings")
    clean = []
    for label in labels:
        if not isinstance(label, str) or not _LABEL.match(label.lower()):
            raise ValueError(f"bad label {label!r:.40}: letters, digits and _.:/- only, up to 100")
        clean.append(label.lower())
    expires_at = None
    if raw.get("expires_at") is not None:
        expires_at = parse_when(raw["expires_at"]) if isinstance(raw["expires_at"], str) else None
        if expires_at is None:
            raise ValueError("expires_at must be an ISO 8601 time with a zone")
        if expires_at <= now:
            raise ValueError("expires_at is in the past")
    return Item(kind, canonical, sorted(set(clean)), quality, expires_at)


# -- sources -----------------------------------------------------------------------------------


class Source(NamedTuple):
    """Items to publish, each with its place in the request: ``key`` says whether that is the
    JSON list's ``index`` or the upload's ``line`` (what a rejection names)."""

    key: str
    items: Iterable[tuple[int, Any]]


# -- staging -----------------------------------------------------------------------------------


def _pg_array(labels: list[str]) -> str:
    # Quoted: an unquoted NULL element would be read as a database NULL, not the label "null".
    return "{" + ",".join(f'"{label}"' for label in labels) + "}"


class _CopySource:
    """The valid items as COPY text, produced while the request is read (psycopg2 calls
    ``read`` until it returns nothing)."""

    def __init__(self, rows: Iterator[str]) -> None:
        self.rows = rows
        self.error: Exception | None = None

    def read(self, size: int = -1) -> str:
        try:
            return "".join(islice(self.rows, COPY_ROWS))
        except Exception as exc:
            # psycopg2 reports it as a cancelled COPY; keep it to raise it as it was.
            self.error = exc
            raise


_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:  # every hash, most URLs
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_rows(batch: Batch, hash_set: HashSet, source: Source, outcome: Outcome) -> Iterator[str]:
    """COPY text for the valid items; the outcome counts and lists the rest. Most items are
    just a type and a value: they skip ``check_item``'s questions about the other fields (and
    its Item) but not its checks, which ``canonicalise`` makes."""
    now = timezone.now()
    batch_id = str(batch.pk)
    allowed = frozenset(hash_set.signal_types or ())
    received = accepted = 0
    try:
        for where, raw in source.items:
            received += 1
            if type(raw) is dict and len(raw) == 2:
                kind, value = raw.get("type"), raw.get("value")
                if type(kind) is str and type(value) is str and (not allowed or kind in allowed):
                    try:
                        canonical = canonicalise(kind, value)
                    except SignalTypeError as exc:
                        outcome.reject(source.key, where, str(exc))
                        continue
                    yield f"{batch_id}\t{accepted}\t{kind}\t{_escape(canonical)}\t{{}}\t\\N\t\\N\n"
                    accepted += 1
                    continue
            try:
                item = check_item(raw, hash_set, now)
            except ValueError as exc:
                outcome.reject(source.key, where, str(exc))
                continue
            quality = "\\N" if item.quality is None else str(item.quality)
            expires = "\\N" if item.expires_at is None else item.expires_at.isoformat()
            fields = (
                batch_id,
                str(accepted),
                item.type,
                _escape(item.value),
                _pg_array(item.labels),
            )
            yield "\t".join((*fields, quality, expires)) + "\n"
            accepted += 1
    finally:
        outcome.received, outcome.accepted = received, accepted


def do_publish(
    hash_set: HashSet,
    org: Organisation,
    source: Source,
    *,
    key_id: str = "",
    atomic: bool = False,
    idempotency_key: str = "",
    fingerprint: str = "",
    request: Any = None,
    before_commit: Any = None,
    queue: bool = True,
) -> tuple[Batch, bool]:
    """Stage a batch and queue its merge; returns ``(batch, replayed)``.

    One transaction: the batch row, the COPY of every valid item into staging (with the
    ``StagedBatch`` that says they are there), the audit event. ``atomic`` refuses the whole
    batch (422, nothing staged) if any item is rejected.
    With an ``idempotency_key`` (see ``_check_idempotency_key``, which locks it for the whole
    transaction) already used by the organisation for the same request (``fingerprint``),
    nothing is read or staged and the first batch is returned (``replayed``).
    ``before_commit`` (e.g. the streamed body's digest check) may raise to undo it all.
    ``queue=False`` leaves the merge to the caller (or to beat's resume job) instead of a worker.
    """
    outcome = Outcome()
    try:
        with transaction.atomic():
            if idempotency_key:
                first = _check_idempotency_key(org, idempotency_key, fingerprint)
                if first is not None:
                    return first, True
            # Written once its counts are known, after the staged rows (which name it by id
            # and have no foreign key to it): one INSERT rather than an INSERT and an UPDATE.
            batch = Batch(
                hash_set=hash_set,
                organisation=org,
                key_id=key_id,
                idempotency_key=idempotency_key,
                request_hash=fingerprint if idempotency_key else "",
            )
            copy = _CopySource(_copy_rows(batch, hash_set, source, outcome))
            with connection.cursor() as cursor:
                try:
                    cursor.copy_expert(
                        "COPY signals_stagedsignal"
                        " (batch_id, line, type, value, labels, quality, expires_at) FROM STDIN",
                        copy,
                    )
                except DatabaseError:
                    if copy.error is not None:
                        raise copy.error from None
                    raise
                if outcome.accepted:
                    cursor.execute(
                        "INSERT INTO signals_stagedbatch (batch_id) VALUES (%s)", [batch.pk]
                    )
            if before_commit is not None:
                before_commit()
            if atomic and outcome.rejected:
                raise _AtomicRefusal(outcome)
            batch.received, batch.accepted, batch.rejected = (
                outcome.received,
                outcome.accepted,
                outcome.rejected,
            )
            batch.first_rejections = outcome.rejections[:BATCH_KEEPS_REJECTIONS]
            if not outcome.accepted:
                batch.state, batch.finished_at = Batch.State.DONE, timezone.now()
            batch.answer = batch_answer(batch, outcome.rejections)
            batch.save(force_insert=True)
            record(
                "signals.published",
                obj=batch,
                owner_org=hash_set.owner_id,
                request=request,
                details={"set": hash_set.slug, "batch": str(batch.pk), "accepted": outcome.accepted,
                         "rejected": outcome.rejected},
            )  # fmt: skip
            if outcome.accepted and queue:
                enqueue_on_commit("signals.ingest.merge_batch", str(batch.pk))
            transaction.on_commit(lambda: _count_published(outcome))
    except _AtomicRefusal:
        raise Problem(
            "validation",
            f"{outcome.rejected} of {outcome.received} signals were rejected and atomic was"
            " asked: nothing was published",
            errors=[_as_error(r) for r in outcome.rejections],
        ) from None
    return batch, False


def _count_published(outcome: Outcome) -> None:
    metrics.SIGNALS_PUBLISHED.inc(outcome.accepted)
    metrics.SIGNALS_REJECTED.inc(outcome.rejected)


def _check_idempotency_key(org: Organisation, key: str, fingerprint: str) -> Batch | None:
    """The batch the organisation first published with ``key`` if it was for this same request
    (None: this request is the first); 422 when the key was used for another request (its set,
    content type or body: ``fingerprint``), 409 while a request with the key is still in flight.

    Takes a transaction-scoped advisory lock on (organisation, key) without waiting, held until
    the batch commits or rolls back: a second request with the key while the first still
    streams its upload is told so at once. (The unique constraint alone made it wait for the
    whole upload, and answered with the first batch whatever it had sent.) A request that finds
    the lock free reads after the first one committed, so it sees that batch."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s)", [advisory_key(f"idempotency:{org.pk}:{key}")]
        )
        (locked,) = cursor.fetchone()
    if not locked:
        raise Problem(
            "idempotency-key-in-flight",
            f"A request with Idempotency-Key {key!r} is still in flight: retry once it has"
            " been answered",
            headers={"Retry-After": "1"},
        )
    first = Batch.objects.filter(organisation=org, idempotency_key=key).first()
    # A batch from before fingerprints were kept ("") replays as it always did.
    if first is not None and first.request_hash and first.request_hash != fingerprint:
        raise Problem(
            "idempotency-key-mismatch",
            f"Idempotency-Key {key!r} was first used for another request (its set, content type"
            f" or body differ: batch {first.pk}); send a new request with a new key",
        )
    return first


class _AtomicRefusal(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _as_error(rejection: dict[str, Any]) -> dict[str, str]:
    where = f"signals.{rejection['index']}" if "index" in rejection else f"line {rejection['line']}"
    return {"field": where, "message": rejection["reason"]}


def batch_answer(batch: Batch, rejections: list[dict[str, Any]]) -> dict[str, Any]:
    """The 202 answer to a publish, stored so an idempotent retry gets the same one."""
    return {
        "batch": str(batch.pk),
        "set": batch.hash_set.slug,
        "state": batch.state,
        "received": batch.received,
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "rejections": rejections,
        "rejections_listed": len(rejections),
    }
