import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.actions.export import iter_ndjson
from exchange.times import parse_when


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_when(value)
    if parsed is None:
        raise CommandError(
            f"{name}: expected an ISO 8601 time with a zone, e.g. 2026-01-31T00:00:00Z"
        )
    return parsed


class Command(BaseCommand):
    help = "Write audit events occurring in [--since, --until) as NDJSON to stdout or --output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601 time, inclusive")
        parser.add_argument("--until", help="ISO 8601 time, exclusive")
        parser.add_argument("--output", help="file to write (default: stdout)")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _when(options["since"], "--since")
        until = _when(options["until"], "--until")
        out = Path(options["output"]).open("w") if options["output"] else sys.stdout  # noqa: SIM115
        try:
            for line in iter_ndjson(since, until):
                out.write(line)
        finally:
            if out is not sys.stdout:
                out.close()
