"""``check_…`` the daily quotas of publishing and matching (members/quotas.py names them)."""

from typing import Any

from exchange.ratelimit import charge, refuse_unless_allowed, take
from members.models import Organisation
from members.quotas import match_quota, signals_quota


def check_signal_quota(org: Organisation, count: int | None, *, request: Any = None) -> None:
    """429 unless ``org`` may publish ``count`` more signals today (taken now). ``None`` (a
    streamed upload, counted as it is read): 429 only when the quota is used up; the upload is
    charged afterwards with ``charge_signals``."""
    quota = signals_quota(org)
    if quota is None:
        return
    django_request = getattr(request, "_request", request)
    if count is None:
        decision = take(quota, org.pk, 0, minimum=1, request=django_request)
    else:
        decision = take(quota, org.pk, count, request=django_request)
    refuse_unless_allowed(decision, "signals")


def charge_signals(org: Organisation, count: int) -> None:
    """Count a streamed upload's accepted signals against today's quota (may go into debt)."""
    quota = signals_quota(org)
    if quota is not None and count:
        charge(quota, org.pk, count)


def check_match_quota(org: Organisation, count: int, *, request: Any = None) -> None:
    """429 unless ``org`` may look up ``count`` more signals today (taken now)."""
    quota = match_quota(org)
    if quota is not None:
        decision = take(quota, org.pk, count, request=getattr(request, "_request", request))
        refuse_unless_allowed(decision, "match queries")
