"""The exchange's identity: created on first start, read by /.well-known/hashx and by every
component that signs (audit checkpoints, webhooks, federation requests)."""

from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from exchange.models import ExchangeIdentity, ExchangeKey
from hashx.keys import (
    b64url,
    jwk_thumbprint,
    load_private_key_pem,
    private_key_to_pem,
    public_jwk,
    raw_public_bytes,
)

# pg_advisory_xact_lock key: serialises first-start creation between web, worker and beat.
_IDENTITY_LOCK = 0x6878_0001


def _key_from_file(path: str) -> Ed25519PrivateKey:
    try:
        return load_private_key_pem(Path(path).read_bytes())
    except OSError as exc:
        raise ImproperlyConfigured(
            f"HASHX_EXCHANGE_KEY_FILE: cannot read {path}: {exc.strerror}"
        ) from exc
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"HASHX_EXCHANGE_KEY_FILE: {path} is not a PEM Ed25519 private key: {exc}"
        ) from exc


def do_ensure_identity() -> ExchangeIdentity:
    """Create the identity row and a current signing key if missing; idempotent.

    Locks: a transaction-scoped advisory lock, so concurrent first starts create one identity
    and one current key. With ``HASHX_EXCHANGE_KEY_FILE`` the file's key becomes current (its
    private half stays in the file) and a previous key is retired but kept published.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IDENTITY_LOCK])
        identity, _ = ExchangeIdentity.objects.get_or_create(id=1)
        now = timezone.now()
        if settings.HASHX_EXCHANGE_KEY_FILE:
            public = raw_public_bytes(_key_from_file(settings.HASHX_EXCHANGE_KEY_FILE).public_key())
            kid = jwk_thumbprint(public)
            if not ExchangeKey.objects.filter(kid=kid, current=True).exists():
                ExchangeKey.objects.filter(current=True).update(current=False, retired_at=now)
                ExchangeKey.objects.update_or_create(
                    kid=kid, defaults={"public_key": public, "current": True, "retired_at": None}
                )
        elif not ExchangeKey.objects.filter(current=True).exists():
            private = Ed25519PrivateKey.generate()
            public = raw_public_bytes(private.public_key())
            ExchangeKey.objects.create(
                kid=jwk_thumbprint(public),
                public_key=public,
                private_key_pem=private_key_to_pem(private),
                current=True,
            )
    return identity


def get_identity() -> ExchangeIdentity:
    identity = ExchangeIdentity.objects.filter(id=1).first()
    return identity or do_ensure_identity()


@lru_cache(maxsize=4)
def _load_signing_key(kid: str, pem: str) -> Ed25519PrivateKey:
    if pem:
        return load_private_key_pem(pem.encode())
    return _key_from_file(settings.HASHX_EXCHANGE_KEY_FILE)


def get_signing_key() -> tuple[str, Ed25519PrivateKey]:
    """The current key id and private key the exchange signs with."""
    key = ExchangeKey.objects.filter(current=True).first()
    if key is None:
        do_ensure_identity()
        key = ExchangeKey.objects.get(current=True)
    return key.kid, _load_signing_key(key.kid, key.private_key_pem)


def published_jwks() -> dict[str, list[dict[str, str]]]:
    """Current key first, then retired keys that still verify old signatures."""
    keys = ExchangeKey.objects.order_by("-current", "-created_at")
    return {"keys": [public_jwk(bytes(k.public_key)) for k in keys]}


def key_change_statement(exchange_id: str, kid: str) -> bytes:
    """What an exchange's current key signs to vouch for its next one."""
    return f"hashx-key-change\n{exchange_id}\n{kid}".encode()


def do_prepare_key_rotation() -> ExchangeKey:
    """Make the exchange's next key (idempotent: the one already made), endorsed by the current
    key, and publish it: peers that pinned the current key learn the next one at their next
    pull. ``do_finish_key_rotation`` then makes it current. Refused when the current key lives
    in ``HASHX_EXCHANGE_KEY_FILE`` (its rotation is the file's).

    Locks: the identity advisory lock, as first start does."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IDENTITY_LOCK])
        current = ExchangeKey.objects.get(current=True)
        if not current.private_key_pem:
            raise ImproperlyConfigured(
                "the current key is in HASHX_EXCHANGE_KEY_FILE: rotate it by changing the file"
            )
        ready = ExchangeKey.objects.filter(endorsed_by=current.kid, current=False).first()
        if ready is not None:
            return ready
        private = Ed25519PrivateKey.generate()
        public = raw_public_bytes(private.public_key())
        kid = jwk_thumbprint(public)
        old = _load_signing_key(current.kid, current.private_key_pem)
        statement = key_change_statement(get_identity().exchange_id, kid)
        return ExchangeKey.objects.create(
            kid=kid,
            public_key=public,
            private_key_pem=private_key_to_pem(private),
            endorsed_by=current.kid,
            endorsement=b64url(old.sign(statement)),
        )


def do_finish_key_rotation() -> ExchangeKey:
    """Make the prepared next key current; the old one is retired and stays published.

    Locks: the identity advisory lock; the one-current-key constraint holds throughout."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IDENTITY_LOCK])
        current = ExchangeKey.objects.get(current=True)
        ready = ExchangeKey.objects.filter(endorsed_by=current.kid, current=False).first()
        if ready is None:
            raise ImproperlyConfigured("no next key: run rotate_exchange_key first")
        ExchangeKey.objects.filter(pk=current.pk).update(current=False, retired_at=timezone.now())
        ExchangeKey.objects.filter(pk=ready.pk).update(current=True)
        ready.refresh_from_db()
    return ready


def key_endorsements() -> list[dict[str, str]]:
    """The published endorsements: each next key, by the key that vouched for it."""
    keys = ExchangeKey.objects.exclude(endorsement="").order_by("created_at")
    return [{"kid": k.kid, "by": k.endorsed_by, "signature": k.endorsement} for k in keys]
