"""The one reader of the change feed (DESIGN.md "Change feed", STYLE.md "One reader per
stream of data").

Every consumer reads entries in change order here: API pages and webhook pages
(``rendered_after``), NDJSON syncs (``stream_after``), snapshots (``stream_snapshot``), the PDQ
match index's follower (``pdq_changes_to_horizon``), and the subscriptions' news and lag
(``SQL_HAS_NEWS``, ``SQL_LAG``); TAXII pages (``rendered_after``, ``rendered_since``,
``rendered_entries``) and the MISP feed (``months_of``, ``rendered_month``) too. A change is
rendered once, by Postgres, as the JSON every consumer serves; what "after the cursor" means is
``positions.sql_after_cursor`` everywhere, and what a peer exchange may be served is
``sql_for_reader`` everywhere (federation). Every read that serves a reader goes to a database
through one door, ``_source``: the read replica once it has replayed past what the reader needs,
else the primary (README "Past one machine").
"""

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import Any, NamedTuple

import psycopg2
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)

from exchange import pgwatch
from exchange.handover import Handover
from exchange.metrics import REPLICA_READS
from exchange.problems import Problem
from signals.feed.positions import (
    START,
    Position,
    cursor_params,
    sql_after_cursor,
    visible_horizon,
)
from signals.models import FeedHorizon
from signals.warninglist import PDQ_MIN_QUALITY

logger = logging.getLogger(__name__)

# One change as the feed, snapshots and webhooks serve it, rendered by Postgres: a full sync
# serves millions, and building them in Python would cost more than reading them. Contributor
# names appear only where the set names its contributors. ``{state}``: the entry's state as
# this reader is told it (``_STATE_FOR_READER``).
_RECORD_AS = """concat(
    '{"entry":', e.id, ',"set":', to_json(h.slug), ',"type":', to_json(e.type),
    ',"value":', to_json(e.value), ',"state":"', {state}, '","labels":', to_json(e.labels),
    ',"contributors":', e.contributor_count,
    ',"opinions":{"positive":', e.positive_count, ',"negative":', e.negative_count,
    ',"investigation_seed":', e.investigation_count,
    '},"disputed":', (e.positive_count > 0 AND e.negative_count > 0)::text,
    ',"first_seen":', to_json(e.first_seen), ',"updated":', to_json(e.updated_at),
    ',"expires_at":', coalesce(to_json(e.expires_at)::text, 'null'),
    ',"near_duplicate_of":', coalesce(e.near_duplicate_of_id::text, 'null'),
    CASE WHEN h.attribution = 'named'
         THEN concat(',"contributor_names":', to_json(e.contributor_names)) END,
    ',"hops_left":', coalesce(e.hops_left, h.federation_hops),
    ',"path":', to_json(e.path || ARRAY[(SELECT exchange_id FROM exchange_exchangeidentity)]),
    ',"origin":', CASE WHEN e.origin_entry IS NULL THEN 'null' ELSE json_build_object(
        'exchange', e.path[1], 'set', e.origin_set, 'entry', e.origin_entry,
        'first_seen', e.origin_first_seen)::text END,
    '}')"""
# A mirrored entry that a peer exchange serves here (``via`` names it) is served back to that
# peer as a tombstone, never as active ("poisoned reverse"): two exchanges can then never hold
# a value up for each other once its origin has retracted it. Only with the ``%(peer)s``
# parameter (every read that applies ``sql_for_reader``).
_STATE_FOR_READER = "CASE WHEN %(peer)s::varchar = ANY(e.via) THEN 'tombstone' ELSE e.state END"
_RECORD = _RECORD_AS.replace("{state}", "e.state")
_RECORD_FOR_READER = _RECORD_AS.replace("{state}", _STATE_FOR_READER)


def sql_for_reader(row: str = "e") -> str:
    """The federation rule, as SQL over the entry row aliased ``row``, for the reader named by
    the ``%(peer)s`` parameter (``signals.access.peer_exchange_of``): a member ("") reads every
    entry; a peer exchange never reads an entry that passed through it (its path names it) nor
    a mirrored one with no hops left (it stays with this exchange's members). Which sets a peer
    reads at all is ``signals.access.readable_by``."""
    return (
        f"(%(peer)s = '' OR (NOT (%(peer)s::varchar = ANY({row}.path))"
        f" AND coalesce({row}.hops_left, 1) > 0))"
    )


