"""Thin Celery wrappers around the federation actions (queue ``federation``)."""

from celery import shared_task

from exchange.enqueue import clear_once, enqueue_once
from federation.actions.pull import do_pull_peer, due_peers
from federation.actions.push import PULL


@shared_task(name="federation.pull_due", ignore_result=True)
def pull_due() -> None:
    """Beat, every ``HASHX_FEDERATION_PULL_SECONDS``: one task per due peer, so a slow or
    failing peer holds up no other."""
    for peer_id in due_peers():
        enqueue_once(PULL, str(peer_id), ttl=600)


@shared_task(name=PULL, ignore_result=True)
def pull_peer(peer_id: str) -> None:
    clear_once(PULL, peer_id)
    do_pull_peer(int(peer_id))
