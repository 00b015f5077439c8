from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


class XID8Field(models.Field):
    """PostgreSQL ``xid8``: a 64-bit transaction id, comparable with ``pg_snapshot_xmin``."""

    description = "PostgreSQL 64-bit transaction id"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "xid8"

    def from_db_value(
        self, value: Any, expression: Any, connection: BaseDatabaseWrapper
    ) -> int | None:
        return None if value is None else int(value)

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else str(int(value))


class CurrentXactId(models.Func):
    """``pg_current_xact_id()``: the id of the inserting transaction."""

    function = "pg_current_xact_id"
    arity = 0
    output_field = XID8Field()
