"""Applying a peer's changes to a local mirror set: every change checked again here (what the
serving side should not have sent is refused and counted, the rest applied), then applied
set-based, one checkpoint per transaction together with the cursor that covers it.

Mirrored entries are ordinary entries of the mirror set: the upsert gives each changed one a
new position in this exchange's feed, so they sync, match (the PDQ index follows the feed),
stream and trigger webhooks like any others.
"""

import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.actions import record
from exchange.times import parse_when
from federation.models import MirroredSet, ResyncSeen
from signals.actions.merge import PROBE_ONLY
from signals.feed.locks import lock_set
from signals.feed.positions import NEW_POSITION
from signals.feed.wakeups import wake
from signals.models import ENTRY_CONFLICT, VALUE_KEY_BYTES, entry_lookup, value_key_sql
from signals.types import SignalTypeError, canonicalise

MAX_HOPS = 3
# An exchange id, a slug, a label: nothing longer is one.
MAX_NAME = 64
MAX_LABELS = 20
MAX_COUNT = 2**31 - 1


class Refusal(ValueError):
    """Why one change is refused (counted; the rest of the page is applied)."""


@dataclass
class Outcome:
    """What applying some changes did."""

    applied: int = 0
    new: int = 0
    tombstoned: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def add(self, other: "Outcome") -> None:
        self.applied += other.applied
        self.new += other.new
        self.tombstoned += other.tombstoned
        self.refused += other.refused
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count


def _names(value: Any, what: str, limit: int = MAX_LABELS) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise Refusal(f"{what} is not a list of at most {limit}")
    try:
        names = tuple(value)
        short = _short_strings(names)
    except TypeError:  # an unhashable element: a list or an object, no string
        short = False
    if not short:
        raise Refusal(f"{what} holds something that is not a short string")
    return names


@lru_cache(maxsize=4096)
def _short_strings(values: tuple[Any, ...]) -> bool:
    """A feed's paths, labels and names repeat from entry to entry: each list checked once."""
    return all(isinstance(v, str) and 0 < len(v) <= MAX_NAME * 2 for v in values)


@lru_cache(maxsize=4096)
def _label_set(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(labels)))


@lru_cache(maxsize=4096)
def _contributors(names: tuple[str, ...], origin: str) -> tuple[str, ...]:
    """``org@exchange`` for each name: a name from the origin is qualified by it, once."""
    return tuple(sorted({(n if "@" in n else f"{n}@{origin}")[:MAX_NAME] for n in names}))


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise Refusal("a count is not a whole number")
    return value


def _when(value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    when = _parsed_when(value) if isinstance(value, str) else None
    if when is None:
        raise Refusal("a time is not ISO 8601 with a zone")
    return when


@lru_cache(maxsize=4096)
def _parsed_when(text: str) -> str | None:
    """A feed's times repeat (every entry of a merged chunk was first seen at one instant)."""
    when = parse_when(text)
    return None if when is None else when.isoformat()


def check_change(change: Any, *, peer_exchange: str, own_exchange: str) -> dict[str, Any]:
    """One change as the peer served it, checked as if the peer were not trusted: the row to
    apply, or ``Refusal`` naming why not. Refused: malformed or non-canonical values, an entry
    whose path holds this exchange (an echo), one not last passed through the peer, and one
    with no hops left (the serving side should have kept it)."""
    if isinstance(change, Refusal):  # the line could not even be read
        raise change
    if not isinstance(change, dict):
        raise Refusal("not an object")
    kind, value, state = change.get("type"), change.get("value"), change.get("state")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise Refusal("type and value must be strings")
    try:
        if canonicalise(kind, value) != value:
            raise Refusal("value not in canonical form")
    except SignalTypeError as exc:
        raise Refusal(f"bad signal: {str(exc)[:80]}") from None
    if state not in ("active", "tombstone"):
        raise Refusal("state is neither active nor tombstone")
    path = _names(change.get("path"), "path", limit=MAX_HOPS + 1)
    if not path or path[-1] != peer_exchange:
        raise Refusal("path does not end with the peer")
    if own_exchange in path:
        raise Refusal("path holds this exchange (an echo)")
    if len(set(path)) != len(path):
        raise Refusal("path passes an exchange twice")
    hops = change.get("hops_left")
    if not isinstance(hops, int) or isinstance(hops, bool) or not 1 <= hops <= MAX_HOPS:
        raise Refusal("no hops left")
    opinions = change.get("opinions")
    if not isinstance(opinions, dict):
        raise Refusal("opinions is not an object")
    origin = change.get("origin")
    if origin is None:  # an entry of the peer's own
        origin = {"exchange": path[0], "set": change.get("set"), "entry": change.get("entry"),
                  "first_seen": change.get("first_seen")}  # fmt: skip
    if not isinstance(origin, dict) or origin.get("exchange") != path[0]:
        raise Refusal("origin is not the first exchange of the path")
    origin_set, origin_entry = origin.get("set"), origin.get("entry")
    if not isinstance(origin_set, str) or not 0 < len(origin_set) <= MAX_NAME:
        raise Refusal("origin set is not a slug")
    if not isinstance(origin_entry, int) or isinstance(origin_entry, bool) or origin_entry < 1:
        raise Refusal("origin entry is not an id")
    labels = _names(change.get("labels"), "labels")
    names = change.get("contributor_names")
    return {
        "type": kind,
        "value": value,
        "state": state,
        "labels": _label_set(labels),
        "contributors": _count(change.get("contributors")),
        "names": _contributors(_names(names, "contributor names", limit=1000), path[0])
        if names is not None else (),
        "positive": _count(opinions.get("positive", 0)),
        "negative": _count(opinions.get("negative", 0)),
        "investigation": _count(opinions.get("investigation_seed", 0)),
        "expires_at": _when(change.get("expires_at"), optional=True),
        "origin_set": origin_set,
        "origin_entry": origin_entry,
        "origin_first_seen": _when(origin.get("first_seen")),
        # What may still travel on from here: one hop was this one.
        "hops_left": hops - 1,
        "path": path,
    }  # fmt: skip


_SQL_CHUNK = """
CREATE TEMP TABLE IF NOT EXISTS federation_chunk (
    ord int, type text COLLATE "C", value text COLLATE "C", state text, labels varchar[],
    contributors int, names varchar[], positive int, negative int, investigation int,
    expires_at timestamptz, origin_set text, origin_entry bigint, origin_first_seen timestamptz,
    hops_left smallint, path varchar[]
) ON COMMIT DELETE ROWS
"""

# What this path (the peer, ``%(peer)s``) says and what the entry holds, column by column.
# ``via`` lists the peers that serve the entry active now: an active change adds the peer, a
# tombstone removes it, and the entry is tombstoned only when no peer serves it any more;
# until then a tombstone changes ``via`` alone (``_OTHERS_SERVE``). Where several peers serve
# it, its path and hops are those of the path with the most hops left (so pulls of two paths
# do not flip it to and fro).
_OTHERS_SERVE = "cardinality(array_remove(e.via, %(peer)s::varchar)) > 0"
_KEEP = f"(EXCLUDED.state = 'tombstone' AND {_OTHERS_SERVE})"
_KEEP_PATH = (
    f"({_KEEP} OR (e.state = 'active' AND {_OTHERS_SERVE} AND e.hops_left >= EXCLUDED.hops_left))"
)
_VIA = """CASE WHEN EXCLUDED.state = 'tombstone' THEN array_remove(e.via, %(peer)s::varchar)
    WHEN %(peer)s::varchar = ANY(e.via) THEN e.via ELSE e.via || %(peer)s::varchar END"""
_NEW = {
    "state": f"CASE WHEN {_KEEP} THEN e.state ELSE EXCLUDED.state END",
    **{
        column: f"CASE WHEN {_KEEP} THEN e.{column} ELSE EXCLUDED.{column} END"
        for column in [
            "labels", "contributor_count", "contributor_names", "positive_count",
            "negative_count", "investigation_count", "expires_at", "origin_set", "origin_entry",
            "origin_first_seen",
        ]
    },
    "hops_left": f"CASE WHEN {_KEEP_PATH} THEN e.hops_left ELSE EXCLUDED.hops_left END",
    "path": f"CASE WHEN {_KEEP_PATH} THEN e.path ELSE EXCLUDED.path END",
    "via": _VIA,
}  # fmt: skip
_COMPARED = [c for c in _NEW if c not in ("origin_set", "origin_first_seen")]

# The latest change of each value wins (a page holds one change per entry; the peer may hold
# two entries of one value in two of its sets only if they come from two origins, and then
# they are two mirrors here). A tombstone for an entry never seen here is nothing to apply
# (a join that probes the entry, not EXISTS: its plan hashed every entry of the set). A long
# value whose key (its MD5) another value of its type holds, in the page or in the set (only a
# forged pair can), is not applied: the conflict must never update the other value's entry.
_SQL_UPSERT = f"""
INSERT INTO signals_setentry AS e (hash_set_id, type, value, state, labels, contributor_count,
    contributor_names, positive_count, negative_count, investigation_count, first_seen,
    updated_at, expires_at, origin_set, origin_entry, origin_first_seen, hops_left, path, via)
SELECT %(set)s, c.type, c.value, c.state, c.labels, c.contributors, c.names, c.positive,
    c.negative, c.investigation, %(now)s, %(now)s, c.expires_at, c.origin_set, c.origin_entry,
    c.origin_first_seen, c.hops_left, c.path, ARRAY[%(peer)s]::varchar[]
FROM (
    SELECT DISTINCT ON (type, {value_key_sql("value")}) * FROM federation_chunk
    ORDER BY type, {value_key_sql("value")}, ord DESC
) c
LEFT JOIN signals_setentry x ON {entry_lookup("x", "c.type", "c.value", "= %(set)s")}
WHERE (c.state = 'active' OR x.id IS NOT NULL)
  AND NOT (octet_length(c.value) > {VALUE_KEY_BYTES} AND EXISTS (
    SELECT 1 FROM signals_setentry y
    WHERE y.type = c.type AND {value_key_sql("y.value")} = {value_key_sql("c.value")}
      AND y.hash_set_id + 0 = %(set)s AND y.value <> c.value))
ORDER BY c.type, c.value
ON CONFLICT {ENTRY_CONFLICT} DO UPDATE SET
    {", ".join(f"{column} = {expression}" for column, expression in _NEW.items())},
    updated_at = EXCLUDED.updated_at, {NEW_POSITION}
WHERE ({", ".join(f"e.{column}" for column in _COMPARED)})
    IS DISTINCT FROM ({", ".join(_NEW[column] for column in _COMPARED)})
RETURNING (xmax = 0) AS inserted, state
"""  # noqa: S608 - only constants are interpolated


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Only these need escaping in COPY text; most fields (hex values, slugs) hold none of them.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _text(value: str) -> str:
    """A text field of COPY's text format."""
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


@lru_cache(maxsize=4096)
def _array(values: tuple[str, ...]) -> str:
    """A Postgres array literal of strings, every element quoted (so NULL stays a string); a
    feed's paths, labels and names repeat from entry to entry: each literal made once."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return _text("{" + ",".join(f'"{v}"' for v in quoted) + "}")


def _copy_text(rows: list[dict[str, Any]]) -> str:
    """Checked rows as COPY text for ``federation_chunk``, in their order."""
    lines = []
    for ord_, r in enumerate(rows):
        expires = r["expires_at"] or "\\N"
        lines.append(
            f"{ord_}\t{r['type']}\t{_text(r['value'])}\t{r['state']}\t{_array(r['labels'])}\t"
            f"{r['contributors']}\t{_array(r['names'])}\t{r['positive']}\t{r['negative']}\t"
            f"{r['investigation']}\t{expires}\t{_text(r['origin_set'])}\t{r['origin_entry']}\t"
            f"{r['origin_first_seen']}\t{r['hops_left']}\t{_array(r['path'])}\n"
        )
    return "".join(lines)


_SQL_SEEN = f"""
INSERT INTO federation_resyncseen (mirror_id, entry_id)
SELECT %(mirror)s, e.id FROM federation_chunk c
JOIN signals_setentry e ON {entry_lookup("e", "c.type", "c.value", "= %(set)s")}
WHERE c.state = 'active'
ON CONFLICT DO NOTHING
"""  # noqa: S608 - only constants are interpolated


@dataclass
class Checked:
    """A page of a peer's changes, checked (``check_page``): the rows to apply, already as COPY
    text for ``federation_chunk``, and the changes refused."""

    rows: int
    text: str
    outcome: Outcome


def check_page(
    changes: list[Any], *, peer_exchange: str, own_exchange: str, active_only: bool = False
) -> Checked:
    """Every change of a page checked (``check_change``), refusals counted, the rest turned
    into COPY text (``active_only``: tombstones dropped, as a resync wants). Pure Python with
    no database: a pull runs it for the next page while the database applies this one."""
    outcome = Outcome()
    rows = []
    for change in changes:
        try:
            row = check_change(change, peer_exchange=peer_exchange, own_exchange=own_exchange)
        except Refusal as exc:
            outcome.refuse(str(exc))
            continue
        if not active_only or row["state"] == "active":
            rows.append(row)
    return Checked(len(rows), _copy_text(rows), outcome)


def apply_checked(
    mirror: MirroredSet, checked: Checked, now: datetime, *, peer_exchange: str, seen: bool = False
) -> Outcome:
    """Apply checked rows, served by ``peer_exchange``, to the mirror set, set-based, in the
    caller's transaction (``seen``: and mark their entries seen by the mirror's resync). Locks
    every slot of the mirror set (``signals.feed.locks.lock_set``), as every writer of a set's
    entries does; emits a webhook wake-up when entries changed. Counts what was applied; the
    refusals are the caller's to add."""
    outcome = Outcome()
    if not checked.rows:
        return outcome
    with connection.cursor() as cursor:
        lock_set(cursor, mirror.hash_set_id)
        # Every join of a chunk row probes an index (as in the merge): with no statistics on
        # the chunk, a hash join read every entry (a million) once per page of 5,000, and the
        # tombstone check planned a scan of all of the set's entries per row.
        cursor.execute(PROBE_ONLY)
        cursor.execute(_SQL_CHUNK)
        # In one read: psycopg2 reads the file 8 KiB at a time by default, each read taking the
        # GIL from the read-ahead thread (3.4 s of a 300,000-entry pull went there).
        text = io.StringIO(checked.text)
        cursor.copy_expert("COPY federation_chunk FROM STDIN", text, size=len(checked.text) + 1)
        cursor.execute(_SQL_UPSERT, {"set": mirror.hash_set_id, "now": now, "peer": peer_exchange})
        changed = cursor.fetchall()
        if seen:
            cursor.execute(_SQL_SEEN, {"mirror": mirror.pk, "set": mirror.hash_set_id})
        cursor.execute("TRUNCATE federation_chunk")
    outcome.applied = len(changed)
    outcome.new = sum(1 for inserted, _ in changed if inserted)
    outcome.tombstoned = sum(1 for _, state in changed if state == "tombstone")
    if changed:
        wake()
    return outcome


