"""What the ``access_…`` helpers of every app share."""

import uuid

from django.db.models import Model, QuerySet

from exchange.problems import Problem


def one_by_uuid[M: Model](rows: QuerySet[M], text: str, missing: str) -> M:
    """The row of ``rows`` (already narrowed to what the caller may see) whose UUID key ``text``
    spells; a 404 problem saying ``missing`` for anything else (not a UUID, no such row, or
    someone else's), so ids do not leak."""
    try:
        key = uuid.UUID(text)
    except ValueError:
        key = None
    row = rows.filter(pk=key).first() if key else None
    if row is None:
        raise Problem("not-found", missing)
    return row
