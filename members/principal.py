"""Who a member request acts as: set as ``request.user`` by the request-signature
authentication (members issue)."""

from dataclasses import dataclass
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from members.models import Organisation


@dataclass(frozen=True)
class MemberPrincipal:
    organisation: Organisation
    key: Any = None  # the SigningKey that signed the request

    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self) -> int:
        return self.organisation.pk


class IsMember(BasePermission):
    """The request was signed by a key of an organisation (member company or peer exchange)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, MemberPrincipal)


def organisation_of(request: Request) -> Organisation:
    user = request.user
    assert isinstance(user, MemberPrincipal), "use IsMember on this view"
    return user.organisation