def do_apply_page(
    mirror: MirroredSet,
    changes: list[Any],
    cursor: str,
    *,
    peer_exchange: str,
    own_exchange: str,
) -> Outcome:
    """One checkpoint of a peer's feed: every change checked (``check_page``), the valid ones
    applied to the mirror, and the mirror's cursor moved to ``cursor``, in one transaction
    (``do_apply_checked``)."""
    checked = check_page(changes, peer_exchange=peer_exchange, own_exchange=own_exchange)
    return do_apply_checked(mirror, checked, cursor, peer_exchange=peer_exchange)


def do_apply_checked(
    mirror: MirroredSet, checked: Checked, cursor: str, *, peer_exchange: str
) -> Outcome:
    """A checked page applied to the mirror, and the mirror's cursor moved to ``cursor``, in
    one transaction: a crash before the commit leaves cursor and entries as they were, so the
    page is pulled again and applied once. Locks as ``apply_checked``."""
    outcome = Outcome()
    outcome.add(checked.outcome)
    now = timezone.now()
    with transaction.atomic():
        outcome.add(apply_checked(mirror, checked, now, peer_exchange=peer_exchange))
        MirroredSet.objects.filter(pk=mirror.pk).update(
            cursor=cursor, last_pulled_at=now, applied=_plus("applied", outcome.applied),
            refused=_plus("refused", outcome.refused),
        )  # fmt: skip
    mirror.cursor = cursor
    return outcome


