"""Matching: which entries the caller may read match each of a batch of signals (DESIGN.md
"Matching"). Exact types are answered by the database, one set-based query per type; ``pdq``
by the shared index (signals.matching.index), exact within the radius; ``vpdq`` (videos) as
python-threatexchange's vPDQ matcher and HMA do, over the same index: each distinct query frame
(quality 50 or more) is searched among the indexed frames within the PDQ distance; a video
whose frames it hits matches when the share of the query's frames matched reaches the set's
``vpdq_query_match_percent`` and the share of its own frames matched (each compared with every
query frame) reaches ``vpdq_compared_match_percent`` (80 and 0 by default, the reference's).
An answer gives both percentages."""

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection

from audit.actions import record
from exchange import metrics
from exchange.problems import Problem, invalid
from members.models import Organisation
from signals.access import MAX_SETS, access_readable_sets
from signals.feed.positions import Position
from signals.matching.index import View, shared_index
from signals.matching.mih import MAX_RADIUS, U64, parse_hex
from signals.models import HashSet, entry_lookup
from signals.types import SIGNAL_TYPES, SignalTypeError, vpdq_frames
from signals.warninglist import PDQ_MIN_QUALITY

MAX_QUERIES = 10_000


@dataclass(frozen=True)
class Query:
    type: str
    value: str
    set_ids: frozenset[int] | None  # None: every set the caller reads
    max_distance: int


@dataclass
class Match:
    entry_id: int
    set_id: int
    distance: int
    # vpdq: the share (%) of the query's frames matched, and of the video's own.
    query_match_percent: float | None = None
    compared_match_percent: float | None = None


def check_queries(org: Organisation, raw: Any) -> tuple[list[Query], dict[int, HashSet]]:
    """Validate and canonicalise a batch of queries; returns them and the sets the caller may
    read (by id). Every malformed query is named in one 400; a set the caller may not read is a
    404, as everywhere (existence does not leak)."""
    if not isinstance(raw, list) or not raw:
        raise invalid("signals", "expected a non-empty list")
    if len(raw) > MAX_QUERIES:
        raise Problem(
            "payload-too-large", f"{len(raw)} signals in one request; send at most {MAX_QUERIES}"
        )
    named = {
        slug
        for item in raw
        if isinstance(item, dict) and isinstance(item.get("sets"), list)
        for slug in item["sets"]
        if isinstance(slug, str)
    }
    readable = access_readable_sets(org, sorted(named))
    by_slug = {s.slug: s for s in readable.values()}
    queries, errors = [], []
    for index, item in enumerate(raw):
        try:
            queries.append(_check_query(item, by_slug))
        except ValueError as exc:
            errors.append({"field": f"signals.{index}", "message": str(exc)})
    if errors:
        raise Problem(
            "validation", f"{len(errors)} of {len(raw)} signals are invalid", errors=errors
        )
    return queries, readable


def _check_query(item: Any, by_slug: dict[str, HashSet]) -> Query:
    if not isinstance(item, dict):
        raise ValueError("expected an object with type and value")
    kind, value = item.get("type"), item.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise ValueError("type and value must be strings")
    signal_type = SIGNAL_TYPES.get(kind)
    if signal_type is None:
        raise ValueError(f"unknown signal type {kind!r:.40}")
    try:
        canonical = signal_type.canonical(value)
    except SignalTypeError as exc:
        raise ValueError(str(exc)) from None
    sets = item.get("sets")
    if sets is not None and (
        not isinstance(sets, list)
        or not 0 < len(sets) <= MAX_SETS
        or not all(isinstance(s, str) for s in sets)
    ):
        raise ValueError(f"sets must be a list of 1 to {MAX_SETS} set slugs")
    max_distance = item.get(
        "max_distance", MAX_RADIUS if signal_type.comparison == "hamming" else 0
    )
    if isinstance(max_distance, bool) or not isinstance(max_distance, int):
        raise ValueError("max_distance must be a whole number")
    if signal_type.comparison == "exact" and max_distance != 0:
        raise ValueError(f"{kind} is matched exactly: max_distance must be 0 or absent")
    limit = signal_type.max_threshold or 0
    if not 0 <= max_distance <= limit:
        raise ValueError(f"max_distance must be from 0 to {limit} for {kind}")
    set_ids = frozenset(by_slug[s].pk for s in sets) if sets else None
    return Query(kind, canonical, set_ids, max_distance)


