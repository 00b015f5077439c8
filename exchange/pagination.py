"""Paging of the API's lists: every list endpoint pages by an opaque cursor, ``limit`` items at
a time, in an order that a row never leaves (so following ``next`` sees each row once)."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Field
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from exchange.problems import invalid


def parse_limit(raw: str | None, maximum: int, default: int) -> int:
    """A list's ``limit`` parameter: ``default`` when absent or blank, else a whole number from 1
    to ``maximum`` (400 naming the range for anything else: a sign, other scripts' digits, or a
    number of thousands of digits, which ``int`` would labour over)."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= maximum:
        message = f"a whole number from 1 to {maximum}"
        raise invalid("limit", message)
    return int(raw)


class NewestFirst(CursorPagination):
    """Newest first, paged by an opaque cursor; ``limit`` sets the page size, a whole number from
    1 to ``max_page_size`` (else 400: DRF quietly served its default page for ``limit=abc``).
    A cursor whose position does not fit the ordering column is refused like any other bad
    cursor (404): DRF decodes the position but hands it to the filter unchecked, where
    ``p=foo``, an impossible date or a number past bigint was a 500."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
    _column: "Field[Any, Any]"

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        self._column = queryset.model._meta.get_field(str(self.ordering).lstrip("-"))
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param or "limit")
        return parse_limit(raw, self.max_page_size, self.page_size)

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                self._column.clean(cursor.position, None)  # its type and range
            except ValidationError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor


class OldestFirst(NewestFirst):
    """Oldest first: subscriptions and keys, in the order they were made."""

    ordering = "created_at"


class BySlug(NewestFirst):
    """In slug order (unique and never changed): sets."""

    ordering = "slug"
    page_size = 100
