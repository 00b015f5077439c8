"""Thin Celery wrappers around the audit actions."""

from celery import shared_task

from audit.actions.checkpoint import do_sign_checkpoint
from audit.actions.seal import do_seal_pending
from exchange.enqueue import clear_once


@shared_task(name="audit.seal", ignore_result=True)
def seal() -> int:
    """Queued once per committed batch of events (``record``), and on beat."""
    clear_once("audit.seal")
    return do_seal_pending().sealed


@shared_task(name="audit.checkpoint", ignore_result=True)
def checkpoint() -> None:
    do_seal_pending(wait=True)
    do_sign_checkpoint(only_if_changed=True)
