"""The one seam through which actions start background work (STYLE.md "Imports run one way").

Actions name a task; they never import ``tasks.py``: tasks sit above the actions they call.
Celery routes a task sent by name exactly as one sent through its function
(``CELERY_TASK_ROUTES`` match names), and the message leaves only once the caller's
transaction has committed, so a worker never looks for a row that is not there yet.
"""

import base64
import json
import logging
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

import redis
from celery import current_app
from django.db import connection, transaction
from kombu.utils import json as kombu_json

from exchange.kv import redis_client
from exchange.logs import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger(__name__)

# What a lost broker or Redis raises: the work waits for beat's next run instead.
_UNREACHABLE = (redis.RedisError, OSError)


def enqueue(name: str, **kwargs: Any) -> None:
    """Send the task ``name`` with ``kwargs`` now, whatever the transaction: for work that does
    not depend on this transaction's rows (best effort: a lost broker is logged)."""
    _send(name, (), kwargs, request_id=current_request_id())


def enqueue_on_commit(name: str, *args: Any) -> None:
    """Send the task ``name`` with ``args`` (ids or small JSON) once the transaction commits
    (at once outside one)."""
    request_id = current_request_id()
    transaction.on_commit(lambda: _send(name, args, {}, request_id=request_id))


def enqueue_once_on_commit(name: str, *, ttl: int = 60) -> None:
    """Send the argument-less task ``name`` after the commit unless one already waits in the
    queue (NetBox's ``enqueue_once``): a Redis flag, which the task clears with ``clear_once``
    before it starts, so work committed while it runs queues the next one. Asked any number of
    times in one transaction, it sends at most once. The flag lapses after ``ttl`` seconds, in
    case the task was lost."""
    send = _once(name, ttl)
    if not any(entry[1] is send for entry in connection.run_on_commit):
        transaction.on_commit(send)


def enqueue_once(name: str, *args: str, ttl: int) -> None:
    """Send the task ``name`` with ``args`` (ids) now unless a copy already waits in the queue:
    the flag of ``enqueue_once_on_commit``, one per task and arguments, which the task clears
    with ``clear_once(name, *args)`` as it starts. For work that beat queues again every few
    seconds until it is done: a long queue holds one copy, not one per beat."""
    try:
        if redis_client().set(_flag(name, args), "1", nx=True, ex=ttl):
            _send(name, args, {})
    except _UNREACHABLE:
        log.warning("could not queue %s%r; beat will try again", name, args, exc_info=True)


def clear_once(name: str, *args: str) -> None:
    """Called first by a task queued with ``enqueue_once_on_commit`` or ``enqueue_once``. With
    Redis down the flag stays, and lapses after its ttl."""
    try:
        redis_client().delete(_flag(name, args))
    except _UNREACHABLE:
        log.warning("could not clear the queued flag of %s%r", name, args, exc_info=True)


def _flag(name: str, args: tuple[str, ...] = ()) -> str:
    return ":".join(["hashx:queued", name, *args])


@cache
def _once(name: str, ttl: int) -> Callable[[], None]:
    """One callable per task name, so a transaction's pending sends can be recognised."""

    def send() -> None:
        enqueue_once(name, ttl=ttl)

    return send


def _send(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], request_id: str = "") -> None:
    """Queue the task ``name``: the message Celery makes (its protocol 2), routed as Celery
    routes it, written to the queue's Redis list in the envelope of kombu's Redis transport with
    one LPUSH on the exchange's pooled client. kombu's publish path made a Redis client for every
    message and took four times as long (415 µs against 110 µs of CPU), on every publish.
    tests/exchange/test_enqueue.py holds the message to the one Celery itself queues."""
    # The task runs, and logs, under the id of the request that started it (exchange/logs.py).
    # Tasks queued once for many requests (enqueue_once) belong to none of them.
    app = current_app
    parent = app.current_worker_task
    root_id = (parent.request.root_id or parent.request.id) if parent else None
    task_id = str(uuid.uuid4())
    headers, properties, body, _ = app.amqp.create_task_message(
        task_id,
        name,
        args,
        kwargs,
        root_id=root_id,
        parent_id=parent.request.id if parent else None,
        reply_to=app.thread_oid,
        ignore_result=None,  # as send_task: the worker's task says
    )
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    queue = app.amqp.router.route({}, name, args, kwargs)["queue"].name
    envelope = {
        # kombu's JSON, as Celery's own serializer: a UUID or a datetime among the arguments is
        # written as Celery would write it, not refused.
        "body": base64.b64encode(kombu_json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    try:
        redis_client().lpush(queue, json.dumps(envelope))
    except _UNREACHABLE:
        log.warning("could not queue %s%r; beat will catch up", name, args, exc_info=True)
