"""Liveness and readiness: what /healthz and /readyz report, and the worker heartbeat."""

import contextlib
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from exchange.kv import redis_client

HEARTBEAT_PREFIX = "hashx:worker-heartbeat:"
# A heartbeat older than this many intervals counts as a dead worker.
_MISSED_BEATS = 3


def worker_heartbeat_interval() -> int:
    return int(settings.HASHX_WORKER_HEARTBEAT_SECONDS)


def beat_worker_heartbeat(hostname: str) -> None:
    """Called by the worker's Heartbeat bootstep. A Redis outage is logged by Celery and retried
    at the next beat, never fatal to the worker."""
    interval = worker_heartbeat_interval()
    with contextlib.suppress(redis.RedisError):
        redis_client().set(
            HEARTBEAT_PREFIX + hostname, str(time.time()), ex=interval * _MISSED_BEATS
        )


def clear_worker_heartbeat(hostname: str) -> None:
    with contextlib.suppress(redis.RedisError):
        redis_client().delete(HEARTBEAT_PREFIX + hostname)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True, "reachable")
    except DatabaseError as exc:
        # Drop the broken connection so the next request reconnects instead of reusing it.
        connection.close_if_unusable_or_obsolete()
        return Check("database", False, f"unreachable: {str(exc).strip().splitlines()[0]}")


def check_redis_and_workers() -> list[Check]:
    client = redis_client()
    try:
        client.ping()
        workers = sorted(
            key.decode().removeprefix(HEARTBEAT_PREFIX)
            for key in client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100)
        )
    except redis.RedisError as exc:
        return [
            Check("redis", False, f"unreachable: {exc}"),
            Check("worker", False, "unknown: Redis, where workers write their heartbeat, is down"),
        ]
    redis_check = Check("redis", True, "reachable")
    if not workers:
        return [redis_check, Check("worker", False, "no Celery worker heartbeat")]
    return [redis_check, Check("worker", True, f"{len(workers)} alive: {', '.join(workers[:5])}")]


def readiness() -> list[Check]:
    return [check_database(), *check_redis_and_workers()]
