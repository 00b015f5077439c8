"""Items handed from a producer thread to a consumer, a bounded number at a time: the feed's
COPY stream (``signals.feed.reads``, Postgres writes while the answer is sent) and a
federation pull's read-ahead (``federation.actions.pull``, the next page is read and checked
while this one is applied) both work this way."""

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class Handover[T]:
    """At most ``depth`` items wait between the two threads. The producer ``put``s items, then
    ``finish``es (with what it raised, if anything); the consumer iterates and gets the items
    in order, then the producer's error raised in its own thread. A consumer that gives up
    calls ``stop``: a producer blocked on a full queue returns at once (``put`` says False)
    instead of waiting for ever."""

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()

    def put(self, item: T | _End) -> bool:
        """Hand ``item`` on, waiting while the queue is full; False once the consumer stopped."""
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def finish(self, error: BaseException | None = None) -> None:
        """No more items; ``error``: why not (raised to the consumer after the items)."""
        self.put(_End(error))

    def stop(self) -> None:
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __iter__(self) -> Iterator[T]:
        while not isinstance(item := self._queue.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