_RENDERED_COLUMNS = f"e.hash_set_id, e.position_xid::text, e.position_seq, {_RECORD}"
_RENDERED_COLUMNS_FOR_READER = (
    f"e.hash_set_id, e.position_xid::text, e.position_seq, {_RECORD_FOR_READER}"
)


class Rendered(NamedTuple):
    """A change as Postgres rendered it: its set, its position (``xid`` as text) and its JSON.
    The row is kept as it came; a page needs the position of its last change only."""

    set_id: int
    xid: str
    seq: int
    json: str

    @property
    def position(self) -> Position:
        return Position(int(self.xid), self.seq)


_rendered = Rendered._make


# --- the one door: which database serves a read -----------------------------------------------

# The DATABASES alias of the read replica (DATABASE_REPLICA_URL): a hot standby streaming from
# the primary.
REPLICA = "replica"
# Until this (time.time(): the clock tests travel), this process does not try the replica: it
# could not be reached.
_replica_down_until = 0.0
# What a replica that went away, or cancelled a query that its replay conflicted with, raises.
_LOST = (OperationalError, InterfaceError)


@dataclass
class _Source:
    """Where one read runs: a DATABASES alias, and that database's visible horizon (rows below
    it are final there; a read serves no other), read once, by the door or when first asked."""

    using: str
    known_horizon: int | None = None

    def horizon(self) -> int:
        if self.known_horizon is None:
            self.known_horizon = visible_horizon(self.using)
        return self.known_horizon


def _source(needs: Position, set_ids: list[int], *, replica: bool = True) -> _Source:
    """The database that serves a read of ``set_ids`` for a reader holding the cursor
    ``needs`` (``START`` for a read that names none): the replica once it has caught up with
    the reader, else the primary. Counted in ``hashx_replica_reads`` when a replica is
    configured.

    The freshness rule. A read serves only changes below the visible horizon of the database
    it reads, so a lagging replica can never serve a change out of order: it can only be
    stale. The rule keeps from a reader the staleness that would mislead it.
    A read after a cursor goes to the replica once the replica's horizon is above the cursor's
    transaction id. Every transaction up to the cursor's has then ended there, so everything
    the reader was served is there (a page serves only changes at or below the cursor it hands
    out; a snapshot's cursor is the horizon when it was taken, and a horizon only grows, so
    the replica replayed past the snapshot's moment): no entry comes back to it in an older
    state, and the changes right after its cursor can be served. A replica at or below the
    cursor could only answer "nothing new" while the primary may have news.
    A read that names no cursor (a first page, a snapshot, MISP pages, TAXII objects by id)
    has nothing to compare, yet its reader may know of a change (its own batch or retraction,
    done): it needs the newest change of its sets final on the primary now (one index lookup
    per set there), and goes to the replica once the replica's horizon has passed that
    change's transaction. It then sees every change of its sets the primary would serve, and
    a snapshot's cursor is past all of them. (Against the primary's horizon instead, any
    write there, the audit event of the reader's previous pull included, would send it to
    the primary until the replica replayed that write.)
    Either way the cursor handed back is never below the one sent.
    ``replica=False``: the read stays on the primary whatever the replica holds."""
    if not replica or REPLICA not in connections.settings:
        return _Source(DEFAULT_DB_ALIAS)
    if time.time() < _replica_down_until:
        REPLICA_READS.labels(outcome="down").inc()
        return _Source(DEFAULT_DB_ALIAS)
    try:
        horizon = visible_horizon(REPLICA)
    except _LOST:
        _replica_lost()
        return _Source(DEFAULT_DB_ALIAS)
    if needs == START:
        needs = _newest_final(set_ids)
    if horizon > needs.xid:
        REPLICA_READS.labels(outcome="served").inc()
        return _Source(REPLICA, horizon)
    REPLICA_READS.labels(outcome="behind").inc()
    return _Source(DEFAULT_DB_ALIAS)


