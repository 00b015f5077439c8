"""Thin Celery wrappers around the audit actions."""

import redis
from celery import shared_task
from kombu.exceptions import OperationalError as KombuOperationalError

from audit.actions.checkpoint import do_sign_checkpoint
from audit.actions.seal import do_seal_pending
from exchange.kv import redis_client

# While this key exists a seal task is queued; the task clears it before it starts sealing,
# so an event committed during a run queues the next one (NetBox's enqueue_once).
_QUEUED_KEY = "hashx:audit:seal-queued"


def enqueue_seal() -> None:
    """Ask a worker to seal soon: at most one seal task waits in the queue at a time. Called
    on commit of every transaction that recorded events; a Redis outage only delays sealing
    until the next beat."""
    try:
        if redis_client().set(_QUEUED_KEY, "1", nx=True, ex=60):
            seal.apply_async(retry=False)
    except (redis.RedisError, OSError, KombuOperationalError):
        pass


@shared_task(name="audit.seal", ignore_result=True)
def seal() -> int:
    redis_client().delete(_QUEUED_KEY)
    return do_seal_pending().sealed


@shared_task(name="audit.checkpoint", ignore_result=True)
def checkpoint() -> None:
    do_seal_pending(wait=True)
    do_sign_checkpoint(only_if_changed=True)
