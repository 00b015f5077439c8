"""The exchange's database backend checks a kept connection without a round trip: the kernel
says whether the server closed it (exchange/postgres/base.py)."""

import pytest
from django.db import connections

from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kept():
    """A connection of its own, as a web thread keeps one between requests."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def test_the_backend_is_the_exchanges(kept):
    assert type(kept).__module__ == "exchange.postgres.base"


def test_an_idle_connection_is_usable_and_stays_so(kept):
    for _ in range(3):
        assert kept.is_usable()
    with kept.cursor() as cursor:
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)
    assert kept.is_usable()


def test_a_connection_the_server_ended_is_replaced_before_the_next_request_uses_it(kept):
    pid = kept.connection.get_backend_pid()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    eventually(lambda: not kept.is_usable(), timeout=10, what="the ended connection seen")
    # What Django does as a request starts: check, then connect afresh.
    kept.health_check_enabled, kept.health_check_done = True, False
    kept.close_if_health_check_failed()
    with kept.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_closed_connection_is_not_usable(kept):
    kept.connection.close()
    assert not kept.is_usable()