# The newest change of the sets that is final on the primary (the index on (set, position),
# walked backwards from the horizon, once per set).
_SQL_NEWEST_FINAL = """
SELECT e.position_xid::text, e.position_seq
FROM unnest(%(sets)s::bigint[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT x.position_xid, x.position_seq FROM signals_setentry x
    WHERE x.hash_set_id = s.id AND x.position_xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY x.position_xid DESC, x.position_seq DESC LIMIT 1
) e
ORDER BY e.position_xid DESC, e.position_seq DESC LIMIT 1
"""


def _newest_final(set_ids: list[int]) -> Position:
    """The position of the newest change of ``set_ids`` final on the primary (``START`` when
    they have none)."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL_NEWEST_FINAL, {"sets": set_ids})
        row = cursor.fetchone()
    return Position(int(row[0]), row[1]) if row else START


def _replica_lost() -> None:
    """The replica failed a read (down, restarting, or a query cancelled by its replay): drop
    the connection and leave reads to the primary for ``HASHX_REPLICA_RETRY_SECONDS``."""
    global _replica_down_until
    REPLICA_READS.labels(outcome="down").inc()
    _replica_down_until = time.time() + settings.HASHX_REPLICA_RETRY_SECONDS
    connections[REPLICA].close()


def _read[T](
    needs: Position, set_ids: list[int], read: Callable[[_Source], T], *, replica: bool = True
) -> T:
    """``read`` on the database ``_source`` picks; a read the replica fails midway is read
    again on the primary (a whole answer is built before anything is sent)."""
    source = _source(needs, set_ids, replica=replica)
    if source.using == REPLICA:
        try:
            return read(source)
        except _LOST:
            _replica_lost()
            source = _Source(DEFAULT_DB_ALIAS)
    return read(source)


# The visible horizon of a page: the ``%(horizon)s`` parameter when the read already knows it
# (the replica's, read to choose the replica), else the statement's own snapshot's, taken in
# the same statement rather than by a round trip of its own before it. Rows below the xmin of
# the snapshot a statement reads with are final and, committed, visible to it.
_HORIZON_OR_NOW = "coalesce(%(horizon)s::text, pg_snapshot_xmin(pg_current_snapshot())::text)"


def _sql_after(columns: str, condition: str = "TRUE") -> str:
    """Per set, the next ``limit`` rows (that meet ``condition``, SQL over the entry ``x``)
    straight off the (set, position) index in order; then the first ``limit`` of their union.
    (``hash_set_id = ANY(…)`` would read and sort every row after the cursor: Postgres 16
    cannot walk one ordered index range per array element.) The horizon is
    ``_HORIZON_OR_NOW``."""
    return f"""
