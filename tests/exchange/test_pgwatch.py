"""The client-side bound on PostgreSQL calls (exchange/pgwatch.py): a call the server leaves
unanswered past it is cut and its connection closed; a COPY that keeps sending rows, or that
waits on its own file, runs as long as it needs. A frozen server itself, through gunicorn, is in
test_faults.py."""

import io
import time
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.extensions
import pytest
from django.db import connections

from exchange import pgwatch

pytestmark = pytest.mark.django_db

BOUND = 2


@pytest.fixture
def watched() -> Iterator[Callable[[], psycopg2.extensions.connection]]:
    """Connections made as the exchange makes them (the factories of settings.OPTIONS), watched
    with a bound of BOUND seconds, to the test database."""
    params = connections["default"].get_connection_params()
    backends: list[int] = []

    def connect() -> psycopg2.extensions.connection:
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        backends.append(connection.info.backend_pid)
        return connection

    pgwatch.enable(BOUND)
    try:
        yield connect
    finally:
        pgwatch.enable(0)
        # A backend whose connection was cut still sleeps: end it, the test database is dropped.
        with psycopg2.connect(**params) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) pid", [backends])
        connection.close()


def test_a_call_the_server_leaves_unanswered_past_the_bound_is_cut_and_its_connection_closed(
    watched,
):
    connection = watched()
    with pytest.raises(psycopg2.OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [BOUND * 10])
    assert connection.closed


def test_a_server_side_cursor_is_watched_in_its_fetches(watched):
    connection = watched()
    connection.autocommit = False
    with pytest.raises(psycopg2.OperationalError), connection.cursor("slow") as cursor:
        cursor.execute("SELECT n, pg_sleep(%s) FROM generate_series(1, 2) n", [BOUND * 10])
        cursor.fetchmany(2)
    assert connection.closed


def test_a_copy_out_runs_past_the_bound_while_rows_keep_coming(watched):
    # Rows above the server's 8 KiB send buffer leave it one by one, a little apart.
    rows = io.BytesIO()
    with watched().cursor() as cursor:
        cursor.copy_expert(
            f"COPY (SELECT repeat('x', 9000), pg_sleep(0.25) FROM generate_series(1, {8 * BOUND}))"
            " TO STDOUT",
            rows,
        )
    assert rows.getvalue().count(b"\n") == 8 * BOUND


def test_a_copy_is_not_cut_while_its_own_file_keeps_it_waiting(watched):
    class SlowSource:
        """An upload whose client pauses longer than the bound before its second part."""

        parts = ["1\n", "2\n", ""]

        def read(self, size: int) -> str:
            if len(self.parts) == 2:
                time.sleep(BOUND * 1.5)
            return self.parts.pop(0)

    class SlowSink(io.TextIOBase):
        """A reader that pauses as long; a text file (it is written str, not bytes)."""

        rows: list[str] = []

        def write(self, data: str) -> int:
            if self.rows:
                time.sleep(BOUND * 1.5)
            self.rows.append(data)
            return len(data)

    with watched().cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE uploaded (n int)")
        cursor.copy_expert("COPY uploaded FROM STDIN", SlowSource())
        cursor.copy_expert("COPY uploaded TO STDOUT", SlowSink())
    assert SlowSink.rows == ["1\n", "2\n"]
