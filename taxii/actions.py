"""Pages of a collection for TAXII: the change feed read through its one reader
(signals.feed.reads), rendered as STIX 2.1 (taxii.stix) and audited like any pull.

Paging rides on the feed's cursor: ``next`` is the cursor of the last change served, so a
client following ``next`` sees every change once, in order, even while writers commit (the
reader serves only final positions). ``added_after`` filters on the time of each change (its
``date_added``); ``match[id]`` reads the named entries directly.

The MISP feed reads a set's entries by the UTC month they were first seen in (taxii.misp).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings

from signals.actions.pulls import do_record_pull, tally
from signals.feed.positions import Position
from signals.feed.reads import (
    Rendered,
    months_of,
    rendered_after,
    rendered_entries,
    rendered_month,
    rendered_since,
)
from signals.models import HashSet
from taxii.misp import event as misp_event
from taxii.misp import event_uuid, hashes_line, manifest_entry
from taxii.stix import entry_of_indicator, indicator, timestamp


@dataclass
class Page:
    """Indicators of one page, each with its ``date_added``; ``next`` the cursor after it."""

    indicators: list[dict[str, Any]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    more: bool = False
    next: str | None = None


def _page_of(exchange: str, hash_set: HashSet, changes: list[Rendered]) -> Page:
    page = Page()
    for change in changes:
        obj = indicator(exchange, orjson.loads(change.json), hash_set.tlp)
        page.indicators.append(obj)
        page.added.append(obj["modified"])  # the time of the change: its date_added
    return page


def do_read_page(
    exchange: str,
    hash_set: HashSet,
    after: Position,
    limit: int,
    *,
    added_after: datetime | None,
    request: Any,
) -> Page:
    """Up to ``limit`` indicators of ``hash_set`` changed after ``after`` (and after
    ``added_after``), in change order; audited as a pull of the set (``feed.pulled``) unless
    nothing was new."""
    if added_after is None:
        changes, _, cut = rendered_after(after, [hash_set.pk], limit=limit + 1)
    else:
        changes, _, cut = rendered_since(after, [hash_set.pk], added_after, limit=limit + 1)
    more = len(changes) > limit or cut
    changes = changes[:limit]
    page = _page_of(exchange, hash_set, changes)
    page.more = more
    until = changes[-1].position if changes else after
    # Also when there is no more: a client that polls again with it sees every change once.
    page.next = until.cursor()
    do_record_pull({hash_set.pk: hash_set}, tally(changes, {}), after, until, request=request)
    return page


def do_read_objects(
    exchange: str,
    hash_set: HashSet,
    stix_ids: list[str],
    *,
    added_after: datetime | None,
    request: Any,
) -> Page:
    """The indicators ``stix_ids`` of ``hash_set`` (those it holds), latest versions; audited.
    An indicator id holds its entry's id (``entry_of_indicator``): no search."""
    entries = sorted({e for i in stix_ids if (e := entry_of_indicator(exchange, i)) is not None})
    changes = rendered_entries(hash_set.pk, entries) if entries else []
    if added_after is not None:
        since = timestamp(added_after)
        changes = [c for c in changes if timestamp(orjson.loads(c.json)["updated"]) > since]
    if changes:
        do_record_pull(
            {hash_set.pk: hash_set},
            tally(changes, {}),
            changes[0].position,
            changes[-1].position,
            request=request,
        )
    return _page_of(exchange, hash_set, changes)


# -- the MISP feed -------------------------------------------------------------------------------


def misp_manifest(exchange: str, hash_set: HashSet) -> dict[str, Any]:
    """``manifest.json``: every event of the set (one per UTC month of first sight)."""
    return dict(
        manifest_entry(exchange, settings.HASHX_EXCHANGE_NAME, hash_set, m.start, m.updated)
        for m in months_of(hash_set.pk)
    )


def do_read_misp_event(
    exchange: str, hash_set: HashSet, event: str, *, request: Any
) -> dict[str, Any] | None:
    """The event ``event`` of the set (None when it has none by that uuid); audited as a pull
    of the set (``feed.pulled``) with the number of attributes served."""
    month = next(
        (
            m
            for m in months_of(hash_set.pk)
            if event_uuid(exchange, hash_set.slug, m.start) == event
        ),
        None,
    )
    if month is None:
        return None
    changes = rendered_month(hash_set.pk, month.start)
    records = [orjson.loads(c.json) for c in changes]
    if changes:
        first, last = min(c.position for c in changes), max(c.position for c in changes)
        do_record_pull({hash_set.pk: hash_set}, tally(changes, {}), first, last, request=request)
    return misp_event(
        exchange, settings.HASHX_EXCHANGE_NAME, hash_set, month.start, month.updated, records
    )


def misp_hashes(exchange: str, hash_set: HashSet, *, request: Any) -> Iterator[str]:
    """``hashes.csv``: a line per active attribute (the MD5 of its value, its event's uuid);
    audited as a pull of the set (``feed.pulled``) once read, or left, with the count sent."""
    served: list[Rendered] = []
    try:
        for month in months_of(hash_set.pk):
            event = event_uuid(exchange, hash_set.slug, month.start)
            for change in rendered_month(hash_set.pk, month.start):
                record = orjson.loads(change.json)
                if record["state"] == "active":
                    served.append(change)
                    yield hashes_line(record["value"], event)
    finally:
        if served:
            first = min(c.position for c in served)
            last = max(c.position for c in served)
            do_record_pull({hash_set.pk: hash_set}, tally(served, {}), first, last, request=request)