SELECT {columns}
FROM unnest(%(sets)s::bigint[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT * FROM signals_setentry x
    WHERE x.hash_set_id = s.id AND {sql_after_cursor("x", horizon=_HORIZON_OR_NOW)}
      AND {sql_for_reader("x")}
      AND {condition}
    ORDER BY x.position_xid, x.position_seq LIMIT %(limit)s
) e
JOIN signals_hashset h ON h.id = e.hash_set_id
ORDER BY e.position_xid, e.position_seq LIMIT %(limit)s
"""  # noqa: S608 - only constants are interpolated


# A page (``rendered_after``, ``rendered_since``) ends early, before the change whose value
# would take the values served past this many bytes (long values, say hour-long videos: a
# page of 1,000 of them was 295 MB); it always holds one change. Past the budget a row comes
# back without its record, unrendered, so that the page knows it was cut.
PAGE_BYTES = 8 << 20
_PAGE_COLUMNS_FOR_READER = f"""e.hash_set_id, e.position_xid::text, e.position_seq,
    CASE WHEN coalesce(sum(octet_length(e.value)) OVER (
        ORDER BY e.position_xid, e.position_seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ), 0) < %(page_bytes)s THEN {_RECORD_FOR_READER} END"""

_SQL_RENDERED = _sql_after(_PAGE_COLUMNS_FOR_READER)


def rendered_after(
    after: Position,
    set_ids: list[int],
    limit: int = 1000,
    *,
    peer: str = "",
    replica: bool = True,
) -> tuple[list[Rendered], Position, bool]:
    """The latest state of entries of ``set_ids`` changed after ``after``, in position order,
    each as the JSON the API serves, the position to continue from, and whether the page was
    cut short by ``PAGE_BYTES`` (there is more, however few changes it holds). Only rows of
    finished transactions are served; to a ``peer`` exchange only what ``sql_for_reader`` lets
    leave. From the replica when it has caught up with ``after``, unless ``replica`` is
    false."""
    rows = _fetch_after(_SQL_RENDERED, after, set_ids, limit, peer, replica=replica)
    return _page(rows, after)


def _page(rows: list[Any], after: Position) -> tuple[list[Rendered], Position, bool]:
    """A page's rows up to the first one left unrendered (past ``PAGE_BYTES``)."""
    changes = list(map(_rendered, takewhile(lambda row: row[3] is not None, rows)))
    return changes, (changes[-1].position if changes else after), len(changes) < len(rows)


def _fetch_after(
    sql: str,
    after: Position,
    set_ids: list[int],
    limit: int,
    peer: str,
    *,
    replica: bool = True,
    **extra: Any,
) -> list[Any]:
    def read(source: _Source) -> list[Any]:
        with connections[source.using].cursor() as cursor:
            cursor.execute(
                sql,
                {"sets": set_ids, "limit": limit, "peer": peer, "page_bytes": PAGE_BYTES,
                 **cursor_params(after, source.known_horizon), **extra},
            )  # fmt: skip
            return cursor.fetchall()

    return _read(after, set_ids, read, replica=replica)


# As _SQL_RENDERED, of the changes made after a time only (TAXII's added_after): the index
# walk in position order is the same, the older rows are passed over in it.
_SQL_RENDERED_SINCE = _sql_after(_PAGE_COLUMNS_FOR_READER, "x.updated_at > %(since)s")


def rendered_since(
    after: Position, set_ids: list[int], since: datetime, limit: int = 1000, *, peer: str = ""
) -> tuple[list[Rendered], Position, bool]:
    """``rendered_after``, only the changes made after ``since`` (their ``updated`` time)."""
    rows = _fetch_after(_SQL_RENDERED_SINCE, after, set_ids, limit, peer, since=since)
    return _page(rows, after)


_SQL_RENDERED_ENTRIES = f"""
SELECT {_RENDERED_COLUMNS}
FROM signals_setentry e
JOIN signals_hashset h ON h.id = e.hash_set_id
WHERE e.hash_set_id = %(set)s AND e.id = ANY(%(entries)s::bigint[])
  AND e.position_xid < %(horizon)s::text::xid8
ORDER BY e.position_xid, e.position_seq
"""  # noqa: S608 - only constants are interpolated


def rendered_entries(set_id: int, entry_ids: list[int]) -> list[Rendered]:
    """The latest final state of the entries ``entry_ids`` of the set ``set_id``, in position
    order, each as the JSON the API serves (one that changed in a transaction still running
    is left out until it is final, as the feed would)."""

    def read(source: _Source) -> list[Rendered]:
        with connections[source.using].cursor() as cursor:
            cursor.execute(
                _SQL_RENDERED_ENTRIES,
                {"set": set_id, "entries": entry_ids, "horizon": str(source.horizon())},
            )
            return [_rendered(row) for row in cursor.fetchall()]

    return _read(START, [set_id], read)


# Every change after the cursor, rendered by Postgres and written by it (COPY), one row per
# change in position order. Each row starts with the change's set id and position,
# tab-separated (COPY's text format escapes tabs in the record), for the stream to count, strip
# and place its checkpoints by, a chunk of rows at a time. No window function numbers the rows
# for the checkpoints (Postgres would then render every row in one process: 167k rows/s against
# 229k/s rendered by parallel workers, on 200,000 entries); one set is read by equality, which
# the planner can walk in (set, position) order.
_SQL_STREAM = f"""
COPY (
    SELECT e.hash_set_id, e.position_xid, e.position_seq, {_RECORD_FOR_READER}
    FROM signals_setentry e
    JOIN signals_hashset h ON h.id = e.hash_set_id
    WHERE {{sets}} AND {sql_after_cursor()} AND {sql_for_reader()}
    ORDER BY e.position_xid, e.position_seq
) TO STDOUT
"""  # noqa: S608 - only constants are interpolated
_SQL_STREAM_SETS = _SQL_STREAM.replace("{sets}", "e.hash_set_id = ANY(%(sets)s::bigint[])")
_SQL_STREAM_SET = _SQL_STREAM.replace("{sets}", "e.hash_set_id = (%(sets)s::bigint[])[1]")


@dataclass
class Streamed:
    """What a stream served: changes per set id, and the cursor after the last one."""

    counts: dict[int, int]
    until: Position


class _Served:
    """Turns chunks of ``_SQL_STREAM`` rows into NDJSON: strips each row's leading columns,
    puts a ``{"cursor": …}`` line after every ``every`` changes, and after the chunk in which
    ``CHECKPOINT_BYTES`` have passed since the last one (long values, say hour-long videos:
    what a reader holds between two checkpoints stays bounded in bytes too), and counts the
    rows per set and keeps the last one's position as they pass. Per chunk of rows: the rows
    are sliced in one list comprehension (a multi-line regular expression took 4 µs a row, the
    slice 0.24), and only a checkpoint's or a chunk's last row is split."""

    def __init__(self, every: int, single: int | None) -> None:
        self.every = every
        self.single = single  # the one set id read, if only one (no per-row tally then)
        self.served = 0
        self.tally: dict[bytes, int] = {}
        self.last: tuple[bytes, bytes] | None = None
        self.pending = 0  # bytes of rows served since the last checkpoint

    def __call__(self, rows: list[bytes]) -> bytes:
        out: list[bytes] = []
        done = 0
        while done < len(rows):
            # Up to (and with) the next checkpoint, or the end of the chunk. The record is
            # all of a row from its first brace (the leading columns are numbers and tabs).
            upto = min(len(rows), done + self.every - self.served % self.every)
            part = rows[done:upto]
            if self.single is None:
                for row in part:
                    set_id = row[: row.index(b"\t")]
                    self.tally[set_id] = self.tally.get(set_id, 0) + 1
            out.append(b"".join([row[row.index(b"{") :] for row in part]))
            self.served += upto - done
            self.pending += sum(map(len, part))
            _, xid, seq, _ = rows[upto - 1].split(b"\t", 3)
            self.last = (xid, seq)
            if self.served % self.every == 0 or (
                upto == len(rows) and self.pending >= CHECKPOINT_BYTES
            ):
                cursor = Position(int(xid), int(seq)).cursor()
                out.append(b'{"cursor":"' + cursor.encode() + b'"}\n')
                self.pending = 0
            done = upto
        return _unescaped(b"".join(out))

    @property
    def counts(self) -> dict[int, int]:
        """Changes served per set id."""
        if self.single is not None:
            return {self.single: self.served} if self.served else {}
        return {int(set_id): count for set_id, count in self.tally.items()}


def stream_after(
    after: Position, set_ids: list[int], every: int, result: Streamed, *, peer: str = ""
) -> Iterator[bytes]:
    """Every change after ``after`` to the end as NDJSON bytes, rendered and written by
    Postgres (COPY), with a checkpoint after every ``every`` changes; then fills ``result``
    with the changes served per set and the position of the last one, tallied from the rows
    as they pass (one statement, so exactly the rows served; no second read). To a ``peer``
    exchange only what ``sql_for_reader`` lets leave. From the replica when it has caught up
    with ``after``; one that fails midway fails the stream (as the primary's would): the client
    resumes from its last checkpoint."""
    source = _source(after, set_ids)
    params = {"sets": set_ids, "peer": peer, **cursor_params(after, source.horizon())}
    single = set_ids[0] if len(set_ids) == 1 else None
    with connections[source.using].cursor() as cursor:
        sql = cursor.mogrify(_SQL_STREAM_SET if single else _SQL_STREAM_SETS, params).decode()
    served = _Served(every, single)
    try:
        yield from _copy_out(source.using, sql, served)
    finally:  # also when the client went away: what was read so far
        result.counts = served.counts
        result.until = Position(int(served.last[0]), int(served.last[1])) if served.last else after


_COPY_ESCAPE = re.compile(rb"\\(.)")
_COPY_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _unescape(match: re.Match[bytes]) -> bytes:
    return _COPY_ESCAPES.get(match.group(1), match.group(1))


def _unescaped(data: bytes) -> bytes:
    """COPY's text format undone (it escapes backslashes, newlines and tabs in a value)."""
    return _COPY_ESCAPE.sub(_unescape, data) if b"\\" in data else data


def _joined(rows: list[bytes]) -> bytes:
    return _unescaped(b"".join(rows))


# Rows per chunk handed on: about 64 KiB of NDJSON, written to the socket in one go (per chunk,
# the queue and the socket cost some 20 µs: 0.15 µs a row).
_CHUNK_ROWS = 128
# Or fewer, when they come to this many bytes (rows of long values: the queue of 16 chunks then
# holds at most some 16 MiB, not 16 chunks of 128 hour-long videos).
_CHUNK_BYTES = 1 << 20
# A stream puts a checkpoint after the chunk in which this many bytes have passed since the last
# one, however few changes that was (a federation pull holds a page between two in memory).
CHECKPOINT_BYTES = 8 << 20


def _copy_out(
    using: str, sql: str, chunk: Callable[[list[bytes]], bytes] = _joined
) -> Iterator[bytes]:
    """COPY … TO STDOUT on the database ``using`` (connected already) as a stream of byte
    chunks, each ``chunk`` of a list of whole rows (``_CHUNK_ROWS`` of them or ``_CHUNK_BYTES``,
    fewer last). psycopg2 only writes COPY output into a file, one row per call, so a thread
    copies into a bounded hand-over (``exchange.handover``) that this generator drains; per row
    it only appends. Closing the generator early (the client went away) cancels the query on
    the server; the caller's transaction then rolls back as usual."""
    raw = connections[using].connection
    chunks: Handover[bytes] = Handover(16)
    rows: list[bytes] = []
    size = 0

    class Sink:
        def write(self, data: bytes) -> None:
            nonlocal size
            rows.append(data)
            size += len(data)
            if len(rows) >= _CHUNK_ROWS or size >= _CHUNK_BYTES:
                chunks.put(chunk(rows))
                rows.clear()
                size = 0

    def run() -> None:
        try:
            with raw.cursor() as cursor:
                cursor.copy_expert(sql, Sink())
            if rows:
                chunks.put(chunk(rows))
        except BaseException as exc:
            chunks.finish(exc)
        else:
            chunks.finish()

    worker = threading.Thread(target=run, name="copy-out", daemon=True)
    worker.start()
    finished = False
    try:
        yield from chunks
        finished = True
    finally:
        chunks.stop()
        canceller = None
        if not finished and worker.is_alive():
            # The COPY ends with QueryCanceled in the thread, which nobody reads.
            canceller = threading.Thread(
                target=_cancel,
                args=(connections[using].get_connection_params(), raw.get_backend_pid()),
                name="copy-cancel",
                daemon=True,
            )
            canceller.start()
        worker.join()
        if canceller is not None:
            canceller.join(_CANCEL_WAIT_SECONDS)
            if canceller.is_alive() and not raw.closed:
                # Taken late, the cancel would end whatever the connection runs next: it is cut
                # (and discarded) instead.
                pgwatch.cut(raw.fileno())


# How long the cancel of a COPY whose reader left may take before its connection is cut.
_CANCEL_WAIT_SECONDS = 1.0


def _cancel(params: dict[str, Any], backend_pid: int) -> None:
    """``pg_cancel_backend`` from a connection of its own. Not psycopg2's ``cancel()``: it
    keeps the GIL while libpq waits, without a bound, for the server to take the request, and a
    frozen server stopped every thread of the process with it (tests/exchange/test_faults.py).
    Connecting and the call are bounded (connect_timeout, exchange/pgwatch.py)."""
    try:
        with closing(psycopg2.connect(**params)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [backend_pid])
    except (psycopg2.Error, OSError) as exc:  # the server is gone: the COPY ends all the same
        logger.warning("Could not cancel a COPY whose reader left: %s", exc)


def stream_snapshot(hash_set: Any, result: Streamed, *, peer: str = "") -> Iterator[bytes]:
    """Every active entry of a set as NDJSON bytes (written by Postgres), as of one consistent
    database snapshot; then fills ``result`` with the count and the cursor the feed continues
    from. Everything the snapshot could not see was written by a transaction at or above its
    xmin, so it sorts after ``(xmin, 0)``: an entry can be both in the snapshot and after the
    cursor, never in neither.

    Opens its own REPEATABLE READ transaction: call it outside any other. From the replica
    once it has passed the set's newest change final on the primary (it names no cursor).
    """
    count, horizon = 0, START
    using = _source(START, [hash_set.pk]).using
    try:
        with transaction.atomic(using=using):
            with connections[using].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                horizon = Position(int(cursor.fetchone()[0]), 0)
                sql = cursor.mogrify(_SQL_SNAPSHOT, {"set": hash_set.pk, "peer": peer}).decode()
            for chunk in _copy_out(using, sql):
                count += chunk.count(b"\n")
                yield chunk
    finally:  # also when the client went away: what was read so far
        result.counts, result.until = {hash_set.pk: count}, horizon


_SQL_SNAPSHOT = f"""
COPY (
    SELECT {_RECORD}
    FROM signals_setentry e
    JOIN signals_hashset h ON h.id = e.hash_set_id
    WHERE e.hash_set_id = %(set)s AND e.state = 'active' AND {sql_for_reader()}
      AND NOT (%(peer)s::varchar = ANY(e.via))
    ORDER BY e.id
) TO STDOUT
"""  # noqa: S608 - only constants are interpolated


def purge_horizon() -> Position:
    """The newest position of a purged tombstone (a cursor below it may have missed one)."""
    horizon = FeedHorizon.objects.filter(id=1).first()
    return Position(horizon.purged_xid, horizon.purged_seq) if horizon else Position(0, 0)


def held_cursor(cursor: str) -> Position:
    """The position a client's cursor names: 400 for one this exchange did not issue, 410 when
    tombstones after it were purged since."""
    position = Position.from_cursor(cursor)
    check_cursor(position)
    return position


def check_cursor(after: Position) -> None:
    """410 when tombstones the holder of ``after`` may not have seen were purged."""
    if after < purge_horizon():
        raise Problem(
            "cursor-expired",
            f"Tombstones older than {settings.HASHX_TOMBSTONE_RETENTION_DAYS} days were purged"
            " after this cursor: start again from GET /api/v1/sets/{slug}/snapshot.",
        )


# Every PDQ change after a position up to the horizon, in no order: an entry is one row at its
# latest state, so a follower that reads them all in one statement needs no order, and paging by
# position (ORDER BY ... LIMIT) joined and sorted the whole remainder once per page (quadratic in
# a burst of ingest: 4.2 s of a 200,000-entry burst's 4.7 s). The redundant ``position_xid >=``
# is a range the planner can estimate: without it, the row comparison's default selectivity
# made it scan the whole table (0.29 s at 2.4M entries for 10 changes).
# The PDQ hashes of a PDQ or vPDQ entry ``e``, as (set id, hash) rows: a PDQ
# entry's one hash under its set; a video's frames (each distinct hash of quality >= 50 once)
# under its set's id negated, so that image and video queries tell them apart in one index.
SQL_INDEXED_HASHES = f"""
CROSS JOIN LATERAL (
    SELECT e.hash_set_id AS set_id, e.value AS hash WHERE e.type = 'pdq'
    UNION ALL
    SELECT DISTINCT -e.hash_set_id, split_part(frame, ',', 1)
    FROM json_array_elements_text(
        CASE WHEN e.type = 'vpdq' THEN e.value ELSE '[]' END::json) AS frame
    WHERE split_part(frame, ',', 2)::int >= {PDQ_MIN_QUALITY}
) f"""  # noqa: S608 - only constants are interpolated

_SQL_PDQ_CHANGES_TO_HORIZON = f"""
SELECT e.id, f.set_id, f.hash, e.state
FROM signals_setentry e
{SQL_INDEXED_HASHES}
WHERE {sql_after_cursor()} AND e.position_xid >= %(xid)s::text::xid8
  AND e.type IN ('pdq', 'vpdq')
"""  # noqa: S608 - only constants are interpolated


def pdq_changes_to_horizon(
    after: Position, page: int, apply: Callable[[list[tuple[int, int, str, str]]], None]
) -> Position:
    """Every PDQ entry of every set changed after ``after`` (entry id, set id, value, state),
    and every vPDQ entry's frames (one row per frame: entry id, minus its set id, frame hash,
    state; ``SQL_INDEXED_HASHES``),
    handed to ``apply`` ``page`` rows at a time from one statement (a server-side cursor), in
    no particular order; returns the position to continue from: the visible horizon read
    first (a change that statement could not see is positioned at or above it). ``apply`` may
    raise to stop reading (the cursor is closed, nothing else is left behind)."""
    horizon = visible_horizon()
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(_SQL_PDQ_CHANGES_TO_HORIZON, cursor_params(after, horizon))
        while rows := cursor.fetchmany(page):
            apply(rows)
    return max(after, Position(horizon, 0))


# Of the candidates (an ORM query: active, nothing pending, and their readable sets), those with
# changes after their cursor in a set they may read.
SQL_HAS_NEWS = f"""
SELECT c.id FROM ({{candidates}}) c
WHERE EXISTS (
    SELECT 1 FROM signals_setentry e
    WHERE e.hash_set_id = ANY(c.readable)
      AND {sql_after_cursor(cursor="c.cursor_xid, c.cursor_seq", horizon="%s")})
"""  # noqa: S608 - only constants are interpolated


LAG_CAP = 10_000
# Changes in a subscription's sets after its cursor, counted up to the parameter (LAG_CAP): an
# expression over the subscription row, so a list of subscriptions gets its lags in the same query.
# Its parameters: a visible_horizon() (as text), then the cap.
_LAG_AFTER = sql_after_cursor(
    cursor="signals_subscription.cursor_xid, signals_subscription.cursor_seq", horizon="%s"
)
SQL_LAG = f"""(SELECT count(*) FROM (
    SELECT 1 FROM signals_setentry e
    WHERE e.hash_set_id = ANY(signals_subscription.set_ids) AND {_LAG_AFTER}
    LIMIT %s) t)"""  # noqa: S608 - only constants are interpolated


class Month(NamedTuple):
    """A set's entries first seen in one UTC month: the newest change among them, and how many
    there are (every state) and are active."""

    start: datetime
    updated: datetime
    entries: int
    active: int


_SQL_MONTHS = """
SELECT date_trunc('month', e.first_seen, 'UTC'), max(e.updated_at), count(*),
       count(*) FILTER (WHERE e.state = 'active')
FROM signals_setentry e
WHERE e.hash_set_id = %(set)s AND e.position_xid < %(horizon)s::text::xid8
GROUP BY 1 ORDER BY 1
"""

_SQL_RENDERED_MONTH = f"""
SELECT {_RENDERED_COLUMNS}
FROM signals_setentry e
JOIN signals_hashset h ON h.id = e.hash_set_id
WHERE e.hash_set_id = %(set)s AND e.position_xid < %(horizon)s::text::xid8
  AND e.first_seen >= %(start)s
  AND e.first_seen < ((%(start)s::timestamptz AT TIME ZONE 'UTC') + interval '1 month')
                     AT TIME ZONE 'UTC'
ORDER BY e.id
"""  # noqa: S608 - only constants are interpolated


def months_of(set_id: int) -> list[Month]:
    """The set's final entries (every state) grouped by the UTC month they were first seen in,
    oldest first (the MISP feed's events)."""

    def read(source: _Source) -> list[Month]:
        with connections[source.using].cursor() as cursor:
            cursor.execute(_SQL_MONTHS, {"set": set_id, "horizon": str(source.horizon())})
            return [Month(*row) for row in cursor.fetchall()]

    return _read(START, [set_id], read)


def rendered_month(set_id: int, start: datetime) -> list[Rendered]:
    """The latest final state of every entry of the set first seen in the UTC month starting at
    ``start``, tombstones included, by entry id."""

    def read(source: _Source) -> list[Rendered]:
        with connections[source.using].cursor() as cursor:
            cursor.execute(
                _SQL_RENDERED_MONTH,
                {"set": set_id, "start": start, "horizon": str(source.horizon())},
            )
            return [_rendered(row) for row in cursor.fetchall()]

    return _read(START, [set_id], read)
