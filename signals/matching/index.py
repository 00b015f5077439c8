"""The PDQ index every process shares: immutable generations on disk plus a per-process delta
that follows the change feed (DESIGN.md "Matching").

- A **generation** is a directory of ``.npy`` files (the active PDQ entries as of a feed
  position, sorted by entry id, with their MIH tables) under ``HASHX_MATCH_DIR``, named after
  its position; ``CURRENT`` names the newest. Every process memory-maps it read-only, so the
  operating system keeps one copy in the page cache however many web workers there are.
- Each process keeps a small **delta**: entries of the generation retracted since (``dead``)
  and active entries the generation lacks (``added``, scanned by brute force), read from the
  change feed after the generation's position. A query reads an immutable ``View`` (generation
  plus delta) taken by reference: updating builds a new view and swaps it in, so queries never
  wait for an update and never see half of one.
- Beat runs ``signals.match.compact_index`` (``Index.compact``) every
  ``HASHX_MATCH_COMPACT_SECONDS``: the previous generation minus ``dead`` plus ``added`` becomes
  a new generation (no database reread); processes move to it on their next refresh. The very
  first generation (or one whose position is older than purged tombstones) is read from the
  database in one consistent snapshot.
- A **burst** (more than ``BURST`` PDQ changes waiting, e.g. a bulk ingest) is not read on a
  query's time: a query's refresh stops reading there, asks for a compaction and answers from
  the view it has until a generation holding the burst is written, which it then opens: the
  feed is read once, by the compaction, and no process indexes the burst privately. Only if
  none comes within ``BURST_WAIT_SECONDS`` does the process read it itself. Linking and
  compaction (an explicit ``max_age``) always follow to the end.
- The changes after a position are read in one statement (a server-side cursor, no order:
  an entry is one row at its latest state); a delta of up to ``DELTA_SCAN`` entries is
  scanned by a numba kernel (``mih.scan``), a bigger one gets a multi-index of its own.

**Videos** (``vpdq``) share the index: each distinct frame hash of quality 50 or more is a row
under its video's entry id and its set's id *negated* (``reads.SQL_INDEXED_HASHES``), so one
entry may have many rows (retracting it kills them all) and a PDQ image query, which only reads
the sets it may read by their ids, never meets a video frame. ``signals.actions.match`` turns
frame hits into video matches.

Memory budget, per hash: 32 bytes (hash) + 48 (12 chunk tables of uint32 row numbers, with the
low bits their buckets leave out) + 8 (entry id) + 4 (set id) = 92 bytes, plus bucket directories
of at most 8 bytes per hash (mih.py ``choose_shifts``): 98 bytes per hash at 1M, 97 at 10M, shared
by every process of the host through the page cache. Opening a generation maps its files and
builds nothing. Per process, the delta costs about 200 bytes per entry changed since the
generation (numpy arrays, plus a multi-index of its own past ``DELTA_SCAN`` entries, sized to
the delta), bounded by compaction; bench/memory.py measures the web workers. The compacting
worker briefly holds a second generation while it writes one.
"""

import dataclasses
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.db import connection, transaction

