"""An Idempotency-Key stands for one request (the IETF Idempotency-Key draft): a retry of the
same request replays the first answer; the key with another set, content type or body is a 422,
and while the first request with it is still in flight (streaming its upload) a 409, instead of
the new signals being silently dropped behind the first answer."""

import hashlib
import http.client
import json
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from hashx.auth import sign_headers
from signals.actions.sets import do_create_set
from signals.models import Batch, StagedSignal
from tests.helpers import assert_problem, eventually
from tests.signals.conftest import pdq

pytestmark = pytest.mark.django_db

PATH = "/api/v1/sets/acme-csam/signals"


def keyed(key):
    return {"Idempotency-Key": key}


def publish(member, signals, key, path=PATH, **fields):
    return member.api.post(path, {"signals": signals, **fields}, headers=keyed(key))


def stream(member, body, key, content_type="application/x-ndjson", query=""):
    headers = {**member.api.signed_headers("POST", PATH + query, body), **keyed(key)}
    return member.api.client.generic(
        "POST", PATH + query, data=body, content_type=content_type, headers=headers
    )


def ndjson(*items):
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_the_same_request_with_the_same_key_replays_the_first_answer(publisher, csam_set):
    first = publish(publisher, [pdq(0)], "k-1")
    again = publish(publisher, [pdq(0)], "k-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    streamed = stream(publisher, ndjson(pdq(1)), "k-2")
    assert stream(publisher, ndjson(pdq(1)), "k-2").json() == streamed.json()
    assert Batch.objects.count() == 2 and StagedSignal.objects.count() == 2


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda m: publish(m, [pdq(0), pdq(1)], "k"), id="other-signals"),
        pytest.param(lambda m: publish(m, [pdq(0)], "k", atomic=True), id="atomic"),
        pytest.param(
            lambda m: publish(m, [pdq(0)], "k", path="/api/v1/sets/acme-other/signals"),
            id="other-set",
        ),
        pytest.param(lambda m: stream(m, ndjson(pdq(0)), "k"), id="other-content-type"),
    ],
)
def test_the_key_with_another_request_is_a_422_and_nothing_is_dropped_silently(
    publisher, csam_set, other
):
    do_create_set(publisher.org, {"slug": "acme-other", "name": "Other"})
    first = publish(publisher, [pdq(0)], "k")
    problem = assert_problem(other(publisher), 422, "idempotency-key-mismatch")
    assert first.json()["batch"] in problem["detail"]
    assert Batch.objects.count() == 1 and StagedSignal.objects.count() == 1
    assert publish(publisher, [pdq(0)], "k").json() == first.json()  # the first still replays


def test_a_streamed_upload_with_the_key_and_another_body_is_a_422(publisher, csam_set):
    stream(publisher, ndjson(pdq(0)), "k")
    assert_problem(stream(publisher, ndjson(pdq(1)), "k"), 422, "idempotency-key-mismatch")
    csv = f"type,value\npdq,{pdq(0)['value']}\n".encode()
    assert_problem(stream(publisher, csv, "k", "text/csv"), 422, "idempotency-key-mismatch")
    atomic = stream(publisher, ndjson(pdq(0)), "k", query="?atomic=true")
    assert_problem(atomic, 422, "idempotency-key-mismatch")
    assert StagedSignal.objects.count() == 1


def test_keys_are_per_organisation(publisher, subscriber, csam_set):
    from signals.actions.sets import do_grant

    do_grant(csam_set, subscriber.org, can_read=True, can_publish=True)
    assert publish(publisher, [pdq(0)], "shared-name").status_code == 202
    answer = publish(subscriber, [pdq(1)], "shared-name")
    assert answer.status_code == 202 and "Idempotent-Replayed" not in answer


@pytest.mark.parametrize("key", ["k" * 201, "caf\u00e9", "tab\there"])
def test_a_key_that_is_too_long_or_not_printable_ascii_is_a_400(publisher, csam_set, key):
    assert_problem(publish(publisher, [pdq(0)], key), 400, "validation")
    assert not Batch.objects.exists()


def held_idempotency_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_key_while_its_first_request_still_streams_is_a_409(exchange_url, publisher, csam_set):
    """The first upload is sent over real HTTP in two parts; while the exchange waits for the
    second, the same key (with the same or another body) is refused at once, not queued behind
    the upload nor answered with a batch that does not exist yet."""
    body = ndjson(*(pdq(n) for n in range(20)))
    half = len(body) // 2
    url = urlsplit(exchange_url)
    headers = {
        "Content-Type": "application/x-ndjson",
        "Content-Length": str(len(body)),
        "Idempotency-Key": "slow-upload",
        **sign_headers(
            publisher.private_key,
            "POST",
            settings.HASHX_PUBLIC_URL + PATH,
            digest=hashlib.sha256(body).digest(),
        ),
    }
    first = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        first.putrequest("POST", PATH)
        for name, value in headers.items():
            first.putheader(name, value)
        first.endheaders(body[:half])
        eventually(held_idempotency_locks, what="the first upload holding its key")

        for retry in (ndjson(pdq(0)), body):
            response = stream(publisher, retry, "slow-upload")
            problem = assert_problem(response, 409, "idempotency-key-in-flight")
            assert "in flight" in problem["detail"]
            assert response.headers["Retry-After"] == "1"

        first.send(body[half:])
        answer = first.getresponse()
        assert answer.status == 202, answer.read()
        accepted = json.loads(answer.read())
    finally:
        first.close()
    assert accepted["accepted"] == 20
    replayed = stream(publisher, body, "slow-upload")
    assert replayed.status_code == 202 and replayed.json() == accepted
    assert Batch.objects.count() == 1
