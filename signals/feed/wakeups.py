"""Waking what follows the feed once new positions are committed.

Every action that gives entries new positions, or changes what a subscription reads, calls
``wake()`` inside its transaction; after the commit one webhook dispatch is queued (at most one
waits in the queue at a time, and the dispatch clears the flag with ``clear_wake()`` before it
reads, so no wake-up is lost). Beat dispatches every two seconds as well, so a wake-up lost to a
Redis outage only costs that delay. The PDQ match index needs no wake-up: it follows the feed
before it answers.
"""

from exchange.enqueue import clear_once, enqueue_once_on_commit

DISPATCH = "signals.webhooks.dispatch"


def wake() -> None:
    """Ask for a webhook dispatch once the current transaction commits."""
    enqueue_once_on_commit(DISPATCH, ttl=30)


def clear_wake() -> None:
    """Called by the dispatch before it reads the feed."""
    clear_once(DISPATCH)
