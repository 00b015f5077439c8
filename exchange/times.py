"""Times that come from outside: requests, uploads and the command line."""

from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime


def parse_when(text: str) -> datetime | None:
    """An ISO 8601 time with a zone, in UTC; None for anything else: no zone, an impossible date
    (02-30), or an offset Postgres refuses (Python allows up to ±23:59, Postgres ±15:59) on a
    time whose UTC would fall outside the years 1 to 9999, or past 64 characters."""
    if len(text) > 64:
        return None
    try:
        parsed = parse_datetime(text)
        if parsed is None or parsed.tzinfo is None:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