_SQL_EXACT = f"""
SELECT q.i, e.id, e.hash_set_id
FROM unnest(%(values)s::text[]) WITH ORDINALITY AS q(value, i)
JOIN signals_setentry e ON {entry_lookup("e", "%(type)s", "q.value", "= ANY(%(sets)s)")}
WHERE e.state = 'active'
"""  # noqa: S608 - only constants are interpolated

_SQL_ENTRIES = """
SELECT e.id, e.hash_set_id, e.value, e.labels, e.contributor_count, e.positive_count,
       e.negative_count, e.investigation_count, e.near_duplicate_of_id, e.state
FROM signals_setentry e
WHERE e.id = ANY(%(ids)s)
"""


def find_matches(
    queries: list[Query], readable: dict[int, HashSet]
) -> tuple[list[list[Match]], Position | None]:
    """The matches of each query among the ``readable`` sets, and the index position the PDQ
    answers are as of (None when no query was PDQ)."""
    found: list[list[Match]] = [[] for _ in queries]
    by_type: dict[str, list[int]] = defaultdict(list)
    for number, query in enumerate(queries):
        by_type[query.type].append(number)
    position = None
    for kind, numbers in by_type.items():
        if kind == "pdq":
            position = _pdq_matches(queries, numbers, readable, found)
            continue
        if kind == "vpdq":
            position = _vpdq_matches(queries, numbers, readable, found)
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL_EXACT,
                {"values": [queries[n].value for n in numbers], "type": kind,
                 "sets": list(readable)},
            )  # fmt: skip
            for ordinal, entry_id, set_id in cursor.fetchall():
                number = numbers[ordinal - 1]
                if _allowed(queries[number], set_id):
                    found[number].append(Match(entry_id, set_id, 0))
    return found, position


def _allowed(query: Query, set_id: int) -> bool:
    return query.set_ids is None or set_id in query.set_ids


def _pdq_matches(
    queries: list[Query],
    numbers: list[int],
    readable: dict[int, HashSet],
    found: list[list[Match]],
) -> Position:
    view = shared_index().view()
    hashes = parse_hex([queries[n].value for n in numbers])
    radius = max(queries[n].max_distance for n in numbers)
    for hit in view.search(hashes, radius):
        number = numbers[hit.query]
        query, hash_set = queries[number], readable.get(hit.set_id)
        # Never further than the set allows nor than the query asked; only readable sets.
        if (
            hash_set is not None
            and _allowed(query, hit.set_id)
            and hit.distance <= min(query.max_distance, hash_set.pdq_threshold)
        ):
            found[number].append(Match(hit.entry_id, hit.set_id, hit.distance))
    return view.position


def video_hashes(value: str) -> U64:
    """The distinct frame hashes of a vPDQ value that are matched on (quality 50 or more), in
    first-seen order, as parsed hashes; what the index holds of a video, too."""
    seen: dict[str, None] = {}
    for frame in vpdq_frames(value):
        if frame.quality >= PDQ_MIN_QUALITY:
            seen.setdefault(frame.pdq)
    return parse_hex(list(seen)) if seen else np.empty((0, 4), np.uint64)


def _within(a: U64, b: U64, radius: int) -> Any:
    """For each hash of ``a``, whether any hash of ``b`` is within ``radius`` bits."""
    if not len(a) or not len(b):
        return np.zeros(len(a), np.bool_)
    distances = np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2)
    return (distances <= radius).any(axis=1)


_SQL_VALUES = """
SELECT e.id, e.value FROM signals_setentry e
WHERE e.id = ANY(%(ids)s)
"""


def _vpdq_matches(
    queries: list[Query],
    numbers: list[int],
    readable: dict[int, HashSet],
    found: list[list[Match]],
) -> Position:
    view = shared_index().view()
    asked = [queries[n] for n in numbers]
    for number, matches in zip(
        numbers, video_matches(view, asked, readable, video_frames), strict=True
    ):
        found[number].extend(matches)
    return view.position