def _sql_path_gone(condition: str) -> str:
    """The peer ``%(peer)s`` no longer serves the active entries of the set ``%(set)s`` that
    meet ``condition``: it leaves their ``via``, and those no other peer serves are
    tombstoned (an entry with an empty ``via``, mirrored before paths were kept, counts as
    served by every peer)."""
    return f"""
UPDATE signals_setentry e SET via = array_remove(e.via, %(peer)s::varchar),
    state = CASE WHEN {_OTHERS_SERVE} THEN e.state ELSE 'tombstone' END,
    updated_at = %(now)s, {NEW_POSITION}
WHERE e.hash_set_id = %(set)s AND e.state = 'active'
  AND (%(peer)s::varchar = ANY(e.via) OR e.via = '{{}}') AND {condition}
RETURNING e.state
"""  # noqa: S608 - only constants are interpolated


_SQL_STALE = _sql_path_gone(
    "NOT EXISTS (SELECT 1 FROM federation_resyncseen s"
    " WHERE s.mirror_id = %(mirror)s AND s.entry_id = e.id)"
)
_SQL_WITHDRAW = _sql_path_gone("TRUE")


def path_gone(
    cursor: Any, mirror: MirroredSet, peer_exchange: str, now: datetime, sql: str = _SQL_WITHDRAW
) -> int:
    """Run ``sql`` (a ``_sql_path_gone``) over ``mirror``'s set for ``peer_exchange``, under
    the set's lock, in the caller's transaction; emits a webhook wake-up when entries changed.
    Returns the entries tombstoned."""
    lock_set(cursor, mirror.hash_set_id)
    cursor.execute(sql, {"set": mirror.hash_set_id, "peer": peer_exchange, "mirror": mirror.pk,
                         "now": now})  # fmt: skip
    states = [state for (state,) in cursor.fetchall()]
    if states:
        wake()
    return states.count("tombstone")


