"""Tasks are queued with one LPUSH of the message Celery makes, in kombu's Redis envelope: the
same message Celery's own send_task queues, but for its ids."""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from celery import current_app

from exchange.enqueue import _send
from exchange.kv import redis_client
from exchange.logs import REQUEST_ID_HEADER

MERGE = "signals.ingest.merge_batch"
# Per message: the task id (and the ids made from it), the delivery tag, where it was made.
IDS = {"id", "root_id", "correlation_id", "delivery_tag", "origin"}


def comparable(raw: bytes) -> dict:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for part in ("headers", "properties"):
        message[part] = {k: v for k, v in message[part].items() if k not in IDS}
    return message


@pytest.fixture
def ingest_queue():
    client = redis_client()
    client.delete("ingest")
    yield client
    client.delete("ingest")


def test_a_queued_task_is_the_message_celery_itself_queues(ingest_queue):
    current_app.send_task(MERGE, args=("batch-1",), headers={REQUEST_ID_HEADER: "req-1"})
    _send(MERGE, ("batch-1",), {}, request_id="req-1")
    ours, celerys = ingest_queue.lrange("ingest", 0, -1)  # LPUSH: the newest first
    assert comparable(ours) == comparable(celerys)
    message = json.loads(ours)
    assert message["headers"]["task"] == MERGE
    assert message["headers"]["root_id"] == message["headers"]["id"]
    assert message["properties"]["correlation_id"] == message["headers"]["id"]


def test_arguments_are_written_as_celery_writes_them(ingest_queue):
    # A UUID or a datetime among the arguments: kombu's JSON, not a TypeError in the request.
    args = (uuid.UUID(int=5), datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    current_app.send_task(MERGE, args=args)
    _send(MERGE, args, {})
    ours, celerys = ingest_queue.lrange("ingest", 0, -1)
    assert comparable(ours)["body"] == comparable(celerys)["body"]


def test_a_task_goes_to_the_queue_celery_routes_it_to(ingest_queue):
    _send(MERGE, ("batch-2",), {})
    (raw,) = ingest_queue.lrange("ingest", 0, -1)
    message = json.loads(raw)
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "ingest"}
    assert REQUEST_ID_HEADER not in message["headers"]


def test_without_redis_a_task_is_logged_as_not_queued_not_raised(settings, tmp_path, caplog):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    _send(MERGE, ("batch-3",), {})
    assert "could not queue signals.ingest.merge_batch" in caplog.text
