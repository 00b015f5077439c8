"""A local copy of sets, kept in sync with the change feed: ``hashx sync --out DIR``.

The copy is one SQLite file (``DIR/hashx.sqlite3``): ``entries`` holds the latest state of
every active entry (tombstones delete), ``state`` the cursor. Changes are applied in the
order the feed gives them and committed together with the cursor they lead to, at a checkpoint
of the stream once ``COMMIT_EVERY`` changes are waiting, at its end, and when it breaks: an
interrupted sync resumes from the last checkpoint applied, and replaying a change is harmless
(each carries its entry's whole latest state). A cursor too old for the
exchange (410) is answered by loading each set's snapshot and continuing from there.
"""

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hashx.client import Client
from hashx.errors import HashxError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    entry INTEGER PRIMARY KEY,
    "set" TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    labels TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_value ON entries (type, value);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# SQLite reads the fields out of each record's JSON itself: parsing a million records in
# Python would cost more than the whole transfer.
_UPSERT = """
INSERT INTO entries (entry, "set", type, value, labels, record)
SELECT json_extract(r, '$.entry'), json_extract(r, '$.set'), json_extract(r, '$.type'),
       json_extract(r, '$.value'), json_extract(r, '$.labels'), r
FROM (SELECT ? AS r) WHERE json_extract(r, '$.state') = 'active'
ON CONFLICT (entry) DO UPDATE SET "set" = excluded."set", type = excluded.type,
    value = excluded.value, labels = excluded.labels, record = excluded.record
"""
_DELETE = """
DELETE FROM entries WHERE entry = (
    SELECT json_extract(r, '$.entry') FROM (SELECT ? AS r)
    WHERE json_extract(r, '$.state') <> 'active')
"""


# Changes applied between two commits. A commit costs about as much as writing 5,000 changes, so
# committing at every checkpoint of the stream (one per 5,000) halved the rate; an interrupted
# sync redoes at most this many.
COMMIT_EVERY = 50_000


class OtherSets(ValueError):
    """The local copy follows other sets than the ones asked for."""


class LocalStore:
    def __init__(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / "hashx.sqlite3"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA cache_size = -131072")  # 128 MiB: a million-entry index fits
        self.db.executescript(SCHEMA)

    def get(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO state VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    @property
    def cursor(self) -> str:
        return self.get("cursor")

    def apply(self, records: list[str], cursor: str) -> int:
        """Apply one page of change records (JSON text, in feed order) and move to ``cursor``,
        in the open transaction: committed with the next ``commit()``. Returns how many."""
        # Only records that may be tombstones go to the DELETE (which checks the state itself).
        maybe_gone = [(r,) for r in records if '"state":"active"' not in r]
        # In feed order an entry appears once per page at most, so upserts and deletes of one
        # page never touch the same entry twice.
        self.db.executemany(_UPSERT, [(r,) for r in records])
        self.db.executemany(_DELETE, maybe_gone)
        self.put("cursor", cursor)
        return len(records)

    def commit(self) -> None:
        self.db.commit()

    def replace_set(self, slug: str, records: Iterable[str]) -> int:
        """Forget what the copy holds of ``slug`` and load a snapshot's records instead, as they
        stream in (not committed: the caller commits with the cursor)."""
        self.db.execute('DELETE FROM entries WHERE "set" = ?', [slug])
        loaded = 0

        def rows() -> Iterator[tuple[str]]:
            nonlocal loaded
            for record in records:
                loaded += 1
                yield (record,)

        self.db.executemany(_UPSERT, rows())
        return loaded

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def values(self) -> set[tuple[str, str, str]]:
        return set(self.db.execute('SELECT "set", type, value FROM entries').fetchall())

    def close(self) -> None:
        self.db.close()


def sync(
    client: Client,
    store: LocalStore,
    sets: list[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Bring ``store`` up to date with ``sets``; returns (changes applied, cursor)."""
    recorded = store.get("sets")
    if recorded and json.loads(recorded) != sets:
        raise OtherSets(f"{store.path} follows other sets ({json.loads(recorded)})")
    with store.db:
        store.put("sets", json.dumps(sets))
    try:
        return _follow(client, store, sets, store.cursor, progress)
    except HashxError as exc:
        if exc.status != 410:
            raise
    # Our cursor is older than the exchange keeps tombstones: start again from snapshots.
    cursor, loaded = _load_snapshots(client, store, sets)
    applied, cursor = _follow(client, store, sets, cursor, progress)
    return loaded + applied, cursor


def _follow(
    client: Client,
    store: LocalStore,
    sets: list[str],
    cursor: str,
    progress: Callable[[int], None] | None,
) -> tuple[int, str]:
    applied, pending, committed = 0, [], 0
    try:
        for line in client.stream_changes(sets=sets, cursor=cursor, raw=True):
            if isinstance(line, str):
                pending.append(line)
                continue
            applied += store.apply(pending, line["cursor"])
            cursor, pending = line["cursor"], []
            if applied - committed >= COMMIT_EVERY:
                store.commit()
                committed = applied
            if progress:
                progress(applied)
    except BaseException:
        # Keep the pages applied before the stream broke (or Ctrl-C): each ends at its
        # checkpoint, and one cut short by an error is replayed from the cursor before it.
        with contextlib.suppress(sqlite3.Error):
            store.commit()
        raise
    store.commit()
    return applied, cursor


def _load_snapshots(client: Client, store: LocalStore, sets: list[str]) -> tuple[str, int]:
    """Each set's snapshot, in one transaction; the feed continues from the oldest of their
    cursors (changes seen twice are harmless)."""
    cursors: list[str] = []
    loaded = 0

    def records(lines: Iterator[Any]) -> Iterator[str]:
        for line in lines:
            if isinstance(line, str):
                yield line
            else:
                cursors.append(line["cursor"])

    with store.db:
        for slug in sets:
            loaded += store.replace_set(slug, records(client.snapshot(slug, raw=True)))
        # Snapshots taken one after another: the first one's cursor is the oldest.
        cursor = cursors[0]
        store.put("cursor", cursor)
    return cursor, loaded
