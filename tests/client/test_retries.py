"""The Client's transport: error answers raise HashxError with the server's problem document;
rate-limited and unavailable answers are retried for idempotent calls, waiting as Retry-After
says. A small real HTTP server plays an overloaded exchange (the real one is never overloaded on
cue); the problem documents come from the real exchange."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.client import Client, _retry_after
from hashx.errors import HashxError
from tests.receiver import Answer, Receiver

OK = Answer(200, {"Content-Type": "application/json"}, body=b'{"ok": true}')
HANG_UP = Answer(hang_up=True)
LATE = Answer(200, {"Content-Type": "application/json"}, delay=1.0, body=b'{"ok": true}')


def busy(status: int, **headers: str) -> Answer:
    problem = {"type": "about:blank", "title": "Busy", "status": status}
    headers = {"Content-Type": "application/problem+json", **headers}
    return Answer(status, headers, body=json.dumps(problem).encode())


def overloaded(*script: Answer) -> Receiver:
    """An exchange answering ``script`` in order, then ``{"ok": true}``."""
    server = Receiver()
    server.script, server.otherwise = list(script), OK
    return server


@pytest.fixture
def client_for() -> Iterator:
    def make(url: str) -> Client:
        return Client(url, Ed25519PrivateKey.generate(), retries=3, max_wait=5)

    yield make


def test_a_get_is_retried_after_the_time_retry_after_gives(client_for):
    script = busy(503, **{"Retry-After": "1"}), busy(429, **{"Retry-After": "1"})
    with overloaded(*script) as server:
        assert client_for(server.base_url).request("GET", "/api/v1/whoami") == {"ok": True}
    times = [seen.at for seen in server.received]
    assert len(times) == 3
    assert times[1] - times[0] >= 1 and times[2] - times[1] >= 1
    # Each try is signed afresh: a nonce is good once.
    assert len({seen.headers["signature-input"] for seen in server.received}) == 3


def test_a_post_is_retried_on_429_but_not_on_503(client_for):
    with overloaded(busy(429, **{"Retry-After": "0"})) as server:
        assert client_for(server.base_url).request("POST", "/x", json={}) == {"ok": True}
    assert [seen.method for seen in server.received] == ["POST", "POST"]

    with (
        overloaded(busy(503, **{"Retry-After": "0"})) as server,
        pytest.raises(HashxError) as refused,
    ):
        client_for(server.base_url).request("POST", "/x", json={})
    assert (refused.value.status, refused.value.title) == (503, "Busy")
    assert len(server.received) == 1


def test_a_post_with_an_idempotency_key_is_retried_on_503(client_for):
    with overloaded(busy(503, **{"Retry-After": "0"}), busy(502)) as server:
        client = client_for(server.base_url)
        assert client.publish("acme", [], idempotency_key="k1") == {"ok": True}
    assert len(server.received) == 3


def in_flight() -> Answer:
    problem = {
        "type": "http://127.0.0.1:8000/problems/idempotency-key-in-flight",
        "title": "A request with this Idempotency-Key is still in flight",
        "status": 409,
    }
    headers = {"Content-Type": "application/problem+json", "Retry-After": "0"}
    return Answer(409, headers, body=json.dumps(problem).encode())


def test_a_keyed_post_is_sent_again_once_its_first_try_is_no_longer_in_flight(client_for):
    with overloaded(in_flight(), in_flight()) as server:
        client = client_for(server.base_url)
        assert client.publish("acme", [], idempotency_key="k1") == {"ok": True}
    assert len(server.received) == 3


def test_other_conflicts_and_unkeyed_posts_are_not_sent_again(client_for):
    other = busy(409, **{"Retry-After": "0"})
    with overloaded(other) as server, pytest.raises(HashxError) as refused:
        client_for(server.base_url).publish("acme", [], idempotency_key="k1")
    assert refused.value.status == 409 and len(server.received) == 1

    with overloaded(in_flight()) as server, pytest.raises(HashxError) as refused:
        client_for(server.base_url).request("POST", "/x", json={})
    assert refused.value.status == 409 and len(server.received) == 1


def test_a_dropped_connection_is_retried_for_a_get_only(client_for):
    with overloaded(HANG_UP) as server:
        assert client_for(server.base_url).request("GET", "/api/v1/sets") == {"ok": True}
    assert len(server.received) == 2

    with overloaded(HANG_UP) as server, pytest.raises(requests.ConnectionError):
        client_for(server.base_url).request("POST", "/api/v1/sets/acme/retractions", json={})
    assert len(server.received) == 1


def test_an_answer_that_does_not_come_in_time_is_retried_for_a_get_only():
    def client(url):
        return Client(url, Ed25519PrivateKey.generate(), retries=3, max_wait=0.1, timeout=0.3)

    with overloaded(LATE) as server:
        assert client(server.base_url).request("GET", "/api/v1/sets") == {"ok": True}
    assert len(server.received) == 2

    with overloaded(LATE) as server, pytest.raises(requests.Timeout):
        client(server.base_url).request("POST", "/api/v1/sets/acme/retractions", json={})
    assert len(server.received) == 1

    # A DELETE answered late may have deleted: a repeat would answer 404, so it is not repeated.
    with overloaded(LATE) as server, pytest.raises(requests.Timeout):
        client(server.base_url).request("DELETE", "/api/v1/subscriptions/x")
    assert len(server.received) == 1


def test_retries_give_up_with_the_last_answer(client_for):
    with (
        overloaded(*[busy(503, **{"Retry-After": "0"})] * 4) as server,
        pytest.raises(HashxError) as refused,
    ):
        client_for(server.base_url).request("GET", "/api/v1/sets")
    assert refused.value.status == 503 and len(server.received) == 4


def test_retry_after_may_be_an_http_date():
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < (_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    assert _retry_after("7") == 7
    assert _retry_after("soon") is None


@pytest.mark.django_db(transaction=True)
def test_an_error_answer_carries_the_exchanges_problem_document(exchange_url, publisher):
    client = Client(exchange_url, publisher.private_key)
    with pytest.raises(HashxError) as missing:
        client.get_set("no-such-set")
    assert missing.value.status == 404
    assert missing.value.problem["type"].endswith("/problems/not-found")
    assert missing.value.problem["status"] == 404 and "no-such-set" in missing.value.detail

    with pytest.raises(HashxError) as invalid:
        client.create_set("Not A Slug!", "x")
    assert invalid.value.status == 400
    assert [e["field"] for e in invalid.value.problem["errors"]] == ["slug"]

    stranger = Client(exchange_url, Ed25519PrivateKey.generate())
    with pytest.raises(HashxError) as unknown:
        stranger.whoami()
    assert unknown.value.status == 401 and unknown.value.type.endswith("/key-unknown")
