"""Change positions and the cursor that walks them.

A position is ``(xid, seq)``: the writing transaction's id and a value of
``signals_position_seq``. ``visible_horizon()`` is the oldest transaction still running; every
transaction below it has committed or rolled back, so every row positioned below it is final.
Readers serve only rows with ``xid < horizon`` in ``(xid, seq)`` order, and a transaction that
has not committed yet always has ``xid >= horizon``: it can never commit below a position a
reader has passed. (Sequence values alone cannot give this: ``nextval`` order is not commit
order.)
"""

import base64
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from exchange.problems import invalid

# base64url of "<xid>.<seq>", each at most 20 digits: 55 characters.
MAX_CURSOR = 64

# SQL fragment that stamps a row with a new position; use it in every UPDATE of an entry.
NEW_POSITION = "position_xid = pg_current_xact_id(), position_seq = nextval('signals_position_seq')"


@dataclass(frozen=True, order=True)
class Position:
    xid: int
    seq: int

    def cursor(self) -> str:
        """Opaque to clients: base64url of ``xid.seq``."""
        return base64.urlsafe_b64encode(f"{self.xid}.{self.seq}".encode()).rstrip(b"=").decode()

    @classmethod
    def from_cursor(cls, cursor: str) -> "Position":
        position = None
        if len(cursor) <= MAX_CURSOR:  # a longer one is none this exchange issued
            try:
                xid, seq = (
                    base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(".")
                )
                position = cls(int(xid), int(seq))
            except (ValueError, UnicodeDecodeError):
                pass
        # Exactly as issued (int() also reads signs, spaces and other scripts' digits), and
        # within xid8 and bigint, or the database would refuse the comparison (a 500).
        if (
            position is None
            or position.cursor() != cursor.rstrip("=")
            or not (0 <= position.xid < 2**64 and 0 <= position.seq < 2**63)
        ):
            raise invalid("cursor", "not a cursor this exchange issued")
        return position


START = Position(0, 0)


def sql_after_cursor(
    row: str = "e",
    cursor: str = "%(xid)s::text::xid8, %(seq)s",
    horizon: str = "%(horizon)s",
) -> str:
    """The feed's one cursor condition, as SQL over the entry row aliased ``row``: the row is
    served to whoever holds ``cursor``.

    A cursor is the position of the last change its holder was served (``START`` before the
    first): the holder has seen every final change at or below it and nothing above it. A row
    is due when it is final (written by a transaction below the visible horizon, so nothing
    can still commit below it) and sorts after the cursor in ``(xid, seq)`` order. The horizon
    is the ``%(horizon)s`` parameter unless ``horizon`` names another placeholder; ``cursor``
    defaults to the ``%(xid)s``/``%(seq)s`` parameters (see ``cursor_params``) and may name
    columns instead (a subscription's cursor).
    Every reader of the feed uses this, so they all agree on what "after the cursor" means.
    """
    return (
        f"{row}.position_xid < {horizon}::text::xid8"
        f" AND ({row}.position_xid, {row}.position_seq) > ({cursor})"
    )


def cursor_params(after: Position, horizon: int | None) -> dict[str, Any]:
    """The parameters of ``sql_after_cursor``: the rows after ``after``, final below
    ``horizon`` (a ``visible_horizon()``; None where the SQL takes its statement's own)."""
    return {
        "horizon": None if horizon is None else str(horizon),
        "xid": str(after.xid),
        "seq": after.seq,
    }


def visible_horizon(using: str = DEFAULT_DB_ALIAS) -> int:
    """The oldest transaction id still running (as of now); rows below it are final. On a hot
    standby (``using`` the read replica) it is the oldest the standby knows running, as of the
    WAL it has replayed: its rows below that are final, and the primary's too."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        return int(cursor.fetchone()[0])
