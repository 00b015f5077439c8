"""What watching PostgreSQL calls costs (exchange/pgwatch.py), in the client's CPU time.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/pgwatch.py

Against the embedded PostgreSQL: round trips of ``SELECT 1``, and a ``COPY … TO STDOUT`` of
rows into a file (one ``write`` per row, as the feed's streams do), on a connection of psycopg2's
own classes and on one of the exchange's with watching off and on, in turn,
``BENCH_PGWATCH_ROUNDS`` times (default 5). Prints the median CPU time (this process's, user +
system) per call and per row.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from exchange import pgwatch  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_PGWATCH_ROUNDS", "5"))
CALLS = 20_000
ROWS = 500_000


def round_trips(conn: Any) -> None:
    with conn.cursor() as cursor:
        for _ in range(CALLS):
            cursor.execute("SELECT 1")
            cursor.fetchone()


class Sink:
    def write(self, data: bytes) -> None:
        pass


def copy_out(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.copy_expert(f"COPY (SELECT generate_series(1, {ROWS})) TO STDOUT", Sink())


def cpu(run: Callable[[Any], None], conn: Any, bound: float) -> float:
    pgwatch.enable(bound)
    try:
        start = time.process_time()
        run(conn)
        return time.process_time() - start
    finally:
        pgwatch.enable(0)


def main() -> None:
    params = connection.get_connection_params()
    plain = psycopg2.connect(
        **{
            **params,
            "connection_factory": psycopg2.extensions.connection,
            "cursor_factory": psycopg2.extensions.cursor,
        }
    )
    ours = psycopg2.connect(**params)
    plain.autocommit = ours.autocommit = True
    # psycopg2's own classes (as before exchange/pgwatch.py), its subclasses with watching off
    # (management commands) and on (web and workers).
    modes = [("psycopg2", plain, 0), ("off", ours, 0), ("on", ours, 10)]
    for name, run, count, unit in (
        ("SELECT 1", round_trips, CALLS, "call"),
        ("COPY out", copy_out, ROWS, "row"),
    ):
        times: dict[str, list[float]] = {mode: [] for mode, _, _ in modes}
        for _ in range(ROUNDS):
            for mode, conn, bound in modes:
                times[mode].append(cpu(run, conn, bound) / count * 1e6)
        medians = ", ".join(f"{mode} {statistics.median(t):.2f}" for mode, t in times.items())
        print(f"{name}: µs CPU per {unit}: {medians} ({count:,} {unit}s, median of {ROUNDS})")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
