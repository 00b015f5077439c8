"""Signing keys and their organisations as request authentication reads them, kept in each
process: a signed request costs no database query to find who signed it.

A key is taken from memory only under the access generation this process has seen
(``exchange.generation``); authentication then reads the current generation in the round trip
that spends the nonce, and a key read under an older one is read again and checked again before
the request passes (``confirm``). Whatever changes what authentication decides or what a request
acts as (revoking or retiring a key, an organisation's status, an edit in the admin) calls
``exchange.generation.invalidate_on_commit`` in its transaction.
"""

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange import generation
from members.models import Organisation, SigningKey

# A flood of unknown key ids never reaches the cache: only keys that exist are kept.
MAX_ENTRIES = 10_000

_KEY_FIELDS = [f.attname for f in SigningKey._meta.concrete_fields]
_ORG_FIELDS = [f.attname for f in Organisation._meta.concrete_fields]


@dataclass(frozen=True)
class _Entry:
    key: tuple[Any, ...]
    organisation: tuple[Any, ...]
    public: Ed25519PublicKey


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
        self._cache = generation.LocalCache(MAX_ENTRIES)

    def get(self, key_id: str, *, reload: bool = False) -> CachedKey:
        """The key ``key_id`` from memory, or with ``reload`` or when it is not there, from the
        database (raises ``SigningKey.DoesNotExist``, or ``redis.RedisError``). Check it with
        ``confirm``."""
        seen = generation.seen()
        entry = None if reload else self._cache.get(key_id, seen)
        if entry is not None:
            return _build(entry, seen)
        # Read from the database under the generation as it is now: read under an older one,
        # the key would be read twice when the generation has just changed.
        return self._load(key_id, generation.observe(generation.current()))

    def confirm(self, cached: CachedKey, current: bytes | str | None) -> CachedKey:
        """``cached`` if it was read under the ``current`` generation (read from Redis after
        it), else the key read again from the database."""
        current = generation.observe(current)
        if current == cached.generation:
            return cached
        return self._load(cached.key.key_id, current)

    def _load(self, key_id: str, seen: str | None) -> CachedKey:
        key = SigningKey.objects.select_related("organisation").get(key_id=key_id)
        entry = _Entry(
            key=tuple(getattr(key, name) for name in _KEY_FIELDS),
            organisation=tuple(getattr(key.organisation, name) for name in _ORG_FIELDS),
            public=Ed25519PublicKey.from_public_bytes(bytes(key.public_key)),
        )
        self._cache.put(key_id, seen, entry)
        return CachedKey(key, entry.public, seen)


def _build(entry: _Entry, seen: str | None) -> CachedKey:
    organisation = Organisation.from_db("default", _ORG_FIELDS, entry.organisation)
    key = SigningKey.from_db("default", _KEY_FIELDS, entry.key)
    key.organisation = organisation
    return CachedKey(key, entry.public, seen, from_cache=True)


keys = KeyCache()
