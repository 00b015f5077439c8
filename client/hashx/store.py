"""A local copy of sets, kept in sync with the change feed: ``hashx sync --out DIR``.

The copy is one SQLite file (``DIR/hashx.sqlite3``): ``entries`` holds the latest state of
every active entry (tombstones delete), ``state`` the cursor. Changes are applied in the
order the feed gives them and committed together with the cursor they lead to, at every
checkpoint of the stream: an interrupted sync resumes from the last checkpoint, and replaying
a change is harmless (each carries its entry's whole latest state). A cursor too old for the
exchange (410) is answered by loading each set's snapshot and continuing from there.
"""

import json
import sqlite3
from collections.abc import Callable, Iterable
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
_UPSERT = (
    'INSERT INTO entries (entry, "set", type, value, labels, record) VALUES (?, ?, ?, ?, ?, ?)'
    ' ON CONFLICT (entry) DO UPDATE SET "set" = excluded."set", type = excluded.type,'
    " value = excluded.value, labels = excluded.labels, record = excluded.record"
)


class LocalStore:
    def __init__(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / "hashx.sqlite3"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
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

    def apply(self, changes: Iterable[dict[str, Any]], cursor: str) -> int:
        """Apply changes and move to ``cursor`` in one transaction; returns how many."""
        upserts, deletes = [], []
        for change in changes:
            if change["state"] == "active":
                upserts.append(
                    (
                        change["entry"],
                        change["set"],
                        change["type"],
                        change["value"],
                        json.dumps(change["labels"]),
                        json.dumps(change, separators=(",", ":")),
                    )
                )
            else:
                deletes.append((change["entry"],))
        with self.db:
            # In feed order an entry appears once per page at most, so upserts and deletes of
            # one page never touch the same entry twice.
            self.db.executemany(_UPSERT, upserts)
            self.db.executemany("DELETE FROM entries WHERE entry = ?", deletes)
            self.put("cursor", cursor)
        return len(upserts) + len(deletes)

    def replace_set(self, slug: str, entries: Iterable[dict[str, Any]]) -> int:
        """Forget what the copy holds of ``slug`` and load a snapshot's entries instead (not
        committed: the caller commits with the cursor)."""
        self.db.execute('DELETE FROM entries WHERE "set" = ?', [slug])
        count = 0
        for change in entries:
            count += 1
            self.db.execute(
                _UPSERT,
                (
                    change["entry"],
                    change["set"],
                    change["type"],
                    change["value"],
                    json.dumps(change["labels"]),
                    json.dumps(change, separators=(",", ":")),
                ),
            )
        return count

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
        raise ValueError(f"{store.path} follows other sets ({json.loads(recorded)})")
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
    applied, pending = 0, []
    for line in client.stream_changes(sets=sets, cursor=cursor):
        if "entry" in line:
            pending.append(line)
            continue
        applied += store.apply(pending, line["cursor"])
        cursor, pending = line["cursor"], []
        if progress:
            progress(applied)
    return applied, cursor


def _load_snapshots(client: Client, store: LocalStore, sets: list[str]) -> tuple[str, int]:
    """Each set's snapshot, in one transaction; the feed continues from the oldest of their
    cursors (changes seen twice are harmless)."""
    cursors, loaded = [], 0
    with store.db:
        for slug in sets:
            entries: list[dict[str, Any]] = []
            for line in client.snapshot(slug):
                if "entry" in line:
                    entries.append(line)
                else:
                    cursors.append(line["cursor"])
            loaded += store.replace_set(slug, entries)
        # Snapshots taken one after another: the first one's cursor is the oldest.
        cursor = cursors[0]
        store.put("cursor", cursor)
    return cursor, loaded
