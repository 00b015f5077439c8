"""/metrics and the structured logs on a real exchange: gunicorn started as `make run` starts
it and a real Celery worker, sharing one multiprocess metrics directory, logging JSON."""

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from exchange import run
from exchange.embedded import free_port
from hashx.auth import sign_headers
from tests.conftest import REPO_ROOT, db_url_for_subprocesses
from tests.helpers import eventually, stop

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a-metrics-token-for-the-tests"
PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


@dataclass
class Exchange:
    base: str
    web_log: Path
    worker_log: Path

    def scrape(self, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + "/metrics", headers=headers, timeout=10)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        answer = self.scrape()
        assert answer.status_code == 200, answer.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }

    def log_lines(self, path: Path) -> list[dict]:
        lines = []
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory, start_worker) -> Iterator[Exchange]:
    tmp_path = tmp_path_factory.mktemp("ops")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shared = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "HASHX_LOG_FORMAT": "json",
        "HASHX_METRICS_TOKEN": TOKEN,
        "HASHX_PUBLIC_URL": base,
    }
    (tmp_path / "metrics").mkdir()
    env = {
        **os.environ,
        **shared,
        "DATABASE_URL": db_url_for_subprocesses(),
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": settings.REDIS_URL,
        "HASHX_VAR_DIR": str(tmp_path),
        "HASHX_MATCH_DIR": str(tmp_path / "match"),
        "HASHX_BIND": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "HASHX_WEB_THREADS": "2",
    }
    (web,) = [child for child in run.children(port) if child.name == "web"]
    web_log = tmp_path / "web.log"
    with web_log.open("wb") as out:
        process = subprocess.Popen(
            web.argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = start_worker("ops", env=shared)

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{web_log.read_text()[-3000:]}")
        try:
            return requests.get(base + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        eventually(up, timeout=60, what="gunicorn answering /healthz")
        yield Exchange(base, web_log, worker.log_path)
    finally:
        stop(process)
        worker.stop()


def call(exchange: Exchange, member, method: str, path: str, body=None, **headers: str):
    data = json.dumps(body).encode() if body is not None else None
    signed = sign_headers(member.private_key, method, exchange.base + path, data)
    if data is not None:
        signed["Content-Type"] = "application/json"
    return requests.request(
        method, exchange.base + path, data=data, headers={**signed, **headers}, timeout=30
    )


def test_metrics_move_with_real_traffic_and_refuse_anyone_without_the_token(exchange, publisher):
    assert exchange.scrape(token=None).status_code == 401
    assert exchange.scrape(token="wrong").status_code == 401
    assert exchange.scrape(token=None).headers["Content-Type"] == "application/problem+json"
    before = exchange.samples()

    made = call(exchange, publisher, "POST", "/api/v1/sets", {"slug": "metered", "name": "M"})
    assert made.status_code == 201, made.text
    published = call(
        exchange, publisher, "POST", "/api/v1/sets/metered/signals",
        {"signals": [{"type": "pdq", "value": PDQ}, {"type": "md5", "value": "nope"}]},
    )  # fmt: skip
    assert published.status_code == 202, published.text
    batch = published.json()["batch"]
    eventually(
        lambda: (
            call(exchange, publisher, "GET", f"/api/v1/batches/{batch}").json()["state"] == "done"
        ),
        timeout=60,
        what="the batch merged by the worker",
    )
    matched = call(
        exchange, publisher, "POST", "/api/v1/match", {"signals": [{"type": "pdq", "value": PDQ}]}
    )
    assert matched.status_code == 200, matched.text
    assert requests.get(exchange.base + "/api/v1/whoami", timeout=10).status_code == 401
    assert exchange.scrape(token="wrong").status_code == 401

    def moved() -> bool:
        after = exchange.samples()
        for name, labels, delta in [
            ("hashx_http_requests_total",
             {"endpoint": "set-publish", "method": "POST", "status": "202"}, 1),
            ("hashx_http_requests_total",
             {"endpoint": "whoami", "method": "GET", "status": "401"}, 1),
            ("hashx_http_request_duration_seconds_count",
             {"endpoint": "match", "method": "POST"}, 1),
            ("hashx_auth_refusals_total", {"reason": "signature-missing"}, 1),
            ("hashx_auth_refusals_total", {"reason": "authentication-failed"}, 1),
            ("hashx_signals_published_total", {}, 1),
            ("hashx_signals_rejected_total", {}, 1),
            ("hashx_match_queries_total", {}, 1),
            ("hashx_match_duration_seconds_count", {}, 1),
            # Counted by the worker's process, added up by the web's /metrics.
            ("hashx_batches_total", {"outcome": "done"}, 1),
            ("hashx_batch_duration_seconds_count", {}, 1),
        ]:  # fmt: skip
            moved_by = value(after, name, **labels) - value(before, name, **labels)
            assert moved_by >= delta, (name, labels, moved_by)
        # Read at scrape time from Redis, the database and the index directory.
        assert ("hashx_celery_queue_depth", (("queue", "ingest"),)) in after
        assert ("hashx_audit_seal_lag_seconds", ()) in after
        return True

    eventually(moved, timeout=30, what="the counters moved")


def test_a_request_and_the_task_it_started_log_one_request_id(exchange, publisher):
    request_id = "trace-me-0001"
    call(exchange, publisher, "POST", "/api/v1/sets", {"slug": "traced", "name": "T"})
    published = call(
        exchange, publisher, "POST", "/api/v1/sets/traced/signals",
        {"signals": [{"type": "pdq", "value": PDQ}]}, **{"X-Request-Id": request_id},
    )  # fmt: skip
    assert published.status_code == 202, published.text
    assert published.headers["X-Request-ID"] == request_id

    def request_line() -> dict:
        (line,) = [
            line for line in exchange.log_lines(exchange.web_log)
            if line.get("event") == "request" and line.get("request_id") == request_id
        ]  # fmt: skip
        return line

    line = eventually(request_line, timeout=10, what="the request's log line")
    assert line["status"] == 202 and line["endpoint"] == "set-publish"
    assert line["org"] == publisher.org.slug and line["key_id"] == publisher.key.key_id
    assert line["duration_ms"] >= 0 and line["level"] == "info"

    def task_line() -> list[dict]:
        lines = [
            line for line in exchange.log_lines(exchange.worker_log)
            if line.get("event") == "task" and line.get("request_id") == request_id
        ]  # fmt: skip
        assert lines, "no task logged with the request's id yet"
        return lines

    (task,) = eventually(task_line, timeout=60, what="the merge task's log line")
    assert task["task"] == "signals.ingest.merge_batch" and task["state"] == "SUCCESS"
    # The audit events of the request and of the merge it started carry the id too.
    actions = set(AuditEvent.objects.filter(request_id=request_id).values_list("action", flat=True))
    assert {"signals.published", "signals.batch.merged"} <= actions, actions


def test_a_problem_document_names_its_request_id(exchange):
    answer = requests.get(
        exchange.base + "/api/v1/whoami", headers={"X-Request-Id": "who-asks"}, timeout=10
    )
    assert answer.status_code == 401
    assert answer.json()["request_id"] == "who-asks" == answer.headers["X-Request-ID"]


def test_metrics_are_off_without_a_token(api, settings):
    settings.HASHX_METRICS_TOKEN = ""
    answer = api.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/problem+json"