from exchange.enqueue import enqueue
from signals.feed.positions import Position, visible_horizon
from signals.feed.reads import SQL_INDEXED_HASHES, pdq_changes_to_horizon, purge_horizon
from signals.matching.mih import LAYOUT, MAX_RADIUS, MIH, U64, parse_hex, scan

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
# pg_advisory_lock(INDEX_LOCK, 0): one process writes generations at a time.
INDEX_LOCK = 0x6878_5E8
KEEP_GENERATIONS = 3
FEED_PAGE = 10_000
# A delta up to this size is scanned whole (cheaper than indexing it on every refresh).
DELTA_SCAN = 4096
# A delta past this size (a burst of ingest) asks a worker to fold it into a new generation now,
# at most every COMPACT_ASK_SECONDS per process: otherwise every process would rebuild it on
# every refresh until beat's next compaction.
COMPACT_AT = 200_000
COMPACT_ASK_SECONDS = 30.0
# More PDQ changes than this waiting in the feed (a bulk ingest) are left to a compaction rather
# than read by a query's refresh (``Index._refresh``), for this long at most. Finding out costs
# reading this many (about 0.2 s on the 2-core test machine); reading 1,000,000 took 4.6 s.
BURST = 50_000
BURST_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Generation:
    """The active PDQ entries as of ``position``: row ``i`` is entry ``entries[i]`` (ascending)
    of set ``sets[i]`` with hash ``mih.hashes[i]`` (a video's frames: several rows of one entry,
    under its set's id negated)."""

    name: str
    position: Position
    entries: I64
    sets: I32
    mih: MIH

    FILES = ("entries", "sets", *MIH.ARRAYS)

    @classmethod
    def open(cls, directory: Path, name: str) -> "Generation":
        """Every array memory-mapped read-only, none copied nor derived: all the processes of
        a host share one copy in the page cache."""
        path = directory / name
        meta = json.loads((path / "meta.json").read_text())
        arrays = {f: np.load(path / f"{f}.npy", mmap_mode="r") for f in cls.FILES}
        mih = MIH(**{f: arrays[f] for f in MIH.ARRAYS})
        return cls(name, Position(meta["xid"], meta["seq"]), arrays["entries"], arrays["sets"], mih)

    @classmethod
    def write(
        cls, directory: Path, position: Position, entries: I64, sets: I32, hashes: U64
    ) -> "Generation":
        """Index and save a generation, then point ``CURRENT`` at it (atomic renames: a reader
        sees the old generation or the whole new one)."""
        order = np.argsort(entries, kind="stable")
        entries, sets, hashes = entries[order], sets[order], hashes[order]
        mih = MIH.build(hashes)
        name = f"gen-{position.xid:020d}-{position.seq:020d}"
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        arrays: dict[str, npt.NDArray[Any]] = {
            "entries": entries,
            "sets": sets,
            **{f: getattr(mih, f) for f in MIH.ARRAYS},
        }
        for file, array in arrays.items():
            np.save(tmp / f"{file}.npy", array)
        (tmp / "meta.json").write_text(
            json.dumps(
                {"xid": position.xid, "seq": position.seq, "count": len(entries), "layout": LAYOUT}
            )
        )
        final = directory / name
        if final.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
        # Names sort by position: never move CURRENT back to an older generation.
        current = _read_current(directory)
        if current is None or current < name:
            pointer = directory / f".CURRENT-{os.getpid()}"
            pointer.write_text(name)
            pointer.replace(directory / "CURRENT")
        return cls.open(directory, name)

    def contains(self, entry_ids: I64) -> npt.NDArray[np.bool_]:
        if not len(self.entries):
            return np.zeros(len(entry_ids), dtype=bool)
        at = np.searchsorted(self.entries, entry_ids)
        at[at >= len(self.entries)] = 0
        return np.asarray(self.entries[at] == entry_ids)


@dataclass(frozen=True)
class Hit:
    query: int
    entry_id: int
    set_id: int
    distance: int


@dataclass(frozen=True)
class View:
    """What one query reads: a generation and the delta up to ``position``. Immutable."""

    generation: Generation
    position: Position
    dead: frozenset[int]
    added_entries: I64
    added_sets: I32
    added_hashes: U64
    # Past DELTA_SCAN entries the delta gets its own multi-index (a burst of ingest).
    added_index: MIH | None = None

    def search(self, queries: U64, radius: int = MAX_RADIUS) -> list[Hit]:
        """Every active entry within ``radius`` of each query (exact: no false negatives)."""
        gen = self.generation
        q, rows, d = gen.mih.search(queries, radius)
        hits = [
            Hit(int(qi), int(entry), int(set_id), int(dist))
            for qi, entry, set_id, dist in zip(
                q.tolist(), gen.entries[rows].tolist(), gen.sets[rows].tolist(), d.tolist(),
                strict=True,
            )
            if entry not in self.dead
        ]  # fmt: skip
        if len(self.added_entries):
            if self.added_index is not None:
                q, rows, d = self.added_index.search(queries, radius)
            else:
                q, rows, d = scan(self.added_hashes, queries, radius)
            hits.extend(
                Hit(int(qi), int(self.added_entries[r]), int(self.added_sets[r]), int(dist))
                for qi, r, dist in zip(q.tolist(), rows.tolist(), d.tolist(), strict=True)
            )
        return hits

    @property
    def size(self) -> int:
        return len(self.generation.entries) - len(self.dead) + len(self.added_entries)


