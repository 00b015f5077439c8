"""Who a member request acts as: set as ``request.user`` by the request-signature
authentication (members issue)."""

from dataclasses import dataclass
from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from exchange.problems import Problem
from members.models import Organisation


@dataclass(frozen=True)
class MemberPrincipal:
    organisation: Organisation
    key: Any = None  # the SigningKey that signed the request
    # A streamed upload's signed Content-Digest, checked by the view as it reads the body.
    streamed_digest: bytes | None = None
    # A feed token's sets (ids): the most it may read, whatever its organisation may read.
    # None for a signed request: everything the organisation may read.
    scope: frozenset[int] | None = None

    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self) -> int:
        return self.organisation.pk


class IsMember(BasePermission):
    """The request was signed by a key of an organisation (member company or peer exchange)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not isinstance(user, MemberPrincipal):
            return False
        if request.method not in SAFE_METHODS and user.key is not None and user.key.read_only:
            raise Problem(
                "key-read-only", "This key may only read; sign changes with a read-write key"
            )
        return True


def organisation_of(request: Request) -> Organisation:
    user = request.user
    assert isinstance(user, MemberPrincipal), "use IsMember on this view"
    return user.organisation


def scope_of(request: Request) -> frozenset[int] | None:
    """The set ids a feed token limits the request to, or None (a signed request)."""
    user = request.user
    assert isinstance(user, MemberPrincipal), "use IsMember on this view"
    return user.scope
