"""Waking what follows the feed once new positions are committed.

Every action that gives entries new positions, or changes what a subscription reads, calls
``wake()`` inside its transaction; after the commit one webhook dispatch is queued (at most one
waits in the queue at a time, and the dispatch clears the flag with ``clear_wake()`` before it
reads, so no wake-up is lost). That dispatch has a queue of its own (``fanout``), so news is cut
and sent within a task or two, not behind the sends of the fan-out before. Deliveries call
``wake_after_sends()`` instead: the pages after them are cut by a dispatch queued behind the sends
still waiting (``webhooks``), so one dispatch serves every subscription a fan-out delivered,
not one dispatch each send task. Beat dispatches every two seconds as well, so a wake-up lost to
a Redis outage only costs that delay. The PDQ match index needs no wake-up: it follows the feed
before it answers.
"""

from exchange.enqueue import clear_once, enqueue_once_on_commit

DISPATCH = "signals.webhooks.dispatch"
DISPATCH_AFTER_SENDS = "signals.webhooks.dispatch_after_sends"


def wake() -> None:
    """Ask for a webhook dispatch once the current transaction commits."""
    enqueue_once_on_commit(DISPATCH, ttl=30)


def wake_after_sends() -> None:
    """Ask for a webhook dispatch after the sends queued before it, once the current transaction
    commits: for the subscriptions whose pages it delivered."""
    enqueue_once_on_commit(DISPATCH_AFTER_SENDS, ttl=30)


def clear_wake(name: str = DISPATCH) -> None:
    """Called by the dispatch (``name``) before it reads the feed."""
    clear_once(name)
