"""Feed-token authentication for DRF: ``Authorization: Bearer hxft_…`` or HTTP Basic with the
token as its password (any user name), for partner systems that can only send a fixed header.

Only views that list ``FEED_AUTHENTICATION`` accept a token: the read-only feed endpoints
(TAXII, the MISP feed, the change feed, snapshots). Everywhere else ``RefuseFeedTokens`` (in
the default authentication classes) answers a token with 403 ``token-not-accepted``, so a
leaked token reads what it was made for and changes nothing.
"""

import base64
import binascii

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from exchange.problems import Problem
from members.actions.tokens import check_feed_token, do_note_token_use, looks_like_token
from members.auth import SignatureAuthentication
from members.models import FeedToken
from members.principal import MemberPrincipal


def presented_token(request: HttpRequest) -> str | None:
    """The feed token in the Authorization header (bearer, or a Basic password), if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials if looks_like_token(credentials) else None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password if looks_like_token(password) else None
    return None


class FeedTokenAuthentication(BaseAuthentication):
    """Authenticates a feed token on a safe (read) request; its principal is scoped to the
    token's sets and carries the token where a signed request carries its key."""

    def authenticate(self, request: Request) -> tuple[MemberPrincipal, FeedToken] | None:
        secret = presented_token(request._request)
        if secret is None:
            return None
        if request.method not in SAFE_METHODS:
            raise Problem("token-not-accepted", "A feed token only reads: sign changes")
        token = check_feed_token(secret)
        principal = MemberPrincipal(token.organisation, token, scope=frozenset(token.set_ids))
        # The audit event names the request's actor: the principal must be in place first.
        request._request.user = principal  # type: ignore[assignment]
        do_note_token_use(token, request=request._request)
        return principal, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="hashx"'


class RefuseFeedTokens(BaseAuthentication):
    """On every endpoint that is not a feed: a feed token is refused (403) with a reason,
    rather than passed over as no credentials at all."""

    def authenticate(self, request: Request) -> None:
        if presented_token(request._request) is not None:
            raise Problem(
                "token-not-accepted",
                "Feed tokens are accepted only by the feed endpoints (TAXII, the MISP feed,"
                " GET /api/v1/changes and snapshots): sign this request with your key",
            )
        return None


# The feed endpoints' authentication: a feed token, or a member's signature.
FEED_AUTHENTICATION: list[type[BaseAuthentication]] = [
    FeedTokenAuthentication,
    SignatureAuthentication,
]
