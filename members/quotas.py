"""An organisation's quotas as token buckets (exchange/ratelimit.py), and the per-request one:
``RequestRate``, DRF's throttle on every signed request (``DEFAULT_THROTTLE_CLASSES``)."""

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from exchange.ratelimit import Quota, refuse_unless_allowed, take
from members.models import Organisation
from members.principal import MemberPrincipal

DAY = 86_400


def requests_quota(org: Organisation) -> Quota | None:
    return Quota("requests", org.requests_per_second, 1) if org.requests_per_second else None


def signals_quota(org: Organisation) -> Quota | None:
    return Quota("signals", org.signals_per_day, DAY) if org.signals_per_day else None


def match_quota(org: Organisation) -> Quota | None:
    if not org.match_queries_per_day:
        return None
    return Quota("match-queries", org.match_queries_per_day, DAY)


class RequestRate(BaseThrottle):
    """429 when the signing organisation is over its requests-per-second quota. The quota
    travels with the principal's organisation (loaded with the key): no query."""

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, MemberPrincipal):
            return True
        quota = requests_quota(principal.organisation)
        if quota is not None:
            decision = take(quota, principal.organisation.pk, request=request._request)
            refuse_unless_allowed(decision, "requests")
        return True