class Resync:
    """A resync from the peer's snapshot (its feed answered 410: this exchange was away longer
    than its tombstone retention), so that the mirror ends with exactly the origin's active
    entries. Use as a context manager around ``add`` calls, then ``finish``.

    Chunked: each ``add`` applies its lines in a transaction of its own and marks their
    entries seen (``ResyncSeen``), so a snapshot of millions is never one huge transaction.
    Nothing is lost meanwhile: a chunk only adds or updates entries. Only ``finish``, once the
    snapshot has been applied to its end, tombstones the mirror entries it did not hold and
    moves the cursor, in one transaction. A resync cut short leaves the cursor where it was, so
    the next pull is answered 410 again and starts over (what was applied changes nothing
    the second time; the marks are dropped first: they belonged to another snapshot)."""

    def __init__(self, mirror: MirroredSet, *, peer_exchange: str, own_exchange: str) -> None:
        self.mirror = mirror
        self.peer_exchange, self.own_exchange = peer_exchange, own_exchange
        self.outcome = Outcome()
        self.now = timezone.now()

    def __enter__(self) -> "Resync":
        ResyncSeen.objects.filter(mirror=self.mirror).delete()
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add(self, changes: list[Any]) -> None:
        self.add_checked(
            check_page(changes, peer_exchange=self.peer_exchange, own_exchange=self.own_exchange,
                       active_only=True)
        )  # fmt: skip

    def add_checked(self, checked: Checked) -> None:
        """A chunk of the snapshot, checked (``check_page`` with ``active_only``), applied in a
        transaction of its own."""
        self.outcome.add(checked.outcome)
        with transaction.atomic():
            self.outcome.add(
                apply_checked(self.mirror, checked, self.now, peer_exchange=self.peer_exchange,
                              seen=True)
            )  # fmt: skip

    def finish(self, cursor: str) -> Outcome:
        with transaction.atomic(), connection.cursor() as db:
            stale = path_gone(db, self.mirror, self.peer_exchange, self.now, _SQL_STALE)
            ResyncSeen.objects.filter(mirror=self.mirror).delete()
            MirroredSet.objects.filter(pk=self.mirror.pk).update(
                cursor=cursor, last_pulled_at=self.now, resyncs=_plus("resyncs", 1),
                applied=_plus("applied", self.outcome.applied),
                refused=_plus("refused", self.outcome.refused),
            )  # fmt: skip
        self.outcome.tombstoned += stale
        self.mirror.cursor = cursor
        return self.outcome


def do_withdraw_mirror(mirror: MirroredSet, reason: str) -> int:
    """The peer no longer serves this set (it is unlisted: unshared, no longer federated or
    no longer CLEAR/GREEN, deleted), or serves it refused: every active entry of the mirror
    that no other peer serves is tombstoned (the tombstones travel on like any), and this
    path's cursor is forgotten, so a set that comes back is read from its start again. Locks
    the mirror set's slots; audits ``federation.mirror.withdrawn``. Returns the entries
    tombstoned; a mirror already withdrawn changes nothing."""
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        tombstoned = path_gone(cursor, mirror, mirror.peer.exchange_id, now)
        forgot = MirroredSet.objects.filter(pk=mirror.pk).exclude(cursor="").update(cursor="")
        if tombstoned or forgot:
            record(
                "federation.mirror.withdrawn",
                obj=mirror,
                details={"remote_set": mirror.remote_slug, "reason": reason,
                         "tombstoned": tombstoned},
            )  # fmt: skip
    mirror.cursor = ""
    return tombstoned


def _plus(name: str, amount: int) -> Any:
    return F(name) + amount