class _Burst(Exception):
    """More changes wait in the feed than a query's refresh reads."""


class Index:
    """One process's follower of the shared index. ``view()`` never blocks on an update: the
    thread that refreshes builds a new view while others keep answering from the old one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._view: View | None = None
        self._dead: set[int] = set()
        # Active entries the generation lacks, as arrays (entry ids, set ids, hashes) that are
        # replaced, never changed in place: views share them.
        self._added: tuple[I64, I32, U64] = _no_delta()
        self._lock = threading.Lock()
        self._refreshed_at = 0.0
        self._compaction_asked_at = -COMPACT_ASK_SECONDS
        # While a burst is left to a compaction: until when (monotonic) to wait for it.
        self._burst_until: float | None = None

    def view(self, *, max_age: float | None = None) -> View:
        """The current view, first followed to the feed's end if older than ``max_age``
        seconds and no other thread is already at it.

        Without ``max_age`` (how queries ask: followed every ``HASHX_MATCH_REFRESH_MS``), a
        burst of more than ``BURST`` PDQ changes is not read on a query's time: a compaction is
        asked for and queries answer from the view they have until a generation holding the
        burst is written (then opened: nothing read twice), or for ``BURST_WAIT_SECONDS`` at
        most. An explicit ``max_age`` (linking, compaction) always follows to the end."""
        defer_bursts = max_age is None
        if max_age is None:
            max_age = settings.HASHX_MATCH_REFRESH_MS / 1000
        stale = self._view is None or time.monotonic() - self._refreshed_at >= max_age
        # The first view must be waited for; later ones are refreshed by whoever gets here
        # first, and everyone else answers from the view they already have.
        if stale and self._lock.acquire(blocking=self._view is None):
            try:
                self._refresh(defer_bursts=defer_bursts)
            finally:
                self._lock.release()
        assert self._view is not None
        return self._view

    # -- following (under self._lock) --------------------------------------------------------

    def _refresh(self, *, defer_bursts: bool = False) -> None:
        """Build the next view aside and swap it in whole: readers never see a new generation
        without its delta, nor half of a page of changes."""
        started = time.monotonic()
        current = self._current_name()
        old = self._view
        # A generation to start afresh from, if not the view's own.
        generation: Generation | None = None
        if current is None:
            generation = build_from_database(self.directory, unless=None)
        elif old is None or old.generation.name != current:
            generation = self._open(current)
        if generation is not None:
            position = generation.position
        else:
            assert old is not None
            position = old.position
        if position < purge_horizon():
            # Tombstones we have not seen were purged: only a full reread is exact again.
            generation = build_from_database(self.directory, unless=position)
            position = generation.position
        until, self._burst_until = self._burst_until, None
        limit = BURST if defer_bursts and old is not None else None
        if limit is not None and until is not None:
            if started >= until:
                limit = None  # no generation holding it came in time: read it here
            elif generation is None:  # still waiting for one
                self._burst_until, self._refreshed_at = until, started
                return
        old_delta = (self._dead, self._added)
        base = old if generation is None else self._fresh(generation)
        assert base is not None
        try:
            self._view = self._follow(base, burst=limit)
        except _Burst:
            # Left to a compaction: every process then opens its generation.
            # A new generation without the burst keeps the wait it started with.
            self._burst_until = until if until is not None else started + BURST_WAIT_SECONDS
            if started - self._compaction_asked_at > COMPACT_ASK_SECONDS:
                self._compaction_asked_at = started
                enqueue("signals.match.compact_index", at_least=BURST)
            if base is not old:
                self._dead, self._added = old_delta
            self._refreshed_at = started
            return
        self._refreshed_at = started
        delta = len(self._view.added_entries) + len(self._view.dead)
        if delta > COMPACT_AT and started - self._compaction_asked_at > COMPACT_ASK_SECONDS:
            self._compaction_asked_at = started
            # Only worth it if the delta is still this big when the task runs: another
            # process's request may have just compacted it. Best effort: beat compacts anyway.
            enqueue("signals.match.compact_index", at_least=COMPACT_AT)

    def _open(self, name: str) -> Generation:
        try:
            return Generation.open(self.directory, name)
        except FileNotFoundError:
            # Pruned between reading CURRENT and opening it: a newer one is CURRENT now.
            return Generation.open(self.directory, self._current_name() or name)

    def _current_name(self) -> str | None:
        return _read_current(self.directory)

    def _fresh(self, generation: Generation) -> View:
        self._dead, self._added = set(), _no_delta()
        return View(generation, generation.position, frozenset(), *_no_delta())

    def _follow(self, base: View, *, burst: int | None = None) -> View:
        """``base`` followed to the end of the feed (a new view if anything moved). One
        statement reads every change up to the horizon; its pages are gathered, then folded
        into the delta at once (folding page by page copied the growing delta per page).
        Raises ``_Burst``, the delta untouched, past ``burst`` changes."""
        pages: list[tuple[I64, I32, U64, npt.NDArray[np.bool_]]] = []
        read = 0

        def gather(rows: list[tuple[int, int, str, str]]) -> None:
            nonlocal read
            read += len(rows)
            if burst is not None and read > burst:
                raise _Burst
            pages.append(
                (
                    np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                    np.fromiter((r[1] for r in rows), np.int32, len(rows)),
                    parse_hex([r[2] for r in rows]),
                    np.fromiter((r[3] == "active" for r in rows), np.bool_, len(rows)),
                )
            )

        position = pdq_changes_to_horizon(base.position, FEED_PAGE, gather)
        if pages:
            self._apply(
                base.generation, *(np.concatenate(part) for part in zip(*pages, strict=True))
            )
            return self._build_view(base.generation, position)
        if base is not self._view:
            return self._build_view(base.generation, position)
        if position != base.position:  # other writes moved the horizon: the same delta, further on
            return dataclasses.replace(base, position=position)
        return base

    def _apply(
        self,
        generation: Generation,
        ids: I64,
        sets: I32,
        hashes: U64,
        active: npt.NDArray[np.bool_],
    ) -> None:
        """Fold changes (each entry once, at its latest state) into the delta."""
        known = generation.contains(ids)
        self._dead.difference_update(ids[known & active].tolist())
        self._dead.update(ids[known & ~active].tolist())
        # A change to an entry the delta holds replaces it (or, a tombstone, removes it).
        added_ids, added_sets, added_hashes = self._added
        kept = ~np.isin(added_ids, ids) if len(added_ids) else np.zeros(0, np.bool_)
        new = ~known & active
        self._added = (
            np.concatenate([added_ids[kept], ids[new]]),
            np.concatenate([added_sets[kept], sets[new]]),
            np.concatenate([added_hashes[kept], hashes[new]]),
        )

    def _build_view(self, generation: Generation, position: Position) -> View:
        ids, sets, hashes = self._added
        index = MIH.build(hashes) if len(hashes) > DELTA_SCAN else None
        return View(generation, position, frozenset(self._dead), ids, sets, hashes, index)

    # -- compaction --------------------------------------------------------------------------

    def compact(self, at_least: int = 0) -> Generation | None:
        """Write the current view as a new generation if it has any delta, and at least
        ``at_least`` changes (added + dead) in it (under the index lock); returns it, or None
        when there was nothing, or too little, to fold in."""
        view = self.view(max_age=0)
        delta = len(view.added_entries) + len(view.dead)
        if not delta or delta < at_least:
            return None
        generation = self._write_generation(view)
        with self._lock:
            self._view = self._follow(self._fresh(generation))
        return generation

    def _write_generation(self, view: View) -> Generation:
        """``view`` as a generation of its own, or a newer one another process wrote
        meanwhile."""
        gen = view.generation
        keep = ~np.isin(gen.entries, np.fromiter(view.dead, np.int64, len(view.dead)))
        with index_lock():
            current = self._current_name()
            if current is not None and current != gen.name:
                newer = self._open(current)
                if newer.position >= view.position:
                    return newer
            generation = Generation.write(
                self.directory,
                view.position,
                np.concatenate([gen.entries[keep], view.added_entries]),
                np.concatenate([gen.sets[keep], view.added_sets]),
                np.concatenate([gen.mih.hashes[keep], view.added_hashes]),
            )
        prune(self.directory)
        return generation


def _read_current(directory: Path) -> str | None:
    """The newest generation's name; None if there is none, or if it was written in another
    index layout (by an older version: it is rebuilt from the database)."""
    try:
        name = (directory / "CURRENT").read_text().strip()
        meta = json.loads((directory / name / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return name if name and meta.get("layout") == LAYOUT else None


def _no_delta() -> tuple[I64, I32, U64]:
    return np.empty(0, np.int64), np.empty(0, np.int32), np.empty((0, 4), np.uint64)


_SQL_ACTIVE_PDQ = f"""
SELECT e.id, f.set_id, f.hash
FROM signals_setentry e
{SQL_INDEXED_HASHES}
WHERE e.type IN ('pdq', 'vpdq') AND e.state = 'active'
ORDER BY e.id
"""  # noqa: S608 - only constants are interpolated


def build_from_database(
    directory: Path, *, unless: Position | None, page: int = 100_000
) -> Generation:
    """Read every active PDQ entry and write them as a generation positioned at the visible
    horizon read first: whatever the read then sees from a transaction at or above it, the
    feed serves again after that position (applying a change twice is harmless), and whatever
    it cannot see was written at or above it. Serialised by the index lock.

    ``unless``: the position the caller found too old (None: it found no generation). If
    another process wrote a usable generation newer than that meanwhile, it is opened instead.
    """
    with index_lock():
        name = _read_current(directory)
        if name is not None:
            found = Generation.open(directory, name)
            if (unless is None or found.position > unless) and not found.position < purge_horizon():
                return found
        ids: list[I64] = []
        sets: list[I32] = []
        hashes: list[U64] = []
        position = Position(visible_horizon(), 0)
        with transaction.atomic(), connection.chunked_cursor() as rows:
            rows.execute(_SQL_ACTIVE_PDQ)
            while batch := rows.fetchmany(page):
                ids.append(np.array([r[0] for r in batch], np.int64))
                sets.append(np.array([r[1] for r in batch], np.int32))
                hashes.append(parse_hex([r[2] for r in batch]))
        empty_ids, empty_sets, empty_hashes = _no_delta()
        generation = Generation.write(
            directory,
            position,
            np.concatenate([empty_ids, *ids]),
            np.concatenate([empty_sets, *sets]),
            np.concatenate([empty_hashes, *hashes]),
        )
    prune(directory)
    return generation


class index_lock:
    """A session-level advisory lock (no transaction: nothing held back while it is held)."""

    def __enter__(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, 0)", [INDEX_LOCK])

    def __exit__(self, *exc: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, 0)", [INDEX_LOCK])


def prune(directory: Path) -> None:
    """Delete all but the newest generations. Processes still mapping a deleted one keep
    reading it (the files live until unmapped) and move to CURRENT on their next refresh."""
    names = sorted(p.name for p in directory.glob("gen-*"))
    for name in names[:-KEEP_GENERATIONS]:
        shutil.rmtree(directory / name, ignore_errors=True)


_indexes: dict[Path, Index] = {}
_indexes_lock = threading.Lock()


def shared_index() -> Index:
    """This process's follower of the index under ``HASHX_MATCH_DIR``."""
    directory = Path(settings.HASHX_MATCH_DIR)
    with _indexes_lock:
        if directory not in _indexes:
            _indexes[directory] = Index(directory)
        return _indexes[directory]
