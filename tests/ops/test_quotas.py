"""Quotas per member organisation (set by staff): over one, a request is answered 429 with
Retry-After and the IETF RateLimit headers, and the quota fills again as time passes."""

from datetime import UTC, datetime

import pytest
import time_machine

from exchange import metrics
from exchange.ratelimit import reset
from tests.helpers import assert_problem

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
OTHER = "0f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22f"


@pytest.fixture
def clock():
    with time_machine.travel(datetime(2026, 12, 1, 12, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def quota(member, **limits: int) -> None:
    for name, limit in limits.items():
        setattr(member.org, name, limit)
    member.org.save()
    for name in ("requests", "signals", "match-queries"):
        reset(name, member.org.pk)


def test_a_member_over_its_request_rate_gets_429_with_the_headers_until_it_refills(
    publisher, subscriber, clock
):
    quota(publisher, requests_per_second=2)
    refused_before = metrics.RATE_LIMITED.labels("requests")._value.get()
    first = publisher.api.get("/api/v1/whoami")
    assert first.status_code == 200
    assert first["RateLimit-Policy"] == '"requests";q=2;w=1'
    assert first["RateLimit"] == '"requests";r=1;t=1'
    assert publisher.api.get("/api/v1/whoami").status_code == 200

    over = publisher.api.get("/api/v1/whoami")
    body = assert_problem(over, 429, "rate-limited")
    assert body["quota"] == "requests"
    assert over["Retry-After"] == "1"
    assert over["RateLimit-Policy"] == '"requests";q=2;w=1'
    assert over["RateLimit"] == '"requests";r=0;t=1'
    assert metrics.RATE_LIMITED.labels("requests")._value.get() == refused_before + 1
    # Another organisation has its own bucket, and no quota.
    assert subscriber.api.get("/api/v1/whoami").status_code == 200

    clock.shift(1)
    assert publisher.api.get("/api/v1/whoami").status_code == 200


def test_publishing_past_the_daily_signal_quota_is_refused_until_the_day_has_passed(
    publisher, clock
):
    quota(publisher, signals_per_day=3)
    assert publisher.api.post("/api/v1/sets", {"slug": "quota", "name": "Q"}).status_code == 201
    two = {"signals": [{"type": "pdq", "value": PDQ}, {"type": "pdq", "value": OTHER}]}
    assert publisher.api.post("/api/v1/sets/quota/signals", two).status_code == 202

    over = publisher.api.post("/api/v1/sets/quota/signals", two)
    assert_problem(over, 429, "rate-limited")
    assert over["RateLimit-Policy"] == '"signals";q=3;w=86400'
    assert over["RateLimit"].startswith('"signals";r=1;')
    # One more signal of the three takes a third of a day to come back.
    assert int(over["Retry-After"]) == 86400 // 3

    clock.shift(86400)
    again = publisher.api.post("/api/v1/sets/quota/signals", two)
    assert again.status_code == 202, again.json()
    assert again["RateLimit"] == '"signals";r=1;t=57600'


def test_a_request_larger_than_the_whole_quota_says_so(publisher, clock):
    quota(publisher, signals_per_day=1)
    publisher.api.post("/api/v1/sets", {"slug": "tiny", "name": "T"})
    two = {"signals": [{"type": "pdq", "value": PDQ}, {"type": "pdq", "value": OTHER}]}
    body = assert_problem(publisher.api.post("/api/v1/sets/tiny/signals", two), 429, "rate-limited")
    assert "smaller parts" in body["detail"]


def test_match_queries_past_the_daily_quota_are_refused(publisher, clock):
    quota(publisher, match_queries_per_day=1)
    query = {"signals": [{"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427f"[:-1] + "e"}]}
    assert publisher.api.post("/api/v1/match", query).status_code == 200
    over = publisher.api.post("/api/v1/match", query)
    assert_problem(over, 429, "rate-limited")
    assert over["RateLimit-Policy"] == '"match-queries";q=1;w=86400'
    clock.shift(86400)
    assert publisher.api.post("/api/v1/match", query).status_code == 200


def test_a_member_without_quotas_gets_no_ratelimit_headers(publisher):
    answer = publisher.api.get("/api/v1/whoami")
    assert answer.status_code == 200 and not answer.has_header("RateLimit")
