"""Paging of the API's lists."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Field
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request


class NewestFirst(CursorPagination):
    """Newest first, paged by an opaque cursor; ``limit`` sets the page size. A cursor whose
    position does not fit the ordering column is refused like any other bad cursor (404): DRF
    decodes the position but hands it to the filter unchecked, where ``p=foo``, an impossible
    date or a number past bigint was a 500."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
    _column: "Field[Any, Any]"

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        self._column = queryset.model._meta.get_field(str(self.ordering).lstrip("-"))
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                self._column.clean(cursor.position, None)  # its type and range
            except ValidationError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor
