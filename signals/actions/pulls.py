"""Pulls of the change feed: read a page or a stream through the feed core and audit what was
served (``feed.pulled``, one event per set, so each set's owner sees who pulled what)."""

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from audit.actions import record
from signals.feed.positions import START, Position
from signals.feed.reads import Rendered, Streamed, rendered_after, stream_after, stream_snapshot
from signals.models import HashSet

# A {"cursor": …} checkpoint line after every STREAM_PAGE changes of an NDJSON sync.
STREAM_PAGE = 5_000


@dataclass(frozen=True)
class Page:
    """One page of the feed as the API serves it: ``body`` is the JSON document (None when the
    caller's ``If-None-Match`` already names this page: 304), ``etag`` names it."""

    body: str | None
    etag: str


def do_pull_page(
    sets: dict[int, HashSet],
    after: Position,
    limit: int,
    *,
    if_none_match: str | None,
    request: Any,
    peer: str = "",
) -> Page:
    """The latest state of up to ``limit`` entries of ``sets`` (by id) changed after
    ``after``, in change order, with the cursor to continue from and whether there is more;
    audited as a pull unless nothing was new (an idle poll asked again gets 304: same sets,
    same cursor, nothing new)."""
    changes, _, cut = rendered_after(after, list(sets), limit=limit + 1, peer=peer)
    more = len(changes) > limit or cut
    changes = changes[:limit]
    cursor = changes[-1].position if changes else after
    state = f"{sorted(sets)}|{after.cursor()}|{cursor.cursor()}|{more}|{peer}"
    etag = f'"{hashlib.sha256(state.encode()).hexdigest()[:32]}"'
    if if_none_match == etag:
        return Page(None, etag)
    do_record_pull(sets, tally(changes, {}), after, cursor, request=request)
    # The records are JSON already (rendered by Postgres): assembled, not re-encoded.
    body = (
        f'{{"changes":[{",".join(c.json for c in changes)}],'
        f'"cursor":"{cursor.cursor()}","more":{"true" if more else "false"}}}'
    )
    return Page(body, etag)


def pull_stream(
    sets: dict[int, HashSet], after: Position, *, request: Any, peer: str = ""
) -> Iterator[bytes]:
    """Every change of ``sets`` after ``after`` as NDJSON, with checkpoints (an NDJSON sync);
    to a ``peer`` exchange only what may leave (``signals.feed.reads.sql_for_reader``)."""
    return _audited(
        lambda served: stream_after(after, list(sets), STREAM_PAGE, served, peer=peer),
        sets,
        after,
        request,
    )


def pull_snapshot(hash_set: HashSet, *, request: Any, peer: str = "") -> Iterator[bytes]:
    """Every active entry of ``hash_set`` as NDJSON, from one consistent database snapshot."""
    return _audited(
        lambda served: stream_snapshot(hash_set, served, peer=peer),
        {hash_set.pk: hash_set},
        START,
        request,
    )


def _audited(
    lines: Callable[[Streamed], Iterator[bytes]],
    sets: dict[int, HashSet],
    after: Position,
    request: Any,
) -> Iterator[bytes]:
    """The NDJSON lines Postgres writes (constant memory), then ``{"cursor": …, "end": true}``.
    The pull is audited at its end, or when the client leaves before it (what was read so far,
    marked incomplete): leaving early does not read unseen."""
    served = Streamed({}, after)
    complete = False
    try:
        yield from lines(served)
        complete = True
    finally:
        do_record_pull(sets, served.counts, after, served.until, request=request, complete=complete)
    yield (json.dumps({"cursor": served.until.cursor(), "end": True}) + "\n").encode()


def do_record_pull(
    sets: dict[int, Any],
    counts: dict[int, int],
    after: Position,
    until: Position,
    *,
    request: Any,
    complete: bool = True,
) -> None:
    """Audit a pull from ``counts`` (changes served per set id): one event per set, so each
    set's owner sees who pulled what; ``complete`` is false for a stream the client left
    before its end (``count`` is then what was sent or on its way). A poll that finds nothing
    new is not recorded (idle polls would drown the log)."""
    for set_id, count in counts.items():
        record(
            "feed.pulled",
            obj=sets[set_id],
            request=request,
            details={
                "set": sets[set_id].slug,
                "from": after.cursor(),
                "to": until.cursor(),
                "count": count,
                "complete": complete,
            },
        )


def tally(changes: list[Rendered], counts: dict[int, int]) -> dict[int, int]:
    """Add the changes served per set to ``counts`` (for do_record_pull)."""
    for change in changes:
        counts[change.set_id] = counts.get(change.set_id, 0) + 1
    return counts