def video_frames(entry_ids: list[int]) -> dict[int, U64]:
    """The distinct frame hashes matched on (``video_hashes``) of each of these video entries."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL_VALUES, {"ids": entry_ids})
        return {entry: video_hashes(value) for entry, value in cursor.fetchall()}


def video_matches(
    view: View,
    queries: list[Query],
    readable: dict[int, HashSet],
    frames_of: Callable[[list[int]], dict[int, U64]],
) -> list[list[Match]]:
    """The videos each vpdq query matches (the module's header): its distinct frames searched
    in ``view`` at once, frame hits gathered per video, and for the videos whose share of the
    query's frames reaches their set's threshold, their own frames (``frames_of``: entry id to
    its distinct frame hashes) compared with the query's for the other share."""
    frames = [video_hashes(query.value) for query in queries]
    # Row r of the search is frame r - starts[k] of query k.
    starts = np.cumsum([0] + [len(f) for f in frames])
    owner = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    radius = max(query.max_distance for query in queries)
    # (query k, entry) -> its set, the query frames it matched, the nearest frame distance.
    hits: dict[tuple[int, int], tuple[int, set[int], int]] = {}
    if len(owner):
        for hit in view.search(np.concatenate(frames), radius):
            set_id = -hit.set_id  # a video's frames are indexed under the negated set id
            k = int(owner[hit.query])
            query, hash_set = queries[k], readable.get(set_id)
            if (
                hit.set_id >= 0
                or hash_set is None
                or not _allowed(query, set_id)
                or hit.distance > min(query.max_distance, hash_set.pdq_threshold)
            ):
                continue
            _, matched, nearest = hits.setdefault((k, hit.entry_id), (set_id, set(), hit.distance))
            matched.add(hit.query - int(starts[k]))
            hits[k, hit.entry_id] = (set_id, matched, min(nearest, hit.distance))
    # Only the videos whose query share reaches their set's threshold are read and compared.
    shares = {
        key: 100.0 * len(matched) / len(frames[key[0]]) for key, (_, matched, _) in hits.items()
    }
    wanted = [
        key
        for key, share in shares.items()
        if share >= readable[hits[key][0]].vpdq_query_match_percent
    ]
    targets = frames_of(sorted({entry for _, entry in wanted})) if wanted else {}
    found: list[list[Match]] = [[] for _ in queries]
    for k, entry in wanted:
        set_id, _, nearest = hits[k, entry]
        hash_set = readable[set_id]
        if entry not in targets:
            continue
        target = targets[entry]
        radius = min(queries[k].max_distance, hash_set.pdq_threshold)
        compared = 100.0 * int(_within(target, frames[k], radius).sum()) / max(len(target), 1)
        if compared >= hash_set.vpdq_compared_match_percent:
            found[k].append(
                Match(entry, set_id, nearest, round(shares[k, entry], 2), round(compared, 2))
            )
    return found


def do_match(
    org: Organisation, queries: list[Query], readable: dict[int, HashSet], *, request: Any = None
) -> dict[str, Any]:
    """Answer a batch of queries with the matching entries ``org`` may read, nearest first,
    and audit it: the caller, how many queries and hits, never the hashes queried. Entries the
    database says were retracted since the index last followed the feed are left out."""
    started = time.perf_counter()
    found, position = find_matches(queries, readable)
    ids = sorted({m.entry_id for matches in found for m in matches})
    with connection.cursor() as cursor:
        cursor.execute(_SQL_ENTRIES, {"ids": ids})
        entries = {row[0]: row for row in cursor.fetchall()}
    results, hits = [], 0
    for query, matches in zip(queries, found, strict=True):
        shown = [
            _shape(entries[m.entry_id], readable[m.set_id], m)
            for m in sorted(matches, key=lambda m: (m.distance, m.entry_id))
            if m.entry_id in entries and entries[m.entry_id][9] == "active"
        ]
        hits += len(shown)
        results.append({"type": query.type, "value": query.value, "matches": shown})
    # One INSERT, atomic on its own: no transaction around it (two round trips more).
    record(
        "signals.matched", obj=org, request=request, details={"queries": len(queries), "hits": hits}
    )
    metrics.MATCH_QUERIES.inc(len(queries))
    metrics.MATCH_SECONDS.observe(time.perf_counter() - started)
    return {"results": results, "position": position.cursor() if position else None}


def _shape(row: tuple[Any, ...], hash_set: HashSet, match: Match) -> dict[str, Any]:
    _, _, value, labels, contributors, positive, negative, investigation, near, _ = row
    video = (
        {
            "query_match_percent": match.query_match_percent,
            "compared_match_percent": match.compared_match_percent,
        }
        if match.query_match_percent is not None
        else {}
    )
    return {
        "set": hash_set.slug,
        "entry": row[0],
        "value": value,
        "distance": match.distance,
        **video,
        "labels": labels,
        "contributors": contributors,
        "opinions": {
            "positive": positive,
            "negative": negative,
            "investigation_seed": investigation,
        },
        "disputed": bool(positive and negative),
        "near_duplicate_of": near,
    }
