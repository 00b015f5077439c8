"""Feed tokens: created by a signed request (the secret shown once), listed, revoked, and
checked on every feed request that presents one."""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from exchange.problems import Problem, invalid
from members.models import FeedToken, Organisation

PREFIX = "hxft_"
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)
# last_used_at is written at most this often per token.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_token(text: str) -> bool:
    """Whether ``text`` is meant as a feed token (by its prefix), right or wrong."""
    return text.startswith(PREFIX)


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime:
    """``expires_at``, or 90 days from ``now``; 400 unless it lies ahead, within a year."""
    if expires_at is None:
        return now + DEFAULT_LIFETIME
    if not now < expires_at <= now + MAX_LIFETIME:
        message = "must lie in the future, at most 366 days ahead"
        raise invalid("expires_at", message)
    return expires_at


def do_create_feed_token(
    org: Organisation,
    name: str,
    set_ids: list[int],
    expires_at: datetime | None,
    *,
    request: Any = None,
) -> tuple[FeedToken, str]:
    """A new token of ``org`` for the sets ``set_ids`` (which the caller checked ``org`` may
    read), and its secret: the only time the secret exists outside the caller's hands.
    Audited (``members.feed_token.created``, never the secret)."""
    now = timezone.now()
    expires = check_expiry(expires_at, now)
    secret = PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = FeedToken.objects.create(
            organisation=org,
            name=name,
            digest=token_digest(secret),
            hint=secret[: len(PREFIX) + 4],
            set_ids=sorted(set(set_ids)),
            expires_at=expires,
        )
        record(
            "members.feed_token.created",
            obj=token,
            request=request,
            details={"name": name, "sets": token.set_ids, "expires_at": expires.isoformat()},
        )
    return token, secret


def do_revoke_feed_token(token: FeedToken, *, request: Any = None, reason: str = "") -> FeedToken:
    """Revoke ``token`` now (its next request is refused); revoking it again changes nothing.
    Audited once (``members.feed_token.revoked``)."""
    with transaction.atomic():
        # Conditional: of two concurrent revocations, one writes and is audited.
        changed = FeedToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if changed:
            record(
                "members.feed_token.revoked",
                obj=token,
                request=request,
                details={"name": token.name, "reason": reason},
            )
    token.refresh_from_db()
    return token


def check_feed_token(secret: str) -> FeedToken:
    """The live token ``secret`` names, with its organisation; a 401 problem naming why not
    (unknown, revoked, expired, its organisation not active)."""
    digest = token_digest(secret)
    token = FeedToken.objects.select_related("organisation").filter(digest=digest).first()
    # The lookup is by digest; the comparison of what was found is in constant time all the same.
    if token is None or not hmac.compare_digest(bytes(token.digest), digest):
        raise Problem("token-unknown", "No feed token with this secret")
    if token.revoked_at is not None:
        raise Problem("token-revoked", f"Feed token {token.hint}… was revoked")
    if token.expires_at <= timezone.now():
        raise Problem("token-expired", f"Feed token {token.hint}… expired")
    if not token.organisation.is_active:
        raise Problem(
            "organisation-suspended", f"Organisation {token.organisation.slug} is not active"
        )
    return token


def do_note_token_use(token: FeedToken, *, request: Any) -> None:
    """One audit event per request made with ``token`` (``members.feed_token.used``: method
    and path), and ``last_used_at`` at most once a minute."""
    now = timezone.now()
    record(
        "members.feed_token.used",
        obj=token,
        request=request,
        details={"method": request.method, "path": request.path[:200]},
    )
    if token.last_used_at is None or now - token.last_used_at >= _LAST_USED_RESOLUTION:
        # Conditional: of concurrent requests in the same minute, one writes.
        FeedToken.objects.filter(pk=token.pk, last_used_at=token.last_used_at).update(
            last_used_at=now
        )
