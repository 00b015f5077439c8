"""The access generation: one token in Redis that every change to who may do or read what renews
(a key revoked or retired, an organisation suspended, a set's distribution changed, a grant given
or taken back, an edit of any of these in the admin). Each process keeps what authentication and
set visibility read (``members.keycache``, ``signals.access``) in memory, tagged with the
generation it had seen before reading it from the database, and uses it only while that is still
the generation.

Every signed request reads the current generation in the same round trip that spends its nonce
(``members.auth``) and hands it to ``observe``: a request is served from memory only as of a
generation read after it arrived. A change calls ``invalidate_on_commit`` inside its transaction,
which renews the token twice: at once, so that a Redis that cannot be reached refuses the change
(a 503) rather than leave caches stale, and again once the transaction commits, since a request
between the two may have cached the rows as they were. Generations are random tokens, never a
counter, so a Redis that restarted without its data (generation missing) never repeats an old
one: the first request to notice sets a fresh one.
"""

import logging
import secrets
import threading
import time
from collections.abc import Hashable
from typing import Any

import redis
from django.db import transaction

from exchange.kv import redis_client

GENERATION = "hashx:access:generation"
# A bound on staleness for a change made outside the actions (a shell): entries are read again
# after this long whatever the generation says.
MAX_AGE_SECONDS = 60.0

log = logging.getLogger(__name__)

_lock = threading.Lock()
_seen: str | None = None  # the generation this process last read from Redis


def seen() -> str | None:
    """The generation this process last read from Redis (None before its first signed request):
    tag what is read from the database after this call with it."""
    return _seen


def current() -> bytes | None:
    """The generation in Redis now (one round trip; a signed request reads it beside its nonce
    instead)."""
    value = redis_client().get(GENERATION)
    return value if isinstance(value, bytes) else None


def observe(current: bytes | str | None) -> str:
    """Record the generation a request just read from Redis (starting one if Redis has none) and
    return it."""
    global _seen
    if isinstance(current, bytes):
        current = current.decode()
    if current is None:
        client = redis_client()
        client.set(GENERATION, secrets.token_hex(16), nx=True)
        value = client.get(GENERATION)
        current = value.decode() if isinstance(value, bytes) else str(value or "")
    if current != _seen:
        with _lock:
            _seen = current
    return current


def renew() -> None:
    """Every process's cached access state is stale from now on. Raises ``redis.RedisError`` when
    Redis cannot be reached (a 503 wherever it surfaces)."""
    redis_client().set(GENERATION, secrets.token_hex(16))


def _renew_after_commit() -> None:
    try:
        renew()
    except redis.RedisError:
        # Redis went away between the two renewals: what a process cached in between is read
        # again after MAX_AGE_SECONDS at the latest (and no request passes until Redis is back).
        log.warning("Redis went away before the access generation could be renewed")


def invalidate_on_commit() -> None:
    """Call inside the transaction that changes keys, organisations, sets or grants."""
    renew()
    transaction.on_commit(_renew_after_commit)


class LocalCache:
    """Values kept in this process, each valid while the generation it was read under is the one
    this process has seen last, and for at most ``MAX_AGE_SECONDS``. Bounded: past ``size``
    entries it starts over."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Hashable, tuple[str, float, Any]] = {}

    def get(self, key: Hashable, generation: str | None) -> Any:
        """The value under ``key`` if it was read under ``generation``; else None."""
        entry = self._entries.get(key)
        if entry is None or generation is None or entry[0] != generation:
            return None
        if time.time() - entry[1] >= MAX_AGE_SECONDS:
            return None
        return entry[2]

    def put(self, key: Hashable, generation: str | None, value: Any) -> None:
        """Keep ``value``, read from the database after ``generation`` was seen."""
        if generation is None:
            return
        with _lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = (generation, time.time(), value)
