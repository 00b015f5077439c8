#!/usr/bin/env python
import os
import sys
import traceback

import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.management import execute_from_command_line
from django.db import InterfaceError, OperationalError


def main() -> None:
    """Django's manage.py; a missing or unreachable service is one line, not a traceback
    (``HASHX_DEBUG=1`` shows it)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        _fail(str(exc))
    except (OperationalError, InterfaceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"cannot reach PostgreSQL ({first}); is `make run` running, or DATABASE_URL right?")
    except redis.ConnectionError as exc:
        _fail(f"cannot reach Redis ({exc}); is `make run` running, or REDIS_URL right?")


def _fail(message: str) -> None:
    if os.environ.get("HASHX_DEBUG"):
        traceback.print_exc()
    sys.exit(f"manage.py: {message}")


if __name__ == "__main__":
    main()
