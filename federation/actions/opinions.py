"""Opinions flow back: what this exchange's members think of mirrored entries is forwarded to
the exchange the mirror is pulled from, signed by this exchange's key, as the opinion of this
exchange (its organisation there); the origin aggregates it like any other member's.

What has been forwarded is marked by the peer's ``opinions_cursor``: an opinion position
(``signals.feed.positions``, stamped on every change of an opinion), read below the visible
horizon like the change feed. A timestamp watermark would not do: an opinion written by a
transaction that commits after a later one has been forwarded carries an older time, and
would be passed for ever; an opinion's position is final once it is below the horizon."""

from collections.abc import Callable
from itertools import groupby
from typing import Any

from django.db import connection

from federation.models import Peer
from signals.feed.positions import START, Position, cursor_params, sql_after_cursor, visible_horizon

# Opinions forwarded per request (the API takes up to 10,000 items).
BATCH = 1_000

_SQL_OPINIONS = f"""
SELECT m.remote_slug, e.type, e.value, o.category, o.tags, o.position_xid::text, o.position_seq
FROM signals_opinion o
JOIN signals_setentry e ON e.id = o.entry_id
JOIN federation_mirroredset m ON m.hash_set_id = e.hash_set_id
WHERE m.peer_id = %(peer)s AND o.organisation_id <> %(peer_org)s AND {sql_after_cursor("o")}
  -- A mirror reached through several peers forwards along its oldest path only: the origin
  -- counts this exchange's opinion once.
  AND m.id = (SELECT min(p.id) FROM federation_mirroredset p WHERE p.hash_set_id = m.hash_set_id)
ORDER BY o.position_xid, o.position_seq
LIMIT %(limit)s
"""  # noqa: S608 - only constants are interpolated


def do_forward_opinions(
    peer: Peer,
    post: Callable[[str, dict[str, Any]], Any],
    failure: Callable[[Any, str], Exception],
) -> int:
    """Forward the opinions given or changed here on ``peer``'s mirrors since the peer's
    opinions cursor (not the peer's own: it has them), in position order, a batch at a time,
    each batch's opinions per remote set; the cursor moves after each batch the peer accepted,
    so a failure resends from there (an opinion is one per organisation and entry, the latest
    counts: a resent one changes nothing). Returns how many were sent.
    ``post(path, body)`` sends a signed request; ``failure(response, what)`` is raised for an
    error answer."""
    sent = 0
    after = Position.from_cursor(peer.opinions_cursor) if peer.opinions_cursor else START
    horizon = visible_horizon()
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL_OPINIONS,
                {**cursor_params(after, horizon), "peer": peer.pk,
                 "peer_org": peer.organisation_id, "limit": BATCH},
            )  # fmt: skip
            rows = cursor.fetchall()
        if not rows:
            return sent
        for slug, group in groupby(sorted(rows, key=lambda row: row[0]), key=lambda row: row[0]):
            path = f"/api/v1/sets/{slug}/opinions"
            body = {"signals": [{"type": t, "value": v, "category": c, "tags": tags}
                                for _, t, v, c, tags, _, _ in group]}  # fmt: skip
            response = post(path, body)
            if response.status_code != 200:
                raise failure(response, f"POST {path}")
            sent += len(body["signals"])
        after = Position(int(rows[-1][5]), rows[-1][6])
        peer.opinions_cursor = after.cursor()
        Peer.objects.filter(pk=peer.pk).update(opinions_cursor=peer.opinions_cursor)
        if len(rows) < BATCH:
            return sent
