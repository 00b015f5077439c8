import contextlib
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
from django.apps import AppConfig

_TIMESTAMP = psycopg2.extensions.adapters[(datetime, psycopg2.extensions.ISQLQuote)]


def _in_utc(value: datetime) -> Any:
    """Every aware datetime goes to Postgres in UTC: Python allows offsets up to ±23:59,
    Postgres only ±15:59, so a time a request, a form or an admin filter spelt with ``+18:10``
    failed as a 500. One UTC cannot hold (year 1 at +01:00) goes as it is: Postgres holds it."""
    if value.tzinfo is not None:
        with contextlib.suppress(OverflowError):
            value = value.astimezone(UTC)
    return _TIMESTAMP(value)


class ExchangeConfig(AppConfig):
    name = "exchange"
    verbose_name = "Exchange identity"

    def ready(self) -> None:
        psycopg2.extensions.register_adapter(datetime, _in_utc)
