"""/healthz answers while the process lives; /readyz names what is down and recovers with it."""

import pytest

from exchange.embedded import EmbeddedRedis
from tests.helpers import eventually

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_without_touching_services(api, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def private_redis(tmp_path, settings):
    """A Redis of this test's own, so no other test's worker heartbeat counts and it can be
    stopped and started again without disturbing the rest of the suite."""
    server = EmbeddedRedis(tmp_path)
    settings.REDIS_URL = server.start()
    yield server
    server.stop()


def readyz(api):
    response = api.get("/readyz")
    return response.status_code, response.json()


def wait_until_ready(api):
    """Wait for /readyz to answer 200."""

    def answers_200():
        code, body = readyz(api)
        assert code == 200, body
        return body

    return eventually(answers_200, timeout=60, interval=0.25, what="/readyz 200")


@pytest.mark.worker
def test_readyz_is_ready_with_postgres_redis_and_a_worker(api, private_redis, start_worker):
    start_worker("ready", private_redis.url)
    code, body = readyz(api)
    assert code == 200
    assert body["status"] == "ready"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {
        "database",
        "redis",
        "worker",
    }


@pytest.mark.worker
def test_readyz_names_the_worker_while_none_runs(api, private_redis, start_worker):
    code, body = readyz(api)
    assert code == 503
    assert body["failed"] == ["worker"]
    assert body["type"].endswith("/problems/not-ready")
    assert "no Celery worker heartbeat" in body["detail"]

    worker = start_worker("comeback", private_redis.url)
    wait_until_ready(api)
    worker.stop()
    code, body = readyz(api)
    assert (code, body["failed"]) == (503, ["worker"])


@pytest.mark.worker
def test_readyz_names_redis_when_it_stops_and_recovers_when_it_returns(
    api, private_redis, start_worker
):
    start_worker("redis-outage", private_redis.url)
    assert readyz(api)[0] == 200

    private_redis.stop()
    code, body = readyz(api)
    assert code == 503
    assert "redis" in body["failed"]
    assert body["checks"]["database"]["ok"] is True
    assert "redis: unreachable" in body["detail"]

    private_redis.start()
    wait_until_ready(api)
