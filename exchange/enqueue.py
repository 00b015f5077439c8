"""The one seam through which actions start background work (STYLE.md "Imports run one way").

Actions name a task; they never import ``tasks.py``: tasks sit above the actions they call.
Celery routes a task sent by name exactly as one sent through its function
(``CELERY_TASK_ROUTES`` match names), and the message leaves only once the caller's
transaction has committed, so a worker never looks for a row that is not there yet.
"""

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

import redis
from celery import current_app
from django.db import connection, transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from exchange.kv import redis_client
from exchange.logs import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger(__name__)

# What a lost broker or Redis raises: the work waits for beat's next run instead.
_UNREACHABLE = (redis.RedisError, OSError, KombuOperationalError)


def enqueue(name: str, **kwargs: Any) -> None:
    """Send the task ``name`` with ``kwargs`` now, whatever the transaction: for work that does
    not depend on this transaction's rows (best effort: a lost broker is logged)."""
    _send(name, (), kwargs, retry=False, request_id=current_request_id())


def enqueue_on_commit(name: str, *args: Any) -> None:
    """Send the task ``name`` with ``args`` (ids or small JSON) once the transaction commits
    (at once outside one)."""
    request_id = current_request_id()
    transaction.on_commit(lambda: _send(name, args, {}, retry=True, request_id=request_id))


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
            _send(name, args, {}, retry=False)
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


def _send(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, retry: bool, request_id: str = ""
) -> None:
    # The task runs, and logs, under the id of the request that started it (exchange/logs.py).
    # Tasks queued once for many requests (enqueue_once) belong to none of them.
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    try:
        current_app.send_task(name, args=args, kwargs=kwargs, retry=retry, headers=headers)
    except _UNREACHABLE:
        log.warning("could not queue %s%r; beat will catch up", name, args, exc_info=True)
