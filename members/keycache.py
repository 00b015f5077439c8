"""Signing keys and their organisations as request authentication reads them, kept in each
process: a signed request costs no database query to find who signed it.

A change is seen on the very next request, in every process, through one token in Redis, the
*generation*. Each cached key remembers the generation this process had seen before it read the
key from the database. Every request reads the current generation in the same round trip that
spends its nonce (``members.auth``); when it differs, the process drops its whole cache and the
request reads its key again before it is let through. Whatever changes what authentication
decides or what a request acts as (revoking or retiring a key, suspending or approving an
organisation, an edit in the admin) calls ``invalidate_on_commit`` in its transaction, which sets
a new random generation twice: at once, so that a Redis that cannot be reached refuses the change
(503) instead of leaving caches stale, and again once the transaction commits, since a request
between the two may have cached the rows as they were. Generations are random tokens, never a
counter, so a Redis that restarted without its data (generation missing) never repeats an old
one; each process then sets a fresh one and starts over. Entries also expire after
``MAX_AGE_SECONDS``, a bound on staleness for a change made outside the actions (a shell).
"""

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import transaction

from exchange.kv import redis_client
from members.models import Organisation, SigningKey

GENERATION = "hashx:members:generation"
MAX_AGE_SECONDS = 60.0
# Past this many keys the cache starts over (a flood of unknown key ids never reaches it: only
# keys that exist are cached).
MAX_ENTRIES = 10_000

log = logging.getLogger(__name__)

_KEY_FIELDS = [f.attname for f in SigningKey._meta.concrete_fields]
_ORG_FIELDS = [f.attname for f in Organisation._meta.concrete_fields]


@dataclass(frozen=True)
class _Entry:
    key: tuple[Any, ...]
    organisation: tuple[Any, ...]
    public: Ed25519PublicKey
    generation: str
    loaded_at: float


@dataclass(frozen=True)
class CachedKey:
    """A key (its organisation loaded), its public key ready to verify with, and the generation
    it was read under. ``key`` and its organisation are this request's own instances."""

    key: SigningKey
    public: Ed25519PublicKey
    generation: str | None
    from_cache: bool = False


class KeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        # The generation this process last read from Redis; None until the first request.
        self._generation: str | None = None

    def get(self, key_id: str, *, reload: bool = False) -> CachedKey:
        """The key ``key_id`` from the cache, or with ``reload`` or when it is not there, from
        the database (raises ``SigningKey.DoesNotExist``). Check the generation it carries
        with ``confirm``."""
        generation = self._generation
        entry = None if reload else self._entries.get(key_id)
        if (
            entry is not None
            and entry.generation == generation
            and time.time() - entry.loaded_at < MAX_AGE_SECONDS
        ):
            return _build(entry)
        return self._load(key_id, generation)

    def confirm(self, cached: CachedKey, current: str | None) -> CachedKey:
        """``cached`` if it was read under the ``current`` generation (read from Redis after
        it), else the key read again from the database."""
        if current is None:
            current = _start_generation()
        if current == cached.generation:
            return cached
        with self._lock:
            if self._generation != current:
                self._entries.clear()
                self._generation = current
        return self._load(cached.key.key_id, current)

    def _load(self, key_id: str, generation: str | None) -> CachedKey:
        key = SigningKey.objects.select_related("organisation").get(key_id=key_id)
        entry = _Entry(
            key=tuple(getattr(key, name) for name in _KEY_FIELDS),
            organisation=tuple(getattr(key.organisation, name) for name in _ORG_FIELDS),
            public=Ed25519PublicKey.from_public_bytes(bytes(key.public_key)),
            generation=generation or "",
            loaded_at=time.time(),
        )
        if generation is not None:
            with self._lock:
                if generation == self._generation:
                    if len(self._entries) >= MAX_ENTRIES:
                        self._entries.clear()
                    self._entries[key_id] = entry
        return CachedKey(key, entry.public, generation)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation = None


def _build(entry: _Entry) -> CachedKey:
    organisation = Organisation.from_db("default", _ORG_FIELDS, entry.organisation)
    key = SigningKey.from_db("default", _KEY_FIELDS, entry.key)
    key.organisation = organisation
    return CachedKey(key, entry.public, entry.generation, from_cache=True)


def _start_generation() -> str:
    """The generation, set to a fresh token if Redis has none (it restarted without data)."""
    client = redis_client()
    client.set(GENERATION, secrets.token_hex(16), nx=True)
    current = client.get(GENERATION)
    return current.decode() if current is not None else ""


def new_generation() -> None:
    """Every process's cached keys are stale from now on. Raises ``redis.RedisError`` when
    Redis cannot be reached (a 503 wherever it surfaces)."""
    redis_client().set(GENERATION, secrets.token_hex(16))


def _new_generation_after_commit() -> None:
    try:
        new_generation()
    except redis.RedisError:
        # Redis went away between the two: whatever a process cached in between is dropped at
        # MAX_AGE_SECONDS at the latest (and every request fails on its nonce until Redis is
        # back).
        log.warning("Redis went away before the key cache's generation could be renewed")


def invalidate_on_commit() -> None:
    """Call inside the transaction that changes a key or an organisation: see the module."""
    new_generation()
    transaction.on_commit(_new_generation_after_commit)


keys = KeyCache()
