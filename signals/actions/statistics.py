"""Planner statistics brought up to date after a bulk load, rather than when autovacuum comes
round. The tables a merge fills are read by every feed page, snapshot and match; planned with
no statistics (a new exchange's first load) or with statistics of a table a fraction of its
size, a feed page read and sorted every entry of its set instead of walking 100 of them off the
(set, position) index: 9.8 ms against 1.3 for a set of 10,000 (EXPLAIN ANALYZE, 2026-12-04),
and in proportion for a million. Autovacuum analyzes within a minute or so; a merge that
changes most of a table asks for it at once (``signals.analyze_tables``, default queue, off
the merge's path)."""

from django.db import connection

# What a merge writes, and every read of the feed joins.
TABLES = ("signals_setentry", "signals_contribution")
# Analyzed once this many rows changed since the last analysis, and more than the table's
# live rows divided by ``_SHARE`` (autovacuum's own threshold is a tenth of them, plus 50).
_AT_LEAST = 1000
_SHARE = 2

_SQL_STALE = """
SELECT relname FROM pg_stat_user_tables
WHERE relname = ANY(%(tables)s) AND n_mod_since_analyze >= %(at_least)s
  AND (n_mod_since_analyze * %(share)s > n_live_tup
       OR (last_analyze IS NULL AND last_autoanalyze IS NULL))
ORDER BY relname
"""


def stale_tables() -> list[str]:
    """The merged tables whose statistics describe a table much smaller than it is now (or
    none at all)."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL_STALE, {"tables": list(TABLES), "at_least": _AT_LEAST, "share": _SHARE})
        return [name for (name,) in cursor.fetchall()]


def do_analyze_stale_tables() -> list[str]:
    """ANALYZE each stale table (a sample of 30,000 rows each, whatever its size); the ones
    analyzed."""
    stale = stale_tables()
    with connection.cursor() as cursor:
        for table in stale:
            cursor.execute(f'ANALYZE "{table}"')  # a name from TABLES, never input
    return stale
