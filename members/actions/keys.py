"""Signing keys: adding (with proof of possession), retiring for rotation, revoking."""

import secrets
from datetime import datetime, timedelta
from typing import Any

import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import record
from exchange import generation
from exchange.kv import redis_client
from exchange.problems import Problem, invalid
from hashx.keys import (
    KeyFormatError,
    b64url_decode,
    jwk_thumbprint,
    parse_public_key,
    possession_statement,
)
from members.models import Organisation, SigningKey

CHALLENGE_SECONDS = 300
# How far ahead a retiring key may keep working: rotation overlap, not a second lifetime.
MAX_RETIRE_OVERLAP = timedelta(days=90)


def check_public_key(text: str, field: str = "public_key") -> bytes:
    try:
        return parse_public_key(text)
    except KeyFormatError as exc:
        raise invalid(field, str(exc)) from None


def issue_challenge(org: Organisation) -> str:
    """A one-time challenge, valid for five minutes, that a new key signs to prove possession."""
    challenge = secrets.token_urlsafe(24)
    try:
        redis_client().set(f"hashx:key-challenge:{challenge}", str(org.pk), ex=CHALLENGE_SECONDS)
    except redis.RedisError:
        raise Problem(
            "replay-check-unavailable", "Cannot issue a challenge now; retry shortly"
        ) from None
    return challenge


def check_possession(org: Organisation, public_raw: bytes, challenge: str, proof: str) -> None:
    """The challenge was issued to ``org``, is used once, and ``proof`` is the new key's
    signature over the possession statement."""
    try:
        owner = redis_client().getdel(f"hashx:key-challenge:{challenge}")
    except redis.RedisError:
        raise Problem(
            "replay-check-unavailable", "Cannot check the challenge now; retry shortly"
        ) from None
    if owner != str(org.pk).encode():
        raise Problem("proof-of-possession-failed", "Unknown, expired or already used challenge")
    statement = possession_statement(challenge, org.slug, jwk_thumbprint(public_raw))
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(b64url_decode(proof), statement)
    except (InvalidSignature, ValueError):
        raise Problem(
            "proof-of-possession-failed",
            "The proof is not the new key's signature of the challenge",
        ) from None


def do_add_key(
    org: Organisation,
    public_raw: bytes,
    *,
    label: str = "",
    read_only: bool = False,
    actor_user: Any = None,
    request: Any = None,
) -> SigningKey:
    """Register an Ed25519 public key for ``org``; 409 when the key is registered already
    (to any organisation: one key, one owner)."""
    key_id = jwk_thumbprint(public_raw)
    try:
        with transaction.atomic():
            key = SigningKey.objects.create(
                organisation=org,
                key_id=key_id,
                public_key=public_raw,
                label=label,
                read_only=read_only,
            )
            record(
                "members.key.added",
                obj=key,
                actor_user=actor_user,
                request=request,
                details={"key_id": key_id, "label": label, "read_only": read_only},
            )
    except IntegrityError:
        raise Problem("conflict", f"Key {key_id} is already registered") from None
    return key


def do_revoke_key(
    key: SigningKey, reason: str, *, actor_user: Any = None, request: Any = None
) -> SigningKey:
    """Revoke now: the next request signed with it is refused, in every process (the key cache
    is invalidated; with Redis unreachable the revocation is refused, a 503). Idempotent (a
    revoked key stays revoked with its first reason)."""
    now = timezone.now()
    with transaction.atomic():
        changed = (
            SigningKey.objects.filter(pk=key.pk)
            .exclude(state=SigningKey.State.REVOKED)
            .update(state=SigningKey.State.REVOKED, revoked_at=now, revoked_reason=reason)
        )
        if changed:
            generation.invalidate_on_commit()
            record(
                "members.key.revoked",
                obj=key,
                actor_user=actor_user,
                request=request,
                details={"key_id": key.key_id, "reason": reason},
            )
    key.refresh_from_db()
    return key


def do_retire_key(key: SigningKey, not_after: datetime, *, request: Any = None) -> SigningKey:
    """Let an active key keep working until ``not_after`` while its replacement takes over.

    Refused unless another active key of the organisation exists (retiring the last one would
    lock the member out) and ``not_after`` lies within the next 90 days.
    """
    now = timezone.now()
    if not now < not_after <= now + MAX_RETIRE_OVERLAP:
        raise invalid("not_after", "must be in the future and within 90 days")
    with transaction.atomic():
        # Lock the organisation's keys: two retirements at once must not retire both keys.
        keys = list(
            SigningKey.objects.select_for_update().filter(organisation_id=key.organisation_id)
        )
        current = next(k for k in keys if k.pk == key.pk)
        if current.state != SigningKey.State.ACTIVE:
            raise Problem("conflict", f"Key {key.key_id} is {current.state}, not active")
        if not any(k.state == SigningKey.State.ACTIVE and k.pk != key.pk for k in keys):
            raise Problem("conflict", "Add the replacement key before retiring the last active key")
        SigningKey.objects.filter(pk=key.pk).update(
            state=SigningKey.State.RETIRING, not_after=not_after
        )
        generation.invalidate_on_commit()
        record(
            "members.key.retiring",
            obj=key,
            request=request,
            details={"key_id": key.key_id, "not_after": not_after.isoformat()},
        )
    key.refresh_from_db()
    return key
