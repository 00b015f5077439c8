"""The Client's transport: error answers raise HashxError with the server's problem document;
rate-limited and unavailable answers are retried for idempotent calls, waiting as Retry-After
says. A small real HTTP server plays an overloaded exchange (the real one is never overloaded on
cue); the problem documents come from the real exchange."""

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.client import Client, _retry_after
from hashx.errors import HashxError


class Overloaded:
    """An HTTP server answering each request with the next scripted (status, headers), status 0
    hanging up without an answer, -1 answering after a second, and then 200 ``{"ok": true}``;
    it records when each request came, its method and its signature."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.seen: list[tuple[float, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.seen.append((time.monotonic(), self.command, self.headers["Signature-Input"]))
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                if status == 0:  # hang up without an answer
                    self.close_connection = True
                    return
                if status == -1:  # answer too late
                    time.sleep(1.0)
                    status = 200
                body = json.dumps(
                    {"ok": True}
                    if status == 200
                    else {"type": "about:blank", "title": "Busy", "status": status}
                ).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Overloaded":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client_for() -> Iterator:
    def make(url: str) -> Client:
        return Client(url, Ed25519PrivateKey.generate(), retries=3, max_wait=5)

    yield make


def test_a_get_is_retried_after_the_time_retry_after_gives(client_for):
    with Overloaded([(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})]) as server:
        assert client_for(server.url).request("GET", "/api/v1/whoami") == {"ok": True}
    times = [seen[0] for seen in server.seen]
    assert len(times) == 3
    assert times[1] - times[0] >= 1 and times[2] - times[1] >= 1
    # Each try is signed afresh: a nonce is good once.
    assert len({seen[2] for seen in server.seen}) == 3


def test_a_post_is_retried_on_429_but_not_on_503(client_for):
    with Overloaded([(429, {"Retry-After": "0"})]) as server:
        assert client_for(server.url).request("POST", "/x", json={}) == {"ok": True}
    assert [seen[1] for seen in server.seen] == ["POST", "POST"]

    with Overloaded([(503, {"Retry-After": "0"})]) as server, pytest.raises(HashxError) as refused:
        client_for(server.url).request("POST", "/x", json={})
    assert (refused.value.status, refused.value.title) == (503, "Busy")
    assert len(server.seen) == 1


def test_a_post_with_an_idempotency_key_is_retried_on_503(client_for):
    with Overloaded([(503, {"Retry-After": "0"}), (502, {})]) as server:
        client = client_for(server.url)
        assert client.publish("acme", [], idempotency_key="k1") == {"ok": True}
    assert len(server.seen) == 3


def test_a_dropped_connection_is_retried_for_a_get_only(client_for):
    with Overloaded([(0, {})]) as server:
        assert client_for(server.url).request("GET", "/api/v1/sets") == {"ok": True}
    assert len(server.seen) == 2

    with Overloaded([(0, {})]) as server, pytest.raises(requests.ConnectionError):
        client_for(server.url).request("POST", "/api/v1/sets/acme/retractions", json={})
    assert len(server.seen) == 1


def test_an_answer_that_does_not_come_in_time_is_retried_for_a_get_only():
    def client(url):
        return Client(url, Ed25519PrivateKey.generate(), retries=3, max_wait=0.1, timeout=0.3)

    with Overloaded([(-1, {})]) as server:
        assert client(server.url).request("GET", "/api/v1/sets") == {"ok": True}
    assert len(server.seen) == 2

    with Overloaded([(-1, {})]) as server, pytest.raises(requests.Timeout):
        client(server.url).request("POST", "/api/v1/sets/acme/retractions", json={})
    assert len(server.seen) == 1


def test_retries_give_up_with_the_last_answer(client_for):
    busy = Overloaded([(503, {"Retry-After": "0"})] * 4)
    with busy as server, pytest.raises(HashxError) as refused:
        client_for(server.url).request("GET", "/api/v1/sets")
    assert refused.value.status == 503 and len(server.seen) == 4


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
